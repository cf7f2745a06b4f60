"""One migration ledger for both stores in stepsmith.db: old files are adopted in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from stepsmith.db import LEDGER, Migrations, applied, insert
from stepsmith.improve.store import MIGRATIONS as EXPERIENCE
from stepsmith.improve.store import ExperienceStore
from stepsmith.llm.store import MIGRATIONS as CALLS
from stepsmith.llm.store import CallStore, cache_key

# The file as the code before the ledger left it: exp_* tables (exp_runs.owner added later by
# ALTER TABLE), calls at schema v2, llm_meta. Copied from that code, not from ours.
PRE_LEDGER = """
CREATE TABLE exp_runs (run_id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL,
    status TEXT NOT NULL, method TEXT NOT NULL, model TEXT NOT NULL, config TEXT NOT NULL,
    summary TEXT, note TEXT);
ALTER TABLE exp_runs ADD COLUMN owner TEXT;
CREATE TABLE exp_samples (run_id TEXT NOT NULL, iteration INTEGER NOT NULL,
    level INTEGER NOT NULL, task TEXT NOT NULL, task_group TEXT NOT NULL, temp_key TEXT NOT NULL,
    temperature REAL, sample_index INTEGER NOT NULL, impl TEXT, passed INTEGER NOT NULL,
    failure_kind TEXT, feedback TEXT, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, calls INTEGER NOT NULL,
    guardian_changed INTEGER NOT NULL, guardian_corrupted INTEGER NOT NULL, seconds REAL NOT NULL,
    demos TEXT NOT NULL, verifier_version TEXT, created REAL NOT NULL,
    PRIMARY KEY (run_id, iteration, task, temp_key, sample_index));
CREATE TABLE exp_demos (run_id TEXT NOT NULL, task_name TEXT NOT NULL, source TEXT NOT NULL,
    task_group TEXT NOT NULL, task_ir TEXT NOT NULL, impl TEXT NOT NULL, model TEXT NOT NULL,
    iteration INTEGER NOT NULL, temperature REAL, verifier_version TEXT NOT NULL,
    success_count INTEGER NOT NULL, n INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'active',
    provenance TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL,
    PRIMARY KEY (run_id, task_name, source));
CREATE TABLE exp_iterations (run_id TEXT NOT NULL, iteration INTEGER NOT NULL,
    level INTEGER NOT NULL, levels TEXT NOT NULL, demo_tasks TEXT NOT NULL, tasks TEXT NOT NULL,
    solved TEXT NOT NULL, finished REAL NOT NULL, PRIMARY KEY (run_id, iteration));
CREATE TABLE llm_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE prompts (hash TEXT PRIMARY KEY, messages TEXT NOT NULL);
CREATE TABLE calls (id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT NOT NULL,
    finished_at TEXT, run_id TEXT NOT NULL DEFAULT '', task TEXT NOT NULL DEFAULT '',
    tag TEXT NOT NULL DEFAULT '', model TEXT NOT NULL, provider TEXT NOT NULL DEFAULT '',
    prompt_hash TEXT NOT NULL, params TEXT NOT NULL, temperature REAL, max_tokens INTEGER,
    sample_index INTEGER NOT NULL DEFAULT 0, cache_key TEXT NOT NULL, status TEXT NOT NULL,
    response TEXT, finish_reason TEXT, input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0, cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0, usage_estimated INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL, latency_s REAL, attempts INTEGER NOT NULL DEFAULT 1,
    cached INTEGER NOT NULL DEFAULT 0, cache_source INTEGER, error TEXT);
CREATE INDEX calls_cache ON calls (cache_key, status, cached);
CREATE INDEX calls_run ON calls (run_id);
CREATE INDEX calls_model ON calls (model);
INSERT INTO llm_meta VALUES ('schema_version', '2');
INSERT INTO exp_runs VALUES ('old-run', 1, 2, 'finished', 'single', 'm', '{"n": 2}', NULL, NULL, NULL);
INSERT INTO exp_iterations VALUES ('old-run', 0, 0, '[[]]', '[]', '["t"]', '["t"]', 3);
"""

# how the pre-ledger ExperienceStore wrote a sample: positional, relying on column order
OLD_SAMPLE_INSERT = "INSERT OR REPLACE INTO exp_samples VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"


def _old_sample(conn: sqlite3.Connection, index: int) -> None:
    conn.execute(OLD_SAMPLE_INSERT, ("old-run", 0, 0, "t", "g", "0.7", 0.7, index, "return x", 1,
                                     None, "", 10, 5, 0.0, 1, 0, 0, 0.1, "[]", "v1", 4.0))
    conn.commit()


def _columns(path: Path) -> dict[str, list[tuple]]:
    """Each table's columns (name, type, not null, default, key), in name order: a column
    added by a step comes last in a fresh file, which is why every INSERT names its columns."""
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    return {t: sorted(tuple(c[1:]) for c in conn.execute(f"PRAGMA table_info({t})")) for t in tables}


def _all_steps() -> list[tuple[str, str]]:
    return sorted([("calls", n) for n, _ in CALLS.steps] + [("experience", n) for n, _ in EXPERIENCE.steps])


def test_a_pre_ledger_database_is_adopted_in_place(tmp_path: Path) -> None:
    path = tmp_path / "stepsmith.db"
    old = sqlite3.connect(path)
    old.executescript(PRE_LEDGER)
    _old_sample(old, 0)

    store, calls = ExperienceStore(path), CallStore(path)
    assert sorted(applied(store._conn)) == _all_steps()  # one ledger holds both stores' steps
    run = store.get_run("old-run")
    assert run.config == {"n": 2} and run.owner is None and run.status == "finished"
    assert [s.sample_index for s in store.samples("old-run")] == [0]
    assert store.iterations("old-run")[0].solved == ["t"]

    _old_sample(old, 1)  # an older process still writing after the migration keeps working
    assert [s.sample_index for s in store.samples("old-run")] == [0, 1]

    msgs = [{"role": "user", "content": "q"}]
    calls.record(model="m", provider="p", messages=msgs, params={}, sample_index=0,
                 key=cache_key("m", msgs, {}, 0), status="ok", response="a")
    assert calls.lookup(cache_key("m", msgs, {}, 0))["response"] == "a"
    assert old.execute("SELECT value FROM llm_meta").fetchone()[0] == "3"  # m003: trace

    # a second opening applies nothing; the schema is exactly what a fresh file gets
    assert EXPERIENCE.apply(store._conn) == [] and CALLS.apply(store._conn) == []
    store.close()
    calls.close()
    fresh = tmp_path / "fresh.db"
    ExperienceStore(fresh).close()
    CallStore(fresh).close()
    assert _columns(path) == _columns(fresh)


def test_either_store_may_open_an_old_file_first(tmp_path: Path) -> None:
    """The same, when the call log opens the file first (any order adopts the same way)."""
    path = tmp_path / "stepsmith.db"
    sqlite3.connect(path).executescript(PRE_LEDGER)
    CallStore(path).close()
    assert {s for s, _ in applied(sqlite3.connect(path))} == {"calls"}
    ExperienceStore(path).close()
    assert sorted(applied(sqlite3.connect(path))) == _all_steps()


def test_a_failing_step_is_rolled_back_and_not_recorded(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    steps = Migrations("demo")

    @steps.register
    def m001_table(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE t (a INTEGER)")

    @steps.register
    def m002_broken(db: sqlite3.Connection) -> None:
        insert(db, "t", {"a": 1})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        steps.apply(conn)
    assert applied(conn) == []  # the ledger table itself was rolled back with the steps
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchone() is None

    steps.steps.pop()
    assert steps.apply(conn) == ["m001_table"] and steps.apply(conn) == []
    assert applied(conn, "demo") == [("demo", "m001_table")]
    assert conn.execute(f"SELECT COUNT(*) FROM {LEDGER}").fetchone()[0] == 1


def test_a_step_name_is_registered_once() -> None:
    steps = Migrations("demo")

    def m001(db: sqlite3.Connection) -> None: ...

    steps.register(m001)
    with pytest.raises(ValueError, match="demo:m001 is registered twice"):
        steps.register(m001)
