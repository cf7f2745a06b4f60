"""What `--search prefix` would have done to recorded typed samples, measured by replaying them.

Under typed decoding the sampled lines up to the point where the prefix judge stops a sample
are the same with and without the judge (same masks, same seed); the judge only ends samples
earlier. So a run decoded without the judge can be replayed exactly: for each answer, after
each statement, every stream that statement bound is returned and the program is verified;
the first that verifies is where the judged sample would have ended. Prints, per task and in
total, samples solved without and with the judge, the statements (and the share of sampled
lines) the judge would have saved, and the verifier calls it spent.

    python bench/judge_replay.py 20261130-201456-4e1e
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

from stepsmith.agents.decoding.statements import program_lines
from stepsmith.agents.extract import Unparsable, extract_impl
from stepsmith.llm.config import default_db_path
from stepsmith.tasks.suite import get_task
from stepsmith.verify import VerifierPool, verify

_LHS = re.compile(r"^([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*=\s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run id whose typed (unjudged) calls to replay")
    ap.add_argument("--db", type=Path, default=None)
    args = ap.parse_args()
    db = sqlite3.connect(args.db or default_db_path())
    rows = db.execute(
        "select task, response, params, output_tokens from calls where run_id = ? and "
        "response is not null order by id", (args.run,)).fetchall()
    rows = [r for r in rows if str(json.loads(r[2] or "{}").get("constrain", "")).startswith("typed:")]
    if not rows:
        raise SystemExit(f"no typed, unjudged calls recorded for run {args.run}")
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # samples, plain, judged
    saved = kept = calls = 0
    t0 = time.perf_counter()
    with VerifierPool(workers=1) as pool:
        for task_name, answer, _params, _out in rows:
            task = get_task(task_name)
            stats = per[task_name]
            stats[0] += 1
            try:
                impl = extract_impl(answer)
            except Unparsable:
                continue
            plain = verify(task, impl, pool=pool).passed
            stats[1] += plain
            lines = [ln for ln in program_lines(impl) if not ln.startswith("return ")]
            stop = None
            for i, line in enumerate(lines):
                m = _LHS.match(line)
                if not m:
                    continue
                for name in (n.strip() for n in m.group(1).split(",")):
                    calls += 1
                    prog = "\n".join([*lines[:i + 1], f"return {name}"])
                    if verify(task, prog, pool=pool).passed:
                        stop = i
                        break
                if stop is not None:
                    break
            if stop is not None:
                saved += len(lines) - (stop + 1)
            stats[2] += stop is not None or plain  # the model may still write its own return
            kept += len(lines)
    print(f"replayed {len(rows)} typed samples of run {args.run} "
          f"({calls} verifier calls, {time.perf_counter() - t0:.0f}s)")
    print(f"{'task':28} {'samples':>7} {'plain':>6} {'judged':>6}")
    for name, (n, plain, judged) in sorted(per.items()):
        print(f"{name:28} {n:7d} {plain:6d} {judged:6d}")
    tot = [sum(v[i] for v in per.values()) for i in range(3)]
    solved = [sum(1 for v in per.values() if v[i]) for i in (1, 2)]
    print(f"{'total':28} {tot[0]:7d} {tot[1]:6d} {tot[2]:6d}   "
          f"tasks solved: plain {solved[0]}/{len(per)}, judged {solved[1]}/{len(per)}")
    if kept:
        print(f"statements the judge cuts: {saved} of {kept} ({saved / kept:.0%})")


if __name__ == "__main__":
    main()
