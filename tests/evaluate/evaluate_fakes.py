"""Build recorded runs in a temporary store with a tiny demonstration-sensitive agent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from stepsmith.evaluate.runner import BenchConfig, create_run, execute
from stepsmith.improve.store import ExperienceStore


@dataclass
class Task:
    name: str
    group: str
    impl: str
    source_path: None = None

    @property
    def text(self) -> str:
        return f"test_name: {self.name}\ninputs:\n- name: x\n  dtype: fp32\n  dims: [K]\nimpl: |-\n  return x\n"


@dataclass
class Attempt:
    impl: str | None
    passed: bool
    failure_kind: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    verdict: Any = None
    calls: int = 1
    guardian_changed: bool = False
    guardian_corrupted: bool = False
    feedback: str = ""


class GroupAgent:
    """Solves tasks of group ``easy`` always; ``hard`` only with a demonstration in the prompt;
    ``never`` never (failing as shape_error/value_mismatch alternately). One corruption."""

    def __init__(self) -> None:
        self.calls = 0

    async def attempt(self, task: Task, demonstrations: Any, *, temperature: float | None,
                      sample_index: int) -> Attempt:
        self.calls += 1
        tokens = 200 + 100 * len(demonstrations)
        ok = task.group == "easy" or (task.group == "hard" and demonstrations and sample_index % 2 == 0)
        if ok:
            return Attempt(task.impl, True, None, tokens, 30, 0.001)
        kind = "shape_error" if sample_index % 2 else "value_mismatch"
        return Attempt("return x", False, kind, tokens, 10, 0.001,
                       guardian_changed=sample_index == 1, guardian_corrupted=sample_index == 1 and task.group == "never")


TASKS = [
    Task("e1", "easy", "y = step.Map(fn=F1).apply(x)\nreturn y\n"),
    Task("e2", "easy", "# sum\ny = step.Accum(fn=Add, b=1).apply(x)\nreturn y\n"),
    Task("h1", "hard", "y = step.Map(fn=H1).apply(x)\nz = step.Map(fn=H2).apply(y)\nreturn z\n"),
    Task("z1", "never", "return x\n"),
]


def build_run(store: ExperienceStore, method: str = "self-improve", n: int = 2) -> str:
    cfg = BenchConfig(model="scripted:test", method=method, n=n, temperatures=[0.4, 1.0], ks=[1, 2])
    run_id = create_run(cfg, store, TASKS)
    asyncio.run(execute(cfg, store, run_id, TASKS, GroupAgent()))
    return run_id
