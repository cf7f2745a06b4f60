"""Checking one binding's outputs against the task's references: count, element types,
symbolic shapes, data layout, then values within the instance's tolerance (`tolerance.py`).

Separate from execution so the rule that decides the reward reads in one screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stepsmith.step.dims import Dim
from stepsmith.step.dtypes import Buffer, ElemType, Multihot, TupleType
from stepsmith.step.registry import REGISTRY, Primitive
from stepsmith.step.stream import Stream
from stepsmith.tasks.instance import ExpectedOutput
from stepsmith.verify.hints import value_hint
from stepsmith.verify.tolerance import compare, fmt_value, format_index
from stepsmith.verify.verdict import FailureKind


def stream_sig(dtype: ElemType, shape: Sequence[Dim]) -> str:
    """`Strm<Buffer(fp32, [D]), rank 1, [N, M]>`, the notation of the language spec."""
    shape = list(shape)
    return f"Strm<{dtype}, rank {len(shape) - 1}, [{', '.join(str(d) for d in shape)}]>"


def _dim_names(dtype: ElemType, shape: Sequence[Dim]) -> list[str]:
    """Names of the axes of one field's tensor, outermost first (for the worst element's index)."""
    names = [str(d) for d in reversed(list(shape))]
    elem = dtype
    if isinstance(dtype, Buffer):
        names += [str(d) for d in reversed(dtype.shape)]
        elem = dtype.elem
    if isinstance(elem, Multihot):
        names.append(str(elem.n))
    return names


def _as_output_list(result: Any) -> list[Any] | None:
    if isinstance(result, Stream):
        return [result]
    if isinstance(result, tuple | list):
        return list(result)
    return None


def describe(x: Any) -> str:
    """What the program returned, in the model's terms."""
    if isinstance(x, Stream):
        return stream_sig(x.dtype, x.shape)
    if isinstance(x, list | tuple):
        return f"a {type(x).__name__} of {len(x)} items"
    if isinstance(x, Primitive) and type(x).__name__ in REGISTRY:
        return (
            f"the primitive step.{type(x).__name__}(...) itself, not a stream "
            "(call `.apply(...)` on it)"
        )
    article = "an" if type(x).__name__[:1].lower() in "aeiou" else "a"
    return f"{article} {type(x).__name__} ({x!r:.60})"


@dataclass
class OutputCheck:
    """Failure of one binding's outputs (None when they match)."""

    kind: FailureKind
    message: str


def _fail(message: str) -> tuple[OutputCheck, None, None]:
    return OutputCheck(FailureKind.output_mismatch, message), None, None


def check_outputs(result: Any, expected: list[ExpectedOutput], rtol: float, atol: float,
                  where: str) -> tuple[OutputCheck | None, float | None, float | None]:
    """Compare the program's return value with the expected outputs of one binding.

    Returns (failure or None, worst absolute error, worst relative error)."""
    names = ", ".join(f"'{e.name}'" for e in expected)
    outs = _as_output_list(result)
    if result is None:
        return _fail("The program returned nothing; it must `return` the output stream(s) "
                     f"{names}.")
    if outs is None or len(outs) != len(expected):
        want = (f"1 output stream ({names})" if len(expected) == 1
                else f"{len(expected)} output streams in this order: {names}")
        return _fail(f"Wrong number of outputs: expected {want}, found {describe(result)}.")
    worst_abs = worst_rel = 0.0
    for pos, (out, exp) in enumerate(zip(outs, expected, strict=True)):
        exp_sig = stream_sig(exp.dtype, exp.shape)
        if not isinstance(out, Stream):
            return _fail(f"output '{exp.name}' (return position {pos}): expected {exp_sig}, "
                         f"found {describe(out)}.")
        if out.dtype != exp.dtype or tuple(out.shape) != tuple(exp.shape):
            what = []
            if out.dtype != exp.dtype:
                what.append(f"element type {out.dtype} instead of {exp.dtype}")
            if len(out.shape) != len(exp.shape):
                what.append(f"rank {len(out.shape) - 1} instead of {len(exp.shape) - 1}")
            elif tuple(out.shape) != tuple(exp.shape):
                what.append("shape differs (shapes are innermost first)")
            other = next((o.name for o in expected if o is not exp and o.dtype == out.dtype
                          and tuple(o.shape) == tuple(out.shape)), None)
            if other is not None:
                what.append(f"it has the type of output '{other}': return the outputs in the "
                            f"order {names}")
            return _fail(f"output '{exp.name}': expected {exp_sig}, found "
                         f"{stream_sig(out.dtype, out.shape)} ({'; '.join(what)}).")
        found_fields = out.data if isinstance(out.data, tuple) else (out.data,)
        exp_fields = tuple(exp.values)
        fields = list(exp.dtype.fields) if isinstance(exp.dtype, TupleType) else [exp.dtype]
        if len(found_fields) != len(exp_fields):
            return _fail(f"output '{exp.name}': expected {len(exp_fields)} tuple field(s), "
                         f"found {len(found_fields)}.")
        for fi, (f, e) in enumerate(zip(found_fields, exp_fields, strict=True)):
            label = f"output '{exp.name}'" + (f" field {fi}" if len(exp_fields) > 1 else "")
            if tuple(f.shape) != tuple(e.shape):
                return _fail(f"{label}: data has shape {tuple(f.shape)} but the reference has "
                             f"{tuple(e.shape)} at {where} (type {exp_sig}).")
            c = compare(f, e, rtol=rtol, atol=atol)
            worst_abs = max(worst_abs, c.max_abs_error)
            worst_rel = max(worst_rel, c.max_rel_error)
            if not c.ok:
                dn = _dim_names(fields[fi] if fi < len(fields) else exp.dtype, exp.shape)
                msg = (f"{label} differs from the reference at {where}: {c.n_bad} of {c.n_total} "
                       f"elements are outside the tolerance |found - expected| <= "
                       f"{atol:g} + {rtol:g} * {fmt_value(c.scale)} (max |expected|). "
                       f"Worst element at {format_index(c.index, dn)} (tensor index, outermost "
                       f"first): expected {fmt_value(c.expected_value)}, found "
                       f"{fmt_value(c.found_value)}; max abs error {fmt_value(c.max_abs_error)}, "
                       f"max error relative to max |expected| {fmt_value(c.max_rel_error)}.")
                hint = value_hint(f, e, c.bound)
                if hint:
                    msg += " " + hint
                return OutputCheck(FailureKind.value_mismatch, msg), worst_abs, worst_rel
    return None, worst_abs, worst_rel
