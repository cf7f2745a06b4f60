"""Element-wise primitives: Map (with auto-zip), Zip, Copy, Identity."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch

from stepsmith.step.dims import shape_str
from stepsmith.step.dtypes import make_tuple
from stepsmith.step.errors import StepShapeError
from stepsmith.step.execfn import call_batched, call_one, empty_outputs
from stepsmith.step.fn import Fn
from stepsmith.step.registry import (
    Env,
    Example,
    Fields,
    FnSpec,
    OutType,
    Param,
    Primitive,
    check_fn,
    given_fn,
    need_int,
    primitive,
)
from stepsmith.step.stream import Stream, SType, display


def _zip_types(prim: Primitive, ins: Sequence[SType]) -> SType:
    """Typing of position-by-position pairing: same rank and shape, flat tuple element."""
    first = ins[0]
    for s in ins[1:]:
        if s.shape != first.shape:
            raise StepShapeError(
                f"cannot zip streams of different shapes: {display(first)} is "
                f"{first.type_str()} but {display(s)} is {s.type_str()}",
                primitive=prim.label, stream=display(s),
                expected=f"shape {shape_str(first.shape)}", found=f"shape {shape_str(s.shape)}",
                hint="streams are paired position by position; reshape/repeat one so both "
                "shapes agree",
            )
    names = ", ".join(s.name for s in ins)
    return SType(make_tuple([s.dtype for s in ins]), first.shape, name=f"Zip({names})")


def _outer(ins: Sequence[Stream]) -> tuple[int, ...]:
    return tuple(ins[0].fields[0].shape[: len(ins[0].shape)])


def _fields(ins: Sequence[Stream]) -> list[torch.Tensor]:
    return [t for s in ins for t in s.fields]


@primitive(
    signature="step.Map(fn=f).apply(s)  |  step.Map(fn=f).apply((a, b, ...))",
    params=(Param("fn", "fn_stateless"),), args="streams",
    description=(
        "Apply the stateless fn f to every element: `Strm<T, r, S>` -> `Strm<f.output, r, S>`; "
        "f's declared input type must equal T. With a tuple of streams (same shape) the "
        "streams are zipped first and f receives one input field per stream."
    ),
    example=Example(
        program="return step.Map(fn=fn_mul).apply((A, B))",
        inputs=(("A", "fp32", ("N", "M")), ("B", "fp32", ("N", "M"))),
        fns=(FnSpec("fn_mul", "return [input[0] * input[1]]", ["fp32", "fp32"], "fp32"),),
        reference="A * B",
        explanation="element-wise product of two [N, M] streams",
    ),
    category="elementwise",
)
class Map(Primitive):
    def __init__(self, fn: Fn | None = None) -> None:
        self.fn = fn

    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        src = _zip_types(self, ins) if len(ins) > 1 else ins[0]
        fn = check_fn(self, self.fn, src, stateful=False)
        return [(fn.output_dtype, tuple(src.shape))]

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        fn = given_fn(self, self.fn)
        outer = _outer(ins)
        n = math.prod(outer)
        r1 = len(outer)
        flat = [t.reshape(n, *t.shape[r1:]) for t in _fields(ins)]
        res = call_batched(fn, flat, None, env.ctx(fn))
        return [tuple(o.reshape(*outer, *o.shape[1:]) for o in res)]

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        fn = given_fn(self, self.fn)
        ctx = env.ctx(fn)
        outer = _outer(ins)
        fields = _fields(ins)
        if math.prod(outer) == 0:
            res = empty_outputs(fn, [t.reshape(0, *t.shape[len(outer):]) for t in fields], None,
                                ctx)
            return [tuple(o.reshape(*outer, *o.shape[1:]) for o in res)]
        rows = [call_one(fn, [t[idx] for t in fields], None, ctx)
                for idx in itertools.product(*(range(d) for d in outer))]
        return [tuple(torch.stack([r[i] for r in rows]).reshape(*outer, *rows[0][i].shape)
                      for i in range(fn.n_out))]


@primitive(
    signature="step.Zip().apply((a, b, ...))",
    args="zip",
    description=(
        "Pair elements position by position. All streams need the same rank and shape; the "
        "element type is the flat tuple of the inputs' types (zipping a tuple with a tuple "
        "concatenates the fields)."
    ),
    example=Example(
        program=("Z = step.Zip().apply((A, B))\n"
                 "return step.Map(fn=fn_sub).apply(Z)"),
        inputs=(("A", "fp32", ("N", "M")), ("B", "fp32", ("N", "M"))),
        fns=(FnSpec("fn_sub", "return [input[0] - input[1]]", ["fp32", "fp32"], "fp32"),),
        reference="A - B",
        explanation="zip two streams into a stream of (fp32, fp32) tuples, then subtract",
    ),
    category="elementwise",
)
class Zip(Primitive):
    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        z = _zip_types(self, ins)
        return [(z.dtype, tuple(z.shape))]

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        return [tuple(_fields(ins))]

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        return [tuple(t.clone() for t in _fields(ins))]


@primitive(
    signature="a, b = step.Copy().apply(s)",
    params=(Param("n", "count", required=False, default=2),), outputs="n",
    description=(
        "Duplicate a stream: consumes s once and returns two streams identical to s. This is the "
        "only legal way to use a stream twice (each stream may be consumed by one primitive). "
        "For three uses chain two Copies. `Copy(n=3)` returns three copies."
    ),
    example=Example(
        program=("A1, A2 = step.Copy().apply(A)\n"
                 "return step.Map(fn=fn_mul).apply((A1, A2))"),
        inputs=(("A", "fp32", ("N", "M")),),
        fns=(FnSpec("fn_mul", "return [input[0] * input[1]]", ["fp32", "fp32"], "fp32"),),
        reference="A * A",
        explanation="square every element by copying the stream and multiplying the copies",
    ),
    category="copy",
)
class Copy(Primitive):
    def __init__(self, n: int = 2) -> None:
        self.n = n
        need_int(self, "n", n, low=2)

    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        return [(ins[0].dtype, tuple(ins[0].shape))] * self.n

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        return [ins[0].fields] * self.n

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        return [tuple(t.clone() for t in ins[0].fields) for _ in range(self.n)]

    def _wrap(self, outs: list[Stream]) -> Any:
        return tuple(outs)


@primitive(
    signature="step.Identity().apply(s)",
    description="Pass the stream through unchanged (consumes s, returns an identical stream).",
    example=Example(
        program="return step.Identity().apply(A)",
        inputs=(("A", "Buffer(fp32, [D])", ("M",)),),
        reference="A",
        explanation="the output equals the input",
    ),
    category="copy",
)
class Identity(Primitive):
    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        return [(ins[0].dtype, tuple(ins[0].shape))]

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        return [ins[0].fields]

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        return [tuple(t.clone() for t in ins[0].fields)]
