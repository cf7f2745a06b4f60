"""Algorithm 1 — adaptive self-improvement (method.md §3), resumable.

```
D ← ∅; X ← all tasks; t ← 0
repeat
  E ← β(D, m)
  for j in 0..len(E)-1:
    d_j ← E[0] ∪ ... ∪ E[j]          # H, HM, HME
    sample n answers per task of X per temperature with d_j; verify
    S_t ← tasks of X with ≥ 1 correct answer
    if S_t ≠ ∅: D ← D ∪ σ(...); X ← X \\ S_t; t ← t+1; break      # restart from H
    t ← t+1
until X = ∅ or (d_j = D and nothing new was solved)
```

The loop is a deterministic function of the recorded samples: each sample is stored when it
finishes under (run, t, task, temperature, index) and looked up before anything is requested,
so resuming a killed run replays its history and requests only what is missing. Sample indices
are ``t * n + i`` so a prompt repeated in a later iteration gets fresh samples, not cache hits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from stepsmith.demos import DemoRecord, task_ir, visible_demos
from stepsmith.improve.filtering import select_representative
from stepsmith.improve.store import (
    ExperienceStore,
    IterationRecord,
    SampleRecord,
    temp_key,
)
from stepsmith.improve.stratify import cumulative, stratify

if TYPE_CHECKING:
    from stepsmith.agents.agent import Attempt
    from stepsmith.tasks.task import Task

FEEDBACK_LIMIT = 4000  # characters of verifier feedback kept per sample
# Infrastructure faults, not the model's: such samples are requested again on resume.
TRANSIENT_KINDS = frozenset({"llm_error", "verifier_error"})


class RunAborted(RuntimeError):
    """The model backend keeps failing (not the model's answers): stop instead of recording junk."""


class AgentLike(Protocol):
    """What the loop needs from ``stepsmith.agents.Agent``."""

    async def attempt(
        self,
        task: Task,
        demonstrations: Sequence[DemoRecord],
        *,
        temperature: float | None,
        sample_index: int,
    ) -> Attempt: ...


class ProgressSink(Protocol):
    """Receives progress of a sampling step (the CLI shows rich bars; tests pass nothing)."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self, record: SampleRecord, *, replayed: bool) -> None: ...

    def stop(self) -> None: ...


@dataclass
class LoopConfig:
    """Algorithm 1 parameters (paper: n=64, temperatures 0.4/0.7/1.0, m=3)."""

    n: int = 8
    temperatures: tuple[float | None, ...] = (0.4, 0.7, 1.0)
    m: int = 3
    max_iterations: int | None = None
    concurrency: int = 4
    model: str = ""
    max_consecutive_llm_errors: int = 8  # a dead backend aborts the run (resumable) early

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n (samples per task per temperature) must be >= 1, got {self.n}")
        if not self.temperatures:
            raise ValueError("temperatures must list at least one temperature")
        if self.m < 1:
            raise ValueError(f"m (difficulty levels) must be >= 1, got {self.m}")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {self.max_iterations}")


@dataclass
class LoopResult:
    """Outcome: which iteration solved which task, the demonstration library, why it stopped."""

    solved: dict[str, int]
    unsolved: list[str]
    demos: list[DemoRecord]
    iterations: list[IterationRecord]
    reason: str  # "all_solved" | "no_progress" | "max_iterations" | "single_pass"
    requested: int = 0  # samples requested from the agent in this process
    replayed: int = 0  # samples taken from the store (resume)
    extra: dict[str, Any] = field(default_factory=dict)


def _record_from_attempt(
    run_id: str, t: int, level: int, task: Task, temperature: float | None, index: int,
    attempt: Attempt, seconds: float, demo_names: list[str],
) -> SampleRecord:
    verdict = attempt.verdict
    return SampleRecord(
        run_id=run_id,
        iteration=t,
        level=level,
        task=task.name,
        task_group=task.group,
        temperature=temperature,
        sample_index=index,
        impl=attempt.impl,
        passed=attempt.passed,
        failure_kind=None if attempt.passed else _kind(attempt),
        feedback=attempt.feedback[:FEEDBACK_LIMIT],
        input_tokens=attempt.input_tokens,
        output_tokens=attempt.output_tokens,
        cost_usd=attempt.cost_usd,
        calls=attempt.calls,
        guardian_changed=attempt.guardian_changed,
        guardian_corrupted=attempt.guardian_corrupted,
        seconds=seconds,
        demos=demo_names,
        verifier_version=verdict.verifier_version if verdict is not None else None,
    )


def _kind(attempt: Attempt) -> str:
    """Why a sample failed: the attempt's own word, else its verdict's kind."""
    if attempt.failure_kind:
        return attempt.failure_kind
    if attempt.verdict is not None and attempt.verdict.kind is not None:
        return attempt.verdict.kind.value
    return "unknown"


class SelfImprover:
    """Runs sampling steps and Algorithm 1 for one run id against an experience store."""

    def __init__(
        self,
        store: ExperienceStore,
        run_id: str,
        agent: AgentLike,
        config: LoopConfig,
        *,
        progress: ProgressSink | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.agent = agent
        self.config = config
        self.progress = progress
        self.requested = 0
        self.replayed = 0
        self._llm_errors_in_a_row = 0

    async def sample_step(
        self, t: int, level: int, tasks: Sequence[Task], demos: Sequence[DemoRecord]
    ) -> dict[str, list[SampleRecord]]:
        """n samples per task per temperature with ``demos`` (each task sees only safe demos)."""
        cfg = self.config
        done = self.store.sample_map(self.run_id, t)
        results: dict[str, list[SampleRecord]] = {task.name: [] for task in tasks}
        todo: list[tuple[Task, float | None, int, list[DemoRecord]]] = []
        shown: dict[str, list[DemoRecord]] = {task.name: visible_demos(task, demos) for task in tasks}
        total = len(tasks) * len(cfg.temperatures) * cfg.n
        if self.progress:
            self.progress.start(f"iteration {t} (level {level}, {len(demos)} demos)", total)
        for task in tasks:
            for temperature in cfg.temperatures:
                for i in range(cfg.n):
                    index = t * cfg.n + i
                    prev = done.get((task.name, temp_key(temperature), index))
                    if prev is not None and prev.failure_kind not in TRANSIENT_KINDS:
                        results[task.name].append(prev)
                        self.replayed += 1
                        if self.progress:
                            self.progress.advance(prev, replayed=True)
                    else:
                        todo.append((task, temperature, index, shown[task.name]))
        sem = asyncio.Semaphore(max(1, cfg.concurrency))

        stop = asyncio.Event()  # set by the first failure so queued samples are never requested

        async def one(task: Task, temperature: float | None, index: int, ds: list[DemoRecord]) -> None:
            async with sem:
                if stop.is_set():
                    return
                try:
                    await self._one(task, temperature, index, ds, t, level, results)
                except BaseException:
                    stop.set()
                    raise

        try:
            await _run_all([one(*item) for item in todo])
        finally:
            if self.progress:
                self.progress.stop()
        for recs in results.values():
            recs.sort(key=lambda r: (temp_key(r.temperature), r.sample_index))
        return results

    async def _one(self, task: Task, temperature: float | None, index: int, ds: list[DemoRecord],
                   t: int, level: int, results: dict[str, list[SampleRecord]]) -> None:
        """Request one sample, record it the moment it finishes, report progress."""
        start = time.perf_counter()
        attempt = await self.agent.attempt(task, ds, temperature=temperature, sample_index=index)
        rec = _record_from_attempt(
            self.run_id, t, level, task, temperature, index, attempt,
            time.perf_counter() - start, [d.task_name for d in ds],
        )
        self.store.record_sample(rec)
        self.requested += 1
        results[task.name].append(rec)
        if self.progress:
            self.progress.advance(rec, replayed=False)
        self._check_backend(rec)

    def _check_backend(self, rec: SampleRecord) -> None:
        """Abort after many consecutive llm_error samples: the backend, not the model, is failing."""
        if rec.failure_kind != "llm_error":
            self._llm_errors_in_a_row = 0
            return
        self._llm_errors_in_a_row += 1
        limit = self.config.max_consecutive_llm_errors
        if limit and self._llm_errors_in_a_row >= limit:
            raise RunAborted(
                f"{self._llm_errors_in_a_row} samples in a row failed with llm_error (the model backend, "
                f"not its answers); last error: {rec.feedback[:500]}. Fix the backend, then continue "
                f"with `stepsmith bench --resume {self.run_id}` (these samples will be requested again)."
            )

    def _new_demos(self, t: int, tasks: dict[str, Task], results: dict[str, list[SampleRecord]],
                   solved: list[str]) -> list[DemoRecord]:
        """σ: one demonstration per newly solved task, difficulty = best count over temperatures."""
        out = []
        for name in solved:
            recs = results[name]
            correct = [r for r in recs if r.passed and r.impl]
            if not correct:
                continue
            per_temp: dict[str, int] = {}
            for r in correct:
                per_temp[r.temp_key] = per_temp.get(r.temp_key, 0) + 1
            rep = select_representative([r.impl or "" for r in correct])
            chosen = correct[rep.index]
            task = tasks[name]
            out.append(
                DemoRecord(
                    task_name=name,
                    group=task.group,
                    task_ir=task_ir(task),
                    impl=rep.impl,
                    model=self.config.model,
                    iteration=t,
                    temperature=chosen.temperature,
                    verifier_version=chosen.verifier_version or "",
                    success_count=max(per_temp.values()),
                    n=self.config.n,
                    source="earned",
                    provenance={
                        "source_run": self.run_id,
                        "sample_index": chosen.sample_index,
                        "classes": rep.classes,
                        "class_size": rep.class_size,
                        "lines": rep.lines,
                        "successes_per_temperature": per_temp,
                    },
                )
            )
        return out

    async def run_single(self, tasks: Sequence[Task], demos: Sequence[DemoRecord] = ()) -> LoopResult:
        """A baseline: one sampling step (iteration 0) with a fixed demonstration set."""
        demos = list(demos)
        results = await self.sample_step(0, 0, tasks, demos)
        solved = [task.name for task in tasks if any(r.passed for r in results[task.name])]
        it = IterationRecord(0, 0, [[d.task_name for d in demos]], [d.task_name for d in demos],
                             [task.name for task in tasks], solved)
        self.store.record_iteration(self.run_id, it)
        return LoopResult(
            solved={name: 0 for name in solved},
            unsolved=[task.name for task in tasks if task.name not in solved],
            demos=demos, iterations=[it], reason="single_pass",
            requested=self.requested, replayed=self.replayed,
        )

    async def run(self, tasks: Sequence[Task], initial_demos: Sequence[DemoRecord] = ()) -> LoopResult:
        """Algorithm 1 until every task is solved or the full library brings nothing new."""
        cfg = self.config
        by_name = {task.name: task for task in tasks}
        if len(by_name) != len(tasks):
            dupes = sorted({t.name for t in tasks if sum(1 for u in tasks if u.name == t.name) > 1})
            raise ValueError(f"task names must be unique in a run; duplicated: {', '.join(dupes)}")
        library: dict[str, DemoRecord] = {d.task_name: d for d in initial_demos}
        remaining = list(tasks)
        solved_at: dict[str, int] = {}
        iterations: list[IterationRecord] = []
        t = 0
        reason = "no_progress"
        while True:
            if not remaining:
                reason = "all_solved"
                break
            if cfg.max_iterations is not None and t >= cfg.max_iterations:
                reason = "max_iterations"
                break
            levels = stratify([(name, d.score) for name, d in library.items()], cfg.m)
            progressed = False
            for j, selection in enumerate(cumulative(levels)):
                if cfg.max_iterations is not None and t >= cfg.max_iterations:
                    break
                demos = [library[name] for name in selection]
                results = await self.sample_step(t, j, remaining, demos)
                solved = [task.name for task in remaining if any(r.passed for r in results[task.name])]
                it = IterationRecord(t, j, levels, list(selection), [x.name for x in remaining], solved)
                self.store.record_iteration(self.run_id, it)
                iterations.append(it)
                if solved:
                    new = self._new_demos(t, by_name, results, solved)
                    self.store.add_demos(self.run_id, new)
                    for d in new:
                        library[d.task_name] = d
                    for name in solved:
                        solved_at[name] = t
                    remaining = [x for x in remaining if x.name not in solved]
                    t += 1
                    progressed = True
                    break  # restart from H with the re-stratified library
                t += 1
            if not progressed:
                if cfg.max_iterations is not None and t >= cfg.max_iterations:
                    reason = "max_iterations"
                else:
                    reason = "no_progress"  # d_j = D and nothing new was solved
                break
        return LoopResult(
            solved=solved_at,
            unsolved=[x.name for x in remaining],
            demos=list(library.values()),
            iterations=iterations,
            reason=reason,
            requested=self.requested,
            replayed=self.replayed,
        )


async def _run_all(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run coroutines concurrently; the first failure cancels the rest and propagates unwrapped."""
    if not coros:
        return
    try:
        async with asyncio.TaskGroup() as tg:
            for c in coros:
                tg.create_task(c)
    except BaseExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
