"""What the careful look-ahead costs at dead ends the 1.5B model met, with stalled states
sharing answers (`ProgramState.SHARE_STALLED`) and without, in one run.

Where a dead end was backed up to, the cursor checks every offered statement with
`leads_on`; it may type at most `LOOKAHEAD_TYPINGS` calls an attempt, and what is left
unchecked stays offered (the model then walks into it). The positions below are prefixes of
recorded attempts (run 20261203-162531-4cb3 and 20261203-184135-3722) under deepen's budgets.
Prints, per position, the statements found to lead on, typed calls and seconds each way, and
the ratio; the answers must be equal.

    python bench/lookahead.py
"""

from __future__ import annotations

import time

from stepsmith.agents.decoding.constraint import DEEPEN_BUDGETS
from stepsmith.agents.decoding.space import Facts, ProgramState
from stepsmith.agents.decoding.statements import LineOptions, advance
from stepsmith.tasks.suite import get_task

# (task, deepen attempt, the lines before the position)
POSITIONS = [
    ("rope_neox_stream", 1, ["E2 = step.Scan(fn=fn_add, b=1).apply(E0)",
                             "E3 = step.Map(fn=fn_angles).apply(E2)"]),
    ("bmm_mnk_mdk", 1, ["E2 = step.Bufferize(a=1).apply(E0)",
                        "E3, E4 = step.Copy().apply(E1)"]),
    ("expert_streamed_relu", 0, ["E1 = step.Bufferize(a=1).apply(X)",
                                 "E2 = step.Map(fn=fn_expert0).apply(E1)",
                                 "E3 = step.Map(fn=fn_expert1).apply(E1)"]),
]


def check(task_name: str, attempt: int, lines: list[str], share: bool
          ) -> tuple[list[bool], int, float]:
    """Whether each offered statement leads on, the calls typed, and the seconds taken."""
    ProgramState.SHARE_STALLED = share
    b = DEEPEN_BUDGETS[attempt]
    facts = Facts.from_task(get_task(task_name))
    state = ProgramState.start(facts, b.statements, b.stall, b.in_order, b.reuse)
    for line in lines:
        state = advance(state, LineOptions.of(state), line)
    cands = [c for cs in LineOptions.of(state).assignments.values() for c in cs.values()]
    before, t0 = facts.typed_calls[0], time.perf_counter()
    leads = [state.leads_on(c) for c in cands]
    return leads, facts.typed_calls[0] - before, time.perf_counter() - t0


def main() -> None:
    total = {True: 0.0, False: 0.0}
    for task_name, attempt, lines in POSITIONS:
        shared, calls_s, secs_s = check(task_name, attempt, lines, True)
        full, calls_f, secs_f = check(task_name, attempt, lines, False)
        assert shared == full, f"{task_name}: sharing changed a look-ahead answer"
        total[True] += secs_s
        total[False] += secs_f
        print(f"{task_name} (attempt {attempt + 1}, after {len(lines)} line(s)): "
              f"{sum(full)}/{len(full)} lead on; full key {calls_f:,} typed calls "
              f"{secs_f:.1f} s, shared {calls_s:,} calls {secs_s:.1f} s, "
              f"ratio {secs_f / max(secs_s, 1e-9):.2f}x")
    print(f"all: full key {total[False]:.1f} s, shared {total[True]:.1f} s, "
          f"ratio {total[False] / max(total[True], 1e-9):.2f}x")
    ProgramState.SHARE_STALLED = True


if __name__ == "__main__":
    main()
