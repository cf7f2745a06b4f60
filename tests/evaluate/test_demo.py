"""`stepsmith demo`: benchmark tasks' reference programs, verified by the verifier (sandboxed
worker, both executors) — its programs pass, and a wrong one is reported, not hidden."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from stepsmith.cli import app
from stepsmith.evaluate import demo
from stepsmith.tasks.suite import benchmark_tasks, get_task
from stepsmith.verify import VerifierPool


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def test_the_demo_programs_verify_with_both_executors() -> None:
    tasks = [get_task(n) for n in demo.DEMO_TASKS]
    assert {t.name for t in tasks} <= {t.name for t in benchmark_tasks() if t.impl}
    with VerifierPool(workers=1) as pool:
        rows = demo.run_demo(tasks, pool, repeats=2)
    for task, row in zip(tasks, rows, strict=True):
        assert row.passed, row.failure()
        assert [len(row.verdicts[e]) for e in demo.EXECUTORS] == [2, 1]
        for verdicts in row.verdicts.values():
            for v in verdicts:
                assert v.passed and v.task == task.name
                assert [b.label for b in v.bindings] == [b.label for b in task.bindings()]
                assert v.bindings[0].values["M"] == 5 and all(b.passed for b in v.bindings)
        assert row.paper_ms("fast") and row.paper_ms("oracle")
        assert row.max_abs_error() is not None and row.max_abs_error() < 1e-9


def test_demo_command_shows_every_program_matching() -> None:
    res = CliRunner().invoke(app, ["demo", "--repeats", "1"])
    assert res.exit_code == 0, res.output
    for name in demo.DEMO_TASKS:
        assert f"│ {name}" in res.output
    assert "match" in res.output and "FAILED" not in res.output
    assert "all 3 reference programs match" in res.output


def test_demo_command_fails_on_a_wrong_reference_program(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = get_task("bmm_outer_product").text.replace("fn=fn_addtile, b=1", "fn=fn_addtile, b=2")
    path = tmp_path / "bmm_wrong.yaml"
    path.write_text(text.replace("test_name: bmm_outer_product", "test_name: bmm_wrong"))
    monkeypatch.setattr(demo, "DEMO_TASKS", (str(path),))
    res = CliRunner().invoke(app, ["demo", "--repeats", "1"])
    assert res.exit_code == 1, res.output
    assert "bmm_wrong" in res.output and "FAILED" in res.output
    assert "1 reference program(s) failed verification" in res.output
