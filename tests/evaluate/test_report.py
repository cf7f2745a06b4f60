"""Summaries, Markdown/HTML reports with embedded plots, and the CLI commands around them."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import typer
from agent_fakes import build_run
from typer.testing import CliRunner

from stepsmith.evaluate.cli import register
from stepsmith.evaluate.report import write_comparison, write_report
from stepsmith.evaluate.summary import summarize
from stepsmith.improve.store import ExperienceStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def store(tmp_path: Path):
    s = ExperienceStore(tmp_path / "stepsmith.db")
    yield s
    s.close()


def test_summary_metrics_of_a_self_improve_run(store: ExperienceStore) -> None:
    run_id = build_run(store)
    s = summarize(store, run_id)
    by = {t.task: t for t in s.tasks}
    assert s.status == "finished"
    assert store.get_run(run_id).summary["reason"] == "no_progress"
    assert [(it.iteration, it.level, it.newly_solved) for it in s.iterations] == [
        (0, 0, ["e1", "e2"]), (1, 0, ["h1"]), (2, 0, []), (3, 1, [])]
    # easy tasks at t=0, the hard one at t=1 once demonstrations exist, 'never' unsolved
    assert (by["e1"].solved_at, by["h1"].solved_at, by["z1"].solved) == (0, 1, False)
    assert s.pass_at_n == pytest.approx(3 / 4)
    lo, hi = s.pass_at_n_ci
    assert lo <= 0.75 <= hi
    # h1's last batch (t=1): samples 2,3 at two temperatures, even index passes → c=2 of n=4
    assert (by["h1"].last_n, by["h1"].last_c) == (4, 2)
    assert by["h1"].pass_at["1"] == pytest.approx(0.5)
    assert by["h1"].pass_at["2"] == pytest.approx(1 - 1 / 6)
    assert s.pass_at["1"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    # 'never' was sampled in every iteration; tokens grow with demonstrations in the prompt
    assert by["z1"].samples == 4 * len(s.iterations)
    assert s.iterations[-1].cumulative_pass_at_n == pytest.approx(0.75)
    xs = [it.cumulative_avg_input_tokens for it in s.iterations]
    assert xs == sorted(xs) and xs[-1] == pytest.approx(s.avg_input_tokens)
    assert by["z1"].failure_kinds == {"value_mismatch": by["z1"].samples // 2, "shape_error": by["z1"].samples // 2}
    assert s.guardian_corrupted == sum(1 for x in store.samples(run_id) if x.guardian_corrupted) > 0
    assert by["e2"].loc == 2.0 and by["e2"].mi_with_comments is not None
    assert s.cost_usd == pytest.approx(0.001 * sum(t.samples for t in s.tasks))
    assert s.demos == 3
    assert {g.group: g.pass_at_n for g in s.groups} == {"easy": 1.0, "hard": 1.0, "never": 0.0}


def _embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


def test_report_files_with_plots(store: ExperienceStore, tmp_path: Path) -> None:
    run_id = build_run(store)
    md, page = write_report(summarize(store, run_id), tmp_path / "rep", store.demos(run_id))
    html = page.read_text()
    pngs = _embedded_pngs(html)
    assert len(pngs) == 3 and all(p.startswith(PNG_MAGIC) and len(p) > 2000 for p in pngs)
    assert "<script" not in html and "http" not in html.split("</style>")[1]  # self-contained
    text = md.read_text()
    for heading in ("## Learning curve", "## Iterations", "## Groups", "## Tasks", "## Failure kinds",
                    "## Demonstration library"):
        assert heading in text
    for name in ("learning_curve.png", "groups.png", "failures.png"):
        assert (tmp_path / "rep" / name).read_bytes().startswith(PNG_MAGIC)
        assert f"]({name})" in text
    assert "h1" in text and "value_mismatch" in text


def test_report_without_the_report_extra(store: ExperienceStore, tmp_path: Path, monkeypatch) -> None:
    """Without matplotlib and radon (the [report] extra) the run still gets its report: every
    table, the maintainability index unknown, each plot replaced by what to install."""
    import sys

    for name in ("matplotlib", "matplotlib.pyplot", "radon", "radon.complexity", "radon.metrics",
                 "radon.raw"):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    run_id = build_run(store)
    summary = summarize(store, run_id)
    assert all(t.mi_with_comments is None and t.mi_without_comments is None for t in summary.tasks)
    assert any(t.loc for t in summary.tasks)  # lines of code need no radon
    md, page = write_report(summary, tmp_path / "rep", store.demos(run_id))
    text, html = md.read_text(), page.read_text()
    assert _embedded_pngs(html) == [] and not list((tmp_path / "rep").glob("*.png"))
    assert text.count("pip install 'stepsmith[report]'") == 3
    for heading in ("## Summary", "## Iterations", "## Groups", "## Tasks", "## Demonstration library"):
        assert heading in text
    assert "h1" in text and "value_mismatch" in text
    md, page = write_comparison([summary, summary], tmp_path / "cmp")
    assert md.read_text().count("stepsmith[report]") == 2


def test_comparison(store: ExperienceStore, tmp_path: Path) -> None:
    a = build_run(store, method="single")
    b = build_run(store)
    md, page = write_comparison([summarize(store, a), summarize(store, b)], tmp_path / "cmp")
    assert len(_embedded_pngs(page.read_text())) == 2
    text = md.read_text()
    assert a in text and b in text
    # h1 is unsolved by the single baseline (no demonstrations) and solved at t=1 by self-improve
    row = next(line for line in text.splitlines() if line.startswith("| h1 |"))
    assert row.split("|")[2].strip() == "✗" and row.split("|")[3].strip() == "✓ (t=1)"


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_runs_report_compare_export(store: ExperienceStore, tmp_path: Path) -> None:
    a = build_run(store, method="single")
    b = build_run(store)
    db = str(store.path)
    runner = CliRunner(env={"COLUMNS": "250"})
    res = runner.invoke(_app(), ["runs", "--db", db])
    assert res.exit_code == 0, res.output
    assert a in res.output and b in res.output and "self-improve" in res.output
    res = runner.invoke(_app(), ["report", b[:-2], "--db", db, "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "report.html").exists() and "Pass@n" in res.output
    res = runner.invoke(_app(), ["compare", a, b, "--db", db, "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c" / "report.md").exists()
    res = runner.invoke(_app(), ["export-demos", b, str(tmp_path / "lib.json"), "--db", db])
    assert res.exit_code == 0, res.output
    lib = json.loads((tmp_path / "lib.json").read_text())
    assert sorted(d["task_name"] for d in lib["demos"]) == ["e1", "e2", "h1"]


def test_cli_errors_are_clear(store: ExperienceStore) -> None:
    runner = CliRunner()
    res = runner.invoke(_app(), ["report", "nope", "--db", str(store.path)])
    assert res.exit_code == 2 and "no run 'nope'" in res.output
    res = runner.invoke(_app(), ["compare", "x", "--db", str(store.path)])
    assert res.exit_code == 2 and "at least two" in res.output
    res = runner.invoke(_app(), ["bench", "--model", "scripted:x", "--method", "best", "--db", str(store.path)])
    assert res.exit_code == 2 and "--method 'best'" in res.output
    res = runner.invoke(_app(), ["bench", "--model", "scripted:x", "--temperatures", "hot", "--db", str(store.path)])
    assert res.exit_code == 2 and "'hot' is not a number" in res.output
