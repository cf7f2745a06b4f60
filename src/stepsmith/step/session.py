"""The execution context: size binding, executor choice and affine mode.

A context variable (not a global) so worker threads and nested sessions stay independent.
"""

from __future__ import annotations

import contextvars
import itertools
from collections.abc import Mapping
from typing import Literal, TypeGuard, get_args

from stepsmith.step.errors import StepArgumentError

Executor = Literal["fast", "oracle"]
AffineMode = Literal["strict", "warn", "off"]

# The paper's one size binding: the first binding of every task (`tasks.bindings`), the one
# `stepsmith demo` and the mutants' hard-coded sizes use. Defined here, below both.
PAPER_BINDING: Mapping[str, int] = {"M": 5, "N": 7, "K": 9, "D": 16}

_EXECUTORS: tuple[str, ...] = get_args(Executor)
_AFFINE: tuple[str, ...] = get_args(AffineMode)


def is_affine_mode(value: object) -> TypeGuard[AffineMode]:
    """True for an affine mode `Session` accepts; narrows a string read from a CLI or file."""
    return value in _AFFINE


class Session:
    """`with Session(binding={"M": 5}, executor="fast", affine="strict"): ...`.

    `binding` is copied; Partition adds its fresh dynamic symbols to it while running.
    `warnings` collects affine violations in `affine="warn"` mode.
    """

    def __init__(self, binding: Mapping[str, int] | None = None, executor: Executor = "fast",
                 affine: AffineMode = "strict") -> None:
        for what, value, known in (("executor", executor, _EXECUTORS),
                                   ("affine mode", affine, _AFFINE)):
            if value not in known:
                raise StepArgumentError(f"unknown {what} {value!r}", expected=" or ".join(known),
                                        found=repr(value), primitive="Session")
        self.binding: dict[str, int] = {}
        for k, v in dict(binding or {}).items():
            if isinstance(v, bool) or not isinstance(v, int):
                try:
                    v = int(v)
                except (TypeError, ValueError):
                    raise StepArgumentError(
                        f"binding value for {k!r} must be an int", found=repr(v),
                        expected="an int", primitive="Session",
                    ) from None
            self.binding[str(k)] = v
        self.executor: Executor = executor
        self.affine: AffineMode = affine
        self.warnings: list[str] = []
        self._counter = itertools.count(1)
        self._tokens: list[contextvars.Token[Session | None]] = []

    def next_id(self) -> int:
        """Sequence number for readable derived-stream names (`Accum#3(E2)`)."""
        return next(self._counter)

    def __enter__(self) -> Session:
        self._tokens.append(_current.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop())

    def __repr__(self) -> str:
        return (f"Session(binding={self.binding}, executor={self.executor!r}, "
                f"affine={self.affine!r})")


_current: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "stepsmith_step_session", default=None
)
_default = Session()


def current_session() -> Session:
    """The innermost active Session, or a process-wide default (empty binding, fast, strict)."""
    return _current.get() or _default
