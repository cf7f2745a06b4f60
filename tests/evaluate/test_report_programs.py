"""The report shows why: each task's best program, a failing one, and the demonstrations used."""

from __future__ import annotations

from pathlib import Path

from agent_fakes import build_run
from typer.testing import CliRunner

from stepsmith.cli import app
from stepsmith.evaluate.summary import summarize
from stepsmith.improve.store import ExperienceStore


def test_programs_and_demonstrations_per_iteration(tmp_path: Path) -> None:
    db = tmp_path / "stepsmith.db"
    store = ExperienceStore(db)
    run_id = build_run(store)
    s = summarize(store, run_id)
    by = {t.task: t for t in s.tasks}
    assert by["e2"].best_impl and "Accum" in by["e2"].best_impl and by["e2"].failing_kind is None
    assert by["z1"].best_impl is None and by["z1"].failing_kind in ("shape_error", "value_mismatch")
    later = [it for it in s.iterations if it.iteration >= 1]
    assert later and all(it.demo_tasks for it in later)  # earned demonstrations shown after t=0

    result = CliRunner().invoke(app, ["report", run_id, "--db", str(db), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Programs" in md and "### z1 — not solved" in md and "### e2 — solved" in md
    assert "demonstrations shown" in md
    iteration_table = md[md.index("## Iterations"):md.index("## Groups")]
    assert "e1, e2" in iteration_table or "e2, e1" in iteration_table
    assert "could not ask the model" in md
