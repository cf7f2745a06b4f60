"""Test doubles: a scripted agent whose success depends on which demonstrations are in its prompt."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stepsmith.agents import Attempt
from stepsmith.demos import DemoRecord
from stepsmith.demos import isomorphic as is_isomorphic
from stepsmith.tasks import Task, load_task


def make_attempt(impl: str | None, passed: bool, failure_kind: str | None, input_tokens: int,
                 output_tokens: int, *, feedback: str = "") -> Attempt:
    """A real `Attempt` (the loop reads nothing else), without a verdict or a guardian."""
    return Attempt(impl=impl, verdict=None, failure_kind=failure_kind, passed=passed,
                   input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=0.0, calls=1,
                   guardian_changed=False, guardian_corrupted=False, feedback=feedback)


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


def make_task(name: str, group: str, fn: str) -> Task:
    """A real task (loading runs none of its code): x ↦ Map(fn)(x), one fn, one output."""
    return load_task(f"""\
test_name: {name}
group: {group}
description: apply {fn} to every element
inputs:
  - name: x
    dtype: fp32
    dims: [K]
    data_gen: torch.randn
fns:
  - name: {fn}
    func_name: {fn}
    input_dtype: fp32
    output_dtype: fp32
    apply: |-
      return [input[0] * 2]
outputs:
  - name: out
    dtype: fp32
    dims: [K]
    data_transform:
      - input_data['x'] * 2
impl: |-
  out = step.Map(fn={fn}).apply(x)
  return out
""")


Factory = Callable[..., ScriptedAgent]
