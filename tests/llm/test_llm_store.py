"""The SQLite call log: concurrent writers, interruption, totals, batch export/import."""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stepsmith.llm import CallStore, LLMClient
from stepsmith.llm.batch import export_pending, import_results
from stepsmith.llm.store import cache_key
from stepsmith.llm.testing import ScriptedBackend, echo

MSG = [{"role": "user", "content": "write gemm"}]


def _writer(db: str, worker: int, n: int) -> None:
    store = CallStore(db)
    for i in range(n):
        msgs = [{"role": "user", "content": f"w{worker} call {i}"}]
        store.record(model="scripted:test", provider="scripted", messages=msgs,
                     params={"temperature": 0.7, "max_tokens": 10}, sample_index=i,
                     key=cache_key("scripted:test", msgs, {}, i), status="ok",
                     run_id=f"run{worker}", response=f"r{i}", input_tokens=3, output_tokens=2,
                     cost_usd=0.0)
    store.close()


def test_concurrent_writers_from_several_processes(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    CallStore(db).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(db), w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = CallStore(db)
    totals = {r["run_id"]: r for r in store.totals("run")}
    assert sorted(totals) == [f"run{w}" for w in range(4)]
    assert all(t["calls"] == 60 and t["input_tokens"] == 180 for t in totals.values())
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


KILLED_WRITER = """
import sys
from stepsmith.llm import CallStore, LLMClient
from stepsmith.llm.testing import ScriptedBackend, echo
client = LLMClient(ScriptedBackend(echo), store=CallStore(sys.argv[1]), run_id="killed")
print("ready", flush=True)
i = 0
while True:
    client.sample_sync([{"role": "user", "content": "x" * 2000 + str(i)}], sample_index=i)
    i += 1
"""


def test_a_killed_run_leaves_a_consistent_database(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(db)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n = conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    orphans = conn.execute(
        "SELECT COUNT(*) FROM calls WHERE prompt_hash NOT IN (SELECT hash FROM prompts)"
    ).fetchone()[0]
    assert n > 0 and orphans == 0
    store = CallStore(db)  # reopens fine and serves the cache
    client = LLMClient(ScriptedBackend(echo), store=store, run_id="killed", cache_mode="replay")
    assert client.sample_sync([{"role": "user", "content": "x" * 2000 + "0"}]).cached


def test_prompts_are_stored_once(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "db")
    client = LLMClient(ScriptedBackend(echo), store=store)
    for i in range(5):
        client.sample_sync(MSG, temperature=0.7, sample_index=i)
    conn = sqlite3.connect(tmp_path / "db")
    assert conn.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == 1
    assert store.get(store.recent(1)[0]["id"])["messages"] == MSG


def test_totals_per_run_model_and_task(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "db")
    a = LLMClient(ScriptedBackend(echo, model="a"), store=store, run_id="r1")
    b = LLMClient(ScriptedBackend(echo, model="b"), store=store, run_id="r2")
    for i in range(3):
        a.sample_sync(MSG, sample_index=i, task="gemm")
    b.sample_sync(MSG, task="rope")
    a.sample_sync(MSG, sample_index=0, task="gemm")  # cache hit
    by_run = {r["run_id"]: r for r in store.totals("run")}
    assert by_run["r1"]["calls"] == 4 and by_run["r1"]["cached_calls"] == 1
    assert by_run["r2"]["calls"] == 1
    by_model = {r["model"]: r["calls"] for r in store.totals("model")}
    assert by_model == {"scripted:a": 4, "scripted:b": 1}
    by_task = {r["task"]: r for r in store.totals("task")}
    one = a.sample_sync(MSG, sample_index=5, task="gemm")
    assert by_task["gemm"]["input_tokens"] == 3 * one.input_tokens  # the hit is not counted
    with pytest.raises(ValueError, match="must be one of"):
        store.totals("colour")


def test_batch_roundtrip_openai_format(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "db")
    backend = ScriptedBackend(echo)
    replay = LLMClient(backend, store=store, run_id="b", cache_mode="replay")
    reqs = [{"messages": MSG, "temperature": 0.7, "sample_index": i, "task": "gemm"}
            for i in range(3)]
    import asyncio

    first = asyncio.run(replay.sample_many(reqs + reqs[:1]))  # a duplicate request
    assert all(type(r).__name__ == "CacheMiss" for r in first)
    out = tmp_path / "batch.jsonl"
    assert export_pending(store, out, "b") == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {ln["url"] for ln in lines} == {"/v1/chat/completions"}
    assert lines[0]["body"]["messages"] == MSG and lines[0]["body"]["temperature"] == 0.7
    results = tmp_path / "results.jsonl"
    with results.open("w") as fh:
        for n, ln in enumerate(lines):
            body = {"choices": [{"message": {"content": f"batched {n}"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 4}}
            fh.write(json.dumps({"custom_id": ln["custom_id"],
                                 "response": {"status_code": 200, "body": body}}) + "\n")
        fh.write(json.dumps({"custom_id": "nope", "text": "x"}) + "\n")
        fh.write("not json\n")
    summary = import_results(store, results)
    assert summary["imported"] == 3 and len(summary["problems"]) == 2
    assert "matches no exported request" in summary["problems"][0]
    assert import_results(store, results)["skipped"] == 3  # idempotent
    again = asyncio.run(replay.sample_many(reqs))
    assert sorted(c.text for c in again) == ["batched 0", "batched 1", "batched 2"]
    assert all(c.cached for c in again) and backend.calls == []
    assert export_pending(store, out, "b") == 0


def test_batch_export_anthropic_format(tmp_path: Path, monkeypatch) -> None:
    store = CallStore(tmp_path / "db")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-xxxxxxxxxxxx")
    client = LLMClient("anthropic:claude-3-5-sonnet-20241022", store=store, cache_mode="replay")
    msgs = [{"role": "system", "content": "sys"}, *MSG]
    with pytest.raises(Exception, match="replay mode"):
        client.sample_sync(msgs, temperature=0.4, max_tokens=99)
    out = tmp_path / "a.jsonl"
    assert export_pending(store, out) == 1
    line = json.loads(out.read_text())
    system = [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]
    assert line["params"] == {"model": "claude-3-5-sonnet-20241022", "max_tokens": 99,
                              "system": system, "messages": MSG, "temperature": 0.4}
    res = tmp_path / "r.jsonl"
    usage = {"input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 4000,
             "cache_creation_input_tokens": None}
    res.write_text(json.dumps({"custom_id": line["custom_id"], "result": {
        "type": "succeeded", "message": {"content": [{"type": "text", "text": "hi"}],
                                         "stop_reason": "end_turn", "usage": usage}}}))
    assert import_results(store, res)["imported"] == 1
    comp = client.sample_sync(msgs, temperature=0.4, max_tokens=99)
    assert comp.text == "hi" and comp.cached
    assert (comp.input_tokens, comp.cache_read_tokens, comp.cache_write_tokens) == (5000, 4000, 0)
    paid = store.recent(1, status="ok")[-1]
    imported = [r for r in store.recent(10) if r["provider"] == "anthropic+batch"][0]
    assert imported["cost_usd"] == pytest.approx(0.5 * (1000 * 3 + 4000 * 0.3 + 100 * 15) / 1e6)
    assert paid["cached"] == 1
    monkeypatch.setenv("STEPSMITH_ANTHROPIC_PROMPT_CACHE", "0")  # export follows the setting
    with pytest.raises(Exception, match="replay mode"):
        client.sample_sync(msgs, temperature=0.4, max_tokens=50)
    assert export_pending(store, out) == 1
    assert json.loads(out.read_text())["params"]["system"] == "sys"
