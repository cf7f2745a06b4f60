"""The experience store and run state, in SQLite next to the LLM call log.

Same database file as ``stepsmith.llm``'s call log (``$STEPSMITH_HOME/stepsmith.db``), separate
``exp_*`` tables, evolved by named migrations (``MIGRATIONS``, store "experience") in the
ledger both stores share (``stepsmith.db``). Every finished sample is written the moment it finishes, keyed by
(run, iteration, task, temperature, sample index); Algorithm 1 is a deterministic function of
those rows, so a killed run resumes by replaying them and only requests what is missing.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stepsmith.db import Migrations, add_column, execute_script, insert
from stepsmith.demos.records import DemoRecord
from stepsmith.llm.config import default_db_path

__all__ = [
    "MIGRATIONS",
    "DemoRecord",
    "ExperienceStore",
    "IterationRecord",
    "RunBusyError",
    "RunRow",
    "SampleRecord",
    "default_db_path",
    "temp_key",
]

MIGRATIONS = Migrations("experience")


@MIGRATIONS.register
def m001_initial(db: sqlite3.Connection) -> None:
    """Runs, samples, demonstrations and iterations."""
    execute_script(
        db,
        """
CREATE TABLE IF NOT EXISTS exp_runs (
    run_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL,
    method TEXT NOT NULL,
    model TEXT NOT NULL,
    config TEXT NOT NULL,
    summary TEXT,
    note TEXT
);
CREATE TABLE IF NOT EXISTS exp_samples (
    run_id TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    level INTEGER NOT NULL,
    task TEXT NOT NULL,
    task_group TEXT NOT NULL,
    temp_key TEXT NOT NULL,
    temperature REAL,
    sample_index INTEGER NOT NULL,
    impl TEXT,
    passed INTEGER NOT NULL,
    failure_kind TEXT,
    feedback TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    calls INTEGER NOT NULL,
    guardian_changed INTEGER NOT NULL,
    guardian_corrupted INTEGER NOT NULL,
    seconds REAL NOT NULL,
    demos TEXT NOT NULL,
    verifier_version TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, iteration, task, temp_key, sample_index)
);
CREATE TABLE IF NOT EXISTS exp_demos (
    run_id TEXT NOT NULL,
    task_name TEXT NOT NULL,
    source TEXT NOT NULL,
    task_group TEXT NOT NULL,
    task_ir TEXT NOT NULL,
    impl TEXT NOT NULL,
    model TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    temperature REAL,
    verifier_version TEXT NOT NULL,
    success_count INTEGER NOT NULL,
    n INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    provenance TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    PRIMARY KEY (run_id, task_name, source)
);
CREATE TABLE IF NOT EXISTS exp_iterations (
    run_id TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    level INTEGER NOT NULL,
    levels TEXT NOT NULL,
    demo_tasks TEXT NOT NULL,
    tasks TEXT NOT NULL,
    solved TEXT NOT NULL,
    finished REAL NOT NULL,
    PRIMARY KEY (run_id, iteration)
);
""",
    )


@MIGRATIONS.register
def m002_run_owner(db: sqlite3.Connection) -> None:
    """``host:pid`` of the process running a run, to tell ``running`` from ``interrupted``."""
    add_column(db, "exp_runs", "owner", "TEXT")


def temp_key(temperature: float | None) -> str:
    """Primary-key form of a temperature (``None`` = provider default, e.g. reasoning models)."""
    return "default" if temperature is None else f"{float(temperature):g}"


@dataclass
class SampleRecord:
    """One finished sample: the answer, its verdict summary and what it cost."""

    run_id: str
    iteration: int
    level: int
    task: str
    task_group: str
    temperature: float | None
    sample_index: int
    impl: str | None
    passed: bool
    failure_kind: str | None
    feedback: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    calls: int
    guardian_changed: bool
    guardian_corrupted: bool
    seconds: float
    demos: list[str] = field(default_factory=list)
    verifier_version: str | None = None

    @property
    def temp_key(self) -> str:
        return temp_key(self.temperature)


class RunBusyError(RuntimeError):
    """A live process is executing the run (its ``owner``); a second one would repeat paid calls."""

    def __init__(self, run_id: str, owner: str) -> None:
        self.run_id = run_id
        self.owner = owner
        super().__init__(f"run {run_id} is still being executed by process {owner} (status running)")


@dataclass
class RunRow:
    run_id: str
    created: float
    updated: float
    status: str
    method: str
    model: str
    config: dict[str, Any]
    summary: dict[str, Any] | None
    note: str | None
    owner: str | None = None  # "host:pid" of the process running it, while status is running

    @property
    def shown_status(self) -> str:
        """``interrupted`` for a run whose process died without recording an end (kill -9, power)."""
        if self.status == "running" and self.owner and not _owner_alive(self.owner):
            return "interrupted"
        return self.status


@dataclass
class IterationRecord:
    iteration: int
    level: int
    levels: list[list[str]]
    demo_tasks: list[str]
    tasks: list[str]
    solved: list[str]


class ExperienceStore:
    """SQLite-backed runs, samples, demonstrations and iterations (WAL, safe to kill)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        MIGRATIONS.apply(self._conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ExperienceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- runs ---------------------------------------------------------------------------
    def create_run(self, run_id: str, *, method: str, model: str, config: dict[str, Any]) -> None:
        now = time.time()
        try:
            with self._tx() as c:
                c.execute(
                    "INSERT INTO exp_runs (run_id, created, updated, status, method, model, config, owner)"
                    " VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                    (run_id, now, now, method, model, json.dumps(config, sort_keys=True), _this_owner()),
                )
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                f"run id {run_id!r} already exists in {self.path}; use --resume {run_id} to continue it"
            ) from exc

    def get_run(self, run_id: str) -> RunRow:
        row = self._conn.execute("SELECT * FROM exp_runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            known = [r.run_id for r in self.list_runs(limit=5)]
            hint = f" recent runs: {', '.join(known)}" if known else " no runs recorded yet"
            raise KeyError(f"no run {run_id!r} in {self.path};{hint}")
        return _run_row(row)

    def find_run(self, prefix: str) -> RunRow:
        """Look a run up by id or unique id prefix (users type short prefixes)."""
        rows = self._conn.execute(
            "SELECT * FROM exp_runs WHERE run_id = ? OR run_id LIKE ? ORDER BY created",
            (prefix, prefix.replace("%", "") + "%"),
        ).fetchall()
        exact = [r for r in rows if r["run_id"] == prefix]
        if exact:
            return _run_row(exact[0])
        if len(rows) == 1:
            return _run_row(rows[0])
        if not rows:
            return self.get_run(prefix)
        ids = ", ".join(r["run_id"] for r in rows[:8])
        raise KeyError(f"run prefix {prefix!r} is ambiguous: matches {ids}")

    def list_runs(self, limit: int = 50) -> list[RunRow]:
        rows = self._conn.execute(
            "SELECT * FROM exp_runs ORDER BY created DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_run_row(r) for r in rows]

    def set_status(
        self, run_id: str, status: str, *, summary: dict[str, Any] | None = None, note: str | None = None
    ) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE exp_runs SET status = ?, updated = ?, owner = ?,"
                " summary = COALESCE(?, summary), note = COALESCE(?, note) WHERE run_id = ?",
                (
                    status, time.time(), _this_owner() if status == "running" else None,
                    json.dumps(summary) if summary is not None else None, note, run_id,
                ),
            )

    def claim_run(self, run_id: str) -> RunRow:
        """Mark ``run_id`` running for this process, unless a live process is already running it.

        The ownership check and the status update are one ``BEGIN IMMEDIATE`` transaction: two
        ``--resume``s started at once cannot both see the run free and both pay for its missing
        samples. Raises ``RunBusyError`` naming the owner; ``KeyError`` for an unknown run.
        """
        with self._tx() as c:
            row = c.execute("SELECT * FROM exp_runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise KeyError(f"no run {run_id!r} in {self.path}")
            run = _run_row(row)
            if run.shown_status == "running" and run.owner:
                raise RunBusyError(run_id, run.owner)
            c.execute("UPDATE exp_runs SET status = 'running', updated = ?, owner = ? WHERE run_id = ?",
                      (time.time(), _this_owner(), run_id))
        return self.get_run(run_id)

    # -- samples ------------------------------------------------------------------------
    def record_sample(self, s: SampleRecord) -> None:
        """Write one finished sample immediately (a kill after this loses nothing)."""
        with self._tx() as c:
            insert(c, "exp_samples", {
                "run_id": s.run_id, "iteration": s.iteration, "level": s.level, "task": s.task,
                "task_group": s.task_group, "temp_key": s.temp_key, "temperature": s.temperature,
                "sample_index": s.sample_index, "impl": s.impl, "passed": int(s.passed),
                "failure_kind": s.failure_kind, "feedback": s.feedback,
                "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
                "cost_usd": s.cost_usd, "calls": s.calls,
                "guardian_changed": int(s.guardian_changed),
                "guardian_corrupted": int(s.guardian_corrupted), "seconds": s.seconds,
                "demos": json.dumps(s.demos), "verifier_version": s.verifier_version,
                "created": time.time(),
            }, replace=True)

    def samples(self, run_id: str, *, iteration: int | None = None) -> list[SampleRecord]:
        q = "SELECT * FROM exp_samples WHERE run_id = ?"
        args: list[Any] = [run_id]
        if iteration is not None:
            q += " AND iteration = ?"
            args.append(iteration)
        q += " ORDER BY iteration, task, temp_key, sample_index"
        return [_sample(r) for r in self._conn.execute(q, args).fetchall()]

    def sample_map(self, run_id: str, iteration: int) -> dict[tuple[str, str, int], SampleRecord]:
        return {(s.task, s.temp_key, s.sample_index): s for s in self.samples(run_id, iteration=iteration)}

    # -- demonstrations -----------------------------------------------------------------
    def add_demos(self, run_id: str, demos: Iterable[DemoRecord]) -> None:
        with self._tx() as c:
            for d in demos:
                insert(c, "exp_demos", {
                    "run_id": run_id, "task_name": d.task_name, "source": d.source,
                    "task_group": d.group, "task_ir": d.task_ir, "impl": d.impl, "model": d.model,
                    "iteration": d.iteration, "temperature": d.temperature,
                    "verifier_version": d.verifier_version, "success_count": d.success_count,
                    "n": d.n, "status": d.status,
                    "provenance": json.dumps(d.provenance, sort_keys=True), "created": time.time(),
                }, replace=True)

    def demos(self, run_id: str, *, source: str | None = None, active_only: bool = False) -> list[DemoRecord]:
        q = "SELECT * FROM exp_demos WHERE run_id = ?"
        args: list[Any] = [run_id]
        if source is not None:
            q += " AND source = ?"
            args.append(source)
        if active_only:
            q += " AND status = 'active'"
        q += " ORDER BY iteration, created, task_name"
        return [_demo(r) for r in self._conn.execute(q, args).fetchall()]

    def set_demo_status(self, run_id: str, task_name: str, source: str, status: str, provenance: dict[str, Any]) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE exp_demos SET status = ?, provenance = ? WHERE run_id = ? AND task_name = ? AND source = ?",
                (status, json.dumps(provenance, sort_keys=True), run_id, task_name, source),
            )

    # -- iterations ---------------------------------------------------------------------
    def record_iteration(self, run_id: str, it: IterationRecord) -> None:
        with self._tx() as c:
            insert(c, "exp_iterations", {
                "run_id": run_id, "iteration": it.iteration, "level": it.level,
                "levels": json.dumps(it.levels), "demo_tasks": json.dumps(it.demo_tasks),
                "tasks": json.dumps(it.tasks), "solved": json.dumps(it.solved),
                "finished": time.time(),
            }, replace=True)

    def iterations(self, run_id: str) -> list[IterationRecord]:
        rows = self._conn.execute(
            "SELECT * FROM exp_iterations WHERE run_id = ? ORDER BY iteration", (run_id,)
        ).fetchall()
        return [
            IterationRecord(
                iteration=r["iteration"], level=r["level"], levels=json.loads(r["levels"]),
                demo_tasks=json.loads(r["demo_tasks"]), tasks=json.loads(r["tasks"]),
                solved=json.loads(r["solved"]),
            )
            for r in rows
        ]


def _run_row(r: sqlite3.Row) -> RunRow:
    return RunRow(
        run_id=r["run_id"], created=r["created"], updated=r["updated"], status=r["status"],
        method=r["method"], model=r["model"], config=json.loads(r["config"]),
        summary=json.loads(r["summary"]) if r["summary"] else None, note=r["note"],
        owner=r["owner"] if "owner" in r.keys() else None,
    )


def _this_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str) -> bool:
    """True unless the owner ran on this host and its pid is gone (other hosts: assume alive)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sample(r: sqlite3.Row) -> SampleRecord:
    return SampleRecord(
        run_id=r["run_id"], iteration=r["iteration"], level=r["level"], task=r["task"],
        task_group=r["task_group"], temperature=r["temperature"], sample_index=r["sample_index"],
        impl=r["impl"], passed=bool(r["passed"]), failure_kind=r["failure_kind"],
        feedback=r["feedback"] or "", input_tokens=r["input_tokens"],
        output_tokens=r["output_tokens"], cost_usd=r["cost_usd"], calls=r["calls"],
        guardian_changed=bool(r["guardian_changed"]), guardian_corrupted=bool(r["guardian_corrupted"]),
        seconds=r["seconds"], demos=json.loads(r["demos"]), verifier_version=r["verifier_version"],
    )


def _demo(r: sqlite3.Row) -> DemoRecord:
    return DemoRecord(
        task_name=r["task_name"], group=r["task_group"], task_ir=r["task_ir"], impl=r["impl"],
        model=r["model"], iteration=r["iteration"], temperature=r["temperature"],
        verifier_version=r["verifier_version"], success_count=r["success_count"], n=r["n"],
        source=r["source"], status=r["status"], provenance=json.loads(r["provenance"]),
    )


def demo_to_dict(d: DemoRecord) -> dict[str, Any]:
    return asdict(d)
