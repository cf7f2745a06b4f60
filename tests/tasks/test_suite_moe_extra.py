"""The MoE half of the benchmark (index, expert, etoe) and the extra modern operators.

Checks that every task in those four folders loads, that its reference program matches its
PyTorch reference at every binding with the fast executor, that the MoE programs really meet
the corner cases they are meant to cover (an expert that receives no token, a token that no
expert picks) at some binding, that router outputs have the structure their descriptions
promise, and that the tasks are discriminating (a program with permuted experts fails).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from tasks_testutil import reference_verdict

import stepsmith.benchmarks as bench_pkg
from stepsmith.tasks import Task, load_task
from stepsmith.tasks.analysis import program_stats
from stepsmith.verify.checking import check_outputs
from stepsmith.verify.execute import call_compiled, compile_candidate, normalise_source

BENCH = Path(bench_pkg.__file__).resolve().parent / "bench"
MY_GROUPS = ("index", "expert", "etoe", "extra")
PATHS = sorted(p for g in MY_GROUPS for p in (BENCH / g).glob("*.yaml"))
IDS = [p.stem for p in PATHS]
EXPERT_LIST = "[fn_expert0, fn_expert1, fn_expert2]"


def _task(path: Path) -> Task:
    """Load a task file (the suite's cache is keyed by mtime; plain loading is cheap enough)."""
    return load_task(path)


def _moe_paths() -> list[Path]:
    """Tasks whose reference program routes tokens with Partition/Merge.

    Decided from the raw text so that a malformed file fails its own tests instead of breaking
    collection of the whole module.
    """
    return [p for p in PATHS if "step.Partition" in p.read_text()]


def test_group_counts() -> None:
    from stepsmith.tasks.suite import benchmark_tasks, groups

    counts = {g: len(benchmark_tasks(g)) for g in MY_GROUPS}
    assert counts["index"] == 4
    assert counts["expert"] == 3
    assert counts["etoe"] == 4
    assert counts["extra"] >= 10
    assert set(MY_GROUPS) <= set(groups())
    # every file in a folder declares that folder's group (the suite groups by the field)
    assert sum(counts.values()) == len(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_task_metadata(path: Path) -> None:
    task = _task(path)
    assert task.name == path.stem, "file name must equal test_name"
    assert task.group == path.parent.name
    assert len(task.description) > 40, "the description is what the LLM reads; say what it computes"
    assert task.impl, "every benchmark task ships a reference program"
    stats = program_stats(task.impl)
    assert 4 <= stats.n_primitives <= 17, stats
    assert len(task.bindings()) >= 3


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_reference_passes_at_every_binding(path: Path) -> None:
    task = _task(path)
    v = reference_verdict(task, executor="fast")
    assert v.passed, v.feedback


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_reference_is_a_legal_program(path: Path) -> None:
    """The reference passes the verifier's allow-list and the static affine rule as is."""
    from stepsmith.step import affine
    from stepsmith.verify.allowlist import check_program

    task = _task(path)
    check_program(task.impl)  # raises DisallowedConstruct / ProgramSyntaxError
    assert affine.check_source(task.impl) == []
    assert affine.repair(task.impl) == task.impl


def test_suite_mix_has_both_sides() -> None:
    """The four folders mix Copy-free/Copy-needing and arithmetic-only/shape programs."""
    stats = [program_stats(_task(p).impl) for p in PATHS]
    assert sum(not s.uses_copy for s in stats) >= 5
    assert sum(s.uses_copy for s in stats) >= 5
    assert sum(not s.needs_shape for s in stats) >= 5
    assert sum(s.needs_shape for s in stats) >= 5


# --- running a program with a recording `step` -------------------------------------------------


class _RecordingStep:
    """Stands in for the `step` module; records what every Partition receives and emits."""

    def __init__(self, step_mod: Any) -> None:
        self._step = step_mod
        self.part_lengths: list[list[int]] = []  # per Partition call: chunks per expert
        self.selectors: list[torch.Tensor] = []  # per Partition call: the selector data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._step, name)

    def Partition(self, **kwargs: Any) -> Any:  # noqa: N802 - mirrors the primitive's name
        prim = self._step.Partition(**kwargs)
        recorder = self

        class _Recorded:
            def apply(self, args: Any) -> Any:
                recorder.selectors.append(_tensor(args[1]).detach().clone())
                outs = prim.apply(args)
                recorder.part_lengths.append([_tensor(o).shape[0] for o in outs])
                return outs

        return _Recorded()


def _tensor(stream: Any) -> torch.Tensor:
    data = stream.data
    return data[0] if isinstance(data, tuple | list) else data


def _run_recorded(task, impl: str, binding) -> tuple[list[str], _RecordingStep]:
    """Run ``impl`` at ``binding`` with the one executor, its ``step`` swapped for a recorder;
    return the verifier's output problems and the recorder."""
    import dataclasses

    from stepsmith import step

    inst = task.instantiate(binding, dtype=torch.float64)
    recorder = _RecordingStep(step)
    recorded = dataclasses.replace(inst, namespace={**inst.namespace, "step": recorder})
    compiled = compile_candidate(normalise_source(impl), task.input_names)
    assert not hasattr(compiled, "feedback"), compiled
    try:
        out, _ = call_compiled(compiled, recorded, executor="fast", affine="strict")
    except step.StepError as exc:
        return [str(exc)], recorder
    tol = inst.tolerance
    bad, _, _ = check_outputs(out, inst.expected, tol.rtol, tol.atol, str(binding))
    return ([bad.message] if bad else []), recorder


@pytest.mark.parametrize("path", _moe_paths(), ids=lambda p: p.stem)
def test_moe_edge_cases_are_exercised_and_handled(path: Path) -> None:
    """Some binding routes no token to some expert (or leaves a token unrouted), and passes."""
    task = _task(path)
    empty_expert = unrouted_token = False
    for b in task.bindings():
        problems, rec = _run_recorded(task, task.impl, b)
        assert not problems, f"{b}: {problems}"
        assert rec.part_lengths, "the reference program must call Partition"
        for lengths, sel in zip(rec.part_lengths, rec.selectors, strict=True):
            sel2 = sel.reshape(-1, sel.shape[-1])
            assert lengths == [int(c) for c in sel2.sum(0).round()], "chunks per expert"
            empty_expert |= 0 in lengths
            unrouted_token |= bool((sel2.sum(-1) == 0).any())
    if "expert_choice" in task.name:
        # every expert picks exactly C tokens, so no expert is ever empty; the corner case
        # here is a token picked by nobody (Merge must emit its init, zeros)
        assert unrouted_token, "no binding leaves a token unpicked"
    else:
        assert empty_expert, "no binding sends zero tokens to some expert"


@pytest.mark.parametrize("path", _moe_paths(), ids=lambda p: p.stem)
def test_moe_references_agree_with_the_oracle_executor(path: Path) -> None:
    """Empty experts and unrouted tokens through the per-element oracle, not just the fast path."""
    v = reference_verdict(_task(path), executor="oracle")
    assert v.passed, v.feedback


@pytest.mark.parametrize("path", [p for p in _moe_paths() if EXPERT_LIST in p.read_text()],
                         ids=lambda p: p.stem)
def test_moe_tasks_reject_permuted_experts(path: Path) -> None:
    """A program that wires expert 0's fn to expert 1's stream must fail at some binding."""
    task = _task(path)
    wrong = task.impl.replace(EXPERT_LIST, "[fn_expert1, fn_expert0, fn_expert2]")
    assert any(_run_recorded(task, wrong, b)[0] for b in task.bindings())


# --- router outputs have the promised structure ------------------------------------------------


def _expected(name: str):
    task = _task(next(p for p in PATHS if p.stem == name))
    return task, [task.instantiate(b, dtype=torch.float64) for b in task.bindings()]


def _is_binary(t: torch.Tensor) -> bool:
    return bool(((t == 0) | (t == 1)).all())


@pytest.mark.parametrize(("name", "k"), [("index_softmax_top1", 1), ("index_softmax_top2", 2)])
def test_top_k_selectors_have_k_ones_per_token(name: str, k: int) -> None:
    _, instances = _expected(name)
    for inst in instances:
        sel = inst.expected[0].values[0]
        assert _is_binary(sel)
        assert torch.equal(sel.sum(-1), torch.full(sel.shape[:-1], float(k), dtype=sel.dtype))


def test_top2_weights_are_renormalised_on_the_selected_experts() -> None:
    _, instances = _expected("index_softmax_top2")
    for inst in instances:
        sel, w = inst.expected[0].values[0], inst.expected[1].values[0]
        assert torch.equal(w > 0, sel > 0)
        assert torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)))


def test_expert_choice_picks_capacity_tokens_per_expert() -> None:
    task, instances = _expected("index_expert_choice_topk")
    for inst in instances:
        sel = inst.expected[0].values[0]  # (M, E)
        assert _is_binary(sel)
        assert torch.equal(sel.sum(0), torch.full((sel.shape[1],), 2.0, dtype=sel.dtype))


def test_binary_predictor_emits_both_decisions() -> None:
    _, instances = _expected("index_binary_predictor")
    bits = torch.cat([inst.expected[0].values[0].reshape(-1) for inst in instances])
    assert _is_binary(bits)
    assert 0 < bits.mean() < 1, "a predictor that always says 0 (or 1) tests nothing"


def test_moe_tasks_use_three_experts_and_copy_the_selector() -> None:
    for path in _moe_paths():
        task = _task(path)
        assert re.search(r"E_value\s*=\s*3", task.spec.global_ or ""), task.name
        assert all(b.values["E"] == 3 for b in task.bindings())
        assert program_stats(task.impl).uses_copy, task.name


# The mutant self-audit of these references lives with the verifier's, over every benchmark task:
# tests/verify/test_self_audit.py.
