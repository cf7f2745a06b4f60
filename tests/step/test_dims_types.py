"""Symbolic dims and element types."""

from __future__ import annotations

import re

import pytest

from stepsmith import step
from stepsmith.step import Buffer, Dim, Multihot, Scalar, StepDtypeError, TupleType, parse_dtype

M, N, K, D = (Dim.sym(s) for s in "MNKD")


def test_dim_products_are_structural() -> None:
    assert D * N * K == D * K * N
    assert hash(D * N * K) == hash(K * D * N)
    assert D * N != D * K
    assert str(N * K) == "N*K"
    assert step.dim("N*K") == N * K
    assert step.dim(3) == Dim.const(3) == 3
    assert 2 * D == D * 2 and str(2 * D) == "2*D"


def test_dim_exact_division() -> None:
    assert (D * N * K) / N == D * K
    assert (Dim.const(12) * D) / 4 == 3 * D
    with pytest.raises(step.StepShapeError, match="not exactly divisible"):
        _ = D / N
    with pytest.raises(step.StepShapeError, match="not exactly divisible"):
        _ = D / 2


def test_dim_evaluate_and_unbound() -> None:
    assert (D * N).evaluate({"D": 16, "N": 7}) == 112
    assert (D * D).evaluate({"D": 3}) == 9
    with pytest.raises(step.StepShapeError, match="N"):
        (D * N).evaluate({"D": 16})
    assert (D * N).try_evaluate({"D": 2}) is None


def test_fresh_dims_are_unique() -> None:
    a, b = step.fresh_dim("P"), step.fresh_dim("P")
    assert a != b and not a.is_const


def test_buffer_of_buffer_collapses() -> None:
    inner = Buffer(Scalar(), (D,))
    outer = Buffer(inner, (N, K))
    assert outer == Buffer(Scalar(), (D, N, K))
    assert str(outer) == "Buffer(fp32, [D, N, K])"


def test_tuples_are_flat() -> None:
    t = TupleType((TupleType((Scalar(), Scalar())), Buffer(Scalar(), (D,))))
    assert len(t.fields) == 3
    assert t == TupleType((Scalar(), Scalar(), Buffer(Scalar(), (D,))))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("fp32", Scalar()),
        ("Buffer(fp32, [D])", Buffer(Scalar(), (D,))),
        ("Buffer(fp32, [D, N*K])", Buffer(Scalar(), (D, N * K))),
        ("Multihot(fp32, E)", Multihot("fp32", Dim.sym("E"))),
        ("Buffer(Multihot(fp32, E), [M])", Buffer(Multihot("fp32", Dim.sym("E")), (M,))),
        ("[fp32, Buffer(fp32, [D])]", TupleType((Scalar(), Buffer(Scalar(), (D,))))),
    ],
)
def test_parse_dtype_roundtrip(text: str, expected: object) -> None:
    parsed = parse_dtype(text)
    assert parsed == expected
    assert parse_dtype(str(parsed)) == parsed


def test_parse_dtype_list_and_symbols() -> None:
    assert parse_dtype(["fp32", "fp32"]) == TupleType((Scalar(), Scalar()))
    assert parse_dtype(["fp32"]) == Scalar()  # a 1-element list is its field
    assert parse_dtype("Buffer(fp32, [D])", symbols={"D": Dim.const(4)}) == Buffer(Scalar(), (4,))


@pytest.mark.parametrize("bad", ["fp33", "Buffer(fp32, D)", "Buffer(fp32, [D]", "Tile(fp32)", ""])
def test_parse_dtype_errors_are_clear(bad: str) -> None:
    with pytest.raises(step.StepDtypeError) as e:
        parse_dtype(bad)
    assert "dtype" in str(e.value) or "numeric type" in str(e.value)


def test_rational_ratio_for_reshape_halves() -> None:
    half = D.ratio(2)
    assert str(half) == "D/2" and half * 2 == D and hash(half * 2) == hash(D)
    assert half.evaluate({"D": 16}) == 8
    assert step.dim("D/2") == half and step.dim(str(3 * half)) == 3 * half
    with pytest.raises(step.StepShapeError, match="whole number"):
        half.evaluate({"D": 7})
    with pytest.raises(step.StepShapeError):
        Dim.const(3).ratio(2)
    assert parse_dtype("Buffer(fp32, [D/2])") == Buffer(Scalar(), (half,))


def test_reshape_then_flatten_restores_the_symbolic_dim() -> None:
    import torch

    with step.Session(binding={"D": 6, "M": 2}):
        x = step.Stream.input("X", "fp32", ["D", "M"], torch.randn(2, 6))
        r = step.Reshape(L=[0], S=2).apply(x)
        assert r.shape == (step.dim(2), D.ratio(2), M)
        f = step.Flatten(L=[1]).apply(r)
        assert f.shape == (D, M)
        torch.testing.assert_close(f.data, x.data)
    with step.Session(binding={"D": 5, "M": 2}):
        x = step.Stream.input("X", "fp32", ["D", "M"], torch.randn(2, 5))
        with pytest.raises(step.StepShapeError, match="not divisible"):
            step.Reshape(L=[0], S=2).apply(x)


def test_parse_dim_is_the_dtype_grammar_for_one_dimension() -> None:
    from stepsmith.step.dtypes import parse_dim

    assert parse_dim("N*K") == Dim.sym("N") * Dim.sym("K") and str(parse_dim("2*D")) == "2*D"
    assert str(parse_dim("D/2")) == "D/2"
    with pytest.raises(StepDtypeError, match="cannot parse dimension 'N\\*'"):
        parse_dim("N*")


@pytest.mark.parametrize(
    "text",
    ["fp32", "Buffer(fp32, [D])", "Buffer(Buffer(fp32, [D]), [N*K, 2])", "Multihot(fp32, E)",
     "Buffer(Multihot(fp32, E), [M])", ["fp32", "Buffer(fp32, [2*D])"]],
)
def test_task_files_read_dtypes_with_the_language_grammar(text: str | list[str]) -> None:
    """One grammar, one set of types: a task's dtype is the language's own parse."""
    from stepsmith.tasks import dtypes as task_dtypes

    assert task_dtypes.parse_dtype(text) == parse_dtype(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [("Buffer(fp16, [D])", "'fp16'"), ("Multihot(fp64, E)", "'fp64'"),
     ("Buffer(fp32, [D/2])", "product of size symbols"), ("Buffer(fp32, [0])", ">= 1"),
     ("Buffer(fp32, [D]", "expected ')'")],
)
def test_task_files_keep_to_their_subset_of_the_grammar(text: str, why: str) -> None:
    """A task's numbers are fp32 and its dims positive integer products: the loader says so."""
    from stepsmith.tasks import dtypes as task_dtypes

    with pytest.raises(task_dtypes.DTypeSyntaxError, match=re.escape(why)):
        task_dtypes.parse_dtype(text)
