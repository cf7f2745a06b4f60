"""Tolerance policy on the real suite: every reference passes at every binding over 20 seeds,
through the verifier's own check (float64, magnitude-relative bounds, default or task tolerance).
"""

from __future__ import annotations

import dataclasses

import pytest

from stepsmith.tasks import suite

_TASKS = [t for t in suite.benchmark_tasks() if t.impl]  # a broken suite fails collection

SEEDS = 20


def _with_seed(binding, seed: int):
    return dataclasses.replace(binding, seed=seed, label=f"{binding.label}/seed{seed}")


@pytest.mark.slow
@pytest.mark.parametrize("task", _TASKS, ids=[t.name for t in _TASKS])
def test_reference_passes_at_every_binding_over_20_seeds(task) -> None:
    from stepsmith.verify.runner import check_candidate

    bindings = [
        _with_seed(b, b.seed * 1000 + s) for b in task.bindings() for s in range(SEEDS)
    ]
    v = check_candidate(task, task.impl, bindings=bindings)
    worst = max(((b.max_rel_error or 0.0) for b in v.bindings), default=0.0)
    assert v.passed, f"{task.name}: {v.feedback}"
    assert len(v.bindings) == len(bindings)
    # a correct program in float64 is rounding-exact: many orders inside the default bound
    assert worst < 1e-12, f"{task.name}: worst relative error {worst:g}"


def test_suite_is_nonempty() -> None:
    assert _TASKS, "no benchmark task with a reference impl was found"
