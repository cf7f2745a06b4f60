"""Mismatch diagnoses appended to value-mismatch feedback."""

from __future__ import annotations

import math

import torch

from stepsmith.verify.hints import value_hint

B = 1e-8


def _e() -> torch.Tensor:
    return torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


def test_transposed_output_is_diagnosed_as_wrong_positions() -> None:
    e = _e()
    found = e.t().contiguous().reshape(4, 5)  # same values, other order
    assert "wrong positions" in value_hint(found, e, B)


def test_constant_factor_and_sign() -> None:
    e = _e()
    h = value_hint(e * 0.25, e, B)
    assert "times 0.25" in h
    assert "negated" in value_hint(-e, e, B)


def test_constant_output_means_data_never_arrived() -> None:
    e = _e()
    assert "every element of the output is 0" in value_hint(torch.zeros_like(e), e, B)


def test_nan_hint_and_no_hint_for_unstructured_errors() -> None:
    e = _e()
    f = e.clone()
    f[1, 2] = math.nan
    assert "NaN" in value_hint(f, e, B)
    noise = e + 0.1 * torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    assert value_hint(noise, e, B) is None


def test_hint_reaches_the_feedback(pool) -> None:
    from verify_fixtures import ROWSUM_YAML

    from stepsmith.tasks import load_task

    yaml = ROWSUM_YAML.replace(
        "  - name: Neg\n    func_name: fn_neg",
        "  - name: NegSq\n    func_name: fn_negsq\n    input_dtype: fp32\n    output_dtype: fp32\n"
        "    apply: |-\n      return [-(input[0] * input[0])]\n  - name: Neg\n    func_name: fn_neg",
    )
    task = load_task(yaml)
    src = "return step.Accum(fn=fn_sum, b=1).apply(step.Map(fn=fn_negsq).apply(X))\n"
    v = pool.verify(task, src)
    assert v.kind == "value_mismatch" and "negated reference" in v.feedback
