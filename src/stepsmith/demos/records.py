"""What a demonstration is, and the one leakage rule that decides who may see it.

A demonstration is a task (shown without its name, `stepsmith.demos.view.task_ir`) plus a
verified impl, with provenance (source task, model, iteration, temperature, verifier version).
`DemoRecord` adds what the experience store keeps: difficulty, source and status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from stepsmith.demos.identity import isomorphic
from stepsmith.demos.view import task_ir

if TYPE_CHECKING:
    from stepsmith.tasks.task import Task

__all__ = ["DemoRecord", "Demonstration", "HasSolution", "leaks", "visible_demos"]


class HasSolution(Protocol):
    """A task as the leakage rule sees it: a name and, maybe, a reference program."""

    @property
    def name(self) -> str: ...

    @property
    def impl(self) -> str | None: ...


@dataclass(frozen=True)
class Demonstration:
    """A verified solution shown in later prompts; provenance fields are never shown."""

    task_name: str
    group: str
    task_ir: str
    impl: str
    model: str
    iteration: int
    temperature: float | None
    verifier_version: str

    @classmethod
    def from_solution(
        cls,
        task: Task,
        impl: str,
        *,
        model: str = "",
        iteration: int = 0,
        temperature: float | None = None,
        verifier_version: str = "",
    ) -> Demonstration:
        """Build a demonstration for `task` solved by `impl` (renders the task's IR)."""
        return cls(
            task_name=task.name,
            group=task.group,
            task_ir=task_ir(task),
            impl=impl,
            model=model,
            iteration=iteration,
            temperature=temperature,
            verifier_version=verifier_version,
        )


@dataclass(frozen=True)
class DemoRecord(Demonstration):
    """A demonstration as the store keeps it: the prompt's `Demonstration` plus difficulty
    (success_count of n), where it came from and whether it still verifies."""

    success_count: int = 0
    n: int = 0
    source: str = "earned"  # "earned" in this run, or "import" (a --demos library)
    status: str = "active"  # "stale" after a re-verification failed
    provenance: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def score(self) -> float:
        """Difficulty score for β: success rate (lower = harder)."""
        return self.success_count / self.n if self.n else 0.0


def leaks(task: HasSolution, demo: Demonstration) -> bool:
    """True if showing `demo` to `task` would show the task its own solution: the demo was
    earned on the task itself, or its program is isomorphic to the task's reference."""
    return demo.task_name == task.name or isomorphic(demo.impl, task.impl)


def visible_demos(task: HasSolution, demos: Sequence[DemoRecord]) -> list[DemoRecord]:
    """The leakage guard: drop the task's own demonstration and any isomorphic one."""
    return [d for d in demos if not leaks(task, d)]
