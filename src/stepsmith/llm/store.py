"""The call log and response cache: one SQLite file (WAL), every call one row.

Prompts are stored once per distinct message list (`prompts` table, keyed by hash) because a
run sends the same prompt n times. A cache hit is logged too (`cached=1`, cost 0,
`cache_source` = the row it replayed), so a run's log is complete whether or not it paid.
Each write is one short transaction: a killed process leaves a consistent database.

Schema: named migrations (`MIGRATIONS`, store "calls") in the ledger `stepsmith.db` shares
with the experience store. m002 added `cache_read_tokens` / `cache_write_tokens` (provider
prompt caching; parts of `input_tokens`), m003 `trace` (a local decoder's search): opening an
older file adds them in place (old rows read 0 or NULL), and every INSERT names its columns,
so a process still running older code can keep writing. `llm_meta.schema_version` is still kept (never lowered) for such older processes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stepsmith.db import Migrations, add_column, execute_script, insert

from .config import default_db_path

SCHEMA_VERSION = 3  # what `llm_meta.schema_version` says after the migrations below

MIGRATIONS = Migrations("calls")


@MIGRATIONS.register
def m001_initial(db: sqlite3.Connection) -> None:
    """The v1 call log: prompts stored once, one row per call (cache hits included)."""
    execute_script(
        db,
        """
CREATE TABLE IF NOT EXISTS llm_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS prompts (hash TEXT PRIMARY KEY, messages TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    run_id TEXT NOT NULL DEFAULT '',
    task TEXT NOT NULL DEFAULT '',
    tag TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL,
    provider TEXT NOT NULL DEFAULT '',
    prompt_hash TEXT NOT NULL,
    params TEXT NOT NULL,
    temperature REAL,
    max_tokens INTEGER,
    sample_index INTEGER NOT NULL DEFAULT 0,
    cache_key TEXT NOT NULL,
    status TEXT NOT NULL,            -- ok | error | pending (replay miss, for batch export)
    response TEXT,
    finish_reason TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,  -- the whole prompt, provider-cached included
    output_tokens INTEGER NOT NULL DEFAULT 0,
    usage_estimated INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL,                   -- NULL: no known price for this model
    latency_s REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    cached INTEGER NOT NULL DEFAULT 0,
    cache_source INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS calls_cache ON calls (cache_key, status, cached);
CREATE INDEX IF NOT EXISTS calls_run ON calls (run_id);
CREATE INDEX IF NOT EXISTS calls_model ON calls (model);
""",
    )
    _raise_schema_version(db, 1)


@MIGRATIONS.register
def m002_prompt_cache_tokens(db: sqlite3.Connection) -> None:
    """Provider prompt caching: the parts of `input_tokens` read from / written to the cache."""
    add_column(db, "calls", "cache_read_tokens", "INTEGER NOT NULL DEFAULT 0")
    add_column(db, "calls", "cache_write_tokens", "INTEGER NOT NULL DEFAULT 0")
    _raise_schema_version(db, 2)


@MIGRATIONS.register
def m003_decode_trace(db: sqlite3.Connection) -> None:
    """What a local constrained decoder did in the call (attempts and their programs,
    rejected lines, backtracks, its own seconds): the response alone hides the search."""
    add_column(db, "calls", "trace", "TEXT")
    _raise_schema_version(db, 3)


def _raise_schema_version(db: sqlite3.Connection, version: int) -> None:
    """Older code reads `llm_meta.schema_version`; never lower what a newer writer stored."""
    row = db.execute("SELECT value FROM llm_meta WHERE key = 'schema_version'").fetchone()
    try:
        stored = int(row[0]) if row is not None else 0
    except (TypeError, ValueError):
        stored = 0
    if stored < version:
        db.execute(
            "INSERT OR REPLACE INTO llm_meta (key, value) VALUES ('schema_version', ?)",
            (str(version),),
        )


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def prompt_hash(messages: list[dict]) -> str:
    return hashlib.sha256(canonical_json(messages).encode()).hexdigest()


def cache_key(model: str, messages: list[dict], params: dict[str, Any], sample_index: int,
              identity: Mapping[str, Any] | None = None) -> str:
    """Sampling-aware key: n samples of one prompt stay distinct (sample_index is in it).

    `identity` says where the answer comes from — the server's base URL (`server_identity`),
    and any other field that changes what an answer can be (e.g. a decoding constraint mode):
    a different server behind the same model name is a miss, never another server's stale
    answer. Empty fields are left out, so a backend without an identity (official endpoint,
    local model) keeps the keys it always had.
    """
    payload: dict[str, Any] = {"model": model, "messages": messages, "params": params,
                               "sample": sample_index}
    extra = {k: v for k, v in (identity or {}).items() if v not in (None, "", {}, [])}
    if extra:
        payload["identity"] = extra
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def server_identity(backend: object) -> dict[str, str]:
    """The cache identity of a backend's server: its base URL when it has one (an
    OpenAI-compatible server, or an official API redirected by OPENAI_BASE_URL), plus the
    backend's own `cache_identity` fields (a local model's non-default seed base)."""
    url = getattr(backend, "base_url", None)
    ident = {"base_url": str(url).rstrip("/")} if url else {}
    ident.update(getattr(backend, "cache_identity", {}))  # e.g. a local model's seed base
    return ident


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class CallStore:
    """SQLite call log + cache. Thread-safe; several processes may share one file."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None and str(path) != ":memory:" else path
        if self.path is None:
            self.path = default_db_path()
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(self.path), timeout=60.0, check_same_thread=False, isolation_level=None
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA busy_timeout = 60000")
        if str(self.path) != ":memory:":
            self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._lock:
            MIGRATIONS.apply(self._conn)

    # -- plumbing -----------------------------------------------------------------------------
    class _Tx:
        def __init__(self, store: CallStore):
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            for attempt in range(50):
                try:
                    self.store._conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:  # pragma: no cover - heavy contention
                    if "locked" not in str(exc) or attempt == 49:
                        self.store._lock.release()
                        raise
                    time.sleep(0.05)
            return self.store._conn

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                self.store._conn.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.store._lock.release()

    def _write(self) -> CallStore._Tx:
        return CallStore._Tx(self)

    def _query(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._conn.execute(sql, args).fetchall()]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writing ------------------------------------------------------------------------------
    def record(
        self,
        *,
        model: str,
        provider: str,
        messages: list[dict],
        params: dict[str, Any],
        sample_index: int,
        key: str,
        status: str,
        run_id: str = "",
        task: str = "",
        tag: str = "",
        response: str | None = None,
        finish_reason: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        usage_estimated: bool = False,
        cost_usd: float | None = None,
        latency_s: float | None = None,
        attempts: int = 1,
        cached: bool = False,
        cache_source: int | None = None,
        error: str | None = None,
        started_at: str | None = None,
        trace: str | None = None,
    ) -> int:
        """Insert one call row (and its prompt if new); returns the row id."""
        ph = prompt_hash(messages)
        with self._write() as c:
            c.execute(
                "INSERT OR IGNORE INTO prompts (hash, messages) VALUES (?, ?)",
                (ph, canonical_json(messages)),
            )
            cur = insert(c, "calls", {
                "started_at": started_at or now_iso(),
                "finished_at": now_iso(),
                "run_id": run_id,
                "task": task,
                "tag": tag,
                "model": model,
                "provider": provider,
                "prompt_hash": ph,
                "params": canonical_json(params),
                "temperature": params.get("temperature"),
                "max_tokens": params.get("max_tokens"),
                "sample_index": sample_index,
                "cache_key": key,
                "status": status,
                "response": response,
                "finish_reason": finish_reason,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_read_tokens": int(cache_read_tokens),
                "cache_write_tokens": int(cache_write_tokens),
                "usage_estimated": int(usage_estimated),
                "cost_usd": cost_usd,
                "latency_s": latency_s,
                "attempts": attempts,
                "cached": int(cached),
                "cache_source": cache_source,
                "error": error,
                "trace": trace,
            })
            assert cur.lastrowid is not None  # an INSERT always sets it
            return int(cur.lastrowid)

    # -- reading ------------------------------------------------------------------------------
    def lookup(self, key: str) -> dict[str, Any] | None:
        """The latest successful *original* (paid) answer for a cache key, if any."""
        rows = self._query(
            "SELECT * FROM calls WHERE cache_key = ? AND status = 'ok' AND cached = 0 "
            "ORDER BY id DESC LIMIT 1",
            (key,),
        )
        return rows[0] if rows else None

    def get(self, call_id: int) -> dict[str, Any] | None:
        """One call in full, with its messages decoded."""
        return self._one_call("WHERE calls.id = ?", (call_id,))

    def recent(
        self, limit: int = 20, *, run_id: str | None = None, model: str | None = None,
        task: str | None = None, status: str | None = None,
    ) -> list[dict[str, Any]]:
        where, args = self._filters(run_id=run_id, model=model, task=task, status=status)
        return self._query(
            f"SELECT * FROM calls {where} ORDER BY id DESC LIMIT ?", (*args, int(limit))
        )

    def totals(self, by: str = "run", *, run_id: str | None = None) -> list[dict[str, Any]]:
        """Calls, tokens and cost grouped by run, model, task or run+model."""
        groups = {
            "run": "run_id",
            "model": "model",
            "task": "task",
            "run_model": "run_id, model",
        }
        if by not in groups:
            raise ValueError(f"totals(by=...) must be one of {sorted(groups)}; found {by!r}")
        where, args = self._filters(run_id=run_id)
        cols = groups[by]
        return self._query(
            f"""SELECT {cols}, COUNT(*) AS calls,
                SUM(cached) AS cached_calls,
                SUM(status = 'error') AS errors,
                SUM(CASE WHEN cached = 0 THEN input_tokens ELSE 0 END) AS input_tokens,
                SUM(CASE WHEN cached = 0 THEN output_tokens ELSE 0 END) AS output_tokens,
                SUM(CASE WHEN cached = 0 THEN cache_read_tokens ELSE 0 END) AS cache_read_tokens,
                SUM(CASE WHEN cached = 0 THEN cache_write_tokens ELSE 0 END)
                    AS cache_write_tokens,
                SUM(CASE WHEN cached = 1 THEN input_tokens + output_tokens ELSE 0 END)
                    AS cached_tokens,
                SUM(CASE WHEN cached = 0 THEN cost_usd ELSE 0 END) AS cost_usd,
                SUM(cost_usd IS NULL AND cached = 0 AND status = 'ok') AS unpriced_calls,
                MIN(started_at) AS first, MAX(finished_at) AS last
            FROM calls {where} GROUP BY {cols} ORDER BY MIN(id)""",
            args,
        )

    def spent(self, run_id: str) -> tuple[int, float]:
        """Tokens and USD actually paid by a run so far (cache hits excluded)."""
        rows = self._query(
            "SELECT COALESCE(SUM(input_tokens + output_tokens), 0) AS t, "
            "COALESCE(SUM(cost_usd), 0) AS c FROM calls "
            "WHERE run_id = ? AND cached = 0 AND status = 'ok'",
            (run_id,),
        )
        return int(rows[0]["t"]), float(rows[0]["c"])

    def answer_lengths(self, model: str) -> tuple[int, float | None]:
        """(answered calls, average output tokens) of `model`, cache replays excluded."""
        rows = self._query(
            "SELECT COUNT(*) AS n, AVG(output_tokens) AS avg FROM calls "
            "WHERE model = ? AND status = 'ok' AND cached = 0",
            (model,),
        )
        n = int(rows[0]["n"])
        return (n, float(rows[0]["avg"])) if n else (0, None)

    def call_seconds(self, model: str) -> float | None:
        """Median seconds of `model`'s answered calls (cache replays excluded): what a local
        model's time estimate is made of."""
        rows = self._query(
            "SELECT latency_s FROM calls WHERE model = ? AND status = 'ok' AND cached = 0 "
            "AND latency_s IS NOT NULL ORDER BY latency_s",
            (model,),
        )
        if not rows:
            return None
        return float(rows[len(rows) // 2]["latency_s"])

    def pending(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Requests that missed the cache in replay mode and still have no answer."""
        where, args = self._filters(prefix="calls.", run_id=run_id, status="pending")
        rows = self._query(
            f"""SELECT calls.*, prompts.messages AS messages_json FROM calls
            JOIN prompts ON prompts.hash = calls.prompt_hash {where}
            AND NOT EXISTS (SELECT 1 FROM calls AS ok
                WHERE ok.cache_key = calls.cache_key AND ok.status = 'ok')
            ORDER BY calls.id""",
            args,
        )
        seen: set[str] = set()
        out = []
        for row in rows:
            if row["cache_key"] in seen:
                continue
            seen.add(row["cache_key"])
            row["messages"] = json.loads(row.pop("messages_json"))
            row["params"] = json.loads(row["params"])
            out.append(row)
        return out

    def find_request(self, key: str) -> dict[str, Any] | None:
        """Any row with this cache key (to recover model/messages/params for a batch import)."""
        return self._one_call("WHERE cache_key = ? ORDER BY calls.id DESC LIMIT 1", (key,))

    def _one_call(self, where: str, args: tuple) -> dict[str, Any] | None:
        """The first call row matching `where`, with its messages and params decoded."""
        rows = self._query(
            "SELECT calls.*, prompts.messages AS messages_json FROM calls "
            "JOIN prompts ON prompts.hash = calls.prompt_hash " + where,
            args,
        )
        if not rows:
            return None
        row = rows[0]
        row["messages"] = json.loads(row.pop("messages_json"))
        row["params"] = json.loads(row["params"])
        return row

    @staticmethod
    def _filters(prefix: str = "", **kw: str | None) -> tuple[str, tuple]:
        parts, args = [], []
        for col, val in kw.items():
            if val is not None:
                parts.append(f"{prefix}{col} = ?")
                args.append(val)
        return ("WHERE " + " AND ".join(parts) if parts else ""), tuple(args)
