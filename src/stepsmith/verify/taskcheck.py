"""Checking task files before a single paid call, in the verifier's sandbox.

A task passes when its file is valid, its `global` and references evaluate at every binding
with the declared layout, and — when the file has an `impl` — the verifier accepts that
program. Task files are code, so all of this runs in a worker under the candidates' CPU-time
and memory limits (`VerifierPool.check_references`, `VerifierPool.verify`): a task that hangs,
exits or raises is a problem naming the file, never a hang or a crash of `tasks check` or
`bench`. Nothing here raises for a broken task.
"""

from __future__ import annotations

from pathlib import Path

from stepsmith.step.session import Executor
from stepsmith.tasks import Task, TaskFormatError
from stepsmith.tasks.errors import TaskNotFoundError
from stepsmith.tasks.preflight import TaskCheck, source_of
from stepsmith.tasks.suite import get_task
from stepsmith.verify.pool import VerifierPool


def check_task(task: Task, *, pool: VerifierPool | None = None,
               executor: Executor = "fast") -> TaskCheck:
    """References at every binding and (if present) the task's own impl, in a sandboxed worker
    of `pool` (default: the shared pool)."""
    from stepsmith.verify import default_pool

    pool = pool or default_pool()
    source = source_of(task)
    result = TaskCheck(ref=task.name, name=task.name, source=source)
    impl = (task.impl or "").strip()
    try:
        if impl:
            verdict = pool.verify(task, task.impl or "", executor=executor)
            result.bindings = len(verdict.bindings)
            if not verdict.passed:
                impl_line = task.line_of("impl")
                where = f"{source}:{impl_line}" if impl_line else source
                result.problems.append(
                    f"{where}: field 'impl': the task's own reference program fails: "
                    + " ".join(verdict.feedback.split("\n")))
        else:
            result.bindings = len(pool.check_references(task))
            result.note = "no impl: checked the reference outputs only"
    except TaskFormatError as exc:  # the task's own code failed (names file and line)
        result.problems.append(str(exc))
    return result


def check_ref(ref: str | Path, *, pool: VerifierPool | None = None,
              executor: Executor = "fast") -> tuple[Task | None, TaskCheck]:
    """Load a task by benchmark name or path (runs none of its code) and check it; a file that
    does not load fails."""
    try:
        task = get_task(ref)
    except (TaskNotFoundError, TaskFormatError) as exc:
        return None, TaskCheck(ref=str(ref), source=str(ref), problems=[str(exc)])
    check = check_task(task, pool=pool, executor=executor)
    check.ref = str(ref)
    return task, check


def check_tasks(tasks: list[Task], *, executor: Executor = "fast") -> list[TaskCheck]:
    """`check_task` for several tasks on a pool of its own (closed afterwards)."""
    if not tasks:
        return []
    with VerifierPool(workers=min(2, len(tasks))) as pool:
        return [check_task(t, pool=pool, executor=executor) for t in tasks]
