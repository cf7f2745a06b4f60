"""`stepsmith bench` against a loopback server that fails: a loud, resumable stop, not a weak model."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from llm_fake_server import FakeLLMServer, Reply
from typer.testing import CliRunner

from stepsmith.cli import app
from stepsmith.improve.store import ExperienceStore
from stepsmith.tasks.suite import get_task

TASK = "expert_linear_sum"


def _answer(task_name: str) -> str:
    impl = get_task(task_name).impl or ""
    return "```yaml\nimpl: |-\n" + textwrap.indent(impl, "  ") + "\n```\n"


def _bench(server: FakeLLMServer, tmp_path: Path, *extra: str):
    env = {"OPENAI_BASE_URL": f"{server.url}/v1", "OPENAI_API_KEY": "sk-test-0000000000000000"}
    args = ["bench", "--model", "openai-compatible:fake-model", "--method", "single", "-n", "2",
            "--temperatures", "0.7", "--concurrency", "1", "--db", str(tmp_path / "db.sqlite"),
            "--out", str(tmp_path / "report"), *extra]
    return CliRunner().invoke(app, args, env=env)


@pytest.mark.timeout(240)
def test_bench_with_401_stops_loudly_then_resumes(server: FakeLLMServer, tmp_path: Path) -> None:
    server.push(*[Reply(status=401, body={"error": {"message": "Incorrect API key"}})] * 20)
    result = _bench(server, tmp_path, "--tasks", TASK)
    assert result.exit_code == 4, result.output
    out = " ".join(result.output.split())
    assert "could not ask the model" in out and f"{server.url}/v1" in out and "HTTP 401" in out
    assert "finished" not in out and "Pass@n" not in out
    store = ExperienceStore(tmp_path / "db.sqlite")
    (run,) = store.list_runs()
    assert run.status == "stopped" and "HTTP 401" in (run.note or "")
    assert store.samples(run.run_id) == []  # nothing charged to the model
    assert f"stepsmith bench --resume {run.run_id}" in out

    # the server is fixed: resume finishes the run with the model's real answers
    server.replies.clear()
    server.push(Reply(text=_answer(TASK)), Reply(text="no program here"))
    resumed = CliRunner().invoke(app, ["bench", "--resume", run.run_id, "--db", str(tmp_path / "db.sqlite"),
                                       "--out", str(tmp_path / "report")],
                                 env={"OPENAI_BASE_URL": f"{server.url}/v1"})
    assert resumed.exit_code == 0, resumed.output
    samples = store.samples(run.run_id)
    assert len(samples) == 2 and sum(s.passed for s in samples) == 1
    assert "model 1 · could not ask 0" in " ".join(resumed.output.split())


@pytest.mark.timeout(120)
def test_a_model_error_that_is_not_infrastructure_stays_a_failed_sample(
        server: FakeLLMServer, tmp_path: Path) -> None:
    """A 400 (e.g. the prompt is too long) is this sample's failure; the run goes on."""
    server.push(Reply(status=400, body={"error": {"message": "context length exceeded"}}),
                Reply(text=_answer(TASK)))
    result = _bench(server, tmp_path, "--tasks", TASK)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "solved" in out and "1/1 tasks" in out
    assert "model 0 · could not ask 1" in out
