"""Every violation raises a typed error naming primitive, stream, expected and found."""

from __future__ import annotations

import pytest
import torch
from step_helpers import BINDING, fn, inp

from stepsmith import step

SUM = fn("fn_sum", "return [state[0] + input[0]]", "fp32", "fp32", init=[0])
EXP = fn("fn_exp", "return [torch.exp(input[0])]", "fp32", "fp32")
BUF = fn("fn_bsum", "return [input[0].sum()]", "Buffer(fp32, [D])", "fp32")


@pytest.fixture(autouse=True)
def _session():  # noqa: ANN202
    with step.Session(binding=BINDING) as s:
        yield s


def km(name: str = "E3") -> step.Stream:
    return inp(name, "fp32", ["K", "M"], torch.randn(3, 5))


def test_rank_error_message_names_everything() -> None:
    E3 = km()
    with pytest.raises(step.StepRankError) as e:
        step.Accum(fn=SUM, b=2).apply(E3)
    msg = str(e.value)
    assert msg.startswith("Accum(fn=fn_sum, b=2) on stream 'E3': b must satisfy 0 < b <= rank")
    assert "stream rank is 1 (shape [K, M])" in msg
    assert e.value.primitive == "Accum(fn=fn_sum, b=2)" and e.value.expected == "0 < b <= 1"
    assert "Promote" in msg  # hint for the placeholder idiom


def test_dtype_mismatch_names_both_types() -> None:
    with pytest.raises(step.StepDtypeError) as e:
        step.Map(fn=BUF).apply(km())
    msg = str(e.value)
    assert "Buffer(fp32, [D])" in msg and "fp32" in msg and "'E3'" in msg and "fn_bsum" in msg


def test_fn_kind_errors() -> None:
    with pytest.raises(step.StepFnKindError, match="stateful"):
        step.Map(fn=SUM).apply(km())
    with pytest.raises(step.StepFnKindError, match="stateless"):
        step.Accum(fn=EXP, b=1).apply(km())
    with pytest.raises(step.StepFnKindError):
        step.Scan(fn=EXP, b=1).apply(km())


def test_affine_strict_warn_off() -> None:
    E0 = km("E0")
    step.Map(fn=EXP).apply(E0)
    with pytest.raises(step.StepAffineError) as e:
        step.Accum(fn=SUM, b=1).apply(E0)
    msg = str(e.value)
    assert "'E0'" in msg and "Map(fn=fn_exp)" in msg and "Accum(fn=fn_sum, b=1)" in msg
    assert "step.Copy().apply(E0)" in msg
    assert e.value.stream == "'E0'" and e.value.primitive == "Accum(fn=fn_sum, b=1)"
    with step.Session(binding=BINDING, affine="warn") as s:
        x = km("X")
        step.Map(fn=EXP).apply(x)
        out = step.Map(fn=EXP).apply(x)
        assert len(s.warnings) == 1 and "'x' (= X)" in s.warnings[0]
        torch.testing.assert_close(out.data, torch.exp(x.data))
    with step.Session(binding=BINDING, affine="off") as s:
        x = km("X")
        step.Map(fn=EXP).apply(x)
        step.Map(fn=EXP).apply(x)
        assert s.warnings == []


def test_affine_same_call_twice_and_copy_outputs_fresh() -> None:
    mul = fn("fn_mul", "return [input[0] * input[1]]", ["fp32", "fp32"], "fp32")
    x = km("X")
    with pytest.raises(step.StepAffineError):
        step.Map(fn=mul).apply((x, x))
    y = km("Y")
    a, b = step.Copy().apply(y)
    step.Map(fn=mul).apply((a, b))  # fine: two fresh streams
    with pytest.raises(step.StepAffineError, match="Copy"):
        step.Map(fn=EXP).apply(y)


def test_affine_error_uses_program_variable_name() -> None:
    x = km("X")
    doubled = step.Map(fn=EXP).apply(x)
    step.Map(fn=EXP).apply(doubled)
    with pytest.raises(step.StepAffineError) as e:
        step.Map(fn=EXP).apply(doubled)
    assert "'doubled' (= Map#" in str(e.value)


def test_shape_errors() -> None:
    mul = fn("fn_mul", "return [input[0] * input[1]]", ["fp32", "fp32"], "fp32")
    a = inp("A", "fp32", ["N", "M"], torch.randn(3, 4))
    with pytest.raises(step.StepShapeError) as e:
        step.Zip().apply((a, km("B")))
    assert "[N, M]" in str(e.value) and "[K, M]" in str(e.value)
    with pytest.raises(step.StepShapeError):
        step.Map(fn=mul).apply((inp("A", "fp32", ["N", "M"], torch.randn(3, 4)), km("B")))
    with pytest.raises(step.StepShapeError, match="divisible"):
        step.Reshape(L=[0], S=2).apply(km())  # K = 5
    with pytest.raises(step.StepShapeError, match="reference"):
        step.RepeatRef().apply((km("A"), km("R")))


def test_rank_errors_of_shape_primitives() -> None:
    with pytest.raises(step.StepRankError):
        step.Bufferize(a=2).apply(km())
    with pytest.raises(step.StepRankError):
        step.Promote(b=3).apply(km())
    with pytest.raises(step.StepRankError):
        step.Flatten(L=[2]).apply(km())
    with pytest.raises(step.StepRankError):
        step.Reshape(L=[2], S=1).apply(km())
    with pytest.raises(step.StepDtypeError, match="Buffer"):
        step.Streamify().apply(km())


def test_argument_errors_are_typed() -> None:
    with pytest.raises(step.StepArgumentError, match="b="):
        step.Accum(fn=SUM)
    with pytest.raises(step.StepArgumentError, match="consecutive"):
        step.Flatten(L=[1, 3])
    with pytest.raises(step.StepArgumentError, match="must be a stream"):
        step.Map(fn=EXP).apply("E3")
    with pytest.raises(step.StepArgumentError, match="fn="):
        step.Map(fn="fn_exp").apply(km())
    with pytest.raises(step.StepArgumentError, match="pair"):
        step.Partition(N=3).apply(km())
    with pytest.raises(step.StepArgumentError, match="unknown parameter"):
        step.Accum(fn=SUM, b=1, k=2)
    with pytest.raises(step.StepArgumentError, match="one argument"):
        step.Zip().apply(km("A"), km("B"))


def test_partition_merge_errors() -> None:
    x = inp("X", "fp32", ["D", "M"], torch.randn(3, 6))
    with pytest.raises(step.StepDtypeError, match="Multihot"):
        step.Partition(N=3).apply((x, km("S")))
    sel = inp("S", "Multihot(fp32, E)", ["M"], torch.ones(3, 3))
    with pytest.raises(step.StepShapeError, match="E = E = 3|number of experts"):
        step.Partition(N=2).apply((inp("X", "fp32", ["D", "M"], torch.randn(3, 6)), sel))
    add = fn("fn_add", "return [state[0] + input[0]]", "fp32", "fp32", init=[0])
    s1, s2 = step.Copy().apply(inp("S", "Multihot(fp32, E)", ["M"], torch.ones(3, 3)))
    parts = step.Partition(N=3).apply((inp("X", "fp32", ["D", "M"], torch.randn(3, 6)), s1))
    with pytest.raises(step.StepShapeError, match="number of parts"):
        step.Merge(fn=add).apply((parts[:2], s2))


def test_merge_refuses_a_selector_that_did_not_route_its_parts() -> None:
    """Typed before any data runs: a Repeat of the selector has E*M positions, not M."""
    add = fn("fn_add", "return [state[0] + input[0]]", "fp32", "fp32", init=[0])
    s1, s2 = step.Copy().apply(inp("S", "Multihot(fp32, E)", ["M"], torch.ones(3, 3)))
    parts = step.Partition(N=3).apply((inp("X", "fp32", ["D", "M"], torch.randn(3, 6)), s1))
    outs = [step.Map(fn=EXP).apply(p) for p in parts]
    with pytest.raises(step.StepShapeError) as e:
        step.Merge(fn=add).apply((outs, step.Repeat(n=2).apply(s2)))
    msg = str(e.value)
    assert "routed by a Partition whose selector has M elements" in msg
    assert "has 2*M" in msg and "same selector" in msg
    # the same positions in another shape still merge (Promote adds a dim of size 1)
    s1, s2 = step.Copy().apply(inp("S", "Multihot(fp32, E)", ["M"], torch.ones(3, 3)))
    parts = step.Partition(N=3).apply((inp("X", "fp32", ["D", "M"], torch.randn(3, 6)), s1))
    merged = step.Merge(fn=add).apply((parts, step.Promote(b=1).apply(s2)))
    assert merged.fields[0].shape == (1, 3, 6)


def test_fn_body_failures_become_step_errors() -> None:
    bad = fn("fn_bad", "return [input[3]]", "fp32", "fp32")
    with pytest.raises(step.StepRuntimeError) as e:
        step.Map(fn=bad).apply(km())
    assert "fn_bad" in str(e.value) and "IndexError" in str(e.value)
    wrong = fn("fn_wrong", "return [input[0].sum()]", "Buffer(fp32, [D])", "Buffer(fp32, [D])")
    with pytest.raises(step.StepDtypeError, match="element shape"):
        step.Map(fn=wrong).apply(inp("B", "Buffer(fp32, [D])", ["M"], torch.randn(3, 6)))
    two = fn("fn_two", "return [input[0], input[0]]", "fp32", "fp32")
    with pytest.raises(step.StepRuntimeError, match="returned 2 value"):
        step.Map(fn=two).apply(km())


def test_stream_input_validation() -> None:
    with pytest.raises(step.StepShapeError) as e:
        step.Stream.input("A", "fp32", ["K", "M"], torch.randn(5, 3))  # reversed layout
    assert "'A'" in str(e.value) and "(M, K)" in str(e.value)
    with pytest.raises(step.StepShapeError, match="dims"):
        step.Stream.input("A", "Buffer(fp32, [D])", ["M"], torch.randn(3))
    with pytest.raises(step.StepShapeError, match="one tensor per field"):
        step.Stream.input("T", ["fp32", "fp32"], ["M"], torch.randn(3))


def test_fn_from_source_errors() -> None:
    with pytest.raises(step.StepArgumentError, match="syntax error"):
        fn("fn_x", "return [input[0] +]", "fp32", "fp32")
    with pytest.raises(step.StepArgumentError, match="init"):
        fn("fn_x", "return [state[0]]", "fp32", "fp32", init=[0, 1])
    with pytest.raises(step.StepArgumentError, match="unknown init"):
        fn("fn_x", "return [state[0]]", "fp32", "fp32", init=["twelve"])


def test_session_validation_and_default() -> None:
    with pytest.raises(step.StepArgumentError, match="executor"):
        step.Session(executor="gpu")  # type: ignore[arg-type]
    with pytest.raises(step.StepArgumentError, match="affine"):
        step.Session(affine="lenient")  # type: ignore[arg-type]
    with pytest.raises(step.StepArgumentError, match="int"):
        step.Session(binding={"M": "five"})
    outer = step.current_session()
    with step.Session(binding={"M": 2}, executor="oracle") as s:
        assert step.current_session() is s
        with step.Session() as inner:
            assert step.current_session() is inner
        assert step.current_session() is s
    assert step.current_session() is outer
