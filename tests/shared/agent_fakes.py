"""Test doubles shared by the evaluate and improve tests: real tasks and attempts, and two
scripted agents whose successes depend on the demonstrations in their prompt."""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stepsmith.agents import Attempt
from stepsmith.demos import DemoRecord
from stepsmith.demos import isomorphic as is_isomorphic
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


def map_task(name: str, group: str, fn: str) -> Task:
    """x ↦ Map(fn)(x): one fn, one output named `out` in the reference."""
    return make_task(name, group, f"out = step.Map(fn={fn}).apply(x)\nreturn out\n")


def make_attempt(impl: str | None, passed: bool, failure_kind: str | None, input_tokens: int,
                 output_tokens: int, *, cost_usd: float = 0.0, feedback: str = "",
                 guardian_changed: bool = False, guardian_corrupted: bool = False) -> Attempt:
    """A real `Attempt` (the loop and the runner read nothing else), without a verdict."""
    return Attempt(impl=impl, verdict=None, failure_kind=failure_kind, passed=passed,
                   input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd,
                   calls=1, guardian_changed=guardian_changed,
                   guardian_corrupted=guardian_corrupted, feedback=feedback)


# -- evaluate: a recorded benchmark run --------------------------------------------------------

class GroupAgent:
    """Solves tasks of group ``easy`` always; ``hard`` only with a demonstration in the prompt;
    ``never`` never (failing as shape_error/value_mismatch alternately). One corruption. Every
    attempt costs $0.001."""

    def __init__(self) -> None:
        self.calls = 0

    async def attempt(self, task: Task, demonstrations: Sequence[DemoRecord], *,
                      temperature: float | None, sample_index: int) -> Attempt:
        self.calls += 1
        tokens = 200 + 100 * len(demonstrations)
        ok = task.group == "easy" or (task.group == "hard" and bool(demonstrations)
                                      and sample_index % 2 == 0)
        if ok:
            return make_attempt(task.impl, True, None, tokens, 30, cost_usd=0.001)
        kind = "shape_error" if sample_index % 2 else "value_mismatch"
        return make_attempt("return x", False, kind, tokens, 10, cost_usd=0.001,
                            guardian_changed=sample_index == 1,
                            guardian_corrupted=sample_index == 1 and task.group == "never")


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


# -- improve: Algorithm 1 ----------------------------------------------------------------------

class Killed(BaseException):
    """Simulates the process dying mid-run (not an ordinary model fault)."""


@dataclass
class Rule:
    """Task solvable iff every group in ``needs`` has a demonstration in the prompt;
    then the first ``successes`` of every n samples pass."""

    needs: tuple[str, ...] = ()
    successes: int = 1
    never: bool = False


@dataclass
class ScriptedAgent:
    rules: dict[str, Rule]
    n: int
    kill_after: int | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)

    async def attempt(self, task: Task, demonstrations: Sequence[DemoRecord], *,
                      temperature: float | None, sample_index: int) -> Attempt:
        if self.kill_after is not None and len(self.calls) >= self.kill_after:
            raise Killed(f"killed after {len(self.calls)} calls")
        names = [d.task_name for d in demonstrations]
        for d in demonstrations:
            if d.task_name == task.name or is_isomorphic(d.impl, task.impl):
                self.leaks.append(f"{task.name} saw {d.task_name}")
        self.calls.append({"task": task.name, "demos": names, "temperature": temperature,
                           "index": sample_index})
        rule = self.rules[task.name]
        groups = {d.group for d in demonstrations}
        ok = (not rule.never and all(g in groups for g in rule.needs)
              and sample_index % self.n < rule.successes)
        tokens_in = 100 + 50 * len(demonstrations)
        if ok:
            # variants: renamed (isomorphic) and, for odd samples, a longer non-isomorphic one
            impl = (task.impl or "").replace("out", f"out{sample_index}")
            if sample_index % 2:
                impl = "tmp = step.Identity().apply(x)\n" + impl.replace("apply(x)", "apply(tmp)")
            return make_attempt(impl, True, None, tokens_in, 20)
        return make_attempt("return x", False, "value_mismatch", tokens_in, 10)
