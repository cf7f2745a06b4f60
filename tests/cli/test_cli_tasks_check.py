"""`stepsmith tasks check` and the pre-flight of `bench`: broken tasks are caught before any call."""

from __future__ import annotations

from pathlib import Path

from task_files import good, no_impl, typo_in_fn, write, wrong_layout
from typer.testing import CliRunner

from stepsmith.cli import app


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_check_passes_a_good_task_and_a_task_without_impl(tmp_path: Path) -> None:
    result = _run("tasks", "check", str(good(tmp_path)), str(no_impl(tmp_path)))
    assert result.exit_code == 0, result.output
    assert "PASS my_silu (3 bindings)" in result.output
    assert "PASS my_noimpl (3 bindings; no impl: checked the reference outputs only)" in result.output
    assert "2/2 tasks passed" in result.output


def test_check_fails_broken_tasks_with_file_line_and_reason_no_traceback(tmp_path: Path) -> None:
    typo, layout = typo_in_fn(tmp_path), wrong_layout(tmp_path)
    result = _run("tasks", "check", str(typo), str(layout), "demo_map_silu")
    assert result.exit_code == 1
    out = result.output
    assert "Traceback" not in out and "FAIL my_typo" in out and "FAIL my_layout" in out
    impl_line = typo.read_text().splitlines().index("impl: |-") + 1
    assert f"{typo}:{impl_line}: field 'impl'" in out and "Dvalue" in out
    assert f"{layout}:" in out and "must be laid out as" in out
    assert "PASS demo_map_silu" in out and "1/3 tasks passed" in out


def test_check_reports_duplicate_test_names_naming_both_files(tmp_path: Path) -> None:
    a = good(tmp_path, "a")
    (tmp_path / "sub").mkdir()
    b = good(tmp_path / "sub", "b")
    result = _run("tasks", "check", str(a), str(b))
    assert result.exit_code == 1
    assert "test_name 'my_silu' is defined by two files" in result.output
    assert str(a) in result.output and str(b) in result.output


def test_check_of_a_malformed_file_fails_with_its_line(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad", "test_name: x\ninputs: []\n")
    result = _run("tasks", "check", str(bad))
    assert result.exit_code == 1 and f"FAIL {bad}" in result.output and "bad.yaml:2" in result.output


def test_bench_refuses_a_broken_task_before_any_call(tmp_path: Path) -> None:
    typo = typo_in_fn(tmp_path)
    db = tmp_path / "db.sqlite"
    for extra in ([], ["--estimate"]):
        result = _run("bench", "--model", "scripted:test", "--method", "single", "-n", "1",
                      "--tasks", f"{typo},gemm_bias_relu", "--db", str(db), *extra)
        assert result.exit_code == 2, result.output
        out = " ".join(result.output.split())
        assert "refusing to start" in out and "my_typo" in out and "Dvalue" in out
        assert "nothing was sent to the model" in out
    from stepsmith.improve.store import ExperienceStore
    assert ExperienceStore(db).list_runs() == []


def test_bench_refuses_two_files_with_one_test_name(tmp_path: Path) -> None:
    a = good(tmp_path, "a")
    (tmp_path / "sub").mkdir()
    b = good(tmp_path / "sub", "b")
    result = _run("bench", "--model", "scripted:test", "--method", "single", "-n", "1",
                  "--tasks", f"{a},{b}", "--estimate", "--db", str(tmp_path / "db.sqlite"))
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "defined by two files" in out and str(a) in out and str(b) in out
