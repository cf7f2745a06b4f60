"""The verifier's wording: how a failure is classified and told to the model.

Kept apart from execution (`execute.py`) and output checking (`checking.py`) so the words an
LLM reads in a repair turn can be read, and changed, in one place. Every text that can carry
program-controlled content goes through `clip` (a hostile program can raise a 200 MB message).
"""

from __future__ import annotations

import re
from typing import Any

from stepsmith.limits import CpuTimeExceeded, clip
from stepsmith.step.docs import AFFINE_RULE_BRIEF
from stepsmith.step.errors import (
    StepAffineError,
    StepDtypeError,
    StepError,
    StepRankError,
    StepRuntimeError,
    StepShapeError,
)
from stepsmith.step.fn import Fn
from stepsmith.verify.verdict import BindingResult, FailureKind


class CandidateTimeout(CpuTimeExceeded):
    """Raised inside a worker by the soft CPU-time alarm while the candidate runs."""


def at_line(lines: list[str], line: int | None) -> str:
    """`line N: <text>` + newline for the program's `line` (1-based), or nothing when the line
    is unknown, out of range or blank."""
    text = lines[line - 1].strip() if line is not None and 1 <= line <= len(lines) else ""
    return f"line {line}: {text}\n" if text else ""


def with_line(lines: list[str], line: int | None, e: BaseException) -> str:
    """The error text, prefixed with the offending line unless it already names it."""
    msg = str(e)
    if line is not None and msg.startswith(f"line {line}"):
        return msg
    return f"{at_line(lines, line)}{msg}"


def binding_desc(values: dict[str, int], seed: int | None = None) -> str:
    """`M=5, N=7, seed 42`: a binding as the feedback names it."""
    parts = [f"{k}={v}" for k, v in values.items()]
    if seed is not None:
        parts.append(f"seed {seed}")
    return ", ".join(parts)


_MEMORY_MARKERS = ("can't allocate memory", "cannot allocate memory", "out of memory",
                   "defaultcpuallocator", "bad_alloc", "not enough memory")


def classify_memory(exc: BaseException) -> bool:
    """Whether an exception is an allocation failure (torch reports some as RuntimeError)."""
    return isinstance(exc, MemoryError) or any(m in str(exc).lower() for m in _MEMORY_MARKERS)


def classify(exc: BaseException) -> FailureKind:
    """Map an exception raised by a candidate to a failure kind."""
    if isinstance(exc, CandidateTimeout):
        return FailureKind.timeout
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and classify_memory(exc)):
        return FailureKind.memory
    if isinstance(exc, StepAffineError):
        return FailureKind.affine
    if isinstance(exc, StepShapeError | StepRankError):
        return FailureKind.shape_error
    if isinstance(exc, StepDtypeError):
        return FailureKind.dtype_error
    if isinstance(exc, StepRuntimeError):
        return FailureKind.runtime_error
    if isinstance(exc, StepError | TypeError):
        return FailureKind.type_error
    return FailureKind.runtime_error


def exc_text(exc: BaseException, namespace: dict[str, Any] | None) -> str:
    """What the model reads about an exception its program raised (bounded)."""
    name = type(exc).__name__
    msg = clip(exc) or name  # a 61-character program can raise a 200 MB message
    if isinstance(exc, CandidateTimeout):
        return msg
    if isinstance(exc, NameError) and namespace is not None:
        fns = {k: v for k, v in namespace.items() if isinstance(v, Fn)}
        missing = exc.name
        by_name = {v.name: k for k, v in fns.items()}
        if missing in by_name and missing not in fns:
            msg += (f" — {missing} is the name of a fn; pass it by its func_name: "
                    f"fn={by_name[missing]}")
        msg += (f" (defined fns: {', '.join(sorted(fns)) or 'none'}; inputs are the function "
                "parameters)")
    if isinstance(exc, MemoryError | RuntimeError) and classify_memory(exc):
        m = re.search(r"tried to allocate (\d+) bytes", msg)
        what = f"tried to allocate {int(m.group(1)) / 1e9:.3g} GB" if m else "ran out of memory"
        return (f"MemoryError: the program {what}, more than the verifier's memory limit allows; "
                "check Repeat counts and Reshape sizes (a correct program needs only a few MB at "
                "these bindings)")
    return f"{name}: {msg}"


KIND_TITLE = {
    FailureKind.type_error: "Type error",
    FailureKind.shape_error: "Shape error",
    FailureKind.dtype_error: "Element type error",
    FailureKind.affine: f"Affine rule violated ({AFFINE_RULE_BRIEF})",
    FailureKind.runtime_error: "Runtime error",
    FailureKind.timeout: "Timeout",
    FailureKind.memory: "Memory limit exceeded",
    FailureKind.output_mismatch: "Output type/shape mismatch",
    FailureKind.value_mismatch: "Wrong values",
}


def feedback(kind: FailureKind, err: str, line: int | None, lines: list[str],
             results: list[BindingResult]) -> str:
    """The LLM-facing message: what failed, where in the program, and at which bindings."""
    failing = next((r for r in results if not r.passed), None)
    head = KIND_TITLE.get(kind, kind.value)
    if failing is not None and kind not in (FailureKind.value_mismatch, FailureKind.timeout):
        head += f" at binding '{failing.label}' ({binding_desc(failing.values)})"
    parts = [head + ":"]
    if line is not None:
        parts.append(at_line(lines, line).rstrip())
    parts.append(clip(err))
    if len(results) > 1 or any(r.passed for r in results):
        summary = ", ".join(f"{r.label} {'passed' if r.passed else 'FAILED'}" for r in results)
        parts.append(f"Bindings: {summary}.")
    return "\n".join(p for p in parts if p)
