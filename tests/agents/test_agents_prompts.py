"""Prompt composition: registry coverage, structure, caching order, demos, the leakage guard."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from agents_programs import R0, R1_FIX

from stepsmith import step
from stepsmith.agents import (
    Demonstration,
    LeakageError,
    base_prompt,
    compose_messages,
    prompts,
    reference,
    task_ir,
)
from stepsmith.demos import isomorphic
from stepsmith.tasks.suite import benchmark_tasks


@pytest.fixture(autouse=True)
def fresh_caches():
    prompts.clear_caches()
    yield
    prompts.clear_caches()


def demo_of(task, impl: str | None = None, **overrides) -> Demonstration:
    demo = Demonstration.from_solution(task, impl or task.impl, model="scripted:test", iteration=1)
    return dataclasses.replace(demo, **overrides)


@pytest.mark.parametrize("with_ir", [True, False])
def test_base_prompt_is_yaml_with_every_registry_primitive(with_ir: bool) -> None:
    document = yaml.safe_load(base_prompt(with_ir))
    assert list(document) == [
        "role",
        "language",
        "primitives",
        "idioms",
        "affine_rule",
        "answer_format",
    ]
    assert [p["name"] for p in document["primitives"]] == list(step.REGISTRY)
    for entry in document["primitives"]:
        definition = step.REGISTRY[entry["name"]]
        assert entry["description"] == definition.description.strip()
        assert "example" in entry, f"{entry['name']} has no worked example"
    assert [i["name"] for i in document["idioms"]] == [
        "dimension placeholder",
        "stashing a dimension",
    ]
    assert "Copy" in document["affine_rule"]
    assert ("impl: |-" in document["answer_format"]) == with_ir


def test_base_prompt_size_is_a_few_thousand_tokens() -> None:
    for with_ir in (True, False):
        tokens = prompts.estimate_tokens(base_prompt(with_ir))
        assert 1000 < tokens < 9000, tokens


def test_no_benchmark_task_leaks_into_the_reference() -> None:
    reference = base_prompt(True) + base_prompt(False)
    bench = benchmark_tasks()
    assert bench, "the benchmark suite is empty"
    for task in bench:
        assert task.name not in reference
    for example in prompts.reference_examples():
        if example.task_name is not None:
            assert example.task_name not in {t.name for t in bench}
        for task in bench:
            assert not isomorphic(example.impl, task.impl), (example.topic, task.name)


def test_messages_put_stable_parts_first(load) -> None:
    a, b = load("reuse0"), load("reuse2")
    demos = [demo_of(load("reuse1"), R1_FIX)]
    ma, mb = compose_messages(a, demos), compose_messages(b, demos)
    assert [m["role"] for m in ma] == ["system", "user"]
    assert ma[0] == mb[0]  # same system message for every task of a method
    ua, ub = ma[1]["content"], mb[1]["content"]
    shared = ua[: ua.index("# Your task")]
    assert ub.startswith(shared) and R1_FIX.split("\n")[1] in shared  # demos before the task
    assert "O = A * B + A + B" not in ma[0]["content"]  # the task is never in the system message


def test_task_is_shown_without_name_impl_or_bookkeeping(load) -> None:
    task = load("reuse1")
    user = compose_messages(task, [])[1]["content"]
    assert task.name not in user and "test_name" not in user and "agents-test" not in user
    assert "step.Copy" not in user  # the reference impl is hidden
    shown = yaml.safe_load(user[user.index("task:") : user.index("\n\nAnswer")])["task"]
    assert set(shown) == {"description", "inputs", "fns", "outputs"}
    assert shown["outputs"][0]["data_transform"] == ["input_data['A'] * torch.exp(input_data['A'])"]


def test_task_ir_keeps_the_authors_comments(tmp_path) -> None:
    from stepsmith.tasks import load_task

    text = (prompts_data("reuse0")).replace("dims: [K, M]", "dims: [K, M]   # data tensor (M, K)")
    path = tmp_path / "t.yaml"
    path.write_text(text)
    ir = task_ir(load_task(path))
    assert "# data tensor (M, K)" in ir and "test_name" not in ir and "impl:" not in ir


def prompts_data(name: str) -> str:
    # not `from conftest import DATA`: with one conftest per test folder, that name is ambiguous
    return (Path(__file__).parent / "data" / f"{name}.yaml").read_text()


def test_demonstrations_keep_their_order_and_hide_provenance(load) -> None:
    tasks = [load("reuse1"), load("reuse2"), load("reuse3")]
    demos = [demo_of(t, model="secret-model", iteration=7) for t in tasks]
    target = load("reuse0")
    user = compose_messages(target, demos)[1]["content"]
    positions = [user.index(d.impl.split("\n")[-1]) for d in demos]
    assert positions == sorted(positions)
    assert max(positions) < user.index("# Your task")
    for d in demos:
        assert d.task_name not in user
    assert "secret-model" not in user
    parsed = yaml.safe_load(user[: user.index("# Your task")])
    assert [entry["impl"] for entry in parsed["demonstrations"]] == [d.impl for d in demos]
    reversed_user = compose_messages(target, demos[::-1])[1]["content"]
    reversed_positions = [reversed_user.index(d.impl.split("\n")[-1]) for d in demos]
    assert reversed_positions == sorted(reversed_positions, reverse=True)


def test_leakage_guard_rejects_the_tasks_own_solution(load) -> None:
    task = load("reuse1")
    with pytest.raises(LeakageError, match="own solution"):
        compose_messages(task, [demo_of(load("reuse0"), R0), demo_of(task, R1_FIX)])


def test_leakage_guard_rejects_an_isomorphic_program_from_another_task(load) -> None:
    task = load("reuse1")
    renamed = task.impl.replace("A1", "left").replace("A2", "right").replace("E1", "ex")
    impostor = demo_of(load("reuse0"), "# same program, new names\n" + renamed)
    with pytest.raises(LeakageError, match="AST-isomorphic"):
        compose_messages(task, [impostor])
    different = demo_of(load("reuse0"), R0)
    compose_messages(task, [different])  # a genuinely different program is fine


def test_demo_set_containing_a_benchmark_task_is_refused(monkeypatch, load) -> None:
    leaked = benchmark_tasks()[0]
    monkeypatch.setattr(reference, "_demo_tasks", lambda: [leaked])
    with pytest.raises(LeakageError, match="benchmark task"):
        base_prompt(True)


def test_worked_examples_come_from_the_demonstration_set(monkeypatch, load) -> None:
    demo_set = [load("reuse0"), load("reuse1")]
    monkeypatch.setattr(reference, "_demo_tasks", lambda: demo_set)
    document = yaml.safe_load(base_prompt(True))
    by_name = {p["name"]: p for p in document["primitives"]}
    assert by_name["Map"]["example"]["impl"] == demo_set[0].impl  # first task using Map
    assert by_name["Copy"]["example"]["impl"] == demo_set[1].impl  # the only task using Copy
    # reuse0 is taken by Map, so Accum falls back to the registry's own example
    assert by_name["Accum"]["example"]["impl"] == step.REGISTRY["Accum"].example.program.strip()
    assert by_name["Zip"]["example"]["impl"] == step.REGISTRY["Zip"].example.program.strip()
    assert "test_name" not in base_prompt(True)
    # a demo-set task being solved never sees itself as a worked example
    own = compose_messages(demo_set[0], [])[0]["content"]
    assert "step.Accum(fn=fn_sum, b=1).apply(E1)" not in own
    assert own != base_prompt(True)


def test_no_ir_prompt_renders_demonstrations_as_python(load) -> None:
    demos = [demo_of(load("reuse1"), R1_FIX)]
    user = compose_messages(load("reuse0"), demos, with_ir=False)[1]["content"]
    assert "def impl(A):\n" in user and "    A_a, A_b = step.Copy().apply(A)" in user
    assert "demonstrations:" not in user and "dims: [K, M]" not in user


def test_every_benchmark_task_composes_without_its_name_or_solution() -> None:
    for task in benchmark_tasks():
        for with_ir in (True, False):
            messages = compose_messages(task, [], with_ir=with_ir)
            text = "\n".join(m["content"] for m in messages)
            assert task.name not in text, task.name
            assert task.impl.strip() not in text, task.name
        user = compose_messages(task, [])[1]["content"]
        shown = yaml.safe_load(user[user.index("task:") : user.index("\n\nAnswer")])["task"]
        assert [i["name"] for i in shown["inputs"]] == [i.name for i in task.spec.inputs], task.name
        assert "impl" not in shown and "test_name" not in shown


def test_compact_reference_keeps_the_language_and_drops_only_the_worked_examples() -> None:
    full, compact = yaml.safe_load(base_prompt(True)), yaml.safe_load(base_prompt(True, style="compact"))
    assert list(compact) == list(full)
    assert [p["name"] for p in compact["primitives"]] == list(step.REGISTRY)
    for entry, whole in zip(compact["primitives"], full["primitives"], strict=True):
        assert "example" not in entry
        assert entry == {k: v for k, v in whole.items() if k != "example"}
    assert all("example" not in i for i in compact["idioms"])
    assert [i["description"] for i in compact["idioms"]] == [i["description"] for i in full["idioms"]]
    for key in ("role", "language", "affine_rule", "answer_format"):
        assert compact[key] == full[key]
    assert prompts.estimate_tokens(base_prompt(True, style="compact")) * 2 < prompts.estimate_tokens(
        base_prompt(True)
    )


def test_compose_messages_uses_the_chosen_reference(load) -> None:
    task = load("reuse1")
    compact = compose_messages(task, [], reference="compact")
    assert compact[0]["content"] == base_prompt(True, style="compact")
    assert compact[1] == compose_messages(task, [])[1]  # the task part is the same
    with pytest.raises(ValueError, match="reference style must be one of full, compact"):
        compose_messages(task, [], reference="tiny")


def test_the_nearest_sibling_is_repeated_right_before_the_task() -> None:
    """With `sibling`, the demonstration of the task's own group that reads most like it comes
    again between the demonstrations and the task (valid YAML, no task name); other groups'
    demonstrations are never the sibling, and without a solved sibling nothing is added."""
    from stepsmith.tasks.suite import get_task

    target = get_task("bmm_mnk_mdk")
    demos = [demo_of(get_task(n)) for n in ("gemm_outer_k", "bmm_outer_product", "bmm_mnk_mkd")]
    assert prompts.nearest_sibling(target, demos) in demos[1:]
    user = compose_messages(target, demos, sibling=True)[1]["content"]
    plain = compose_messages(target, demos)[1]["content"]
    near = prompts.nearest_sibling(target, demos)
    assert near is not None
    head, task_part = user.split("# Your task", 1)
    sibling_part = head[head.index("# The solved task most like yours"):]
    parsed = yaml.safe_load(sibling_part)
    assert parsed["sibling"]["impl"] == near.impl
    assert user.replace(sibling_part, "") == plain
    for d in demos:
        assert d.task_name not in user
    only_other_groups = [demo_of(get_task("gemm_outer_k"))]
    assert prompts.nearest_sibling(target, only_other_groups) is None
    assert (compose_messages(target, only_other_groups, sibling=True)
            == compose_messages(target, only_other_groups))
