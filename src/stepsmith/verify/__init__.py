"""stepsmith.verify — the reward: a sandboxed, multi-binding verifier of STeP programs.

`verify(task, src)` runs the candidate in a warm sandboxed worker (a lazily created module-level
`VerifierPool`, closed at exit) at every binding of the task, and returns a `Verdict`.
`verify_in_process` runs the same check unsandboxed, for trusted programs (references, mutants).
`run_program(task, source, binding)` is the one executor underneath all of them (`execute.py`).
"""

from __future__ import annotations

import atexit
import threading

from stepsmith.step.session import AffineMode
from stepsmith.tasks import Task
from stepsmith.verify.execute import ProgramRun, run_program
from stepsmith.verify.pool import DEFAULT_TIMEOUT_S, VerifierError, VerifierPool
from stepsmith.verify.runner import check_candidate as verify_in_process
from stepsmith.verify.verdict import VERIFIER_VERSION, BindingResult, FailureKind, Verdict, Verifier

__all__ = ["VERIFIER_VERSION", "BindingResult", "FailureKind", "ProgramRun", "Verdict", "Verifier",
           "VerifierError", "VerifierPool", "default_pool", "run_program", "verify",
           "verify_in_process", "verify_many"]

_default_pool: VerifierPool | None = None
_default_lock = threading.Lock()


def default_pool() -> VerifierPool:
    """The shared module-level pool (2 workers), created on first use."""
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool._closed:
            _default_pool = VerifierPool(workers=2)
        return _default_pool


@atexit.register
def _close_default_pool() -> None:
    if _default_pool is not None:
        _default_pool.close()


def verify(task: Task, impl_source: str, *, affine: AffineMode = "strict",
           pool: VerifierPool | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Verdict:
    """Verify a candidate `impl` for a loaded `task` (callers resolve names and paths once,
    e.g. with `stepsmith.tasks.suite.get_task`)."""
    return (pool or default_pool()).verify(task, impl_source, affine=affine, timeout_s=timeout_s)


def verify_many(items: list[tuple[Task, str]], *, affine: AffineMode = "strict",
                pool: VerifierPool | None = None,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Verdict]:
    """Verify `(task, impl_source)` pairs in parallel across the pool; results in input order."""
    return (pool or default_pool()).verify_many(items, affine=affine, timeout_s=timeout_s)

