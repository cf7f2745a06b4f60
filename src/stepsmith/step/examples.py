"""Reference STeP programs for real operators (bmm in three orders, online-softmax attention,
LayerNorm, NeoX RoPE, a 3-expert MoE), each with its plain PyTorch computation.

Written once and reused by `stepsmith demo`, `bench/bench_step.py` and the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from stepsmith.step.program import call_impl, random_fields, trusted_impl
from stepsmith.step.registry import FnSpec
from stepsmith.step.session import PAPER_BINDING, Executor
from stepsmith.step.stream import Stream

Tensors = dict[str, torch.Tensor]
__all__ = ["CASES", "DEMO_CASES", "PAPER_BINDING", "Case", "Prepared", "prepare"]


@dataclass(frozen=True)
class Case:
    """An operator: STeP program + fns + inputs + PyTorch reference. Input data is random in
    the inputs' layout unless the case makes its own (`make_data`)."""

    name: str
    description: str
    inputs: tuple[tuple[str, str, tuple[str, ...]], ...]  # (name, dtype, dims innermost first)
    fns: tuple[FnSpec, ...]
    program: str
    reference: Callable[[Tensors, Mapping[str, int]], torch.Tensor]
    make_data: Callable[[Mapping[str, int], torch.Generator, torch.dtype], Tensors] | None = None
    extra_binding: Mapping[str, int] = field(default_factory=dict)


@dataclass
class Prepared:
    """A case instantiated at one binding: `run()` executes the STeP program on fresh input
    streams, `torch_run()` the plain PyTorch computation."""

    case: Case
    binding: dict[str, int]
    executor: Executor
    data: Tensors
    impl: Callable[..., Any]

    def run(self) -> torch.Tensor:
        out, _ = call_impl(self.impl, lambda: {n: Stream.input(n, dt, dims, self.data[n])
                                               for n, dt, dims in self.case.inputs},
                           binding=self.binding, executor=self.executor)
        return out.data

    def torch_run(self) -> torch.Tensor:
        return self.case.reference(self.data, self.binding)


def prepare(case: Case, binding: Mapping[str, int], executor: Executor = "fast", seed: int = 0,
            dtype: torch.dtype = torch.float32) -> Prepared:
    full = {**binding, **case.extra_binding}
    gen = torch.Generator().manual_seed(seed)
    if case.make_data is None:  # the cases' inputs have one field each
        data = {n: random_fields(dt, dims, full, gen, dtype)[0] for n, dt, dims in case.inputs}
    else:
        data = case.make_data(full, gen, dtype)
    weights = {k: v for k, v in data.items() if k.startswith("W")}  # visible to fns
    impl, _ = trusted_impl(case.program, case.inputs, case.fns, full, weights, f"<{case.name}>")
    return Prepared(case, full, executor, data, impl)


# ---------------------------------------------------------------------------------------------
_SCALE = FnSpec("fn_scale", "return [input[0] * input[1]]", ["fp32", "Buffer(fp32, [D])"],
                "Buffer(fp32, [D])")
_ADD_D = FnSpec("fn_add", "return [state[0] + input[0]]", "Buffer(fp32, [D])",
                "Buffer(fp32, [D])", init=["zeros"])

BMM_MKN_MKD = Case(
    name="bmm_mkn_mkd",
    description="batched matmul `mkn,mkd->mnd` as a sum of outer products over K",
    inputs=(("A", "fp32", ("N", "K", "M")), ("B", "Buffer(fp32, [D])", ("K", "M"))),
    fns=(
        FnSpec("fn_outer", "return [torch.outer(input[0], input[1])]",
               ["Buffer(fp32, [N])", "Buffer(fp32, [D])"], "Buffer(fp32, [D, N])"),
        FnSpec("fn_acc", "return [state[0] + input[0]]", "Buffer(fp32, [D, N])",
               "Buffer(fp32, [D, N])", init=["zeros"]),
    ),
    program="""\
a = step.Bufferize(a=1).apply(A)
p = step.Map(fn=fn_outer).apply((a, B))
acc = step.Accum(fn=fn_acc, b=1).apply(p)
return step.Streamify().apply(acc)""",
    reference=lambda t, b: torch.einsum("mkn,mkd->mnd", t["A"], t["B"]),
)

BMM_MNK_MKD = Case(
    name="bmm_mnk_mkd",
    description="batched matmul `mnk,mkd->mnd`: stash B over N, then scale-accumulate over K",
    inputs=(("A", "fp32", ("K", "N", "M")), ("B", "Buffer(fp32, [D])", ("K", "M"))),
    fns=(_SCALE, _ADD_D),
    program="""\
b = step.Bufferize(a=1).apply(B)
b = step.Repeat(n=N).apply(b)
b = step.Streamify().apply(b)
b = step.Bufferize(a=1).apply(b)
p = step.Map(fn=fn_scale).apply((A, b))
acc = step.Accum(fn=fn_add, b=1).apply(p)
return step.Streamify().apply(acc)""",
    reference=lambda t, b: torch.einsum("mnk,mkd->mnd", t["A"], t["B"]),
)

BMM_MNK_MDK = Case(
    name="bmm_mnk_mdk",
    description="batched matmul `mnk,mdk->mnd`: per-row matrix-vector products of buffers",
    inputs=(("A", "fp32", ("K", "N", "M")), ("B", "fp32", ("K", "D", "M"))),
    fns=(FnSpec("fn_matvec", "return [input[1] @ input[0]]",
                ["Buffer(fp32, [K])", "Buffer(fp32, [K, D])"], "Buffer(fp32, [D])"),),
    program="""\
a = step.Bufferize(a=1).apply(A)
w = step.Bufferize(a=2).apply(B)
w = step.Repeat(n=N).apply(w)
o = step.Map(fn=fn_matvec).apply((a, w))
return step.Streamify().apply(o)""",
    reference=lambda t, b: torch.einsum("mnk,mdk->mnd", t["A"], t["B"]),
)

ATTENTION = Case(
    name="attention_online_softmax",
    description="softmax(S)·V for M batches of K queries over N keys: V stashed over the "
                "queries, then one fused online-softmax Accum (max, sum, output)",
    inputs=(("S", "fp32", ("N", "K", "M")), ("V", "Buffer(fp32, [D])", ("N", "M"))),
    fns=(
        FnSpec("fn_online", """\
m_new = torch.maximum(state[0], input[0])
scale = torch.exp(state[0] - m_new)
p = torch.exp(input[0] - m_new)
return [m_new, state[1] * scale + p, state[2] * scale + p * input[1]]""",
               ["fp32", "Buffer(fp32, [D])"], ["fp32", "fp32", "Buffer(fp32, [D])"],
               init=["-inf", 0, "zeros"]),
        FnSpec("fn_finish", "return [input[2] / input[1]]",
               ["fp32", "fp32", "Buffer(fp32, [D])"], "Buffer(fp32, [D])"),
    ),
    program="""\
v = step.Bufferize(a=1).apply(V)
v = step.Repeat(n=K).apply(v)
v = step.Bufferize(a=1).apply(step.Streamify().apply(v))
st = step.Accum(fn=fn_online, b=1).apply(step.Zip().apply((S, v)))
return step.Map(fn=fn_finish).apply(st)""",
    reference=lambda t, b: torch.einsum("mkn,mnd->mkd", torch.softmax(t["S"], -1), t["V"]),
)

LAYERNORM = Case(
    name="layernorm",
    description="LayerNorm over D (no gain/bias) from small fns: Sum, DivByD, Minus, Square, "
                "AddEps, Sqrt, Div",
    inputs=(("X", "fp32", ("D", "M")),),
    fns=(
        FnSpec("fn_sum", "return [state[0] + input[0]]", "fp32", "fp32", init=[0]),
        FnSpec("fn_div_d", "return [input[0] / D_value]", "fp32", "fp32"),
        FnSpec("fn_minus", "return [input[0] - input[1]]", ["fp32", "fp32"], "fp32"),
        FnSpec("fn_square", "return [input[0] * input[0]]", "fp32", "fp32"),
        FnSpec("fn_add_eps", "return [input[0] + 1e-5]", "fp32", "fp32"),
        FnSpec("fn_sqrt", "return [torch.sqrt(input[0])]", "fp32", "fp32"),
        FnSpec("fn_div", "return [input[0] / input[1]]", ["fp32", "fp32"], "fp32"),
    ),
    program="""\
x1, x2 = step.Copy().apply(X)
x2, x3 = step.Copy().apply(x2)
mean = step.Map(fn=fn_div_d).apply(step.Accum(fn=fn_sum, b=1).apply(x1))
mean = step.RepeatRef().apply((mean, x2))
xc = step.Map(fn=fn_minus).apply((x3, mean))
xc1, xc2 = step.Copy().apply(xc)
xc2, xc3 = step.Copy().apply(xc2)
var = step.Accum(fn=fn_sum, b=1).apply(step.Map(fn=fn_square).apply(xc1))
std = step.Map(fn=fn_sqrt).apply(step.Map(fn=fn_add_eps).apply(step.Map(fn=fn_div_d).apply(var)))
std = step.RepeatRef().apply((std, xc2))
return step.Map(fn=fn_div).apply((xc3, std))""",
    reference=lambda t, b: torch.nn.functional.layer_norm(t["X"], (b["D"],), eps=1e-5),
)


def _rope_ref(t: Tensors, b: Mapping[str, int]) -> torch.Tensor:
    x = t["X"]  # (M, N, D)
    d = x.shape[-1]
    h = d // 2
    inv = 1.0 / (10000 ** (torch.arange(h, dtype=x.dtype) * 2 / d))
    ang = torch.arange(x.shape[1], dtype=x.dtype)[:, None] * inv[None, :]  # (N, h)
    c, s = torch.cos(ang), torch.sin(ang)
    return torch.cat([x[..., :h] * c - x[..., h:] * s, x[..., h:] * c + x[..., :h] * s], -1)


ROPE_NEOX = Case(
    name="rope_neox",
    description="NeoX rotary embedding (half split); token positions built by a Scan",
    inputs=(("X", "Buffer(fp32, [D])", ("N", "M")),),
    fns=(
        FnSpec("fn_one", "return [torch.ones((), dtype=input[0].dtype)]", "Buffer(fp32, [D])",
               "fp32"),
        FnSpec("fn_count", "return [state[0] + input[0]]", "fp32", "fp32", init=[-1]),
        FnSpec("fn_rope", """\
x = input[0]
h = x.shape[0] // 2
inv = 1.0 / (10000 ** (torch.arange(h, dtype=x.dtype) * 2 / x.shape[0]))
ang = input[1] * inv
c, s = torch.cos(ang), torch.sin(ang)
return [torch.cat([x[:h] * c - x[h:] * s, x[h:] * c + x[:h] * s])]""",
               ["Buffer(fp32, [D])", "fp32"], "Buffer(fp32, [D])"),
    ),
    program="""\
x1, x2 = step.Copy().apply(X)
pos = step.Scan(fn=fn_count, b=1).apply(step.Map(fn=fn_one).apply(x1))
return step.Map(fn=fn_rope).apply((x2, pos))""",
    reference=_rope_ref,
)


def _moe_data(b: Mapping[str, int], g: torch.Generator, dt: torch.dtype) -> Tensors:
    m, n, d, e = b["M"], b["N"], b["D"], b["E"]
    sel = (torch.rand(m, n, e, generator=g) < 0.45).to(dt)
    sel[0, 0] = 0.0  # a token routed nowhere: Merge emits init
    sel[..., e - 1] = 0.0  # an expert that receives 0 chunks
    out: Tensors = {"X": torch.randn(m, n, d, generator=g, dtype=dt), "S": sel}
    for i in range(e):
        out[f"W{i}"] = torch.randn(d, d, generator=g, dtype=dt) / d ** 0.5
    return out


def _moe_ref(t: Tensors, b: Mapping[str, int]) -> torch.Tensor:
    res = torch.zeros_like(t["X"])
    for i in range(b["E"]):
        res = res + t["S"][..., i: i + 1] * torch.tanh(t["X"] @ t[f"W{i}"])
    return res


MOE = Case(
    name="moe_3_experts",
    description="3-expert MoE over N*M tokens: Partition by a multi-hot router, per-expert Map, "
                "Merge sum",
    inputs=(("X", "Buffer(fp32, [D])", ("N", "M")), ("S", "Multihot(fp32, E)", ("N", "M"))),
    fns=tuple(FnSpec(f"fn_expert{i}", f"return [torch.tanh(input[0] @ W{i})]",
                     "Buffer(fp32, [D])", "Buffer(fp32, [D])") for i in range(3)) + (_ADD_D,),
    program="""\
s1, s2 = step.Copy().apply(S)
parts = step.Partition(N=E_value).apply((X, s1))
outs = [step.Map(fn=f).apply(p) for f, p in zip([fn_expert0, fn_expert1, fn_expert2], parts)]
return step.Merge(fn=fn_add).apply((outs, s2))""",
    make_data=_moe_data,
    reference=_moe_ref,
    extra_binding={"E": 3},
)

CASES: dict[str, Case] = {c.name: c for c in (BMM_MKN_MKD, BMM_MNK_MKD, BMM_MNK_MDK, ATTENTION,
                                              LAYERNORM, ROPE_NEOX, MOE)}
DEMO_CASES = ("bmm_mkn_mkd", "attention_online_softmax", "moe_3_experts")
