"""Build recorded runs in a temporary store with a tiny demonstration-sensitive agent."""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import Sequence

from stepsmith.agents import Attempt
from stepsmith.demos import DemoRecord
from stepsmith.evaluate.runner import BenchConfig, create_run, execute
from stepsmith.improve.store import ExperienceStore
from stepsmith.tasks import Task, load_task


def make_task(name: str, group: str, impl: str) -> Task:
    """A real task in the paper's format (loading runs none of its code) with this reference;
    each fn the reference names is declared (stateful when Accum uses it)."""
    fns = ""
    for fn in dict.fromkeys(re.findall(r"fn=(\w+)", impl)):
        init = "\n    init: [0]" if f"Accum(fn={fn}" in impl else ""
        body = "state[0] + input[0]" if init else "input[0]"
        fns += (f"  - name: {fn}\n    func_name: {fn}{init}\n    input_dtype: fp32\n"
                f"    output_dtype: fp32\n    apply: |-\n      return [{body}]\n")
    return load_task(f"""\
test_name: {name}
group: {group}
description: a test task
inputs:
  - name: x
    dtype: fp32
    dims: [K]
    data_gen: torch.randn
fns:
{fns or "  []"}
outputs:
  - name: y
    dtype: fp32
    dims: [K]
    data_transform:
      - input_data['x']
impl: |
{textwrap.indent(impl, "  ")}""")


def make_attempt(impl: str | None, passed: bool, failure_kind: str | None, input_tokens: int,
                 output_tokens: int, *, guardian_changed: bool = False,
                 guardian_corrupted: bool = False) -> Attempt:
    """A real `Attempt` without a verdict, costing $0.001."""
    return Attempt(impl=impl, verdict=None, failure_kind=failure_kind, passed=passed,
                   input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=0.001, calls=1,
                   guardian_changed=guardian_changed, guardian_corrupted=guardian_corrupted,
                   feedback="")


class GroupAgent:
    """Solves tasks of group ``easy`` always; ``hard`` only with a demonstration in the prompt;
    ``never`` never (failing as shape_error/value_mismatch alternately). One corruption."""

    def __init__(self) -> None:
        self.calls = 0

    async def attempt(self, task: Task, demonstrations: Sequence[DemoRecord], *, temperature: float | None,
                      sample_index: int) -> Attempt:
        self.calls += 1
        tokens = 200 + 100 * len(demonstrations)
        ok = task.group == "easy" or (task.group == "hard" and bool(demonstrations) and sample_index % 2 == 0)
        if ok:
            return make_attempt(task.impl, True, None, tokens, 30)
        kind = "shape_error" if sample_index % 2 else "value_mismatch"
        return make_attempt("return x", False, kind, tokens, 10,
                            guardian_changed=sample_index == 1, guardian_corrupted=sample_index == 1 and task.group == "never")


TASKS = [
    make_task("e1", "easy", "y = step.Map(fn=F1).apply(x)\nreturn y\n"),
    make_task("e2", "easy", "# sum\ny = step.Accum(fn=Add, b=1).apply(x)\nreturn y\n"),
    make_task("h1", "hard", "y = step.Map(fn=H1).apply(x)\nz = step.Map(fn=H2).apply(y)\nreturn z\n"),
    make_task("z1", "never", "return x\n"),
]


def build_run(store: ExperienceStore, method: str = "self-improve", n: int = 2) -> str:
    cfg = BenchConfig(model="scripted:test", method=method, n=n, temperatures=[0.4, 1.0], ks=[1, 2])
    run_id = create_run(cfg, store, TASKS)
    asyncio.run(execute(cfg, store, run_id, TASKS, GroupAgent()))
    return run_id
