"""`stepsmith verify` command: exit codes, JSON output, human summary, bad input."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner
from verify_fixtures import ROWSUM_REF, ROWSUM_YAML

from stepsmith.verify.cli import register


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps `verify` a named sub-command
        """placeholder"""

    return app


def test_passing_impl_exits_zero_with_json(tmp_path) -> None:
    task = tmp_path / "t.yaml"
    task.write_text(ROWSUM_YAML)
    r = CliRunner().invoke(_app(), ["verify", str(task), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["passed"] is True and len(data["bindings"]) >= 3


def test_failing_impl_exits_one_with_feedback(tmp_path) -> None:
    task = tmp_path / "t.yaml"
    task.write_text(ROWSUM_YAML)
    impl = tmp_path / "impl.py"
    impl.write_text(ROWSUM_REF.replace("fn_sq", "fn_neg"))
    r = CliRunner().invoke(_app(), ["verify", str(task), "--impl", str(impl)])
    assert r.exit_code == 1
    assert "FAILED" in r.output and "value_mismatch" in r.output
    assert "output 'O' differs from the reference" in r.output
    assert "paper" in r.output  # per-binding table


def test_affine_warn_flag(tmp_path) -> None:
    task = tmp_path / "t.yaml"
    task.write_text(ROWSUM_YAML)
    impl = tmp_path / "impl.py"
    impl.write_text(
        "E1 = step.Map(fn=fn_sq).apply(X)\nE2 = step.Map(fn=fn_neg).apply(X)\n"
        "return step.Accum(fn=fn_sum, b=1).apply(E1)\n"
    )
    strict = CliRunner().invoke(_app(), ["verify", str(task), "--impl", str(impl), "--json"])
    assert strict.exit_code == 1 and json.loads(strict.output)["kind"] == "affine"
    warn = CliRunner().invoke(
        _app(), ["verify", str(task), "--impl", str(impl), "--affine", "warn", "--json"]
    )
    assert warn.exit_code == 0
    assert json.loads(warn.output)["warnings"]


def test_bad_inputs_are_clear(tmp_path) -> None:
    r = CliRunner().invoke(_app(), ["verify", "no_such_task_anywhere"])
    assert r.exit_code == 2 and "no_such_task_anywhere" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("test_name: x\ninputs: [\n")
    r2 = CliRunner().invoke(_app(), ["verify", str(bad)])
    assert r2.exit_code == 2 and "cannot load task" in r2.output
    task = tmp_path / "t.yaml"
    task.write_text(ROWSUM_YAML)
    r3 = CliRunner().invoke(_app(), ["verify", str(task), "--impl", str(tmp_path / "missing.py")])
    assert r3.exit_code == 2 and "cannot read --impl" in r3.output
    r4 = CliRunner().invoke(_app(), ["verify", str(task), "--affine", "maybe"])
    assert r4.exit_code == 2 and "strict" in r4.output


def test_benchmark_task_name_uses_its_own_impl() -> None:
    r = CliRunner().invoke(_app(), ["verify", "bmm_outer_product", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["passed"] and data["task"] == "bmm_outer_product"
