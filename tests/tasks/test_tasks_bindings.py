"""Bindings: defaults, determinism, global/ctx symbols, task overrides; multihot data generation."""

from __future__ import annotations

import pytest
import torch
from tasks_testutil import VALID

from stepsmith.tasks import TaskFormatError, load_task
from stepsmith.tasks.instance import generate
from stepsmith.tasks.schema import DataGen

MOE_HEADER = """\
global: |-
  E_value = 3
  ctx[E] = E_value
  H_value = D_value // 2
  ctx[H] = H_value
"""

MOE = VALID.replace("group: testing\n", "group: testing\n" + MOE_HEADER).replace(
    "  - name: E0\n    dtype: fp32\n    dims: [K, M]\n    data_gen: torch.randn\n",
    "  - name: E0\n    dtype: fp32\n    dims: [K, M]\n    data_gen: torch.randn\n"
    "  - name: S\n    dtype: \"Multihot(fp32, E)\"\n    dims: [H]\n    data_gen: multihot\n"
    "    min: 1\n    max: 2\n")


def test_default_bindings_paper_first_distinct_and_deterministic():
    task = load_task(VALID)
    bs = task.bindings()
    assert bs[0].label == "paper" and bs[0].seed == 42
    assert {k: bs[0].values[k] for k in "MNKD"} == {"M": 5, "N": 7, "K": 9, "D": 16}
    assert len(bs) >= 3
    assert len({b.seed for b in bs}) == len(bs)
    assert len({tuple(sorted(b.values.items())) for b in bs}) == len(bs)
    for b in bs:  # sizes within one binding are distinct, so swapped dims are caught
        assert len({b.values[k] for k in "MNKD"}) == 4
    large = max(bs, key=lambda b: b.values["M"] * b.values["N"] * b.values["K"] * b.values["D"])
    assert large.label == "large" and large.values["D"] > 16
    assert load_task(VALID).bindings() == bs


def test_global_ctx_binds_E_and_derived_symbols():
    task = load_task(MOE)
    assert "E" in task.symbols and "H" in task.symbols
    for b in task.bindings():
        assert b.values["E"] == 3
        assert b.values["H"] == b.values["D"] // 2


def test_task_bindings_override_by_label_and_add_new_ones():
    text = VALID.replace("group: testing\n", "group: testing\nbindings:\n  - {label: wide, K: 11}\n"
                         "  - {label: paper, M: 2, seed: 5}\n")
    bs = load_task(text).bindings()
    assert [b.label for b in bs] == ["paper", "small", "large", "wide"]  # defaults kept, in order
    assert bs[0].values["M"] == 2 and bs[0].seed == 5 and bs[0].values["N"] == 7
    assert bs[1].values == load_task(VALID).bindings()[1].values  # untouched default
    assert bs[3].values["K"] == 11 and bs[3].values["M"] == 5 and bs[3].seed == 45  # over paper


def test_task_bindings_entry_without_label_is_an_error_at_its_line():
    text = VALID.replace("group: testing\n", "group: testing\nbindings:\n  - {D: 4}\n"
                         "  - {label: wide, K: 11}\n")
    with pytest.raises(TaskFormatError) as info:
        load_task(text)
    line = text.splitlines().index("  - {D: 4}") + 1
    assert info.value.line == line and "has no label" in str(info.value)
    assert "`label: paper`" in str(info.value)


def test_task_bindings_duplicate_label_is_an_error():
    text = VALID.replace("group: testing\n", "group: testing\nbindings:\n  - {label: paper, D: 4}\n"
                         "  - {label: paper, K: 11}\n")
    with pytest.raises(TaskFormatError, match="label 'paper' is already used by bindings entry 0"):
        load_task(text)


def test_task_bindings_mapping_applies_to_every_default():
    text = MOE.replace("group: testing\n", "group: testing\nbindings: {E: 4}\n")
    bs = load_task(text).bindings()
    assert len(bs) == 3 and all(b.values["E"] == 4 for b in bs)


def test_global_error_is_reported_with_line():
    text = VALID.replace("group: testing\n", "group: testing\nglobal: |-\n  A_value = 3\n  B_value = 1 / 0\n")
    task = load_task(text)  # loading runs none of the file's code
    with pytest.raises(TaskFormatError) as info:
        task.bindings()
    assert info.value.field == "global" and "ZeroDivisionError" in str(info.value)
    assert info.value.line == text.splitlines().index("  B_value = 1 / 0") + 1


@pytest.mark.parametrize("form", ["sibling", "mapping"])
def test_multihot_forms_equivalent_and_counts_in_range(form):
    text = MOE if form == "sibling" else MOE.replace(
        "data_gen: multihot\n    min: 1\n    max: 2\n", "data_gen: {kind: multihot, min: 1, max: 2}\n")
    task = load_task(text)
    info = task.input_infos[1]
    gen = task.spec.inputs[1].data_gen
    assert gen == DataGen(kind="multihot", min=1, max=2)
    values = task.bindings()[0].values
    x = generate(info, gen, values, torch.Generator().manual_seed(0))
    assert x.shape == (values["H"], 3)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    counts = x.sum(-1)
    assert counts.min() >= 1 and counts.max() <= 2
    y = generate(info, gen, values, torch.Generator().manual_seed(0))
    assert torch.equal(x, y)


def test_multihot_max_above_E_is_rejected_at_instantiate_time():
    task = load_task(MOE.replace("max: 2", "max: 4"))
    info, gen = task.input_infos[1], task.spec.inputs[1].data_gen
    with pytest.raises(ValueError, match="exceeds the number of experts 3"):
        generate(info, gen, task.bindings()[0].values, torch.Generator())


def test_multihot_on_fp32_rejected():
    with pytest.raises(TaskFormatError, match="needs a Multihot dtype"):
        load_task(VALID.replace("data_gen: torch.randn", "data_gen: multihot"))


def test_binary_data_gen_is_zero_one():
    task = load_task(VALID.replace("data_gen: torch.randn", "data_gen: binary"))
    x = generate(task.input_infos[0], task.spec.inputs[0].data_gen, task.bindings()[0].values,
                 torch.Generator().manual_seed(1))
    assert x.shape == (5, 9) and set(x.unique().tolist()) == {0.0, 1.0}


def test_ctx_key_in_global_declares_a_symbol_usable_by_programs():
    from stepsmith.verify import run_program

    text = VALID.replace("group: testing\n", "group: testing\nglobal: |-\n  ctx[G] = K_value + 1\n")
    text = text.replace("return E2", "E3 = step.Repeat(n=G).apply(E2)\n  return E2")
    task = load_task(text)
    assert "G" in task.symbols
    assert [b.values["G"] for b in task.bindings()] == [b.values["K"] + 1 for b in task.bindings()]
    inst = task.instantiate(task.bindings()[1])
    assert inst.namespace["G_value"] == 7 and str(inst.namespace["G"]) == "G"
    assert run_program(task, task.impl).outputs[0].data.shape == (5,)


@pytest.mark.parametrize("code", ["ctx[G] = 4", "ctx['G'] = 4", "G_value = 4",
                                  "ctx.update({'G': 4})", "globals()['G_value'] = 4"])
def test_sizes_global_binds_load_without_running_it(code):
    """Loading reads `global` without running it: every way it can bind a size is accepted
    (the forms it cannot follow are left to the run), and the run gives the value."""
    text = VALID.replace("group: testing\n", f"group: testing\nglobal: |-\n  {code}\n")
    text = text.replace("dims: [K, M]", "dims: [G, M]", 1)
    task = load_task(text)
    assert {b.values["G"] for b in task.bindings()} == {4}


def test_an_unbound_size_is_found_without_running_global():
    text = VALID.replace("group: testing\n", "group: testing\nglobal: |-\n  raise SystemExit(3)\n")
    with pytest.raises(TaskFormatError, match="size symbol 'G' has no value"):
        load_task(text.replace("dims: [K, M]", "dims: [G, M]", 1))


def test_the_paper_binding_is_one_definition() -> None:
    """Tasks and the mutants read the same paper sizes (step.session)."""
    from stepsmith.step.session import PAPER_BINDING
    from stepsmith.verify import mutants

    task = load_task(VALID)
    assert task.bindings()[0].label == "paper"
    assert {k: task.bindings()[0].values[k] for k in PAPER_BINDING} == dict(PAPER_BINDING)
    assert mutants.PAPER_BINDING is PAPER_BINDING
