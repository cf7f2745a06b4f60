"""Helpers for task-loader tests: a small valid task text and line lookup."""

from __future__ import annotations

VALID = """\
test_name: tiny_scale_sum
group: testing
description: Row sums of x * 2.
inputs:
  - name: E0
    dtype: fp32
    dims: [K, M]
    data_gen: torch.randn
fns:
  - name: Double
    func_name: fn_double
    input_dtype: fp32
    output_dtype: fp32
    apply: |-
      return [input[0] * 2]
  - name: Sum
    func_name: fn_sum
    init: [0]
    input_dtype: fp32
    output_dtype: fp32
    apply: |-
      return [state[0] + input[0]]
outputs:
  - name: O
    dtype: fp32
    dims: [M]
    data_transform:
      - |-
        x = input_data['E0'] * 2
        x.sum(-1)
impl: |-
  E1 = step.Map(fn=fn_double).apply(E0)
  E2 = step.Accum(fn=fn_sum, b=1).apply(E1)
  return E2
"""


def line_containing(text: str, needle: str, start: int = 0) -> int:
    """1-based number of the first line containing ``needle`` (after line ``start``)."""
    for i, line in enumerate(text.splitlines(), start=1):
        if i > start and needle in line:
            return i
    raise AssertionError(f"{needle!r} not in text")


def reference_verdict(task, executor="fast", bindings=None):  # -> Verdict
    """The verifier's verdict on the task's own impl, in process (trusted task files only)."""
    from stepsmith.verify.runner import check_candidate

    return check_candidate(task, task.impl or "", executor=executor, bindings=bindings)
