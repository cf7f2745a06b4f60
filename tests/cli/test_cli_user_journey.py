"""The issue's "done when": a new user's task, checked, run against a failing server, resumed
once it is fixed, and read — which program won and why each failing one failed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from llm_fake_server import FakeLLMServer, Reply
from task_files import good
from typer.testing import CliRunner

from stepsmith.cli import app
from stepsmith.improve.store import ExperienceStore
from stepsmith.tasks import load_task

WRONG = "E1 = step.Accum(fn=fn_silu, b=2).apply(E0)\nreturn E1"


def _fenced(impl: str) -> str:
    return "```yaml\nimpl: |-\n" + textwrap.indent(impl, "  ") + "\n```\n"


def _invoke(args: list[str], server: FakeLLMServer | None = None):
    env = {"OPENAI_BASE_URL": f"{server.url}/v1"} if server else {}
    return CliRunner().invoke(app, args, env=env)


@pytest.mark.timeout(300)
def test_new_task_failing_server_resume_and_read_the_report(server: FakeLLMServer, tmp_path: Path) -> None:
    task_file = good(tmp_path)
    db, rep = str(tmp_path / "db.sqlite"), tmp_path / "report"
    assert _invoke(["tasks", "check", str(task_file)]).exit_code == 0

    server.push(*[Reply(status=401, body={"error": {"message": "bad key"}})] * 10)
    bench = ["bench", "--model", "openai-compatible:fake", "--method", "single", "-n", "2",
             "--temperatures", "0.7", "--concurrency", "1", "--tasks", str(task_file), "--db", db,
             "--out", str(rep)]
    failed = _invoke(bench, server)
    assert failed.exit_code == 4 and "HTTP 401" in failed.output
    (run,) = ExperienceStore(db).list_runs()

    server.replies.clear()
    good_impl = load_task(task_file).impl or ""
    server.push(Reply(text=_fenced(good_impl)), Reply(text=_fenced(WRONG)))
    resumed = _invoke(["bench", "--resume", run.run_id, "--db", db, "--out", str(rep)], server)
    assert resumed.exit_code == 0, resumed.output
    assert "cost $" in resumed.output and "unknown" in resumed.output  # no price: not $0.0000

    report = (rep / "report.md").read_text()
    assert "## Programs" in report and "### my_silu — solved (1/2 samples correct)" in report
    assert "Best program (shortest correct):" in report and good_impl.splitlines()[0] in report
    assert "A failing program (" in report and "Accum(fn=fn_silu, b=2)" in report
    assert "Verifier feedback:" in report and "StepRankError" in report
    html = (rep / "report.html").read_text()
    assert "StepRankError" in html and "pre class='feedback'" in html

    shown = _invoke(["samples", run.run_id, "--failed", "--db", db])
    assert shown.exit_code == 0
    assert "FAILED" in shown.output and "PASSED" not in shown.output
    assert "Accum(fn=fn_silu, b=2)" in shown.output and "StepRankError" in shown.output
    assert "1 sample(s) shown: 0 passed, 1 failed" in shown.output
    both = _invoke(["samples", run.run_id, "--task", "my_silu", "--db", db])
    assert "2 sample(s) shown: 1 passed, 1 failed" in both.output
    missing = _invoke(["samples", run.run_id, "--task", "nope", "--db", db])
    assert missing.exit_code == 2 and "has no task nope" in missing.output


@pytest.mark.timeout(300)
def test_compare_restricts_to_shared_tasks_with_deltas(server: FakeLLMServer, tmp_path: Path) -> None:
    a, b = good(tmp_path, "a"), tmp_path / "b.yaml"
    b.write_text(a.read_text().replace("test_name: my_silu", "test_name: other_silu")
                 .replace("SiLU activation", "The SiLU activation"))  # another prompt: no cache hit
    db = str(tmp_path / "db.sqlite")
    impl = load_task(a).impl or ""
    common = ["--model", "openai-compatible:fake", "--method", "single", "-n", "1", "--temperatures",
              "0.7", "--concurrency", "1", "--db", db, "--out", str(tmp_path / "r")]
    # run 1 solves both tasks; run 2 (my_silu only) fails it
    server.push(Reply(text=_fenced(impl)), Reply(text=_fenced(impl)))
    assert _invoke(["bench", "--tasks", f"{a},{b}", *common], server).exit_code == 0
    server.push(Reply(text=_fenced(WRONG)))
    assert _invoke(["bench", "--tasks", str(a), *common, "--temperatures", "0.4"], server).exit_code == 0
    first, second = sorted(ExperienceStore(db).list_runs(), key=lambda r: r.created)
    out_dir = tmp_path / "cmp"
    result = _invoke(["compare", first.run_id, second.run_id, "--db", db, "--out", str(out_dir)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "cover the 1 task(s) every run shares" in text and "other_silu" in text
    assert "Pass@n -1.000" in text and "lost: my_silu" in text and "gained: none" in text
    md = (out_dir / "report.md").read_text()
    assert "## Deltas" in md and "| -1.000 |" in md
