"""Instantiation: reference snippets run with the documented names; their failures point at lines."""

from __future__ import annotations

import pytest
import torch
from tasks_testutil import VALID, line_containing, reference_verdict

from stepsmith.tasks import TaskReferenceError, load_task


def test_reference_snippet_sees_documented_names():
    text = VALID.replace("group: testing\n", "group: testing\nglobal: |-\n  scale = 2\n").replace(
        "        x = input_data['E0'] * 2\n        x.sum(-1)\n",
        "        assert isinstance(ctx[K], int) and ctx['K'] == K_value and str(K) == 'K'\n"
        "        x = input_data['E0'] * scale\n"
        "        torch.ones(M_value) * 0 + x.sum(-1)\n")
    task = load_task(text)
    inst = task.instantiate(task.bindings()[1])
    assert torch.allclose(inst.expected[0].values[0], inst.input_data["E0"].sum(-1) * 2)
    assert reference_verdict(task).passed


def test_snippet_exception_reports_the_file_line(write_task):
    text = VALID.replace("        x.sum(-1)\n", "        x.sum(-1) + undefined_thing\n")
    task = load_task(write_task(text))  # loading does not evaluate references
    with pytest.raises(TaskReferenceError) as info:
        task.instantiate()
    err = info.value
    assert err.field == "outputs[0].data_transform[0]" and "NameError" in str(err)
    assert err.line == line_containing(text, "undefined_thing")


def test_snippet_with_wrong_layout_is_rejected():
    text = VALID.replace("        x.sum(-1)\n", "        x.sum(-1, keepdim=True)\n")
    with pytest.raises(TaskReferenceError) as info:
        load_task(text).instantiate()
    msg = str(info.value)
    assert "must be laid out as (5,)" in msg and "produced shape (5, 1)" in msg


def test_reference_values_are_cast_to_the_instance_dtype():
    text = VALID.replace("        x.sum(-1)\n", "        (x.sum(-1) > 0).int()\n")
    task = load_task(text)
    (exp,) = task.instantiate(dtype=torch.float32).expected
    assert exp.values[0].dtype == torch.float32
    assert set(exp.values[0].unique().tolist()) <= {0.0, 1.0}


def test_a_wrong_reference_impl_is_a_failed_verdict_not_an_exception():
    text = VALID.replace("        x.sum(-1)\n", "        x.sum(-1) + 1\n")
    v = reference_verdict(load_task(text))
    assert not v.passed and len(v.bindings) == 3 and not any(b.passed for b in v.bindings)
    assert "output 'O'" in v.feedback and "differ" in v.feedback
    broken = VALID.replace("step.Accum(fn=fn_sum, b=1)", "step.Accum(fn=fn_sum, b=2)")
    w = reference_verdict(load_task(broken))
    assert not w.passed and "Accum" in w.feedback


def test_parameters_are_visible_to_fns_but_not_to_programs():
    text = VALID.replace(
        "fns:\n", "parameters:\n  - name: W\n    dtype: fp32\n    dims: [K]\n    data_gen: torch.rand\nfns:\n", 1
    ).replace("return [input[0] * 2]", "return [input[0] * input_data['W'].sum()]").replace(
        "x = input_data['E0'] * 2", "x = input_data['E0'] * input_data['W'].sum()")
    task = load_task(text)
    inst = task.instantiate()
    assert "W" in inst.input_data and "W" not in inst.inputs and "W" not in inst.namespace
    assert reference_verdict(task).passed
