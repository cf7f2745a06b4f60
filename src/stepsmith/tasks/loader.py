"""Reading a task file: YAML (with lines) → pydantic ``TaskSpec`` → cross-field checks → ``Task``.

Every rule violation raises ``TaskFormatError`` naming the file, the line and the field, e.g.
``bench/bmm/x.yaml:14: field 'fns[0].input_dtype': unknown dtype 'fp33': expected fp32, ...``.
"""

from __future__ import annotations

from pathlib import Path as FsPath

from pydantic import ValidationError

from .bindings import check_binding_labels
from .errors import TaskFormatError
from .schema import TaskSpec
from .task import FnInfo, StreamInfo, Task
from .validate import validate, validation_error
from .yamlsrc import parse_yaml

__all__ = ["FnInfo", "StreamInfo", "Task", "load_task"]


def _looks_like_path(text: str) -> bool:
    """A one-line string naming a YAML file or an existing path (else it is YAML text)."""
    if "\n" in text:
        return False
    if text.endswith((".yaml", ".yml")):
        return True
    try:
        return FsPath(text).exists()
    except (OSError, ValueError):  # e.g. a long one-line YAML document: not a file name
        return False


def load_task(path_or_text: str | FsPath, *, source: str | None = None) -> Task:
    """Load a task from a path or YAML text; raises ``TaskFormatError`` (file, line, field).

    Runs none of the file's code (``global``, fn bodies, references): a task file is code, and
    rendering a task (``prompt``, ``tasks show``, ``bench --estimate``) must not execute it.
    ``Task.bindings()`` / ``Task.instantiate()`` run it, which the verifier does in a sandboxed
    worker. ``source`` names YAML text in error messages (a worker loads a file's text, and its
    errors should still name the file, not ``<text>``).
    """
    if not isinstance(path_or_text, str | FsPath):
        raise TypeError(f"load_task expects a path or YAML text, found {type(path_or_text).__name__}")
    source_path: FsPath | None = None
    if isinstance(path_or_text, FsPath) or _looks_like_path(path_or_text):
        source_path = FsPath(path_or_text)
        try:
            text = source_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise TaskFormatError(f"cannot read task file: {why}", source=str(source_path)) from None
        source = str(source_path)
    else:
        text, source = str(path_or_text), source or "<text>"
    data, loc = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise TaskFormatError(f"a task file must be a mapping (test_name: ..., inputs: ...), "
                              f"found {type(data).__name__}", source=source, line=1)
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, loc) from None
    task = validate(spec, loc, text, source_path)
    check_binding_labels(spec.bindings, loc)
    task.check_sizes()  # unbound symbols fail at load time, without running `global`
    return task
