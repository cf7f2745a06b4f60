"""Named migrations in one ledger, and INSERTs that name their columns.

Each store declares its schema as an ordered list of named steps::

    MIGRATIONS = Migrations("calls")

    @MIGRATIONS.register
    def m001_initial(db: sqlite3.Connection) -> None: ...

`MIGRATIONS.apply(conn)` runs, inside one `BEGIN IMMEDIATE` transaction, every step whose
`(store, name)` is not yet in the `_migrations` ledger and records it, so two processes opening
one file at once apply each step exactly once (SQLite DDL is transactional). Steps never change:
a schema change is a new step appended at the end.

Databases made before the ledger existed carry the schema the steps would have built; the steps
are written to be no-ops on such a file (`CREATE ... IF NOT EXISTS`, `add_column` only when the
column is missing), so opening one adopts it in place: the ledger is filled, no row changes.

Older stepsmith processes may still write to an upgraded file while a benchmark runs. They
never read `_migrations`; what keeps them working is that steps only add tables or columns with
a default, and that INSERTs name their columns (`insert`), never rely on column order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["LEDGER", "Migrations", "add_column", "applied", "execute_script", "insert"]

LEDGER = "_migrations"
_LEDGER_SQL = (
    f"CREATE TABLE IF NOT EXISTS {LEDGER} ("
    "store TEXT NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, "
    "PRIMARY KEY (store, name))"
)

Step = Callable[[sqlite3.Connection], None]


class Migrations:
    """The ordered, named schema steps of one store (`store` prefixes their ledger rows)."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.steps: list[tuple[str, Step]] = []

    def register(self, step: Step) -> Step:
        """Decorator: append `step` under its function name (names are unique per store)."""
        name = step.__name__
        if any(name == known for known, _ in self.steps):
            raise ValueError(f"migration {self.store}:{name} is registered twice")
        self.steps.append((name, step))
        return step

    def apply(self, conn: sqlite3.Connection) -> list[str]:
        """Run the steps this file has not seen, in order, in one transaction; returns their
        names. `conn` must be in autocommit mode (`isolation_level=None`): the transaction is
        ours, and a failing step rolls every step of this call back."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_LEDGER_SQL)
            done = {
                row[0]
                for row in conn.execute(f"SELECT name FROM {LEDGER} WHERE store = ?", (self.store,))
            }
            ran: list[str] = []
            for name, step in self.steps:
                if name in done:
                    continue
                step(conn)
                insert(
                    conn,
                    LEDGER,
                    {"store": self.store, "name": name, "applied_at": _now()},
                )
                ran.append(name)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return ran


def applied(conn: sqlite3.Connection, store: str | None = None) -> list[tuple[str, str]]:
    """(store, name) of every applied step, oldest first; [] for a file without a ledger."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LEDGER,)
    ).fetchone()
    if exists is None:
        return []
    sql = f"SELECT store, name FROM {LEDGER}"
    args: tuple[str, ...] = ()
    if store is not None:
        sql += " WHERE store = ?"
        args = (store,)
    return [(r[0], r[1]) for r in conn.execute(sql + " ORDER BY rowid", args)]


def execute_script(conn: sqlite3.Connection, sql: str) -> None:
    """Run `;`-separated statements inside the caller's transaction (`executescript` would
    COMMIT it first). Statements must not contain `;` in literals or comments."""
    for statement in sql.split(";"):
        if statement.strip():
            conn.execute(statement)


def add_column(conn: sqlite3.Connection, table: str, name: str, decl: str) -> None:
    """`ALTER TABLE ADD COLUMN` unless the column exists (a pre-ledger file may have it)."""
    have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    if name not in have:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


def insert(
    conn: sqlite3.Connection, table: str, row: Mapping[str, Any], *, replace: bool = False
) -> sqlite3.Cursor:
    """INSERT (OR REPLACE) one row with named columns, so column order never matters."""
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    return conn.execute(f"{verb} INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
