"""Semantics of every primitive (both executors) against direct PyTorch computations."""

from __future__ import annotations

import math

import pytest
import torch
from step_helpers import BINDING, fn, inp

from stepsmith import step

torch.manual_seed(0)
A_KM = torch.randn(3, 5)  # stream [K, M]
SUM = fn("fn_sum", "return [state[0] + input[0]]", "fp32", "fp32", init=[0])
MAX = fn("fn_max", "return [torch.maximum(state[0], input[0])]", "fp32", "fp32", init=["-inf"])
EXP = fn("fn_exp", "return [torch.exp(input[0])]", "fp32", "fp32")
MUL = fn("fn_mul", "return [input[0] * input[1]]", ["fp32", "fp32"], "fp32")


def test_map_and_autozip(session: step.Session) -> None:
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    out = step.Map(fn=MUL).apply((inp("A", "fp32", ["N", "M"], a), inp("B", "fp32", ["N", "M"], b)))
    assert out.dtype == step.Scalar() and out.shape == (step.Dim.sym("N"), step.Dim.sym("M"))
    torch.testing.assert_close(out.data, a * b)
    e = step.Map(fn=EXP).apply(inp("A", "fp32", ["N", "M"], a))
    torch.testing.assert_close(e.data, torch.exp(a))


def test_map_python_number_and_bare_tensor_outputs(session: step.Session) -> None:
    const = step.Fn("fn_c", "fp32", "fp32", lambda input, state: 2.5)
    out = step.Map(fn=const).apply(inp("A", "fp32", ["N", "M"], torch.randn(3, 4)))
    torch.testing.assert_close(out.data, torch.full((3, 4), 2.5))
    bare = step.Fn("fn_b", "fp32", "fp32", lambda input, state: input[0] + 1)
    out = step.Map(fn=bare).apply(inp("A", "fp32", ["N", "M"], torch.zeros(3, 4)))
    torch.testing.assert_close(out.data, torch.ones(3, 4))


def test_zip_flattens_tuples(session: step.Session) -> None:
    a, b, c = (torch.randn(3, 4) for _ in range(3))
    ab = step.Zip().apply((inp("A", "fp32", ["N", "M"], a), inp("B", "fp32", ["N", "M"], b)))
    abc = step.Zip().apply((ab, inp("C", "fp32", ["N", "M"], c)))
    assert abc.dtype == step.parse_dtype(["fp32", "fp32", "fp32"])
    assert isinstance(abc.data, tuple) and len(abc.data) == 3
    torch.testing.assert_close(abc.data[2], c)


def test_accum_scan(session: step.Session) -> None:
    x = torch.randn(3, 4, 5)  # [K, N, M]
    s = step.Accum(fn=SUM, b=2).apply(inp("X", "fp32", ["K", "N", "M"], x))
    assert s.rank == 0
    torch.testing.assert_close(s.data, x.sum((1, 2)))
    m = step.Accum(fn=MAX, b=1).apply(inp("X", "fp32", ["K", "N", "M"], x))
    torch.testing.assert_close(m.data, x.amax(-1))
    c = step.Scan(fn=SUM, b=1).apply(inp("X", "fp32", ["K", "N", "M"], x))
    torch.testing.assert_close(c.data, x.cumsum(-1))
    c2 = step.Scan(fn=SUM, b=2).apply(inp("X", "fp32", ["K", "N", "M"], x))
    torch.testing.assert_close(c2.data, x.reshape(3, -1).cumsum(-1).reshape(3, 4, 5))


def test_accum_tuple_state_with_buffer_init(session: step.Session) -> None:
    f = fn("fn_ms", "return [state[0] + input[0].sum(), state[1] * input[0]]",
           "Buffer(fp32, [D])", ["fp32", "Buffer(fp32, [D])"], init=[0, "ones"])
    x = torch.rand(3, 4, 6)  # Buffer[D] on [N, M]
    out = step.Accum(fn=f, b=1).apply(inp("X", "Buffer(fp32, [D])", ["N", "M"], x))
    torch.testing.assert_close(out.data[0], x.sum((1, 2)))
    torch.testing.assert_close(out.data[1], x.prod(1))


@pytest.mark.parametrize("b", [0, 1, 2, 3])
def test_promote(session: step.Session, b: int) -> None:
    x = torch.randn(3, 4, 5)  # [K, N, M] -> tensor (M, N, K)
    out = step.Promote(b=b).apply(inp("X", "fp32", ["K", "N", "M"], x))
    shape = [step.dim(s) for s in ["K", "N", "M"]]
    assert list(out.shape) == shape[:b] + [step.dim(1)] + shape[b:]
    torch.testing.assert_close(out.data, x.unsqueeze(3 - b))


def test_flatten_and_reshape(session: step.Session) -> None:
    x = torch.randn(3, 4, 5)  # [K, N, M]
    f = step.Flatten(L=[1]).apply(inp("X", "fp32", ["K", "N", "M"], x))
    assert f.shape == (step.dim("K*N"), step.dim("M"))
    torch.testing.assert_close(f.data, x.reshape(3, 20))
    f2 = step.Flatten(L=[1, 2]).apply(inp("X", "fp32", ["K", "N", "M"], x))
    torch.testing.assert_close(f2.data, x.reshape(60))
    y = torch.randn(3, 6)  # [D, M]
    r = step.Reshape(L=[0], S=3).apply(inp("Y", "fp32", ["D", "M"], y))
    assert r.rank == 2 and r.shape[0] == step.dim(3)
    torch.testing.assert_close(r.data, y.reshape(3, 2, 3))
    # symbolic exact division: N*K split by K
    z = torch.randn(3, 20)
    r2 = step.Reshape(L=[0], S=step.dim("K")).apply(inp("Z", "fp32", ["N*K", "M"], z))
    assert r2.shape == (step.dim("K"), step.dim("N"), step.dim("M"))
    torch.testing.assert_close(r2.data, z.reshape(3, 4, 5))


def test_bufferize_streamify_roundtrip(session: step.Session) -> None:
    x = torch.randn(3, 4, 5)  # [K, N, M]
    b = step.Bufferize(a=2).apply(inp("X", "fp32", ["K", "N", "M"], x))
    assert b.dtype == step.parse_dtype("Buffer(fp32, [K, N])") and b.rank == 0
    bb = step.Bufferize(a=1).apply(step.Bufferize(a=1).apply(inp("X", "fp32", ["K", "N", "M"], x)))
    assert bb.dtype == step.parse_dtype("Buffer(fp32, [K, N])")  # collapsed
    torch.testing.assert_close(bb.data, x)
    s = step.Streamify().apply(b)
    assert s.shape == (step.dim("K"), step.dim("N"), step.dim("M"))
    torch.testing.assert_close(s.data, x)


def test_repeat_and_repeatref(session: step.Session) -> None:
    x = torch.randn(3)
    r = step.Repeat(n=step.dim("N")).apply(inp("X", "fp32", ["M"], x))
    torch.testing.assert_close(r.data, x[:, None].expand(3, 4))
    r2 = step.Repeat(n=2).apply(inp("X", "fp32", ["M"], x))
    assert r2.shape[0] == step.dim(2)
    ref = inp("R", "Buffer(fp32, [D])", ["K", "M"], torch.randn(3, 5, 6))
    rr = step.RepeatRef().apply((inp("X", "fp32", ["M"], x), ref))
    assert rr.shape == ref.shape and rr.dtype == step.Scalar()
    torch.testing.assert_close(rr.data, x[:, None].expand(3, 5))


def test_copy_and_identity(session: step.Session) -> None:
    x = torch.randn(3, 4)
    a, b = step.Copy().apply(inp("X", "fp32", ["N", "M"], x))
    torch.testing.assert_close(a.data, x)
    torch.testing.assert_close(b.data, x)
    c, d, e = step.Copy(n=3).apply(a)
    torch.testing.assert_close(step.Identity().apply(e).data, x)


def test_partition_merge_with_empty_expert(session: step.Session) -> None:
    x = torch.randn(3, 6)  # Buffer(D) per token, [M]
    sel = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 0]])  # expert 2 empty; token 2 nowhere
    s1, s2 = step.Copy().apply(inp("S", "Multihot(fp32, E)", ["M"], sel))
    parts = step.Partition(N=3).apply((inp("X", "Buffer(fp32, [D])", ["M"], x), s1))
    assert isinstance(parts, list) and len(parts) == 3
    assert [p.concrete_shape()[-1] for p in parts] == [2, 1, 0]
    torch.testing.assert_close(parts[0].data, x[[0, 1]])
    assert session.binding[parts[2].shape[-1].symbols[0]] == 0  # fresh dim bound
    add = fn("fn_add", "return [state[0] + input[0]]", "Buffer(fp32, [D])", "Buffer(fp32, [D])",
             init=["zeros"])
    scaled = [step.Map(fn=fn(f"fn_s{i}", f"return [input[0] * {i + 1}.0]", "Buffer(fp32, [D])",
                             "Buffer(fp32, [D])")).apply(p) for i, p in enumerate(parts)]
    out = step.Merge(fn=add).apply((scaled, s2))
    want = x * (sel * torch.tensor([1.0, 2, 3])).sum(-1, keepdim=True)
    torch.testing.assert_close(out.data, want)
    assert float(out.data[2].abs().sum()) == 0.0  # all-zero selector emits init


def test_partition_chunks_rank(session: step.Session) -> None:
    x = torch.randn(3, 4, 5)  # [K, N, M]; selector on [N, M] -> chunks of K
    sel = (torch.rand(3, 4, 3) < 0.5).float()
    parts = step.Partition(N=3).apply((inp("X", "fp32", ["K", "N", "M"], x),
                                       inp("S", "Multihot(fp32, E)", ["N", "M"], sel)))
    flat_x, flat_s = x.reshape(12, 5), sel.reshape(12, 3)
    for i, p in enumerate(parts):
        assert p.rank == 1 and p.shape[0] == step.dim("K")
        torch.testing.assert_close(p.data, flat_x[flat_s[:, i] != 0])


def test_float64_data_is_preserved() -> None:
    x = torch.randn(3, 5, dtype=torch.float64)
    for ex in ("fast", "oracle"):
        with step.Session(binding=BINDING, executor=ex):
            out = step.Accum(fn=SUM, b=1).apply(inp("X", "fp32", ["K", "M"], x))
            assert out.data.dtype == torch.float64
            torch.testing.assert_close(out.data, x.sum(-1))
            c = step.Map(fn=step.Fn("c", "fp32", "fp32", lambda i, s: 1.0)).apply(out)
            assert c.data.dtype == torch.float64


def test_vmap_fallback_gives_identical_results() -> None:
    """A body with data-dependent Python control flow can't be vmapped: per-element fallback."""
    def body(input: list[torch.Tensor], state: object) -> list[torch.Tensor]:
        return [input[0] * 2 if float(input[0]) > 0 else input[0] - 1]

    x = torch.randn(3, 5)
    results = []
    for ex in ("fast", "oracle"):
        f = step.Fn("fn_branch", "fp32", "fp32", body)
        with step.Session(binding=BINDING, executor=ex):
            results.append(step.Map(fn=f).apply(inp("X", "fp32", ["K", "M"], x)).data)
        if ex == "fast":
            assert f.vmap_ok is False
    torch.testing.assert_close(results[0], results[1])
    torch.testing.assert_close(results[0], torch.where(x > 0, x * 2, x - 1))


def test_inf_init_scan_matches_cummax(session: step.Session) -> None:
    x = torch.randn(3, 5)
    out = step.Scan(fn=MAX, b=1).apply(inp("X", "fp32", ["K", "M"], x))
    torch.testing.assert_close(out.data, torch.cummax(x, -1).values)
    assert not math.isinf(float(out.data.min()))
