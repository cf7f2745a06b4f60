"""Which recorded answers the current typed constrainer still accepts, line by line.

A change to the typed decoder's space must keep every program the verifier accepted (a
constrainer that refuses right programs costs accuracy) and should refuse wrong ones. This
feeds every recorded sample of the experiment store (verified ones and value mismatches; the
static kinds never pass the typed decoder) statement by statement to `ProgramState` under the
plain budget and prints, for right and wrong answers, how many are still accepted, and the
line where each refused one stops. A right answer refused is a regression.

    python bench/replay_constraint.py --since 20261202
"""

from __future__ import annotations

import argparse
import sqlite3
from collections import Counter
from pathlib import Path

from stepsmith.agents.decoding.space import Facts, ProgramState
from stepsmith.agents.decoding.statements import LineOptions, Rejected, advance, program_lines
from stepsmith.llm.config import default_db_path
from stepsmith.tasks.suite import get_task

# recorded answers carry their explicit Copy statements: room for them over the plain budget
MAX_REPLAYED_STATEMENTS = 60


def refusal(facts: Facts, impl: str) -> str | None:
    """None if the constrainer accepts `impl` line by line to a return, else why not."""
    state = ProgramState.start(facts, MAX_REPLAYED_STATEMENTS)
    for line in program_lines(impl):
        try:
            state = advance(state, LineOptions.of(state), line)
        except Rejected as exc:
            return f"{line!r}: {exc}"
    return None if state.done else "no return"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--since", default="", help="first run id (prefix) to replay")
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--show", action="store_true", help="print every refused answer")
    args = ap.parse_args()
    db = sqlite3.connect(args.db or default_db_path())
    rows = db.execute(
        "select run_id, task, passed, impl from exp_samples where run_id >= ? and impl is not "
        "null and (passed = 1 or failure_kind = 'value_mismatch') order by run_id, created",
        (args.since,)).fetchall()
    if not rows:
        raise SystemExit(f"no verified or value-mismatch samples recorded since {args.since!r}")
    facts: dict[str, Facts] = {}
    counts: Counter[tuple[bool, bool]] = Counter()
    regressions = []
    for run_id, task_name, passed, impl in rows:
        if task_name not in facts:
            facts[task_name] = Facts.from_task(get_task(task_name))
        why = refusal(facts[task_name], impl)
        counts[(bool(passed), why is None)] += 1
        if why is not None and (passed or args.show):
            regressions.append(f"{run_id} {task_name} {'RIGHT' if passed else 'wrong'}: {why}")
    right = counts[(True, True)] + counts[(True, False)]
    wrong = counts[(False, True)] + counts[(False, False)]
    print(f"right answers accepted: {counts[(True, True)]} of {right}")
    print(f"wrong answers accepted: {counts[(False, True)]} of {wrong} "
          f"(refused {counts[(False, False)]})")
    for line in regressions:
        print(" ", line)


if __name__ == "__main__":
    main()
