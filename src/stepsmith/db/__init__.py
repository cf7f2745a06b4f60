"""stepsmith.db — the SQLite plumbing both stores share: one migration ledger, named inserts.

`$STEPSMITH_HOME/stepsmith.db` holds the LLM call log (`stepsmith.llm.store`) and the
experience store (`stepsmith.improve.store`). Both evolve by named migrations recorded in one
`_migrations` table (the pattern of simonw's `llm` CLI), so each schema change runs exactly once
per file, whichever store opens the file first.
"""

from stepsmith.db.migrations import (
    LEDGER,
    Migrations,
    add_column,
    applied,
    execute_script,
    insert,
)

__all__ = ["LEDGER", "Migrations", "add_column", "applied", "execute_script", "insert"]
