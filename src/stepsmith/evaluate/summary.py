"""Metrics per task, group, iteration and run, computed from the experience store.

Definitions (also printed in reports):
- Pass@n: fraction of tasks with at least one correct sample anywhere in the run.
- pass@k: Chen et al.'s unbiased estimator per task over the task's *last sampled batch* (all
  temperatures pooled) — for a baseline that is all its samples; for self-improvement it is the
  batch taken with the demonstrations the task ended with — averaged over tasks.
- Tokens, cost, calls and seconds are totals per task over every sample of the run; the paper's
  x-axis is the average input tokens per task.
- Failed samples are split: *model failed* (the answer was unusable or wrong) versus *could not
  ask the model* (``llm_error``: the call itself failed), so a dead backend never reads as a
  weak model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from stepsmith.evaluate.metrics import bootstrap_ci, lines_of_code, maintainability, pass_at_k
from stepsmith.improve.store import ExperienceStore, RunRow, SampleRecord


@dataclass
class TaskMetrics:
    task: str
    group: str
    solved: bool
    solved_at: int | None
    samples: int
    correct: int
    last_n: int
    last_c: int
    pass_at: dict[str, float]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    calls: int
    seconds: float
    loc: float | None
    mi_with_comments: float | None
    mi_without_comments: float | None
    failure_kinds: dict[str, int]
    guardian_changed: int
    guardian_corrupted: int
    # What a reader needs to see *why*: the shortest correct program, and one failing program
    # (from the task's last batch, preferring one with code) with its verifier feedback.
    best_impl: str | None = None
    failing_impl: str | None = None
    failing_kind: str | None = None
    failing_feedback: str = ""


@dataclass
class GroupMetrics:
    group: str
    tasks: int
    pass_at_n: float
    pass_at: dict[str, float]
    avg_input_tokens: float


@dataclass
class IterationMetrics:
    iteration: int
    level: int
    demos: int
    tasks_sampled: int
    newly_solved: list[str]
    cumulative_pass_at_n: float
    cumulative_avg_input_tokens: float
    failure_kinds: dict[str, int]
    demo_tasks: list[str] = field(default_factory=list)  # the demonstrations shown this iteration


@dataclass
class RunSummary:
    run_id: str
    method: str
    model: str
    status: str
    config: dict[str, Any]
    tasks: list[TaskMetrics]
    groups: list[GroupMetrics]
    iterations: list[IterationMetrics]
    pass_at_n: float
    pass_at_n_ci: tuple[float, float]
    pass_at: dict[str, float]
    pass_at_ci: dict[str, tuple[float, float]]
    ks: list[int]
    avg_input_tokens: float
    avg_output_tokens: float
    total_input_tokens: int
    total_output_tokens: int
    cost_usd: float
    cost_per_solved: float | None
    wall_seconds: float
    sample_seconds_per_task: float
    failure_kinds: dict[str, int]
    guardian_changed: int
    guardian_corrupted: int
    demos: int
    note: str | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    model_failures: int = 0  # samples whose answer was wrong (the model's fault)
    call_failures: int = 0  # samples where the model could not be asked (llm_error)
    priced: bool = True  # False: no known price for the model, so cost_usd is unknown (not 0)

    @property
    def cost_text(self) -> str:
        """``$0.0123``, or ``unknown`` for a model without a price (never a misleading $0)."""
        return f"{self.cost_usd:.4f}" if self.priced else "unknown"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _task_metrics(name: str, group: str, recs: list[SampleRecord], ks: list[int]) -> TaskMetrics:
    correct = [r for r in recs if r.passed]
    solved_at = min((r.iteration for r in correct), default=None)
    last_it = max((r.iteration for r in recs), default=0)
    last = [r for r in recs if r.iteration == last_it]
    last_n, last_c = len(last), sum(1 for r in last if r.passed)
    pass_at = {str(k): pass_at_k(last_n, last_c, min(k, last_n)) if last_n else 0.0 for k in ks}
    mis = [m for m in (maintainability(r.impl) for r in correct if r.impl) if m is not None]
    return TaskMetrics(
        task=name,
        group=group,
        solved=bool(correct),
        solved_at=solved_at,
        samples=len(recs),
        correct=len(correct),
        last_n=last_n,
        last_c=last_c,
        pass_at=pass_at,
        input_tokens=sum(r.input_tokens for r in recs),
        output_tokens=sum(r.output_tokens for r in recs),
        cost_usd=sum(r.cost_usd for r in recs),
        calls=sum(r.calls for r in recs),
        seconds=sum(r.seconds for r in recs),
        loc=_mean([float(lines_of_code(r.impl)) for r in correct if r.impl]),
        mi_with_comments=_mean([m[0] for m in mis]),
        mi_without_comments=_mean([m[1] for m in mis]),
        failure_kinds=dict(Counter(r.failure_kind or "unknown" for r in recs if not r.passed)),
        guardian_changed=sum(1 for r in recs if r.guardian_changed),
        guardian_corrupted=sum(1 for r in recs if r.guardian_corrupted),
        best_impl=_best_impl(correct),
        **_failing_example(recs, last_it),
    )


def _best_impl(correct: list[SampleRecord]) -> str | None:
    """The shortest correct program (fewest code lines, then characters)."""
    from stepsmith.improve.filtering import pure_code_lines

    impls = [r.impl for r in correct if r.impl]
    return min(impls, key=lambda i: (pure_code_lines(i), len(i)), default=None)


def _failing_example(recs: list[SampleRecord], last_it: int) -> dict[str, Any]:
    """One failed sample to show: the last batch first, one that has a program first."""
    failed = [r for r in recs if not r.passed]
    if not failed:
        return {}
    pick = min(failed, key=lambda r: (r.iteration != last_it, not r.impl, r.temp_key, r.sample_index))
    return {"failing_impl": pick.impl, "failing_kind": pick.failure_kind or "unknown",
            "failing_feedback": pick.feedback or ""}


def summarize(store: ExperienceStore, run_id: str, *, ks: list[int] | None = None,
              only: set[str] | None = None) -> RunSummary:
    """Every metric of one run, from its recorded samples and iterations.

    ``only`` restricts every metric to those task names (``compare`` uses the tasks the runs
    share, so two runs over different task sets are never compared as if alike)."""
    run: RunRow = store.find_run(run_id)
    run_id = run.run_id
    samples = store.samples(run_id)
    cfg = dict(run.config)
    if only is not None:
        samples = [s for s in samples if s.task in only]
        cfg["task_names"] = [n for n in cfg.get("task_names", []) if n in only]
    ks = sorted({1, *(ks or cfg.get("ks") or [])})
    by_task: dict[str, list[SampleRecord]] = {}
    groups_of: dict[str, str] = dict(cfg.get("task_groups", {}))
    for name in cfg.get("task_names", []):
        by_task.setdefault(name, [])
    for s in samples:
        by_task.setdefault(s.task, []).append(s)
        groups_of.setdefault(s.task, s.task_group)
    tasks = [_task_metrics(name, groups_of.get(name, ""), recs, ks) for name, recs in by_task.items()]
    n_tasks = len(tasks) or 1

    groups: list[GroupMetrics] = []
    for g in sorted({t.group for t in tasks}):
        members = [t for t in tasks if t.group == g]
        groups.append(
            GroupMetrics(
                group=g,
                tasks=len(members),
                pass_at_n=sum(t.solved for t in members) / len(members),
                pass_at={str(k): sum(t.pass_at[str(k)] for t in members) / len(members) for k in ks},
                avg_input_tokens=sum(t.input_tokens for t in members) / len(members),
            )
        )

    def kept(names: list[str]) -> list[str]:
        return [x for x in names if only is None or x in only]

    iterations: list[IterationMetrics] = []
    solved_so_far: set[str] = set()
    tokens_so_far = 0
    for it in store.iterations(run_id):
        recs = [s for s in samples if s.iteration == it.iteration]
        tokens_so_far += sum(s.input_tokens for s in recs)
        solved_so_far.update(kept(it.solved))
        iterations.append(
            IterationMetrics(
                iteration=it.iteration,
                level=it.level,
                demos=len(it.demo_tasks),
                tasks_sampled=len(kept(it.tasks)),
                newly_solved=kept(it.solved),
                cumulative_pass_at_n=len(solved_so_far) / n_tasks,
                cumulative_avg_input_tokens=tokens_so_far / n_tasks,
                failure_kinds=dict(Counter(s.failure_kind or "unknown" for s in recs if not s.passed)),
                demo_tasks=list(it.demo_tasks),
            )
        )

    solved_flags = [1.0 if t.solved else 0.0 for t in tasks]
    pass_at = {str(k): sum(t.pass_at[str(k)] for t in tasks) / n_tasks for k in ks}
    pass_at_ci = {str(k): bootstrap_ci([t.pass_at[str(k)] for t in tasks]) for k in ks}
    total_in = sum(t.input_tokens for t in tasks)
    total_out = sum(t.output_tokens for t in tasks)
    cost = sum(t.cost_usd for t in tasks)
    n_solved = sum(1 for t in tasks if t.solved)
    failure_totals: Counter[str] = sum((Counter(t.failure_kinds) for t in tasks), Counter())
    return RunSummary(
        run_id=run_id,
        method=run.method,
        model=run.model,
        status=run.status,
        config=cfg,
        tasks=tasks,
        groups=groups,
        iterations=iterations,
        pass_at_n=sum(solved_flags) / n_tasks,
        pass_at_n_ci=bootstrap_ci(solved_flags),
        pass_at=pass_at,
        pass_at_ci=pass_at_ci,
        ks=ks,
        avg_input_tokens=total_in / n_tasks,
        avg_output_tokens=total_out / n_tasks,
        total_input_tokens=total_in,
        total_output_tokens=total_out,
        cost_usd=cost,
        cost_per_solved=(cost / n_solved) if n_solved else None,
        wall_seconds=float((run.summary or {}).get("wall_seconds", max(0.0, run.updated - run.created))),
        sample_seconds_per_task=sum(t.seconds for t in tasks) / n_tasks,
        failure_kinds=dict(failure_totals),
        guardian_changed=sum(t.guardian_changed for t in tasks),
        guardian_corrupted=sum(t.guardian_corrupted for t in tasks),
        demos=len(store.demos(run_id, active_only=True)),
        note=run.note,
        reason=(run.summary or {}).get("reason"),
        model_failures=sum(v for k, v in failure_totals.items() if k not in NOT_MODEL_FAILURES),
        call_failures=failure_totals.get("llm_error", 0),
        priced=_priced(run.model),
    )


# Failure kinds that are not the model's fault: the call failed, or our verifier crashed.
NOT_MODEL_FAILURES = ("llm_error", "verifier_error")


def _priced(model: str) -> bool:
    """Whether the price table knows the model (else its cost is unknown, not zero)."""
    from stepsmith.llm.prices import price_for

    return price_for(model) is not None
