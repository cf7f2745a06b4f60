"""What search `nearby` would have made of recorded typed samples, with no model time.

Every typed call of the call log keeps its search trace: each attempt's lines and whether the
program was complete. This feeds every complete attempt that did not verify back through the
typed cursor of its own budget and runs the `nearby` search on it (the one-line neighbours,
judged by the verifier), then prints, per sample, the first attempt a neighbour would have
verified and what it changed, and in total: failed samples that a neighbour rescues, tasks
that gains, verifier runs and seconds spent. Verified attempts are replayed too, as a check
that the cursor still accepts them. The live effect (a rescued sample stops early, so later
attempts never run) is measured by `stepsmith bench --search nearby`.

    python bench/nearby_replay.py --run 20261203-153934-8fa3
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import time
from pathlib import Path

from stepsmith.agents.decoding.judge import searched_constraint
from stepsmith.llm.config import default_db_path
from stepsmith.llm.constraint import LineCursor, LineRejected
from stepsmith.tasks.suite import get_task
from stepsmith.verify import default_pool

ATTEMPT = re.compile(r"^attempt (\d+): \d+ line\(s\), (complete, not verified|verified|[a-z_]+), "
                     r"\d+ tokens$")


def attempts(trace: str) -> list[tuple[int, bool, str]]:
    """(attempt index from 0, verified, body) of every complete attempt in a trace."""
    out = []
    lines = trace.splitlines()
    for i, line in enumerate(lines):
        m = ATTEMPT.match(line)
        if not m or m.group(2) not in ("complete, not verified", "verified"):
            continue
        body = []
        for nxt in lines[i + 1:]:
            if not nxt.startswith("  "):
                break
            body.append(nxt + "\n")
        out.append((int(m.group(1)) - 1, m.group(2) == "verified", "".join(body)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="run id (prefix); repeatable")
    ap.add_argument("--db", type=Path, default=None)
    args = ap.parse_args()
    db = sqlite3.connect(args.db or default_db_path())
    rows = []
    for run in args.run:
        rows += db.execute(
            "select id, task, trace from calls where run_id like ? and trace is not null "
            "and params like '%typed%' order by id", (run + "%",)).fetchall()
    if not rows:
        raise SystemExit(f"no typed calls with a trace in run(s) {', '.join(args.run)}")
    pool = default_pool()
    solved_before: set[str] = set()
    solved_after: set[str] = set()
    rescued = failed = judged_total = 0
    seconds = 0.0
    for call_id, task_name, trace in rows:
        task = get_task(task_name)
        constraint, judge = searched_constraint(task, "typed", "nearby", pool)
        assert constraint is not None and judge is not None
        tried = attempts(trace)
        head = trace.splitlines()[0]
        if any(v for _, v, _ in tried) or "judged return" in head or "line edited" in head:
            solved_before.add(task_name)
            solved_after.add(task_name)
            continue
        failed += 1
        verdict = "no complete attempt" if not tried else "no neighbour verified"
        spent = 0.0
        for index, _, body in tried:
            cursor = constraint.lines(index)
            assert cursor is not None
            trail: list[tuple[LineCursor, str]] = []
            try:
                for line in body.splitlines(keepends=True):
                    trail.append((cursor, line))
                    cursor.pattern()
                    cursor = cursor.feed(line)
            except LineRejected as exc:
                verdict = f"attempt {index + 1} no longer typed: {exc}"
                continue
            before = judge.calls
            t0 = time.perf_counter()
            near = constraint.repaired(trail)
            spent += time.perf_counter() - t0
            judged_total += judge.calls - before
            if near is not None:
                rescued += 1
                solved_after.add(task_name)
                verdict = f"attempt {index + 1} rescued after {near[2]} judged: {near[1]}"
                break
        seconds += spent
        print(f"call {call_id} {task_name}: {verdict}" + (f" ({spent:.1f} s)" if tried else ""))
    print(f"\n{len(rows)} typed samples; {failed} failed as recorded, {rescued} of them rescued "
          f"by a one-line neighbour")
    print(f"tasks solved: {len(solved_before)} recorded -> {len(solved_after)} with nearby "
          f"(+{', +'.join(sorted(solved_after - solved_before)) or 'none'})")
    print(f"verifier runs {judged_total}, {seconds:.1f} s of search "
          f"({seconds / max(1, failed):.1f} s per failed sample)")


if __name__ == "__main__":
    main()
