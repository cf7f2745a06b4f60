"""The packaged suite: our five benchmark groups and the demonstration set pass their references."""

from __future__ import annotations

import re

import pytest
import torch
from tasks_testutil import reference_verdict

from stepsmith.tasks import TaskNotFoundError, load_task
from stepsmith.tasks.analysis import SHAPE_PRIMITIVES, primitive_calls, program_stats
from stepsmith.tasks.suite import BENCH_DIR, DEMO_DIR, benchmark_tasks, demo_tasks, get_task, groups
from stepsmith.verify import run_program, verify_in_process
from stepsmith.verify.checking import check_outputs

OUR_GROUPS = ("attn", "bmm", "gemm", "norm", "rope")
OUR_FILES = sorted(p for g in OUR_GROUPS for p in (BENCH_DIR / g).glob("*.yaml"))
DEMO_FILES = sorted(DEMO_DIR.glob("*/*.yaml"))
DEMO_PRIMITIVES = ("Map", "Zip", "Accum", "Scan", "Promote", "Flatten", "Reshape", "Bufferize",
                   "Streamify", "Repeat", "RepeatRef", "Copy", "Partition", "Merge")


def test_our_groups_have_three_tasks_each_with_metadata():
    for g in OUR_GROUPS:
        tasks = benchmark_tasks(g)
        assert len(tasks) == 3, g
        for t in tasks:
            assert t.group == g and len(t.description) > 40 and t.impl
            assert t.source_path.stem == t.name and t.source_path.parent.name == g
    assert list(groups())[:5] == list(OUR_GROUPS)


def test_reference_programs_have_4_to_17_primitives_and_mixed_properties():
    stats = {p.stem: program_stats(load_task(p).impl) for p in OUR_FILES}
    assert all(4 <= s.n_primitives <= 17 for s in stats.values()), stats
    for g in OUR_GROUPS:  # each group mixes: something with and something without shape prims/Copy
        group_stats = [s for name, s in stats.items() if name.startswith(g)]
        assert any(s.needs_shape for s in group_stats) or g == "attn"
    assert sum(not s.needs_shape for s in stats.values()) >= 4
    assert sum(s.uses_copy for s in stats.values()) >= 5
    assert sum(not s.uses_copy for s in stats.values()) >= 5


@pytest.mark.parametrize("path", OUR_FILES + DEMO_FILES, ids=lambda p: p.stem)
def test_reference_matches_data_transform_at_every_binding(path):
    task = load_task(path)
    v = reference_verdict(task, executor="fast")
    assert len(v.bindings) >= 3
    assert v.passed, v.feedback


@pytest.mark.parametrize("path", OUR_FILES + DEMO_FILES, ids=lambda p: p.stem)
def test_reference_with_oracle_executor_at_small_binding(path):
    task = load_task(path)
    small = [b for b in task.bindings() if b.label == "small"]
    v = reference_verdict(task, executor="oracle", bindings=small)
    assert len(v.bindings) == 1 and v.passed, v.feedback


def test_demo_set_covers_every_primitive_and_both_idioms():
    demos = demo_tasks()
    by_group = {t.group: t for t in demos}
    for prim in DEMO_PRIMITIVES:
        t = by_group[f"demo-{prim.lower()}"]
        assert prim in primitive_calls(t.impl), t.name
        assert t.description.startswith(f"primitive: {prim}.")
    placeholder = primitive_calls(by_group["demo-idiom-placeholder"].impl)
    assert placeholder.index("Promote") < placeholder.index("Accum") < placeholder.index("Flatten")
    stash = primitive_calls(by_group["demo-idiom-stash"].impl)
    assert stash.index("Bufferize") < stash.index("Repeat") < stash.index("Streamify")
    assert len(demos) == len(DEMO_PRIMITIVES) + 2


def test_demos_are_disjoint_from_the_benchmark():
    bench = benchmark_tasks()
    bench_names = {t.name for t in bench}
    bench_refs = {tuple(o.data_transform) for t in bench for o in t.spec.outputs}
    bench_impls = {"".join(t.impl.split()) for t in bench}
    for d in demo_tasks():
        assert d.name not in bench_names
        assert not {tuple(o.data_transform) for o in d.spec.outputs} & bench_refs, d.name
        assert "".join(d.impl.split()) not in bench_impls, d.name


def test_get_task_by_name_stem_and_path(tmp_path):
    assert get_task("bmm_outer_product").name == "bmm_outer_product"
    assert get_task("demo_scan_cummax").group == "demo-scan"
    path = BENCH_DIR / "gemm" / "gemm_outer_k.yaml"
    assert get_task(str(path)).name == "gemm_outer_k" and get_task(path).source_path == path
    with pytest.raises(TaskNotFoundError, match="did you mean bmm_outer_product"):
        get_task("bmm_outer_prodct")
    with pytest.raises(TaskNotFoundError, match="does not exist"):
        get_task(str(tmp_path / "nope.yaml"))


def test_suite_names_are_unique():
    names = [t.name for t in benchmark_tasks() + demo_tasks()]
    assert len(names) == len(set(names))


def test_instance_namespace_inputs_and_expected_layout():
    from stepsmith import step

    task = get_task("bmm_outer_product")
    b = task.bindings()[2]
    inst = task.instantiate(b, dtype=torch.float32)
    v = b.values
    assert inst.namespace["step"] is step
    assert isinstance(inst.namespace["fn_scale"], step.Fn) and inst.namespace["fn_addtile"].stateful
    assert inst.namespace["N"] == step.Dim.sym("N") and inst.namespace["D_value"] == v["D"]
    assert "input_data" not in inst.namespace
    e0 = inst.inputs["E0"]
    assert e0.name == "E0" and e0.data.shape == (v["M"], v["K"], v["N"]) and e0.data.dtype == torch.float32
    assert inst.inputs["E1"].data.shape == (v["M"], v["K"], v["D"])
    (exp,) = inst.expected
    assert exp.name == "O" and tuple(d.evaluate(v) for d in exp.shape) == (v["N"], v["M"])
    assert exp.values[0].shape == (v["M"], v["N"], v["D"])
    ref = torch.einsum("mkn,mkd->mnd", inst.input_data["E0"], inst.input_data["E1"])
    assert torch.allclose(exp.values[0], ref)


def test_instances_are_deterministic_fresh_and_precision_independent():
    task = get_task("norm_layernorm")
    b = task.bindings()[0]
    a1, a2 = task.instantiate(b), task.instantiate(b)
    assert torch.equal(a1.inputs["E0"].data, a2.inputs["E0"].data)
    a1.inputs["E0"].data.add_(1.0)  # a program mutating its input must not leak into others
    assert not torch.equal(a1.inputs["E0"].data, a2.inputs["E0"].data)
    assert torch.equal(a2.inputs["E0"].data, task.instantiate(b).inputs["E0"].data)
    f32 = task.instantiate(b, dtype=torch.float32)
    assert torch.allclose(f32.inputs["E0"].data.double(), a2.inputs["E0"].data, atol=1e-6)
    other = task.instantiate(task.bindings()[1])
    assert other.inputs["E0"].data.shape != a2.inputs["E0"].data.shape


def test_hard_coded_size_is_rejected_even_where_it_has_the_right_value():
    from stepsmith import step

    task = get_task("gemm_abt_buffers")
    wrong = task.impl.replace("step.Repeat(n=N)", "step.Repeat(n=7)")  # N == 7 at the paper binding
    assert wrong != task.impl
    for b in task.bindings():
        run = run_program(task, wrong, b)
        assert isinstance(run.error, step.StepShapeError)
        assert re.search(r"\[7, M\].*\[N, M\]", str(run.error))


def test_wrong_program_is_reported_with_position():
    task = get_task("bmm_mnk_mdk")
    run = run_program(task, task.impl)
    assert run.ok and run.instance is not None
    run.outputs[0].data[1, 2, 3] += 0.5
    tol = run.instance.tolerance
    bad, _, _ = check_outputs(run.result, run.instance.expected, tol.rtol, tol.atol,
                              f"binding '{run.binding.label}'")
    assert bad is not None
    assert "output 'O'" in bad.message and "[M=1, N=2, D=3]" in bad.message
    assert "paper" in bad.message


def test_run_program_returns_the_streams():
    task = get_task("demo_copy_sum_sumsq")
    run = run_program(task, task.impl)
    assert run.ok and len(run.outputs) == 2 and run.outputs[0].data.shape == (5,)


def test_stats_of_reference_programs():
    s = program_stats(get_task("norm_layernorm").impl)
    assert s.n_primitives == 13 and s.uses_copy and s.shape_primitives == ("Repeat",)
    assert set(SHAPE_PRIMITIVES) >= set(program_stats(get_task("rope_gptj_pairs").impl).shape_primitives)


# benchmark references are audited by tests/verify/test_self_audit.py; the demo set is not there
@pytest.mark.parametrize("path", DEMO_FILES, ids=lambda p: p.stem)
def test_every_mutant_of_the_reference_is_rejected(path):
    """The data and bindings discriminate: each plausible mistake fails at some binding."""
    from stepsmith.verify import mutants as mutants_mod

    task = load_task(path)
    bindings = task.bindings()
    # a symbol the task fixes at every binding (E = 3 experts, set by `global`) may be written
    # as a literal without being wrong, so only varying symbols are candidates for hard-coding
    varying = {k: v for k, v in bindings[0].values.items()
               if len({b.values.get(k) for b in bindings}) > 1}
    survivors = []
    for m in mutants_mod.mutants(task.impl, task.input_names, varying):
        if verify_in_process(task, m.source).passed:  # every binding: the one executor
            survivors.append(f"{m.kind}: {m.description}")
    assert not survivors, "\n".join(survivors)


def test_an_instance_can_run_several_programs():
    task = get_task("attn_scan_divsum")
    first = run_program(task, task.impl)
    second = run_program(task, task.impl)  # same cached instance; inputs re-created each run
    assert first.instance is second.instance and first.ok and second.ok
    assert torch.equal(first.outputs[0].data, second.outputs[0].data)
    tol = second.instance.tolerance
    assert check_outputs(second.result, second.instance.expected, tol.rtol, tol.atol, "")[0] is None


def test_partition_demo_exercises_an_empty_expert_and_empty_selector_rows():
    task = get_task("demo_partition_expert_sums")
    per_binding = [task.instantiate(b).input_data["E1"] for b in task.bindings()]
    assert any((sel.sum(0) == 0).any() for sel in per_binding)  # an expert receives no token
    assert any((sel.sum(1) == 0).any() for sel in per_binding)  # a token goes to no expert
    assert reference_verdict(task).passed
