"""Property tests: on random programs and shapes the fast (batched) executor equals the
per-element oracle, including tuple streams, buffers of buffers, multi-hot selectors with empty
experts, -inf inits, scans and bodies vmap cannot run."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepsmith import step
from stepsmith.step.dtypes import Buffer, Scalar, TupleType, fields_of

MAX_ELEMS = 400  # scalars per stream, keeps the oracle fast


class Chooser:
    """Draws choices from hypothesis while recording them, then replays them identically (the
    same random program runs under both executors)."""

    def __init__(self, data: Any = None, log: list[int] | None = None) -> None:
        self.data = data
        self.log: list[int] = [] if log is None else log
        self.pos = 0

    def int(self, lo: int, hi: int) -> int:
        if self.data is not None:
            v = self.data.draw(st.integers(lo, hi))
            self.log.append(v)
            return v
        v = self.log[self.pos]
        self.pos += 1
        return v

    def pick(self, options: list[Any]) -> Any:
        return options[self.int(0, len(options) - 1)]


def _numel(s: step.Stream) -> int:
    return sum(t.numel() for t in s.fields)


def _branchy(x: torch.Tensor) -> torch.Tensor:
    return x * 2 if float(x.sum()) > 0 else -x  # data-dependent: vmap must fall back


def map_fn(ch: Chooser, t: Any) -> step.Fn:
    if isinstance(t, TupleType):
        f0 = t.fields[0]
        return step.Fn("fn_tup", t, f0, lambda i, s: [i[0] * 2 + sum(f.sum() for f in i[1:])])
    bodies: list[Callable[..., Any]] = [
        lambda i, s: [i[0] * 2 - 1],
        lambda i, s: [torch.exp(-i[0] * i[0])],
        lambda i, s: [_branchy(i[0])],
    ]
    if isinstance(t, Buffer):
        bodies += [lambda i, s: [i[0] - i[0].max()],
                   lambda i, s: [torch.cumsum(i[0].flatten(), 0).reshape(i[0].shape)]]
    return step.Fn("fn_map", t, t, ch.pick(bodies))


def fold_fn(ch: Chooser, t: Any) -> step.Fn:
    if isinstance(t, TupleType):
        f0 = t.fields[0]
        return step.Fn("fn_tfold", t, f0, lambda i, s: [s[0] + i[0]], init=[0])
    kinds = ["sum", "max", "sumcount"] + (["softmax"] if isinstance(t, Scalar) else [])
    kind = ch.pick(kinds)
    if kind == "sum":
        return step.Fn("fn_sum", t, t, lambda i, s: [s[0] + i[0]], init=["zeros"])
    if kind == "max":
        return step.Fn("fn_max", t, t, lambda i, s: [torch.maximum(s[0], i[0])], init=["-inf"])
    if kind == "sumcount":
        return step.Fn("fn_sc", t, TupleType((t, Scalar())),
                       lambda i, s: [s[0] + i[0], s[1] + 1], init=[0, 0])

    def online(i: list[torch.Tensor], s: list[torch.Tensor]) -> list[torch.Tensor]:
        m = torch.maximum(s[0], i[0])
        return [m, s[1] * torch.exp(s[0] - m) + torch.exp(i[0] - m)]

    return step.Fn("fn_online", t, TupleType((Scalar(), Scalar())), online, init=["-inf", 0])


def random_op(ch: Chooser, s: step.Stream, gen: torch.Generator) -> step.Stream:
    r = s.rank
    is_tuple = isinstance(s.dtype, TupleType)
    ops = ["map", "promote", "moe", "moe"]
    if r >= 1:
        ops += ["accum", "scan", "flatten", "reshape"]
        if not is_tuple:
            ops.append("bufferize")
    if isinstance(s.dtype, Buffer):
        ops.append("streamify")
    if _numel(s) * 3 <= MAX_ELEMS:
        ops += ["repeat", "repeatref", "copyzip", "copyzip"]
    op = ch.pick(ops)
    if op == "map":
        return step.Map(fn=map_fn(ch, s.dtype)).apply(s)
    if op in ("accum", "scan"):
        prim = step.Accum if op == "accum" else step.Scan
        return prim(fn=fold_fn(ch, s.dtype), b=ch.int(1, r)).apply(s)
    if op == "promote":
        return step.Promote(b=ch.int(0, r + 1)).apply(s)
    if op == "flatten":
        i = ch.int(1, r)
        return step.Flatten(L=list(range(i, ch.int(i, r) + 1))).apply(s)
    if op == "reshape":
        i = ch.int(0, r)
        size = s.concrete_shape()[i]
        divisors = [c for c in range(1, size + 1) if size % c == 0] or [1]
        return step.Reshape(L=[i], S=ch.pick(divisors)).apply(s)
    if op == "bufferize":
        return step.Bufferize(a=ch.int(1, r)).apply(s)
    if op == "streamify":
        return step.Streamify().apply(s)
    if op == "repeat":
        return step.Repeat(n=ch.int(1, 3)).apply(s)
    if op == "repeatref":
        x = ch.int(1, 3)
        ref = step.Stream.input("R", "fp32", (x, *s.shape),
                                torch.randn(*reversed(s.concrete_shape()), x, generator=gen))
        return step.RepeatRef().apply((s, ref))
    if op == "copyzip":
        a, b = step.Copy().apply(s)
        return step.Zip().apply((a, step.Map(fn=map_fn(ch, b.dtype)).apply(b)))
    # moe: Partition -> per-expert Map -> Merge, selector over the outer dims
    nb = ch.int(0, r)
    e = ch.int(1, 3)
    sel_shape = s.shape[r - nb:]
    sizes = list(reversed(s.concrete_shape()[r - nb:]))
    sel = (torch.rand(*sizes, e, generator=gen) < 0.5).float()
    if ch.int(0, 1):
        sel[..., ch.int(0, e - 1)] = 0.0  # an expert that receives no chunk
    s1, s2 = step.Copy().apply(step.Stream.input("S", step.Multihot("fp32", e), sel_shape, sel))
    parts = step.Partition(N=e).apply((s, s1))
    outs = [step.Map(fn=map_fn(ch, p.dtype)).apply(p) for p in parts]
    return step.Merge(fn=fold_fn(ch, outs[0].dtype)).apply((outs, s2))


def random_input(ch: Chooser, gen: torch.Generator) -> step.Stream:
    rank = ch.int(0, 3)
    shape = [ch.int(1, 4) for _ in range(rank + 1)]
    kind = ch.int(0, 2)
    if kind == 0:
        dtype: Any = Scalar()
    else:
        dtype = Buffer(Scalar(), tuple(ch.int(1, 3) for _ in range(kind)))
    elem = tuple(int(d) for d in reversed(dtype.shape)) if kind else ()
    while math.prod(shape) * math.prod(elem) > MAX_ELEMS // 2:
        shape[-1] = max(1, shape[-1] // 2)
        if shape[-1] == 1:
            break
    data = torch.randn(*reversed(shape), *elem, generator=gen)
    return step.Stream.input("X", dtype, shape, data)


def run_program(ch: Chooser, executor: str, seed: int, n_ops: int) -> step.Stream:
    gen = torch.Generator().manual_seed(seed)
    with step.Session(executor=executor):  # type: ignore[arg-type]
        s = random_input(ch, gen)
        for _ in range(n_ops):
            s = random_op(ch, s, gen)
    return s


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.integers(0, 2**16), n_ops=st.integers(1, 5))
def test_fast_executor_equals_oracle_on_random_programs(data: Any, seed: int, n_ops: int) -> None:
    rec = Chooser(data)
    fast = run_program(rec, "fast", seed, n_ops)
    oracle = run_program(Chooser(log=rec.log), "oracle", seed, n_ops)
    assert fast.dtype == oracle.dtype
    assert len(fast.shape) == len(oracle.shape)
    assert all(a == b or not (a.is_const and b.is_const) for a, b in zip(fast.shape, oracle.shape, strict=True))
    for f in fields_of(fast.dtype):
        assert f is not None
    for a, b in zip(fast.fields, oracle.fields, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("MNKD"), max_size=4), st.lists(st.sampled_from("MNKD"),
                                                                max_size=4),
       st.integers(1, 6))
def test_dim_algebra_laws(xs: list[str], ys: list[str], c: int) -> None:
    def mono(names: list[str]) -> step.Dim:
        d = step.Dim.const(1)
        for n in names:
            d = d * step.Dim.sym(n)
        return d

    a, b = mono(xs), mono(ys)
    assert a * b == b * a and hash(a * b) == hash(b * a)
    assert (a * b * c) / b == a * c
    binding = {"M": 2, "N": 3, "K": 5, "D": 7}
    assert (a * b).evaluate(binding) == a.evaluate(binding) * b.evaluate(binding)
    assert step.dim(str(a * b)) == a * b
