"""Small hand-written tasks shared by the verifier tests."""

from __future__ import annotations

ROWSUM_YAML = """\
test_name: rowsum_squares
group: test
description: O[m, n] = sum_d X[m, n, d]^2
inputs:
  - name: X
    dtype: fp32
    dims: [D, N, M]
    data_gen: torch.randn
fns:
  - name: Square
    func_name: fn_sq
    input_dtype: fp32
    output_dtype: fp32
    apply: |-
      return [input[0] * input[0]]
  - name: Neg
    func_name: fn_neg
    input_dtype: fp32
    output_dtype: fp32
    apply: |-
      return [-input[0]]
  - name: Sum
    func_name: fn_sum
    init: [0]
    input_dtype: fp32
    output_dtype: fp32
    apply: |-
      return [state[0] + input[0]]
  - name: AddBuf
    func_name: fn_addbuf
    init: [zeros]
    input_dtype: "Buffer(fp32, [D])"
    output_dtype: "Buffer(fp32, [D])"
    apply: |-
      return [state[0] + input[0]]
outputs:
  - name: O
    dtype: fp32
    dims: [N, M]
    data_transform:
      - |-
        (input_data['X'] ** 2).sum(-1)
impl: |-
  E1 = step.Map(fn=fn_sq).apply(X)
  E2 = step.Accum(fn=fn_sum, b=1).apply(E1)
  return E2
"""

ROWSUM_REF = "E1 = step.Map(fn=fn_sq).apply(X)\nE2 = step.Accum(fn=fn_sum, b=1).apply(E1)\nreturn E2\n"

# Two outputs, the first a tuple stream (struct of arrays), to exercise per-field feedback.
PAIR_YAML = """\
test_name: pair_outputs
group: test
inputs:
  - name: X
    dtype: fp32
    dims: [D, M]
    data_gen: torch.randn
fns:
  - {name: Square, func_name: fn_sq, input_dtype: fp32, output_dtype: fp32, apply: "return [input[0] * input[0]]"}
  - {name: Neg, func_name: fn_neg, input_dtype: fp32, output_dtype: fp32, apply: "return [-input[0]]"}
  - {name: Sum, func_name: fn_sum, init: [0], input_dtype: fp32, output_dtype: fp32, apply: "return [state[0] + input[0]]"}
outputs:
  - name: T
    dtype: [fp32, fp32]
    dims: [M]
    data_transform:
      - (input_data['X'] ** 2).sum(-1)
      - (-input_data['X']).sum(-1)
  - name: S
    dtype: fp32
    dims: [D, M]
    data_transform:
      - input_data['X'] ** 2
impl: |-
  A, B = step.Copy().apply(X)
  A1, A2 = step.Copy().apply(A)
  s1 = step.Accum(fn=fn_sum, b=1).apply(step.Map(fn=fn_sq).apply(A1))
  s2 = step.Accum(fn=fn_sum, b=1).apply(step.Map(fn=fn_neg).apply(B))
  return step.Zip().apply((s1, s2)), step.Map(fn=fn_sq).apply(A2)
"""
