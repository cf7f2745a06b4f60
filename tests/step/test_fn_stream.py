"""Fn construction (YAML bodies, init values) and Stream inputs."""

from __future__ import annotations

import math

import torch

from stepsmith import step


def test_from_source_expression_body_and_namespace() -> None:
    ns = {"scale": 3.0}
    f = step.Fn.from_source(name="Scale", apply_src="[input[0] * scale]", input_dtype="fp32",
                            output_dtype="fp32", init=None, func_name="fn_scale", namespace=ns)
    assert f.func_name == "fn_scale" and not f.stateful
    with step.Session():
        x = step.Stream.input("X", "fp32", [4], torch.arange(4.0))
        out = step.Map(fn=f).apply(x)
    torch.testing.assert_close(out.data, torch.arange(4.0) * 3)


def test_from_source_multiline_with_helpers() -> None:
    src = """
m = torch.maximum(state[0], input[0])
return [m]
"""
    f = step.Fn.from_source(name="Max", apply_src=src, input_dtype="fp32", output_dtype="fp32",
                            init=["-inf"], func_name="fn_max", namespace={})
    assert f.stateful and f.init == (-math.inf,)


def test_init_forms() -> None:
    body = lambda input, state: state  # noqa: E731
    f = step.Fn("f", "fp32", ["fp32", "fp32", "Buffer(fp32, [D])", "Buffer(fp32, [D])"], body,
                init=[0, "-inf", "zeros", "ones"])
    assert f.init == (0.0, -math.inf, 0.0, 1.0)
    g = step.Fn("g", "fp32", "fp32", body, init=-1)  # scalar init for a single field
    assert g.init == (-1.0,)


def test_accum_inits_are_used() -> None:
    # returns the state unchanged: the output is exactly the init
    keep = step.Fn("keep", "fp32", ["fp32", "Buffer(fp32, [D])"], lambda i, s: s,
                   init=["-inf", "ones"])
    with step.Session(binding={"K": 2, "M": 3, "D": 4}):
        x = step.Stream.input("X", "fp32", ["K", "M"], torch.randn(3, 2))
        out = step.Accum(fn=keep, b=1).apply(x)
    assert torch.isinf(out.data[0]).all() and out.data[0].shape == (3,)
    torch.testing.assert_close(out.data[1], torch.ones(3, 4))


def test_one_argument_stateless_body() -> None:
    f = step.Fn("neg", "fp32", "fp32", lambda input: -input[0])
    with step.Session():
        out = step.Map(fn=f).apply(step.Stream.input("X", "fp32", [3], torch.ones(3)))
    torch.testing.assert_close(out.data, -torch.ones(3))


def test_stream_input_infers_unbound_symbols_and_checks_bound_ones() -> None:
    s = step.Stream.input("A", "Buffer(fp32, [D])", ["N", "M"], torch.zeros(2, 3, 4))
    assert s.rank == 1 and s.concrete_shape() == (3, 2)
    assert str(s.type_str()) == "Strm<Buffer(fp32, [D]), rank 1, [N, M]>"
    with step.Session(binding={"D": 4, "N": 3, "M": 2}):
        step.Stream.input("A", "Buffer(fp32, [D])", ["N", "M"], torch.zeros(2, 3, 4))
    t = step.Stream.input("T", ["fp32", "Multihot(fp32, E)"], ["M"],
                          (torch.zeros(5), torch.zeros(5, 3)))
    assert isinstance(t.data, tuple) and len(t.data) == 2
