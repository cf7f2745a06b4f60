"""Routing primitives (MoE): Partition and Merge, driven by a Multihot selector stream.

Fast path: boolean masks / index gathers over all selector positions at once (no Python lists
of chunks); the oracle walks the selector in stream order exactly as the spec describes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch

from stepsmith.step.dims import Dim, fresh_dim, shape_str
from stepsmith.step.dtypes import Multihot
from stepsmith.step.errors import StepArgumentError, StepDtypeError, StepShapeError
from stepsmith.step.execfn import call_batched, call_one, init_state
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
    primitive,
)
from stepsmith.step.session import current_session
from stepsmith.step.stream import Stream, SType, display


def _check_selector(prim: Primitive, sel: SType) -> Multihot:
    if not isinstance(sel.dtype, Multihot):
        raise StepDtypeError(
            "the selector stream must carry Multihot elements", primitive=prim.label,
            stream=display(sel), expected="Multihot(fp32, E) elements", found=str(sel.dtype),
            hint="pass (data, selector) in that order; the selector is a stream of multi-hot "
            "routing vectors",
        )
    return sel.dtype


def _count_matches(prim: Primitive, n: int | Dim, e: Dim, sel: SType, what: str) -> None:
    binding = current_session().binding
    nd = n if isinstance(n, Dim) else Dim.const(n)
    if nd == e:
        return
    nv, ev = nd.try_evaluate(binding), e.try_evaluate(binding)
    if nv is None or ev is None or nv == ev:
        return  # checked again on the data at run time
    raise StepShapeError(
        f"{what} must equal the selector's number of experts E = {e}" + (
            f" = {ev}" if str(ev) != str(e) else ""),
        primitive=prim.label, stream=display(sel), expected=f"{ev}", found=f"{nv}",
    )


def _positions(prim: Primitive, sel: Stream, n: int, given: str) -> torch.Tensor:
    """Selector as a (P, E) matrix, P = selector positions in stream order; E must be n."""
    t = sel.fields[0]
    if t.shape[-1] != n:
        raise StepShapeError(
            f"the selector data has {t.shape[-1]} experts per element but {given}",
            primitive=prim.label, stream=display(sel), expected=str(n), found=str(t.shape[-1]),
        )
    return t.reshape(math.prod(t.shape[:-1]), n)


@primitive(
    signature="parts = step.Partition(N=n).apply((data, sel))",
    params=(Param("N", "count"),), args="pair", outputs="N", arg_names=("data", "sel"),
    description=(
        "Route chunks of data to n output streams. data `Strm<T, a, Sd>`, sel "
        "`Strm<Multihot(E), b, Ss>` with `Sd[a-b:] == Ss` and n == E. Walking sel in stream "
        "order, each rank-(a-b) chunk of data is appended to every output i whose selector bit "
        "is 1. Returns a list of n streams `Strm<T, a-b, Sd[:a-b] + [len_i]>`, where len_i is a "
        "fresh dynamic dim: the number of chunks output i received (possibly 0)."
    ),
    example=Example(
        program=("parts = step.Partition(N=E_value).apply((X, S))\n"
                 "return parts[0]"),
        inputs=(("X", "fp32", ("D", "M")), ("S", "Multihot(fp32, E)", ("M",))),
        reference="X[S[:, 0] != 0]",
        explanation=("rows of X ([D, M]) go to expert i when S[m, i] == 1; expert 0 gets "
                     "[D, len_0]"),
    ),
    category="routing",
)
class Partition(Primitive):
    def __init__(self, N: Any = None) -> None:  # noqa: N803
        self.N = N
        if isinstance(N, bool) or not isinstance(N, int | Dim) or (isinstance(N, int) and N < 1):
            raise StepArgumentError(
                "N= must be the number of experts (a positive int such as E_value)",
                primitive=self.label, expected="N=E_value", found=repr(N),
            )

    def _n(self) -> int:
        if isinstance(self.N, int):
            return self.N
        v = self.N.try_evaluate(current_session().binding)
        if v is None:
            raise StepShapeError(
                f"N={self.N} has no value in the Session binding", primitive=self.label,
                hint="pass an int, e.g. N=E_value",
            )
        return v

    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        data, sel = ins
        mh = _check_selector(self, sel)
        a, b = data.rank, sel.rank
        if b > a or data.shape[a - b:] != sel.shape:
            raise StepShapeError(
                f"the selector's shape must equal the outer dims of the data: data "
                f"{display(data)} is {data.type_str()}, selector {display(sel)} is "
                f"{sel.type_str()}",
                primitive=self.label, stream=display(data),
                expected=f"data shape ending with {shape_str(sel.shape)}",
                found=f"data shape {shape_str(data.shape)}",
            )
        _count_matches(self, self.N, mh.n, sel, f"N={self.N}")
        n = self._n()
        chunk = tuple(data.shape[: a - b])
        return [(data.dtype, chunk + (fresh_dim("P"),)) for _ in range(n)]

    def _prepare(self, ins: list[Stream]) -> tuple[list[torch.Tensor], torch.Tensor]:
        data, sel = ins
        pos = _positions(self, sel, self._n(), f"N={self.N}")
        nb = len(sel.shape)
        fields = [t.reshape(pos.shape[0], *t.shape[nb:]) for t in data.fields]
        return fields, pos

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        fields, pos = self._prepare(ins)
        res = []
        for i, (_, shape) in enumerate(outs):
            idx = torch.nonzero(pos[:, i]).flatten()  # ascending: stream order is kept
            part = tuple(f.index_select(0, idx) for f in fields)
            env.session.binding[shape[-1].symbols[0]] = int(part[0].shape[0])
            res.append(part)
        return res

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        fields, pos = self._prepare(ins)
        lists: list[list[tuple[torch.Tensor, ...]]] = [[] for _ in outs]
        for p in range(pos.shape[0]):  # selector positions in stream order
            for i in range(len(outs)):
                if float(pos[p, i]) != 0.0:
                    lists[i].append(tuple(f[p].clone() for f in fields))
        res = []
        for i, (_, shape) in enumerate(outs):
            env.session.binding[shape[-1].symbols[0]] = len(lists[i])
            if lists[i]:
                res.append(tuple(torch.stack([c[f] for c in lists[i]])
                                 for f in range(len(fields))))
            else:
                res.append(tuple(f.new_zeros((0, *f.shape[1:])) for f in fields))
        return res

    def _wrap(self, outs: list[Stream]) -> Any:
        return list(outs)


@primitive(
    signature="step.Merge(fn=f).apply((parts, sel))",
    params=(Param("fn", "fn_stateful"),), args="parts_sel", arg_names=("parts", "sel"),
    description=(
        "Inverse of Partition with a reduction. parts: list of n streams `Strm<T, a, C + "
        "[len_i]>`; sel `Strm<Multihot(E), b, Ss>`; n == E; f is stateful with input type T. "
        "For each selector element in stream order, take the next chunk from every selected "
        "part (ascending index) and fold them element-wise with f from init; an all-zero "
        "selector emits init. Out `Strm<f.output, a+b, C + Ss>`."
    ),
    example=Example(
        program=("S1, S2 = step.Copy().apply(S)\n"
                 "parts = step.Partition(N=E_value).apply((X, S1))\n"
                 "outs = [step.Map(fn=f).apply(p) for f, p in zip([fn_x1, fn_x2, fn_x3], parts)]\n"
                 "return step.Merge(fn=fn_add).apply((outs, S2))"),
        inputs=(("X", "fp32", ("D", "M")), ("S", "Multihot(fp32, E)", ("M",))),
        fns=(FnSpec("fn_x1", "return [input[0] * 1.0]", "fp32", "fp32"),
             FnSpec("fn_x2", "return [input[0] * 2.0]", "fp32", "fp32"),
             FnSpec("fn_x3", "return [input[0] * 3.0]", "fp32", "fp32"),
             FnSpec("fn_add", "return [state[0] + input[0]]", "fp32", "fp32", init=[0])),
        reference="X * (S * torch.tensor([1.0, 2.0, 3.0])).sum(-1, keepdim=True)",
        explanation=("MoE: each row goes to its selected experts (expert i multiplies by i+1) "
                     "and the expert outputs are summed back in row order"),
    ),
    category="routing",
)
class Merge(Primitive):
    def __init__(self, fn: Fn | None = None) -> None:
        self.fn = fn

    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        parts, sel = list(ins[:-1]), ins[-1]
        mh = _check_selector(self, sel)
        first = parts[0]
        for p in parts[1:]:
            if p.dtype != first.dtype or p.shape[:-1] != first.shape[:-1]:
                raise StepShapeError(
                    f"all parts need the same element type and chunk shape: "
                    f"{display(first)} is {first.type_str()} but {display(p)} is "
                    f"{p.type_str()}", primitive=self.label, stream=display(p),
                    expected=f"{first.dtype} with chunk {shape_str(first.shape[:-1])}",
                    found=f"{p.dtype} with chunk {shape_str(p.shape[:-1])}",
                )
        _count_matches(self, len(parts), mh.n, sel, f"the number of parts ({len(parts)})")
        fn = check_fn(self, self.fn, first, stateful=True)
        return [(fn.output_dtype, tuple(first.shape[:-1]) + tuple(sel.shape))]

    def _prepare(self, ins: list[Stream]) -> tuple[list[Stream], torch.Tensor, list[torch.Tensor]]:
        parts, sel = ins[:-1], ins[-1]
        pos = _positions(self, sel, len(parts), f"{len(parts)} parts were given")
        rows = []
        for i, p in enumerate(parts):
            r = torch.nonzero(pos[:, i] != 0).flatten()
            have = p.concrete_shape()[-1]
            if have != r.numel():
                raise StepShapeError(
                    f"part {i} {display(p)} has {have} chunks but the selector selects "
                    f"expert {i} at {r.numel()} positions",
                    primitive=self.label, stream=display(p), expected=f"{r.numel()} chunks",
                    found=f"{have} chunks",
                    hint="Merge must get the parts produced by a Partition with a copy of the "
                    "same selector",
                )
            rows.append(r)
        return parts, pos, rows

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        parts, pos, rows = self._prepare(ins)
        fn = given_fn(self, self.fn)
        ctx = env.ctx(fn, parts[0])
        a1 = len(parts[0].shape)  # chunk dims = a1 - 1
        chunk = tuple(parts[0].fields[0].shape[1:a1])
        cn = math.prod(chunk)
        npos = pos.shape[0]
        state = [s.reshape(npos, cn, *s.shape[1:]) for s in init_state(fn, ctx, (npos * cn,))]
        for p, r in zip(parts, rows, strict=True):
            if r.numel() == 0:
                continue
            xs = [t.reshape(r.numel() * cn, *t.shape[a1:]) for t in p.fields]
            cur = [s.index_select(0, r).reshape(r.numel() * cn, *s.shape[2:]) for s in state]
            new = call_batched(fn, xs, cur, ctx)
            for s, n in zip(state, new, strict=True):  # state is our own fresh tensor: in place
                s.index_copy_(0, r, n.reshape(r.numel(), cn, *n.shape[1:]).to(s.dtype))
        sel_outer = tuple(ins[-1].fields[0].shape[:-1])
        return [tuple(s.reshape(*sel_outer, *chunk, *s.shape[2:]) for s in state)]

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        parts, pos, _ = self._prepare(ins)
        fn = given_fn(self, self.fn)
        ctx = env.ctx(fn, parts[0])
        a1 = len(parts[0].shape)
        chunk = tuple(parts[0].fields[0].shape[1:a1])
        init = init_state(fn, ctx, ())
        nxt = [0] * len(parts)
        results = []
        for p in range(pos.shape[0]):  # selector positions in stream order
            states = {c: [t.clone() for t in init]
                      for c in itertools.product(*(range(d) for d in chunk))}
            for i, part in enumerate(parts):  # ascending expert index
                if float(pos[p, i]) == 0.0:
                    continue
                j = nxt[i]
                nxt[i] += 1
                for c in states:
                    x = [t[(j, *c)] for t in part.fields]
                    states[c] = list(call_one(fn, x, states[c], ctx))
            results.append(states)
        sel_outer = tuple(ins[-1].fields[0].shape[:-1])
        res = []
        for f, first in enumerate(init):  # the element shapes: init_state had them all bound
            sh = tuple(first.shape)
            out = torch.empty((pos.shape[0], *chunk, *sh), dtype=ctx.dtype)
            for p, states in enumerate(results):
                for c, st in states.items():
                    out[(p, *c)] = st[f]
            res.append(out.reshape(*sel_outer, *chunk, *sh))
        return [tuple(res)]
