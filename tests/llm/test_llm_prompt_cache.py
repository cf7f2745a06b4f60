"""Provider prompt caching: what is requested, what is recorded, what it costs, old databases."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import typer
from llm_fake_server import FakeLLMServer, Reply
from typer.testing import CliRunner

from stepsmith.llm import CallStore, LLMClient, Price, price_for
from stepsmith.llm.backend_anthropic import build_request as anthropic_request
from stepsmith.llm.cli import register
from stepsmith.llm.store import SCHEMA_VERSION, cache_key

MSG = [{"role": "system", "content": "STeP reference ..."}, {"role": "user", "content": "gemm"}]
KEY = "sk-test-SECRETSECRET0123456789"
EPHEMERAL = {"type": "ephemeral"}


# -- OpenAI and OpenAI-compatible -----------------------------------------------------------

def test_openai_cached_tokens_are_recorded_and_priced(server: FakeLLMServer, tmp_path: Path,
                                                      monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    store = CallStore(tmp_path / "db")
    server.push(Reply(input_tokens=6000, cache_read_tokens=5120))
    comp = LLMClient("openai:gpt-4o-2024-11-20", store=store).sample_sync(MSG)
    assert (comp.input_tokens, comp.cache_read_tokens, comp.cache_write_tokens) == (6000, 5120, 0)
    # 880 uncached at 2.50, 5120 cached at 1.25, 7 output at 10.00 (USD per million)
    assert comp.cost_usd == pytest.approx((880 * 2.5 + 5120 * 1.25 + 7 * 10) / 1e6)
    row = store.get(comp.call_id)
    assert (row["input_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == (
        6000, 5120, 0)
    assert row["cost_usd"] == pytest.approx(comp.cost_usd)


@pytest.mark.parametrize("usage_extra", [{}, {"prompt_tokens_details": None},
                                         {"prompt_tokens_details": {"cached_tokens": None}},
                                         {"prompt_tokens_details": {}}])
def test_openai_compatible_without_cache_details_means_no_cache(server: FakeLLMServer,
                                                               usage_extra: dict) -> None:
    server.push(Reply(input_tokens=900, usage_extra=usage_extra))
    comp = LLMClient(f"openai-compatible:deepseek-chat@{server.url}/v1").sample_sync(MSG)
    assert (comp.input_tokens, comp.cache_read_tokens) == (900, 0)
    assert comp.cost_usd == pytest.approx((900 * 0.27 + 7 * 1.10) / 1e6)


def test_openai_compatible_deepseek_style_cache_hits(server: FakeLLMServer) -> None:
    server.push(Reply(input_tokens=1000, usage_extra={"prompt_cache_hit_tokens": 768,
                                                      "prompt_cache_miss_tokens": 232}))
    comp = LLMClient(f"openai-compatible:deepseek-chat@{server.url}/v1").sample_sync(MSG)
    assert (comp.input_tokens, comp.cache_read_tokens) == (1000, 768)
    assert comp.cost_usd == pytest.approx((232 * 0.27 + 768 * 0.07 + 7 * 1.10) / 1e6)


# -- Anthropic --------------------------------------------------------------------------------

@pytest.fixture
def anthropic_env(server: FakeLLMServer, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)


def test_anthropic_marks_the_system_prompt_cacheable(server: FakeLLMServer, anthropic_env) -> None:
    LLMClient("anthropic:claude-3-5-sonnet-20241022").sample_sync(MSG)
    body = server.requests[0]["body"]
    assert body["system"] == [{"type": "text", "text": "STeP reference ...",
                               "cache_control": EPHEMERAL}]
    assert body["messages"] == [{"role": "user", "content": "gemm"}]  # the task stays uncached
    LLMClient("anthropic:claude-3-5-sonnet-20241022").sample_sync(MSG[1:])
    assert "system" not in server.requests[1]["body"]


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_anthropic_prompt_cache_off_by_env(server: FakeLLMServer, anthropic_env, monkeypatch,
                                           value: str) -> None:
    monkeypatch.setenv("STEPSMITH_ANTHROPIC_PROMPT_CACHE", value)
    LLMClient("anthropic:claude-3-5-sonnet-20241022").sample_sync(MSG)
    body = server.requests[0]["body"]
    assert body["system"] == "STeP reference ..." and "cache_control" not in json.dumps(body)


def test_anthropic_prompt_cache_off_by_config(server: FakeLLMServer, anthropic_env,
                                              isolated_home: Path, monkeypatch) -> None:
    isolated_home.mkdir(parents=True)
    (isolated_home / "config.toml").write_text("[anthropic]\nprompt_cache = false\n")
    LLMClient("anthropic:claude-3-5-sonnet-20241022").sample_sync(MSG)
    assert server.requests[-1]["body"]["system"] == "STeP reference ..."
    monkeypatch.setenv("STEPSMITH_ANTHROPIC_PROMPT_CACHE", "1")  # the environment wins
    LLMClient("anthropic:claude-3-5-sonnet-20241022").sample_sync(MSG, sample_index=1)
    assert server.requests[-1]["body"]["system"][0]["cache_control"] == EPHEMERAL
    monkeypatch.setenv("STEPSMITH_ANTHROPIC_PROMPT_CACHE", "maybe")
    with pytest.raises(ValueError, match="STEPSMITH_ANTHROPIC_PROMPT_CACHE must be true or false"):
        LLMClient("anthropic:claude-3-5-sonnet-20241022")


def test_anthropic_build_request_is_pure() -> None:
    params = {"max_tokens": 9}
    assert anthropic_request("m", MSG, params, prompt_cache=False)["system"] == MSG[0]["content"]
    two = [MSG[0], {"role": "system", "content": "more"}, MSG[1]]
    block = anthropic_request("m", two, params)["system"]
    assert block == [{"type": "text", "text": "STeP reference ...\n\nmore",
                      "cache_control": EPHEMERAL}]


def test_anthropic_cache_usage_counts_all_input_and_prices_it(server: FakeLLMServer,
                                                              anthropic_env, tmp_path: Path
                                                              ) -> None:
    store = CallStore(tmp_path / "db")
    client = LLMClient("anthropic:claude-3-5-sonnet-20241022", store=store, run_id="a")
    server.push(Reply(input_tokens=200, cache_write_tokens=6000, cache_read_tokens=0),
                Reply(input_tokens=200, cache_read_tokens=6000,
                      usage_extra={"cache_creation_input_tokens": None}))
    first = client.sample_sync(MSG, sample_index=0)
    second = client.sample_sync(MSG, sample_index=1)
    assert (first.input_tokens, first.cache_read_tokens, first.cache_write_tokens) == (
        6200, 0, 6000)
    assert (second.input_tokens, second.cache_read_tokens, second.cache_write_tokens) == (
        6200, 6000, 0)
    # sonnet: input 3.00, cache write 1.25x = 3.75, cache read 0.1x = 0.30, output 15.00
    assert first.cost_usd == pytest.approx((200 * 3 + 6000 * 3.75 + 5 * 15) / 1e6)
    assert second.cost_usd == pytest.approx((200 * 3 + 6000 * 0.30 + 5 * 15) / 1e6)
    total = store.totals("run", run_id="a")[0]
    assert (total["input_tokens"], total["cache_read_tokens"], total["cache_write_tokens"]) == (
        12400, 6000, 6000)
    assert total["cost_usd"] == pytest.approx(first.cost_usd + second.cost_usd)


def test_anthropic_usage_without_cache_fields(server: FakeLLMServer, anthropic_env) -> None:
    server.push(Reply(usage_extra={"cache_read_input_tokens": None}))
    comp = LLMClient("anthropic:claude-3-5-sonnet-20241022").sample_sync(MSG)
    assert (comp.input_tokens, comp.cache_read_tokens, comp.cache_write_tokens) == (13, 0, 0)


def test_call_cache_replay_is_free_and_keeps_the_cache_counts(server: FakeLLMServer,
                                                              anthropic_env, tmp_path: Path
                                                              ) -> None:
    store = CallStore(tmp_path / "db")
    client = LLMClient("anthropic:claude-3-5-sonnet-20241022", store=store)
    server.push(Reply(input_tokens=100, cache_read_tokens=4000, cache_write_tokens=50))
    paid = client.sample_sync(MSG)
    hit = client.sample_sync(MSG)
    assert hit.cached and hit.cost_usd == 0.0 and len(server.requests) == 1
    assert (hit.input_tokens, hit.cache_read_tokens, hit.cache_write_tokens) == (4150, 4000, 50)
    row = store.get(hit.call_id)
    assert row["cost_usd"] == 0.0 and (row["cache_read_tokens"], row["cache_write_tokens"]) == (
        4000, 50)
    assert paid.cost_usd > 0


# -- prices -----------------------------------------------------------------------------------

def test_price_cost_charges_each_part_at_its_price() -> None:
    p = Price(2.0, 8.0, cached_input_per_m=0.5, cache_write_per_m=2.5)
    assert p.cost(1_000_000, 0) == pytest.approx(2.0)
    assert p.cost(1_000_000, 0, cache_read_tokens=400_000) == pytest.approx(0.6 * 2 + 0.4 * 0.5)
    assert p.cost(1_000_000, 1_000_000, 400_000, 100_000) == pytest.approx(
        0.5 * 2 + 0.4 * 0.5 + 0.1 * 2.5 + 8)
    # unknown cache prices fall back to the full input price (never under-charge)
    assert Price(2.0, 8.0).cost(1_000_000, 0, 400_000, 100_000) == pytest.approx(2.0)
    assert Price(2.0, 8.0, cached_input_per_m=0.5).cost(1_000_000, 0, 0, 300_000) == (
        pytest.approx(2.0))
    assert Price(2.0, 8.0, cache_write_per_m=2.5).cost(1_000_000, 0, 300_000, 0) == (
        pytest.approx(2.0))


def test_price_table_cache_prices() -> None:
    sonnet = price_for("anthropic:claude-3-5-sonnet-20241022")
    assert (sonnet.cached_input_per_m, sonnet.cache_write_per_m) == pytest.approx((0.30, 3.75))
    assert price_for("openai:gpt-4o-2024-11-20").cached_input_per_m == pytest.approx(1.25)
    assert price_for("openai:gpt-4.1-mini").cached_input_per_m == pytest.approx(0.10)
    assert price_for("openai-compatible:deepseek-chat").cached_input_per_m == pytest.approx(0.07)
    assert price_for("openai:gpt-4o").cache_write_per_m is None  # OpenAI writes cost input price
    for key in ("claude-3-5-haiku", "claude-opus-4", "claude-sonnet-4"):
        p = price_for(f"anthropic:{key}")
        assert p.cached_input_per_m == pytest.approx(0.1 * p.input_per_m)
        assert p.cache_write_per_m == pytest.approx(1.25 * p.input_per_m)


def test_config_price_overrides_with_cache_keys(isolated_home: Path) -> None:
    isolated_home.mkdir(parents=True)
    cfg = isolated_home / "config.toml"
    cfg.write_text('[prices."openai-compatible:mine"]\ninput = 1.0\noutput = 2.0\n'
                   'cached_input = 0.25\ncache_write = 1.5\n'
                   '[prices."gpt-4o-2024-11-20"]\ninput = 4\noutput = 9\n')
    mine = price_for("openai-compatible:mine")
    assert mine == Price(1.0, 2.0, 0.25, 1.5)
    assert mine.cost(1_000_000, 0, 500_000, 250_000) == pytest.approx(0.25 + 0.125 + 0.375)
    # an override replaces the table entry; without cache keys the full price is charged
    assert price_for("openai:gpt-4o-2024-11-20") == Price(4.0, 9.0)
    cfg.write_text('[prices."x"]\ninput = 1\noutput = 2\ncached_input = "cheap"\n')
    with pytest.raises(ValueError, match=r"config \[prices.\"x\"\] optional 'cached_input'"):
        price_for("openai:x")
    cfg.write_text('[prices."x"]\ncached_input = 0.1\n')
    with pytest.raises(ValueError, match=r"config \[prices.\"x\"\] needs numeric 'input' and "
                                         r"'output' \(USD per million tokens\); found"):
        price_for("openai:x")


# -- the store: migration of an existing database ----------------------------------------------

V1_CALLS = """
CREATE TABLE llm_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE prompts (hash TEXT PRIMARY KEY, messages TEXT NOT NULL);
CREATE TABLE calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT NOT NULL, finished_at TEXT,
    run_id TEXT NOT NULL DEFAULT '', task TEXT NOT NULL DEFAULT '', tag TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL, provider TEXT NOT NULL DEFAULT '', prompt_hash TEXT NOT NULL,
    params TEXT NOT NULL, temperature REAL, max_tokens INTEGER,
    sample_index INTEGER NOT NULL DEFAULT 0, cache_key TEXT NOT NULL, status TEXT NOT NULL,
    response TEXT, finish_reason TEXT, input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0, usage_estimated INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL, latency_s REAL, attempts INTEGER NOT NULL DEFAULT 1,
    cached INTEGER NOT NULL DEFAULT 0, cache_source INTEGER, error TEXT
);
INSERT INTO llm_meta VALUES ('schema_version', '1');
"""

# the v1 writer's INSERT (named columns), as a still-running older process would issue it
V1_INSERT = """INSERT INTO calls (started_at, finished_at, run_id, task, tag, model, provider,
prompt_hash, params, temperature, max_tokens, sample_index, cache_key, status, response,
finish_reason, input_tokens, output_tokens, usage_estimated, cost_usd, latency_s, attempts,
cached, cache_source, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"""


def _v1_row(conn: sqlite3.Connection, key: str, response: str) -> None:
    from stepsmith.llm.store import canonical_json, prompt_hash

    msgs = [{"role": "user", "content": "old"}]
    conn.execute("INSERT OR IGNORE INTO prompts VALUES (?, ?)",
                 (prompt_hash(msgs), canonical_json(msgs)))
    conn.execute(V1_INSERT, ("2024-01-01T00:00:00", "2024-01-01T00:00:01", "old", "t", "",
                             "scripted:test", "scripted", prompt_hash(msgs),
                             '{"max_tokens":10,"temperature":null}', None, 10, 0, key, "ok",
                             response, "stop", 1000, 20, 0, 0.0, 0.1, 1, 0, None, None))
    conn.commit()


def test_store_migrates_an_old_calls_table(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    old = sqlite3.connect(db)
    old.executescript(V1_CALLS)
    _v1_row(old, "k-old", "from v1")

    store = CallStore(db)  # opening migrates in place
    cols = {r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(calls)")}
    assert {"cache_read_tokens", "cache_write_tokens", "trace"} <= cols
    version = sqlite3.connect(db).execute(
        "SELECT value FROM llm_meta WHERE key = 'schema_version'").fetchone()[0]
    assert version == str(SCHEMA_VERSION) == "3"
    row = store.lookup("k-old")
    assert row["response"] == "from v1" and row["input_tokens"] == 1000
    assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (0, 0)

    msgs = [{"role": "user", "content": "new"}]
    new_id = store.record(model="scripted:test", provider="scripted", messages=msgs, params={},
                          sample_index=0, key=cache_key("scripted:test", msgs, {}, 0),
                          status="ok", run_id="new", response="v2", input_tokens=900,
                          output_tokens=5, cache_read_tokens=800, cache_write_tokens=50,
                          trace="1 attempt(s)")
    got = store.get(new_id)
    assert (got["cache_read_tokens"], got["cache_write_tokens"]) == (800, 50)
    assert got["trace"] == "1 attempt(s)" and row["trace"] is None

    _v1_row(old, "k-old-2", "older process, after the migration")  # still works
    late = store.lookup("k-old-2")
    assert late["cache_read_tokens"] == 0 and late["response"].startswith("older process")

    CallStore(db).close()  # reopening an already migrated file is a no-op
    totals = {r["run_id"]: r for r in CallStore(db).totals("run")}
    assert totals["old"]["input_tokens"] == 2000 and totals["old"]["cache_read_tokens"] == 0
    assert totals["new"]["cache_read_tokens"] == 800


def test_store_never_downgrades_the_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    CallStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE llm_meta SET value = '9' WHERE key = 'schema_version'")
    conn.commit()
    CallStore(db).close()
    assert conn.execute("SELECT value FROM llm_meta").fetchone()[0] == "9"


# -- the CLI ------------------------------------------------------------------------------------

def test_log_totals_shows_the_cached_share(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    store = CallStore(db)
    for i, (n_in, read) in enumerate([(1000, 750), (3000, 2250)]):
        msgs = [{"role": "user", "content": f"q{i}"}]
        store.record(model="anthropic:claude-3-5-sonnet-20241022", provider="anthropic",
                     messages=msgs, params={}, sample_index=0, status="ok", run_id="r1",
                     key=cache_key("m", msgs, {}, 0), response="a", input_tokens=n_in,
                     output_tokens=10, cache_read_tokens=read, cache_write_tokens=100,
                     cost_usd=0.001)
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    res = runner.invoke(app, ["log", "totals", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "cached in" in res.stdout and "3,000 (75%)" in res.stdout
    assert "provider prompt cache: 3,000 (75%) of 4,000 input tokens read from cache, 200 " \
           "written" in res.stdout
    rows = json.loads(runner.invoke(app, ["log", "totals", "--db", str(db), "--json"]).stdout)
    assert rows[0]["cache_read_tokens"] == 3000 and rows[0]["cache_write_tokens"] == 200
    shown = runner.invoke(app, ["log", "show", "1", "--db", str(db)]).stdout
    assert "cache_read_tokens: 750" in shown
