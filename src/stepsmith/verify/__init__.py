"""stepsmith.verify — the reward: a sandboxed, multi-binding verifier of STeP programs.

`verify(task, src)` runs the candidate in a warm sandboxed worker (a lazily created module-level
`VerifierPool`, closed at exit) at every binding of the task, and returns a `Verdict`.
`verify_in_process` runs the same check unsandboxed, for trusted programs (references, mutants).
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

import torch

from stepsmith.step.session import AffineMode, Executor
from stepsmith.verify.pool import DEFAULT_TIMEOUT_S, VerifierError, VerifierPool
from stepsmith.verify.runner import check_candidate
from stepsmith.verify.verdict import (
    VERIFIER_VERSION,
    BindingResult,
    FailureKind,
    Verdict,
    Verifier,
)

__all__ = [
    "VERIFIER_VERSION",
    "BindingResult",
    "FailureKind",
    "Verdict",
    "Verifier",
    "VerifierError",
    "VerifierPool",
    "default_pool",
    "verify",
    "verify_in_process",
    "verify_many",
]

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


def verify(
    task: Any,
    impl_source: str,
    *,
    affine: AffineMode = "strict",
    pool: VerifierPool | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Verdict:
    """Verify a candidate `impl` for `task` (a `Task`, a YAML path or a benchmark name)."""
    return (pool or default_pool()).verify(task, impl_source, affine=affine, timeout_s=timeout_s)


def verify_many(
    items: list[tuple[Any, str]],
    *,
    affine: AffineMode = "strict",
    pool: VerifierPool | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[Verdict]:
    """Verify `(task, impl_source)` pairs in parallel across the pool; results in input order."""
    return (pool or default_pool()).verify_many(items, affine=affine, timeout_s=timeout_s)


def verify_in_process(
    task: Any,
    impl_source: str,
    *,
    affine: AffineMode = "strict",
    executor: Executor = "fast",
    dtype: torch.dtype = torch.float64,
) -> Verdict:
    """Same check without the sandbox or time limit — only for trusted programs."""
    from stepsmith.verify.payload import task_payload

    key: str | None
    try:
        key = task_payload(task).key
    except (TypeError, OSError):
        key = None
    if isinstance(task, str) or not hasattr(task, "bindings"):
        from stepsmith.verify.payload import load_payload

        task = load_payload(task_payload(task))
    return check_candidate(task, impl_source, affine=affine, executor=executor, key=key, dtype=dtype)
