"""Errors raised while reading, validating and instantiating task files.

Messages are shown to people *and* to LLM agents, so each one names the file, the line and the
field (a dotted path such as ``fns[1].init``), says what was expected and what was found.
"""

from __future__ import annotations


class TaskFormatError(ValueError):
    """A task file is malformed; ``source``, ``line`` (1-based, or None) and ``field`` locate it."""

    def __init__(self, message: str, *, source: str = "<text>", line: int | None = None,
                 field: str | None = None) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.detail = message
        where = source if line is None else f"{source}:{line}"
        prefix = f"{where}: " + (f"field '{field}': " if field else "")
        super().__init__(prefix + message)


class TaskReferenceError(TaskFormatError):
    """A task's reference (``global`` or a ``data_transform`` snippet) failed or has the wrong layout."""


class TaskNotFoundError(KeyError):
    """No benchmark or demo task has this name (and it is not a readable YAML path)."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return str(self.args[0]) if self.args else "task not found"
