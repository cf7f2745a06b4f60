"""``stepsmith tasks new NAME``: a commented task file that already passes ``tasks check``.

The scaffold is a small complete task (a scaled sum of squares per row) rather than blanks to
fill: a user edits a working file and re-runs ``stepsmith tasks check`` after each change, so
every mistake is reported against a file that was valid a moment ago. Every field is explained
in ``docs/task-format.md``.
"""

from __future__ import annotations

import re
from pathlib import Path

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+$")  # the schema's rule for test_name

TEMPLATE = """\
# A stepsmith task file (docs/task-format.md explains every field). It is code, like a test
# file: `global`, fn bodies and data_transform snippets run in-process when it is checked.
# Programs a model writes for it are untrusted and only ever run in the sandboxed verifier.
# Edit, then run:  stepsmith tasks check {path}
test_name: {name}            # unique across every task file you run together
group: mine                  # any word; reports group tasks by it
description: >-
  Scaled sum of squares of every row: y[m] = scale * sum_k x[m, k]^2. Say what the operator
  computes and in which order the data streams; the model reads this.

# Python run once per binding before anything else; `<SYM>_value` holds each size
# (M_value, N_value, K_value, D_value). Derive a new size symbol with `ctx[H] = D_value // 2`.
global: |-
  scale = 0.5

inputs:
  - name: X                  # the program's parameter name
    dtype: fp32              # fp32, "Buffer(fp32, [D])", "Multihot(fp32, E)"
    dims: [K, M]             # stream dims, INNERMOST FIRST; the tensor is laid out (M, K)
    data_gen: torch.randn    # torch.randn | torch.rand | torch.ones | torch.zeros | binary | multihot

# parameters:                # weights the program only reaches through fns (input_data['W'])
#   - name: W
#     dtype: fp32
#     dims: [K, D]           # tensor (D, K)
#     data_gen: torch.randn

fns:
  - name: SumSquares
    func_name: fn_sumsq      # the name the program passes as fn=
    init: [0]                # a stateful fn (Accum/Scan) starts from init: 0, 1, -inf, zeros, ...
    input_dtype: fp32
    output_dtype: fp32
    apply: |-
      return [state[0] + input[0] * input[0]]
  - name: Scale
    func_name: fn_scale
    input_dtype: fp32
    output_dtype: fp32
    apply: |-
      return [input[0] * scale]

outputs:
  - name: Y
    dtype: fp32
    dims: [M]                # one value per row
    data_transform:          # the PyTorch reference, one snippet per output field;
      - |-                   # the last line is the value, laid out outermost dim first
        (input_data['X'] ** 2).sum(dim=-1) * scale

# bindings:                  # optional: sizes to verify at, by label (defaults always kept)
#   - {{label: paper, K: 12}}  # paper/small/large: override that default binding
#   - {{label: tall, M: 40}}   # any other label: an extra binding over the paper sizes
# tolerance: {{rtol: 1.0e-8, atol: 1.0e-10}}

# Your own solution (optional but recommended): `tasks check` runs it at every binding, so a
# wrong reference is caught before any model is paid to miss it.
impl: |-
  E1 = step.Accum(fn=fn_sumsq, b=1).apply(X)
  E2 = step.Map(fn=fn_scale).apply(E1)
  return E2
"""


class ScaffoldError(ValueError):
    """The scaffold cannot be written (bad name, or the file exists)."""


def write_scaffold(name: str, directory: Path, *, force: bool = False) -> Path:
    """Write ``<directory>/<name>.yaml``; never overwrites a file unless ``force``."""
    if not NAME_PATTERN.match(name):
        raise ScaffoldError(f"task name {name!r} may only use letters, digits, '_', '.' and '-' "
                            "(it becomes test_name and the file name)")
    path = directory / f"{name}.yaml"
    if path.exists() and not force:
        raise ScaffoldError(f"{path} already exists; pick another name or pass --force")
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.format(name=name, path=path), encoding="utf-8")
    return path
