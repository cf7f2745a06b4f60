"""The `ask`, `log` and `models` commands through Typer's runner (and a real HTTP server)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from llm_fake_server import FakeLLMServer, Reply
from typer.testing import CliRunner

from stepsmith.llm.cli import register

app = typer.Typer()
register(app)
runner = CliRunner()


def run(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_ask_log_show_totals(server: FakeLLMServer, tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    spec = f"openai-compatible:coder@{server.url}/v1"
    res = run("ask", "--model", spec, "--db", db, "--temperature", "0.2", "write gemm")
    assert res.exit_code == 0, res.output
    assert "echo: write gemm" in res.stdout
    res = run("ask", "--model", spec, "--db", db, "--temperature", "0.2", "write gemm")
    assert "cached" in res.stderr and len(server.requests) == 1
    res = run("ask", "--model", spec, "--db", db, "--system", "terse", "-", input="from stdin")
    assert "echo: from stdin" in res.stdout
    listing = run("log", "--db", db)
    assert listing.exit_code == 0 and "openai-compatible:coder" in listing.stdout
    assert "cached" in listing.stdout
    rows = json.loads(run("log", "--db", db, "--json").stdout)
    assert [r["cached"] for r in rows] == [0, 1, 0]
    shown = run("log", "show", str(rows[0]["id"]), "--db", db)
    assert "terse" in shown.stdout and "from stdin" in shown.stdout
    assert "message 0 · system" in shown.stdout
    assert run("log", "--db", db, "show", str(rows[0]["id"])).stdout == shown.stdout
    totals = json.loads(run("log", "totals", "--by", "model", "--db", db, "--json").stdout)
    assert totals[0]["calls"] == 3 and totals[0]["cached_calls"] == 1
    assert totals[0]["unpriced_calls"] == 2  # an unknown self-hosted model: cost not invented
    assert "unpriced" in run("log", "totals", "--db", db).stdout


def test_ask_errors_are_one_clear_line(server: FakeLLMServer, tmp_path: Path) -> None:
    server.push(Reply(status=404, body={"error": {"message": "model not found"}}))
    res = run("ask", "--model", f"openai-compatible:zzz@{server.url}/v1",
              "--db", str(tmp_path / "d"), "hi")
    assert res.exit_code == 1
    assert "HTTP 404" in res.stderr and "unknown model name or wrong base URL" in res.stderr
    assert "Traceback" not in res.output
    res = run("ask", "--model", "nonsense", "--db", str(tmp_path / "d"), "hi")
    assert res.exit_code == 1 and "PROVIDER:MODEL" in res.stderr
    assert run("log", "show", "999", "--db", str(tmp_path / "d")).exit_code == 1
    assert "must be one of" in run("log", "totals", "--by", "colour", "--db",
                                   str(tmp_path / "d")).stderr


def test_batch_commands(tmp_path: Path) -> None:
    from stepsmith.llm import CallStore, LLMClient
    from stepsmith.llm.testing import ScriptedBackend, echo

    db = tmp_path / "b.db"
    client = LLMClient(ScriptedBackend(echo), store=CallStore(db), run_id="r",
                       cache_mode="replay")
    try:
        client.sample_sync([{"role": "user", "content": "q"}])
    except Exception:  # noqa: BLE001 - the expected CacheMiss
        pass
    out = tmp_path / "req.jsonl"
    res = run("log", "export-batch", str(out), "--run", "r", "--db", str(db))
    assert res.exit_code == 0 and "wrote 1 pending" in res.stderr
    cid = json.loads(out.read_text())["custom_id"]
    results = tmp_path / "res.jsonl"
    results.write_text(json.dumps({"custom_id": cid, "text": "answer"}) + "\n")
    res = run("log", "import-batch", str(results), "--db", str(db))
    assert res.exit_code == 0 and "imported 1" in res.stderr
    assert client.sample_sync([{"role": "user", "content": "q"}]).text == "answer"
    assert run("log", "import-batch", str(tmp_path / "none.jsonl")).exit_code == 1


def test_models_list_and_missing_model() -> None:
    res = run("models")
    assert res.exit_code == 0
    assert "llamacpp:qwen2.5-coder-0.5b" in res.stdout and "(default)" in res.stdout
    assert "qwen2.5-coder-1.5b" in res.stdout
    res = run("models", "path", "nope")
    assert res.exit_code == 1 and "unknown local model 'nope'" in res.stderr


def test_a_decoders_trace_is_logged_and_shown(tmp_path: Path) -> None:
    """A local constrained decoder's search (attempts, their programs) lands in the call log,
    `log show` prints it, and a cache hit hands the original call's trace back."""
    from stepsmith.llm import CallStore, LLMClient
    from stepsmith.llm.base import Completion
    from stepsmith.llm.testing import ScriptedBackend

    trace = "2 attempt(s), 90 tokens sampled\nattempt 1: 2 line(s), complete, not verified"

    def decoded(_messages, _temperature, _index) -> Completion:
        return Completion(text="return x", input_tokens=10, output_tokens=90,
                          finish_reason="stop", trace=trace)

    db = tmp_path / "t.db"
    client = LLMClient(ScriptedBackend(decoded), store=CallStore(db), run_id="r")
    msgs = [{"role": "user", "content": "q"}]
    assert client.sample_sync(msgs).trace == trace
    replayed = client.sample_sync(msgs)
    assert replayed.cached and replayed.trace == trace
    rows = json.loads(run("log", "--db", str(db), "--json").stdout)
    first = min(r["id"] for r in rows)
    shown = run("log", "show", str(first), "--db", str(db)).stdout
    assert "decoding" in shown and "attempt 1: 2 line(s), complete, not verified" in shown
