"""The primitives, one class and one `@primitive` decorator each, in the order the references
teach them: element-wise (Map with auto-zip, Zip, Copy, Identity), stateful folds (Accum emits
the final state, Scan every state), routing (MoE: Partition and Merge, driven by a Multihot
selector stream) and shape (Promote, Flatten, Reshape, Bufferize, Streamify, Repeat, RepeatRef).

Fast executors batch fn bodies with vmap (a fold runs sequentially over the k reduced inner dims
only, batched over every outer position), route with boolean masks / index gathers over all
selector positions at once and reshape with tensor views/expansions (the layout makes them
free). The oracles walk the elements in stream order exactly as the spec describes (the shape
oracles copy through an explicit index map), so the two are independent implementations.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from stepsmith.step.dims import Dim, dim, fresh_dim, shape_str
from stepsmith.step.dtypes import Buffer, Multihot, TupleType, make_tuple
from stepsmith.step.errors import StepArgumentError, StepDtypeError, StepRankError, StepShapeError
from stepsmith.step.execfn import call_batched, call_each, call_one, fold_batched, init_state
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
from stepsmith.step.session import current_session
from stepsmith.step.stream import Stream, SType, display

Idx = tuple[int, ...]


# =============================================================================================
# element-wise: Map, Zip, Copy, Identity


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
        return self._each(ins, env, call_batched)

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        return self._each(ins, env, call_each)

    def _each(self, ins: list[Stream], env: Env, call: Callable[..., tuple[torch.Tensor, ...]],
              ) -> list[Fields]:
        """`call` the fn on every element (all positions as one batch), shaped back."""
        fn = given_fn(self, self.fn)
        outer = tuple(ins[0].fields[0].shape[: len(ins[0].shape)])
        flat = [t.reshape(math.prod(outer), *t.shape[len(outer):]) for t in _fields(ins)]
        return [tuple(o.reshape(*outer, *o.shape[1:]) for o in call(fn, flat, None, env.ctx(fn)))]


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


# =============================================================================================
# stateful folds: Accum, Scan


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


# =============================================================================================
# routing: Partition, Merge


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


# Partition's fresh length symbols -> the element count of the selector that routed them, so
# that Merge refuses a selector that cannot match its parts' lengths (a Repeat or Flatten of
# it, say) when the program is typed, before any data runs. Fresh symbols are unique in the
# process, so one table serves every session; it is bounded (the decoder types many
# Partitions), and a symbol that fell out is checked on the data at run time as before.
_ROUTED_BY: OrderedDict[str, Dim] = OrderedDict()
_ROUTED_MAX = 1 << 16
_MERGE_HINT = "Merge must get the parts produced by a Partition with a copy of the same selector"


def fresh_dim_fact(symbol: str) -> str:
    """What the typing rules remember of a fresh dim symbol, as text ('' when nothing): the
    element count of the selector that routed a Partition's part. A program typer that renames
    fresh dims (the typed decoder names them after their statement) keeps renamed dims with
    different facts apart by it, and passes the fact on with `alias_fresh_dim`."""
    origin = _ROUTED_BY.get(symbol)
    return "" if origin is None else f"routed by {origin}"


def alias_fresh_dim(new: str, old: str) -> None:
    """Let the dim symbol `new` carry what `old` carries (see `fresh_dim_fact`)."""
    origin = _ROUTED_BY.get(old)
    if origin is not None:
        _ROUTED_BY[new] = origin
        while len(_ROUTED_BY) > _ROUTED_MAX:
            _ROUTED_BY.popitem(last=False)


def _selector_count(sel: SType) -> Dim:
    return math.prod(sel.shape, start=Dim.const(1))


def _check_routing(prim: Primitive, i: int, part: SType, sel: SType, here: Dim) -> None:
    """Part i's length was set by a Partition's selector: this one (`here` elements) must
    have as many, or expert i's positions cannot match the part's chunks."""
    if not part.shape or len(part.shape[-1].factors) != 1 or part.shape[-1].coeff != 1:
        return
    origin = _ROUTED_BY.get(part.shape[-1].symbols[0])
    if origin is None or origin == here:
        return
    binding = current_session().binding
    ov, hv = origin.try_evaluate(binding), here.try_evaluate(binding)
    if ov is None or hv is None or ov == hv:
        return
    raise StepShapeError(
        f"part {i} {display(part)} was routed by a Partition whose selector has {origin} "
        f"elements, but this selector {display(sel)} has {here} ({sel.type_str()}): expert "
        f"{i}'s positions cannot match the part's chunks",
        primitive=prim.label, stream=display(sel), expected=f"a selector of {origin} elements",
        found=f"{here} elements",
        hint=_MERGE_HINT,
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
        outs: list[OutType] = []
        count = _selector_count(sel)
        for _ in range(n):
            length = fresh_dim("P")
            _ROUTED_BY[length.symbols[0]] = count
            outs.append((data.dtype, chunk + (length,)))
        while len(_ROUTED_BY) > _ROUTED_MAX:
            _ROUTED_BY.popitem(last=False)
        return outs

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
        "[len_i]>`; sel `Strm<Multihot(E), b, Ss>`; n == E; sel has as many elements as the "
        "selector the parts were partitioned by (a Copy of it); f is stateful with input type T. "
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
        count = _selector_count(sel)
        for i, p in enumerate(parts):
            _check_routing(self, i, p, sel, count)
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
                    hint=_MERGE_HINT,
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


# =============================================================================================
# shape: Promote, Flatten, Reshape, Bufferize, Streamify, Repeat, RepeatRef


def _as_dim(prim: Primitive, name: str, value: Any) -> Dim:
    if isinstance(value, Dim):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        if value >= 2**40:
            raise StepArgumentError(
                f"parameter {name}={value} is far too large for a stream dimension",
                primitive=prim.label, expected="a size below 2**40", found=str(value),
            )
        return Dim.const(value)
    if isinstance(value, str) and value.strip():
        try:
            return dim(value)
        except StepShapeError as e:
            raise StepArgumentError(
                f"parameter {name}={value!r} is not a dimension: {e.detail}",
                primitive=prim.label, expected="an int > 0 or a Dim like N", found=repr(value),
            ) from None
    raise StepArgumentError(
        f"parameter {name}= must be a positive int or a dimension (Dim)",
        primitive=prim.label, expected="an int > 0 or a Dim like N", found=repr(value),
    )


def _index_map(s: Stream, out_outer: Sequence[int], src: Callable[[Idx], Idx],
               positions: int | None = None) -> Fields:
    """Oracle helper: out[i] = in[src(i)] for every stream position i (stream order indices,
    innermost first), copying whole elements. The input's positions are its stream dims, or
    its `positions` outermost tensor dims (Streamify reads buffer dims as positions)."""
    res = []
    out_dims = tuple(reversed(tuple(out_outer)))
    for t in s.fields:
        elem = tuple(t.shape[len(s.shape) if positions is None else positions:])
        out = torch.empty((*out_dims, *elem), dtype=t.dtype)
        for pos in itertools.product(*(range(d) for d in out_dims)):
            si = tuple(reversed(pos))  # innermost-first index of this output position
            out[pos] = t[tuple(reversed(src(si)))]
        res.append(out)
    return tuple(res)


def _stream_sizes(s: Stream) -> list[int]:
    """Concrete sizes innermost first."""
    return list(s.concrete_shape())


# ---------------------------------------------------------------------------------------------
@primitive(
    signature="step.Promote(b=k).apply(s)",
    params=(Param("b", "axis", required=False),),
    description=(
        "Insert a size-1 dim at (innermost-first) position k, 0 <= k <= r+1: "
        "`Strm<T, r, S>` -> `Strm<T, r+1, S[:k] + [1] + S[k:]>`; data unchanged. "
        "`Promote(b=r+1)` (the default) adds an outermost placeholder dim so Accum/Bufferize "
        "can take all real dims (dimension placeholder idiom)."
    ),
    example=Example(
        program=("P = step.Promote(b=2).apply(A)\n"
                 "return step.Accum(fn=fn_sum, b=2).apply(P)"),
        inputs=(("A", "fp32", ("K", "M")),),
        fns=(FnSpec("fn_sum", "return [state[0] + input[0]]", "fp32", "fp32", init=[0]),),
        reference="A.sum().reshape(1)",
        explanation=("dimension placeholder: Promote adds an outer size-1 dim ([K, M, 1]) so "
                     "Accum(b=2) can reduce both real dims, giving a rank-0 stream [1]"),
    ),
    category="shape",
)
class Promote(Primitive):
    def __init__(self, b: int | None = None) -> None:
        self.b = b
        if b is not None:
            need_int(self, "b", b)

    def _k(self, s: SType) -> int:
        return s.rank + 1 if self.b is None else self.b

    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        s = ins[0]
        k = self._k(s)
        if not 0 <= k <= s.rank + 1:
            raise StepRankError(
                f"b must satisfy 0 <= b <= rank+1; stream rank is {s.rank} (shape "
                f"{shape_str(s.shape)})", primitive=self.label, stream=display(s),
                expected=f"0 <= b <= {s.rank + 1}", found=f"b={k}",
            )
        shape = tuple(s.shape[:k]) + (Dim.const(1),) + tuple(s.shape[k:])
        return [(s.dtype, shape)]

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        s = ins[0]
        pos = len(s.shape) - self._k(s)
        return [tuple(t.unsqueeze(pos) for t in s.fields)]

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        s = ins[0]
        k = self._k(s)
        sizes = _stream_sizes(s)
        return [_index_map(s, sizes[:k] + [1] + sizes[k:], lambda i: i[:k] + i[k + 1:])]


# ---------------------------------------------------------------------------------------------
@primitive(
    signature="step.Flatten(L=[i, ..., j]).apply(s)",
    params=(Param("L", "axes"),),
    description=(
        "Merge the consecutive dims i-1 .. j into one dim of size their product (innermost "
        "fastest): L consecutive, 1 <= i, j <= r; out rank r - len(L). `L=[1]` merges D0 and D1: "
        "`[K, N, M]` -> `[K*N, M]`."
    ),
    example=Example(
        program="return step.Flatten(L=[1]).apply(A)",
        inputs=(("A", "fp32", ("K", "N", "M")),),
        reference="A.reshape(A.shape[0], -1)",
        explanation="[K, N, M] -> [K*N, M]; element (k, n) of a row lands at index n*K + k",
    ),
    category="shape",
)
class Flatten(Primitive):
    def __init__(self, L: Sequence[int] | int | None = None) -> None:  # noqa: N803
        self.L: object = [L] if isinstance(L, int) and not isinstance(L, bool) else L
        if not isinstance(self.L, list | tuple) or not self.L:
            raise StepArgumentError(
                "L= must be a non-empty list of consecutive dim indices", primitive=self.label,
                expected="e.g. L=[1] or L=[1, 2]", found=repr(L),
            )
        self.axes = [need_int(self, "L entry", x) for x in self.L]
        if self.axes != list(range(self.axes[0], self.axes[0] + len(self.axes))):
            raise StepArgumentError(
                "L= entries must be consecutive increasing indices", primitive=self.label,
                expected="e.g. [1, 2, 3]", found=repr(self.axes),
            )

    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        s = ins[0]
        i, j = self.axes[0], self.axes[-1]
        if i < 1 or j > s.rank:
            raise StepRankError(
                f"L must satisfy 1 <= i and j <= rank; stream rank is {s.rank} (shape "
                f"{shape_str(s.shape)})", primitive=self.label, stream=display(s),
                expected=f"indices within 1..{s.rank}", found=f"L={self.axes}",
                hint="L=[1] merges D0 and D1 (the two innermost dims)",
            )
        prod = Dim.const(1)
        for d in s.shape[i - 1: j + 1]:
            prod = prod * d
        shape = tuple(s.shape[: i - 1]) + (prod,) + tuple(s.shape[j + 1:])
        return [(s.dtype, shape)]

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        s = ins[0]
        i, j = self.axes[0], self.axes[-1]
        r1 = len(s.shape)
        a, b = r1 - 1 - j, r1 - i + 1  # tensor axes [a, b) are stream dims j .. i-1
        return [tuple(t.flatten(a, b - 1) for t in s.fields)]

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        s = ins[0]
        i, j = self.axes[0], self.axes[-1]
        sizes = _stream_sizes(s)
        group = sizes[i - 1: j + 1]

        def src(o: Idx) -> Idx:
            f = o[i - 1]
            parts = []
            for n in group:  # innermost fastest
                parts.append(f % n)
                f //= n
            return o[: i - 1] + tuple(parts) + o[i:]

        return [_index_map(s, sizes[: i - 1] + [math.prod(group)] + sizes[j + 1:], src)]


# ---------------------------------------------------------------------------------------------
@primitive(
    signature="step.Reshape(L=[i], S=c).apply(s)",
    params=(Param("L", "axes"), Param("S", "size")),
    description=(
        "Split dim i into an inner dim of size c and an outer dim D_i / c (D_i must be "
        "divisible by c): `[.., D_i, ..]` -> `[.., c, D_i/c, ..]`, out rank r+1. "
        "c may be an int or a dimension symbol."
    ),
    example=Example(
        program="return step.Reshape(L=[0], S=2).apply(A)",
        inputs=(("A", "fp32", ("D", "M")),),
        reference="A.reshape(A.shape[0], -1, 2)",
        explanation="[D, M] -> [2, D/2, M]: consecutive pairs of the innermost dim",
    ),
    category="shape",
)
class Reshape(Primitive):
    def __init__(self, L: Sequence[int] | int | None = None, S: Any = None  # noqa: N803
                 ) -> None:
        self.L: object = [L] if isinstance(L, int) and not isinstance(L, bool) else L
        self.S = S
        if not isinstance(self.L, list | tuple) or len(self.L) != 1:
            raise StepArgumentError(
                "L= must be a one-element list [i] naming the dim to split",
                primitive=self.label, expected="e.g. L=[0]", found=repr(L),
            )
        self.axis = need_int(self, "L entry", self.L[0], low=0)
        self.c = _as_dim(self, "S", S)

    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        s = ins[0]
        i = self.axis
        if i > s.rank:
            raise StepRankError(
                f"L=[{i}] is not a dim of a rank-{s.rank} stream (shape {shape_str(s.shape)})",
                primitive=self.label, stream=display(s),
                expected=f"0 <= i <= {s.rank}", found=f"i={i}",
            )
        d = s.shape[i]
        try:
            outer = d.ratio(self.c)  # D/2 stays symbolic: (D/2)*2 == D
        except StepShapeError:
            raise StepShapeError(
                f"dim {i} ({d}) is not divisible by S={self.c}", primitive=self.label,
                stream=display(s), expected=f"a dim divisible by {self.c}", found=str(d),
            ) from None
        binding = current_session().binding
        dv, cv = d.try_evaluate(binding), self.c.try_evaluate(binding)
        if dv is not None and cv is not None and dv % cv != 0:
            raise StepShapeError(
                f"dim {i} ({d} = {dv}) is not divisible by S={self.c} = {cv} at this binding",
                primitive=self.label, stream=display(s), expected=f"a multiple of {cv}",
                found=f"{d} = {dv}",
            )
        shape = tuple(s.shape[:i]) + (self.c, outer) + tuple(s.shape[i + 1:])
        return [(s.dtype, shape)]

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        s = ins[0]
        i = self.axis
        ax = len(s.shape) - 1 - i
        c = env.size(self.c, "S")
        _check_divisible(self, s, ax, c)
        return [tuple(t.unflatten(ax, (t.shape[ax] // c, c)) for t in s.fields)]

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        s = ins[0]
        i = self.axis
        c = env.size(self.c, "S")
        _check_divisible(self, s, len(s.shape) - 1 - i, c)
        sizes = _stream_sizes(s)
        out = sizes[:i] + [c, sizes[i] // c] + sizes[i + 1:]
        return [_index_map(s, out, lambda o: o[:i] + (o[i + 1] * c + o[i],) + o[i + 2:])]


def _check_divisible(prim: Primitive, s: Stream, ax: int, c: int) -> None:
    n = int(s.fields[0].shape[ax])
    if c <= 0 or n % c != 0:
        raise StepShapeError(
            f"the dim being split has size {n}, not divisible by S={c}", primitive=prim.label,
            stream=display(s), expected=f"a multiple of {c}", found=str(n),
        )


# ---------------------------------------------------------------------------------------------
def _buffer_of(prim: Primitive, s: SType, shape: tuple[Dim, ...]) -> Buffer:
    if isinstance(s.dtype, TupleType):
        raise StepDtypeError(
            "cannot bufferize a stream of tuples", primitive=prim.label, stream=display(s),
            expected="a stream of fp32, Multihot or Buffer elements", found=str(s.dtype),
            hint="Bufferize each stream before Zip",
        )
    return Buffer.of(s.dtype, shape)


@primitive(
    signature="step.Bufferize(a=k).apply(s)",
    params=(Param("a", "axis"),),
    description=(
        "Gather the k innermost dims into one on-chip buffer element, 0 < k <= r: "
        "`Strm<T, r, [D0..Dr]>` -> `Strm<Buffer<T, [D0..D(k-1)]>, r-k, [Dk..Dr]>`; data "
        "unchanged. Bufferizing a Buffer stream collapses into one Buffer (inner buffer dims "
        "first)."
    ),
    example=Example(
        program=("B = step.Bufferize(a=1).apply(A)\n"
                 "return step.Map(fn=fn_rowsum).apply(B)"),
        inputs=(("A", "fp32", ("D", "M")),),
        fns=(FnSpec("fn_rowsum", "return [input[0].sum()]", "Buffer(fp32, [D])", "fp32"),),
        reference="A.sum(-1)",
        explanation="[D, M] fp32 -> [M] of Buffer(fp32, [D]); a Map then reduces each buffer",
    ),
    category="shape",
)
class Bufferize(Primitive):
    def __init__(self, a: int | None = None) -> None:
        self.a = a
        self.k = need_int(self, "a", a, meaning="the number of inner dims to buffer")

    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        s, k = ins[0], self.k
        check_inner(self, s, "a", k, "The outermost dim stays a stream dim: Promote a "
                    "placeholder dim first to buffer every real dim.")
        return [(_buffer_of(self, s, tuple(s.shape[:k])), tuple(s.shape[k:]))]

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        return [ins[0].fields]

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        # inner position b of outer position o is stream position b + o, in the layout too
        return [_index_map(ins[0], _stream_sizes(ins[0]), lambda i: i)]


@primitive(
    signature="step.Streamify().apply(s)",
    description=(
        "Inverse of Bufferize: stream the contents of each buffer element. The element type "
        "must be `Buffer<U, B>`: `Strm<Buffer<U,B>, r, S>` -> `Strm<U, r+len(B), B + S>`."
    ),
    example=Example(
        program=("B = step.Bufferize(a=1).apply(A)\n"
                 "R = step.Repeat(n=N).apply(B)\n"
                 "return step.Streamify().apply(R)"),
        inputs=(("A", "fp32", ("D", "M")),),
        reference="A.unsqueeze(1).expand(-1, N_value, -1)",
        explanation=("stashing a dimension: buffer the rows, repeat each buffer N times, "
                     "stream them back: [D, M] -> [D, N, M]"),
    ),
    category="shape",
)
class Streamify(Primitive):
    def _buffer(self, s: SType) -> Buffer:
        if not isinstance(s.dtype, Buffer):
            raise StepDtypeError(
                "the element type must be a Buffer", primitive=self.label, stream=display(s),
                expected="Buffer(T, [...]) elements", found=str(s.dtype),
                hint="Streamify undoes Bufferize; this stream has no buffer to stream",
            )
        return s.dtype

    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        bt = self._buffer(ins[0])
        return [(bt.elem, tuple(bt.shape) + tuple(ins[0].shape))]

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        return [ins[0].fields]

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        # buffer index b of the element at o becomes stream position b + o (buffer dims inner)
        s = ins[0]
        n = len(s.shape) + len(self._buffer(s).shape)
        sizes = [int(d) for d in reversed(s.fields[0].shape[:n])]
        return [_index_map(s, sizes, lambda i: i, positions=n)]


# ---------------------------------------------------------------------------------------------
class _Repeating(Primitive):
    """Executors of Repeat and RepeatRef: every element repeated along a new innermost dim."""

    def _count(self, ins: list[Stream], env: Env) -> int:
        raise NotImplementedError

    def impl(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        s, n = ins[0], self._count(ins, env)
        r1 = len(s.shape)
        return [tuple(t.unsqueeze(r1).expand(*t.shape[:r1], n, *t.shape[r1:]).contiguous()
                      for t in s.fields)]

    def oracle(self, ins: list[Stream], outs: list[OutType], env: Env) -> list[Fields]:
        s = ins[0]
        return [_index_map(s, [self._count(ins, env)] + _stream_sizes(s), lambda o: o[1:])]


@primitive(
    signature="step.Repeat(n=X).apply(s)",
    params=(Param("n", "size"),),
    description=(
        "Repeat every element X times along a new innermost dim: `Strm<T, r, S>` -> "
        "`Strm<T, r+1, [X] + S>`. X is an int or a dimension symbol. To repeat along an outer "
        "position, Bufferize first and Streamify after (stashing idiom)."
    ),
    example=Example(
        program="return step.Repeat(n=N).apply(A)",
        inputs=(("A", "fp32", ("M",)),),
        reference="A.unsqueeze(-1).expand(-1, N_value)",
        explanation="[M] -> [N, M]: each element repeated N times",
    ),
    category="shape",
)
class Repeat(_Repeating):
    def __init__(self, n: Any = None) -> None:
        self.n = n
        self.x = _as_dim(self, "n", n)

    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        s = ins[0]
        return [(s.dtype, (self.x,) + tuple(s.shape))]

    def _count(self, ins: list[Stream], env: Env) -> int:
        return env.size(self.x, "n")


@primitive(
    signature="step.RepeatRef().apply((s, ref))",
    args="pair", arg_names=("s", "ref"), shape_args=("ref",),
    description=(
        "Like Repeat, with the count taken from ref's innermost dim (ref's values are ignored; "
        "ref is consumed): needs `ref.rank == r+1` and `ref.shape[1:] == S`; out "
        "`Strm<T, r+1, ref.shape>`."
    ),
    example=Example(
        program=("A1, A2 = step.Copy().apply(A)\n"
                 "S = step.Accum(fn=fn_sum, b=1).apply(A1)\n"
                 "return step.RepeatRef().apply((S, A2))"),
        inputs=(("A", "fp32", ("K", "M")),),
        fns=(FnSpec("fn_sum", "return [state[0] + input[0]]", "fp32", "fp32", init=[0]),),
        reference="A.sum(-1, keepdim=True).expand(-1, K_value)",
        explanation="broadcast each row sum back over the row it came from: [M] -> [K, M]",
    ),
    category="shape",
)
class RepeatRef(_Repeating):
    def typing(self, ins: Sequence[SType]) -> list[OutType]:
        s, ref = ins
        if ref.rank != s.rank + 1 or ref.shape[1:] != s.shape:
            raise StepShapeError(
                f"the reference must have rank {s.rank + 1} and shape [X] + "
                f"{shape_str(s.shape)}; ref {display(ref)} is {ref.type_str()}",
                primitive=self.label, stream=display(s),
                expected=f"ref shape [X, {', '.join(str(d) for d in s.shape)}]",
                found=f"ref shape {shape_str(ref.shape)}",
            )
        return [(s.dtype, tuple(ref.shape))]

    def _count(self, ins: list[Stream], env: Env) -> int:
        return ins[1].concrete_shape()[0]
