"""The verifier's result types: what a candidate program earned and why.

A `Verdict` is the reward signal of the whole system (1 iff `passed`) and, through `feedback`,
the message an LLM reads in a repair turn. It is a pydantic model so it crosses process
boundaries, lands in SQLite and in reports as plain JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stepsmith.limits import MAX_MESSAGE_CHARS, clip

if TYPE_CHECKING:
    from stepsmith.tasks import Task

# Bump when a change can flip a verdict (tolerance, bindings, rules): stored verdicts and demo
# libraries record it so they can be re-verified.
VERIFIER_VERSION = "1.1"  # 1.1: one snippet scope per instance; precision-aware tolerance
MAX_WARNINGS = 20


class FailureKind(StrEnum):
    """Why a candidate was rejected (one per verdict: the first failure found)."""

    unparsable = "unparsable"  # the agent could not extract a program from the answer
    parse_error = "parse_error"  # Python syntax error in the program
    disallowed = "disallowed"  # construct outside the STeP allow-list (imports, dunders, ...)
    type_error = "type_error"  # wrong fn kind / bad primitive argument / wrong call structure
    shape_error = "shape_error"  # rank or shape rule of a primitive violated
    dtype_error = "dtype_error"  # element type does not match a fn's declared type
    affine = "affine"  # a stream consumed more than once
    runtime_error = "runtime_error"  # any other exception while running the program
    timeout = "timeout"  # CPU-time limit exceeded
    memory = "memory"  # memory limit exceeded (or worker killed by the OS)
    output_mismatch = "output_mismatch"  # wrong number/type/shape of outputs
    value_mismatch = "value_mismatch"  # outputs differ from the PyTorch reference


class BindingResult(BaseModel):
    """Outcome of running the candidate at one size binding."""

    model_config = ConfigDict(validate_assignment=True)  # `br.error = ...` is bounded too
    label: str
    passed: bool
    seconds: float = 0.0
    error: str | None = None
    kind: FailureKind | None = None
    values: dict[str, int] = Field(default_factory=dict)
    seed: int | None = None
    max_abs_error: float | None = None
    max_rel_error: float | None = None

    @field_validator("error")
    @classmethod
    def _bounded_error(cls, value: str | None) -> str | None:
        """Error text carries program-controlled values (reprs): keep it bounded."""
        return None if value is None else clip(value)


class Verdict(BaseModel):
    """The verifier's decision on one candidate program for one task."""

    model_config = ConfigDict(validate_assignment=True)  # later `v.feedback = ...` is bounded too
    passed: bool
    kind: FailureKind | None = None
    feedback: str = ""
    bindings: list[BindingResult] = Field(default_factory=list)
    seconds: float = 0.0
    verifier_version: str = VERIFIER_VERSION
    task: str = ""
    line: int | None = None  # 1-based line of the program body the feedback points at
    warnings: list[str] = Field(default_factory=list)  # e.g. affine violations in "warn" mode

    @field_validator("feedback")
    @classmethod
    def _bounded_feedback(cls, value: str) -> str:
        """Feedback goes to the LLM, the database and `--json`: one fixed cap everywhere."""
        return clip(value)

    @field_validator("warnings")
    @classmethod
    def _bounded_warnings(cls, value: list[str]) -> list[str]:
        """At most `MAX_WARNINGS` warnings, each bounded like feedback."""
        kept = [clip(w, MAX_MESSAGE_CHARS // 4) for w in value[:MAX_WARNINGS]]
        if len(value) > MAX_WARNINGS:
            kept.append(f"… ({len(value) - MAX_WARNINGS} more warnings)")
        return kept

    @property
    def reward(self) -> int:
        """The paper's binary reward."""
        return 1 if self.passed else 0

    @classmethod
    def failure(cls, kind: FailureKind, feedback: str, *, task: str = "", line: int | None = None,
                bindings: list[BindingResult] | None = None, seconds: float = 0.0,
                warnings: list[str] | None = None) -> Verdict:
        """A rejected verdict; keeps call sites short."""
        return cls(passed=False, kind=kind, feedback=feedback, task=task, line=line,
                   bindings=bindings or [], seconds=seconds, warnings=warnings or [])


class Verifier(Protocol):
    """What an agent needs from a verifier: a verdict for one candidate of one task.
    `VerifierPool` (sandboxed, the reward) is the real one; `verify` may also be async."""

    def verify(self, task: Task, impl_source: str, /) -> Verdict | Awaitable[Verdict]: ...
