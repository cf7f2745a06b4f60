"""Checking tasks before a single paid call: a broken task must never be charged to the model.

A task passes when its file is valid (schema and cross-field rules), every binding resolves,
the reference outputs (``data_transform``) evaluate at every binding with the declared layout,
and — when the file has an ``impl`` — that reference program reproduces them. Nothing here
raises for a broken task: each problem is a line naming the file, the line and what is wrong,
so ``stepsmith tasks check`` and ``stepsmith bench`` can report every task and then refuse.

Task files are code (their snippets run in-process, like test files); the programs a model
writes are not, and only ever run in ``stepsmith.verify``'s sandbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TaskFormatError, TaskNotFoundError
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


def _source(task: Task) -> str:
    return str(task.source_path) if task.source_path else task.name


def check_task(task: Task, *, executor: str = "fast") -> TaskCheck:
    """Bindings, reference outputs and (if present) the task's own impl at every binding."""
    from .run import check_reference  # lazy: importing the STeP core is not free

    source = _source(task)
    result = TaskCheck(ref=task.name, name=task.name, source=source)
    try:
        bindings = task.bindings()
    except TaskFormatError as exc:
        result.problems.append(str(exc))
        return result
    except Exception as exc:  # noqa: BLE001 - a task's `global` is user code: report, never crash
        result.problems.append(f"{source}: global: {type(exc).__name__}: {exc}")
        return result
    result.bindings = len(bindings)
    impl_line = task.line_of("impl")
    where_impl = f"{source}:{impl_line}" if impl_line else source
    for b in bindings:
        try:
            if task.impl and task.impl.strip():
                for check in check_reference(task, executor=executor, bindings=[b]):
                    result.problems += [f"{where_impl}: field 'impl': the task's own reference "
                                        f"program fails at binding {b.label}: {p}"
                                        for p in check.problems]
            else:
                task.instantiate(b)  # reference outputs evaluable, with the declared layout
        except TaskFormatError as exc:
            result.problems.append(f"{exc} [binding {b.label}]")
        except Exception as exc:  # noqa: BLE001 - reference snippets are user code
            result.problems.append(f"{source}: binding {b}: cannot build the reference: "
                                   f"{type(exc).__name__}: {exc}")
    if not task.impl or not task.impl.strip():
        result.note = "no impl: checked the reference outputs only"
    return result


def check_ref(ref: str | Path, *, executor: str = "fast") -> tuple[Task | None, TaskCheck]:
    """Load a task by benchmark name or path and check it; a file that does not load fails."""
    from .suite import get_task

    try:
        task = get_task(ref)
    except (TaskNotFoundError, TaskFormatError) as exc:
        return None, TaskCheck(ref=str(ref), source=str(ref), problems=[str(exc)])
    check = check_task(task, executor=executor)
    check.ref = str(ref)
    return task, check


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
            problems.append(f"test_name {t.name!r} is defined by two files: {_source(prev)} and "
                            f"{_source(t)}; task names must be unique (results are keyed by name)")
    return problems


class DuplicateTaskError(ValueError):
    """Two different task files share a ``test_name``; the message names both files."""


def unique_tasks(tasks: Sequence[Task]) -> list[Task]:
    """``tasks`` without repeats of one file; raises ``DuplicateTaskError`` naming both files
    when two different files share a ``test_name`` (they would silently merge into one task)."""
    problems = duplicate_names(tasks)
    if problems:
        raise DuplicateTaskError("; ".join(problems))
    seen: set[str] = set()
    out = []
    for t in tasks:
        if t.name not in seen:
            seen.add(t.name)
            out.append(t)
    return out
