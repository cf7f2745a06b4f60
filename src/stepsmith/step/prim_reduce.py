"""Stateful folds: Accum (emit the final state) and Scan (emit every state).

Fast path: fold sequentially over the k reduced (inner) dims only, batching the fn with vmap
over every outer position at once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from stepsmith.step.execfn import call_one, fold_batched, init_state
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
    check_inner,
    given_fn,
    need_int,
    primitive,
)
from stepsmith.step.stream import Stream, SType


class _Fold(Primitive):
    """Shared parameters/typing of Accum and Scan."""

    emit_all: bool = False

    def __init__(self, fn: Fn | None = None, b: int | None = None) -> None:
        self.fn = fn
        self.b = b
        self.k = need_int(self, "b", b, meaning="the number of inner dims to fold over")

    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        s = ins[0]
        check_inner(self, s, "b", self.k, "The outermost dim can never be reduced: Promote a "
                    "size-1 outer dim first (dimension placeholder idiom), then Flatten it away.")
        fn = check_fn(self, self.fn, s, stateful=True)
        shape = tuple(s.shape) if self.emit_all else tuple(s.shape[self.k:])
        return [(fn.output_dtype, shape)]

    def _split(self, s: Stream) -> tuple[tuple[int, ...], tuple[int, ...]]:
        t = s.fields[0]
        r1 = len(s.shape)
        return tuple(t.shape[: r1 - self.k]), tuple(t.shape[r1 - self.k: r1])

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        s = ins[0]
        fn = given_fn(self, self.fn)
        ctx = env.ctx(fn)
        outer, inner = self._split(s)
        bo, ki = math.prod(outer), math.prod(inner)
        r1 = len(s.shape)
        xs = [t.reshape(bo, ki, *t.shape[r1:]) for t in s.fields]
        state = init_state(fn, ctx, (bo,))
        res = fold_batched(fn, xs, state, ctx, self.emit_all)
        if not self.emit_all:
            return [tuple(st.reshape(*outer, *st.shape[1:]) for st in res)]
        return [tuple(st.reshape(*outer, *inner, *st.shape[2:]) for st in res)]

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        s = ins[0]
        fn = given_fn(self, self.fn)
        ctx = env.ctx(fn)
        outer, inner = self._split(s)
        init = init_state(fn, ctx, ())
        shapes = [tuple(t.shape) for t in init]
        full = (*outer, *inner) if self.emit_all else outer
        res = [torch.empty((*full, *sh), dtype=ctx.dtype) for sh in shapes]
        for o in itertools.product(*(range(d) for d in outer)):
            state = [t.clone() for t in init]
            for i in itertools.product(*(range(d) for d in inner)):  # innermost fastest
                state = list(call_one(fn, [t[o + i] for t in s.fields], state, ctx))
                if self.emit_all:
                    for f, st in enumerate(state):
                        res[f][o + i] = st
            if not self.emit_all:
                for f, st in enumerate(state):
                    res[f][o] = st
        return [tuple(res)]


@primitive(
    signature="step.Accum(fn=f, b=k).apply(s)",
    params=(Param("fn", "fn_stateful"), Param("b", "axis")),
    description=(
        "Reduce the k innermost dims with the stateful fn f: `Strm<T, r, [D0..Dr]>` -> "
        "`Strm<f.output, r-k, [Dk..Dr]>`, 0 < k <= r. For each outer index, start from f's "
        "init and fold `state = f(state, element)` over the inner k dims in stream order "
        "(innermost fastest); emit the final state. The outermost dim can never be reduced "
        "(Promote a size-1 placeholder dim first)."
    ),
    example=Example(
        program="return step.Accum(fn=fn_sum, b=1).apply(A)",
        inputs=(("A", "fp32", ("K", "M")),),
        fns=(FnSpec("fn_sum", "return [state[0] + input[0]]", "fp32", "fp32", init=[0]),),
        reference="A.sum(-1)",
        explanation="row sums: [K, M] -> [M], summing over the innermost dim K",
    ),
    category="reduction",
)
class Accum(_Fold):
    emit_all = False


@primitive(
    signature="step.Scan(fn=f, b=k).apply(s)",
    params=(Param("fn", "fn_stateful"), Param("b", "axis")),
    description=(
        "Like Accum but emit the state after every element (a running fold): "
        "`Strm<T, r, S>` -> `Strm<f.output, r, S>`, 0 < k <= r. The state restarts from init "
        "at every rank-k boundary."
    ),
    example=Example(
        program="return step.Scan(fn=fn_sum, b=1).apply(A)",
        inputs=(("A", "fp32", ("K", "M")),),
        fns=(FnSpec("fn_sum", "return [state[0] + input[0]]", "fp32", "fp32", init=[0]),),
        reference="torch.cumsum(A, dim=-1)",
        explanation="running sums along K, restarting for each of the M rows",
    ),
    category="reduction",
)
class Scan(_Fold):
    emit_all = True
