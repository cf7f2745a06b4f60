"""The verdict on a task file before a single paid call, and the one-name-one-file rule.

A broken task must never be charged to the model. The check itself runs the task's code, so
it lives with the sandbox: `stepsmith.verify.taskcheck.check_task` (references and the task's
own impl in a worker under the candidates' limits). Here: its result type and the duplicate
`test_name` rule, which read files only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .task import Task


@dataclass
class TaskCheck:
    """The verdict on one task file: ``problems`` is empty when it passed."""

    ref: str  # what the user named: a benchmark name or a path
    name: str | None = None  # the task's test_name, when the file loaded
    source: str = ""  # the file (or the name, for text)
    bindings: int = 0
    problems: list[str] = field(default_factory=list)
    note: str = ""  # e.g. that there was no impl to run

    @property
    def passed(self) -> bool:
        return not self.problems


def source_of(task: Task) -> str:
    """What messages call a task: its file, or its name when it was loaded from text."""
    return str(task.source_path) if task.source_path else task.name


def _same_file(a: Task, b: Task) -> bool:
    if a.source_path is None or b.source_path is None:
        return a.text == b.text
    return Path(a.source_path).resolve() == Path(b.source_path).resolve()


def duplicate_names(tasks: Sequence[Task]) -> list[str]:
    """One problem per ``test_name`` defined by two different files, naming both."""
    first: dict[str, Task] = {}
    problems: list[str] = []
    for t in tasks:
        prev = first.setdefault(t.name, t)
        if prev is not t and not _same_file(prev, t):
            problems.append(f"test_name {t.name!r} is defined by two files: {source_of(prev)} and "
                            f"{source_of(t)}; task names must be unique (results are keyed by name)")
    return problems


class DuplicateTaskError(ValueError):
    """Two different task files share a ``test_name``; the message names both files."""


def unique_tasks(tasks: Sequence[Task]) -> list[Task]:
    """``tasks`` without repeats of one file; raises ``DuplicateTaskError`` naming both files
    when two different files share a ``test_name`` (they would silently merge into one task)."""
    problems = duplicate_names(tasks)
    if problems:
        raise DuplicateTaskError("; ".join(problems))
    first: dict[str, Task] = {}
    for t in tasks:
        first.setdefault(t.name, t)
    return list(first.values())
