"""The operator programs shared by demo/bench/tests match PyTorch with both executors."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from stepsmith.step.examples import CASES, PAPER_BINDING, prepare

SMALL = {"M": 3, "N": 4, "K": 5, "D": 6}


@pytest.mark.parametrize("executor", ["fast", "oracle"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_case_matches_torch(name: str, executor: str) -> None:
    for binding in (SMALL, PAPER_BINDING):
        p = prepare(CASES[name], binding, executor, seed=3)
        out, ref = p.run(), p.torch_run()
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_float64(name: str) -> None:
    p = prepare(CASES[name], SMALL, "fast", seed=1, dtype=torch.float64)
    out = p.run()
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, p.torch_run(), atol=1e-10, rtol=1e-10)


def test_moe_case_has_an_empty_expert_and_an_unrouted_token() -> None:
    p = prepare(CASES["moe_3_experts"], SMALL, "fast")
    sel = p.data["S"]
    assert float(sel[..., -1].sum()) == 0.0 and float(sel[0, 0].sum()) == 0.0


def test_demo_command_runs() -> None:
    import typer

    from stepsmith.step.cli import register

    app = typer.Typer()
    register(app)
    res = CliRunner().invoke(app, ["demo", "--repeats", "1"])
    assert res.exit_code == 0, res.output
    assert "moe_3_experts" in res.output and "match" in res.output
    assert "MISMATCH" not in res.output
