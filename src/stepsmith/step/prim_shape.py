"""Shape primitives: Promote, Flatten, Reshape, Bufferize, Streamify, Repeat, RepeatRef.

The fast executors are tensor views/expansions (the layout makes them free); the oracles copy
element by element through an explicit index map written from the spec, so the two are
independent implementations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from stepsmith.step.dims import Dim, dim, shape_str
from stepsmith.step.dtypes import Buffer, TupleType
from stepsmith.step.errors import (
    StepArgumentError,
    StepDtypeError,
    StepRankError,
    StepShapeError,
)
from stepsmith.step.registry import (
    Env,
    Example,
    Fields,
    FnSpec,
    OutType,
    Param,
    Primitive,
    check_inner,
    need_int,
    primitive,
)
from stepsmith.step.stream import Stream, SType, display

Idx = tuple[int, ...]


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
        from stepsmith.step.session import current_session

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
    args="pair", arg_names=("s", "ref"),
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

