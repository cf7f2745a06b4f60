"""Mutant self-audit of the verifier.

For every benchmark task, mutate its reference program (`stepsmith.verify.mutants`). A mutant
is *equivalent* if it behaves exactly like the reference when both run in process, unsandboxed,
with the per-element oracle executor and the strict affine rule, on random data at every task
binding plus extra seeds; equivalent mutants are excluded (and counted). Every other mutant
changes behaviour and must be rejected by the sandboxed verifier — otherwise the verifier has a
blind spot (too loose a tolerance, too few bindings, a fast-executor bug the oracle does not
share, ...).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from stepsmith.tasks import load_task, suite
from stepsmith.verify import mutants as mutants_mod

# A suite that does not load must fail collection loudly: the audit guards the reward.
_TASKS = [t for t in suite.benchmark_tasks() if t.impl]
# Task files written from scratch in the paper's public format (shared snippet scope, float32).
PAPER_TASKS = [load_task(p) for p in sorted((Path(__file__).parent / "paper_tasks").glob("*.yaml"))]

EXTRA_SEEDS = (1, 2)
_STATS: dict[str, tuple[int, int, int, int]] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_totals():
    """Print the audit's totals once (run with -s to see them)."""
    yield
    if _STATS:
        total = sum(v[0] for v in _STATS.values())
        equiv = sum(v[1] for v in _STATS.values())
        wrong = sum(v[3] for v in _STATS.values())
        print(f"\nself-audit: {len(_STATS)} tasks, {total} mutants, {equiv} equivalent "
              f"(excluded), {total - equiv} behaviour-changing, {wrong} wrongly accepted")


def _run_oracle(task: Any, src: str, binding: Any) -> list[Any] | BaseException:
    """Outputs (element type, symbolic shape, tensors, tolerance: what two runs must share to
    agree) of `src` on the oracle executor (the one executor, unsandboxed: these are trusted
    references and their mutants), or its error; [] when it returned something not a stream."""
    from stepsmith.step import Stream
    from stepsmith.verify import run_program

    run = run_program(task, src, binding, executor="oracle")
    if run.error is not None or run.instance is None:
        return run.error or ValueError("no instance")
    if not all(isinstance(o, Stream) for o in run.outputs):
        return []
    return [(str(o.dtype), tuple(str(d) for d in o.shape),
             o.data if isinstance(o.data, tuple) else (o.data,), run.instance.tolerance)
            for o in run.outputs]


def _same(a: list[Any] | BaseException, b: list[Any] | BaseException) -> bool:
    from stepsmith.verify.tolerance import compare

    if isinstance(a, BaseException) or isinstance(b, BaseException):
        return False
    if len(a) != len(b):
        return False
    for (da, sa, ta, tol), (db, sb, tb, _) in zip(a, b, strict=True):
        if da != db or sa != sb or len(ta) != len(tb):
            return False
        for x, y in zip(ta, tb, strict=True):  # the instance's (precision-aware) tolerance
            if tuple(x.shape) != tuple(y.shape) or not compare(x, y, rtol=tol.rtol, atol=tol.atol).ok:
                return False
    return True


def _probe_bindings(task: Any) -> list[Any]:
    out = []
    for b in task.bindings():
        out.append(b)
        out.extend(dataclasses.replace(b, seed=b.seed + 7919 * s) for s in EXTRA_SEEDS)
    return out


def _audit(task: Any, pool: Any) -> None:
    """Every behaviour-changing mutant of the task's reference is rejected; no equivalent one is."""
    paper = task.bindings()[0]
    ms = mutants_mod.mutants(task.impl, task.input_names, dict(paper.values))
    probes = _probe_bindings(task)
    ref = {b.label + str(b.seed): _run_oracle(task, task.impl, b) for b in probes}
    assert all(not isinstance(r, BaseException) for r in ref.values()), ref
    live, equivalent = [], []
    for m in ms:
        if all(_same(ref[b.label + str(b.seed)], _run_oracle(task, m.source, b)) for b in probes):
            equivalent.append(m)
        else:
            live.append(m)
    verdicts = pool.verify_many([(task, m.source) for m in live + equivalent])
    accepted = [
        (m.kind, m.description) for m, v in zip(live, verdicts[: len(live)], strict=True)
        if v.passed
    ]
    # consistency the other way: a mutant the oracle cannot tell apart must not be rejected
    rejected_equiv = [
        (m.description, v.kind) for m, v in zip(equivalent, verdicts[len(live):], strict=True)
        if not v.passed
    ]
    _STATS[task.name] = (len(ms), len(equivalent), len(live), len(accepted))
    print(f"\n{task.name}: {len(ms)} mutants, {len(equivalent)} equivalent (excluded), "
          f"{len(live)} behaviour-changing, {len(accepted)} wrongly accepted")
    assert live, f"{task.name}: no behaviour-changing mutant: the audit would prove nothing"
    assert not accepted, f"{task.name}: verifier accepted behaviour-changing mutants: {accepted}"
    assert not rejected_equiv, f"{task.name}: verifier rejected equivalent mutants: {rejected_equiv}"


def test_the_audit_has_tasks() -> None:
    """An empty suite would make the parametrized audit pass vacuously."""
    assert len(_TASKS) >= 20
    assert {t.name for t in PAPER_TASKS} >= {"router_shared_scope", "rope_float32"}


@pytest.mark.slow
@pytest.mark.parametrize("task", _TASKS, ids=[t.name for t in _TASKS])
def test_every_behaviour_changing_mutant_is_rejected(task: Any, pool: Any) -> None:
    _audit(task, pool)


@pytest.mark.parametrize("task", PAPER_TASKS, ids=[t.name for t in PAPER_TASKS])
def test_every_mutant_of_a_paper_format_task_is_rejected(task: Any, pool: Any) -> None:
    """The shared-scope and float32 tasks: a float32 tolerance must not let a mutant through."""
    _audit(task, pool)


def test_mutants_of_a_small_program_are_all_caught(pool: Any, rowsum_task: Any) -> None:
    """Fast (non-slow) version of the audit on the hand-written task."""
    from verify_fixtures import ROWSUM_REF

    paper = rowsum_task.bindings()[0]
    ms = mutants_mod.mutants(ROWSUM_REF, ["X"], dict(paper.values))
    assert ms, "the mutant generator produced nothing for a 3-line program"
    probes = _probe_bindings(rowsum_task)
    ref = {b.label + str(b.seed): _run_oracle(rowsum_task, ROWSUM_REF, b) for b in probes}
    live = [
        m for m in ms
        if not all(_same(ref[b.label + str(b.seed)], _run_oracle(rowsum_task, m.source, b))
                   for b in probes)
    ]
    assert live
    verdicts = pool.verify_many([(rowsum_task, m.source) for m in live])
    assert all(not v.passed for v in verdicts), [
        (m.description, v.kind) for m, v in zip(live, verdicts, strict=True) if v.passed
    ]
