"""`stepsmith tasks` sub-commands through Typer's test runner."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from stepsmith.tasks.cli import register


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command()
    def _other() -> None:  # a second command keeps `tasks` a sub-command group
        pass

    return app


def test_list_shows_tasks_with_stats():
    result = CliRunner().invoke(_app(), ["tasks", "list", "--group", "norm"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "norm_layernorm" in result.output and "13" in result.output and "Repeat" in result.output
    assert "bmm_outer_product" not in result.output


def test_list_demos():
    result = CliRunner().invoke(_app(), ["tasks", "list", "--demos"], env={"COLUMNS": "160"})
    assert result.exit_code == 0 and "demo_merge_scaled_experts" in result.output


def test_show_prints_yaml_and_can_hide_impl():
    runner = CliRunner()
    result = runner.invoke(_app(), ["tasks", "show", "rope_neox_rows"])
    assert result.exit_code == 0 and "test_name: rope_neox_rows" in result.output
    assert "impl: |-" in result.output
    hidden = runner.invoke(_app(), ["tasks", "show", "rope_neox_rows", "--no-impl"])
    assert "impl:" not in hidden.output and "data_transform" in hidden.output


def test_show_unknown_task_fails_with_suggestion():
    result = CliRunner().invoke(_app(), ["tasks", "show", "rope_neox_row"])
    assert result.exit_code == 1 and "did you mean rope_neox_rows" in result.output


def test_check_runs_references():
    result = CliRunner().invoke(_app(), ["tasks", "check", "demo_map_silu", "gemm_bias_relu"])
    assert result.exit_code == 0, result.output
    assert "PASS demo_map_silu (3 bindings)" in result.output


def test_check_reports_malformed_files_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("test_name: x\ninputs: []\n")
    result = CliRunner().invoke(_app(), ["tasks", "check", str(bad), "demo_zip_hypot"])
    assert result.exit_code == 1
    assert f"FAIL {bad}" in result.output and "bad.yaml:2" in result.output
    assert "PASS demo_zip_hypot" in result.output and "Traceback" not in result.output
