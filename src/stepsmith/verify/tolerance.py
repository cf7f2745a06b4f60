"""Numerical comparison of a candidate's output with the PyTorch reference.

Tolerance policy (the verifier's contract, `VERIFIER_VERSION` changes if it changes):

* Data is generated in **float64**: input data, parameters and references start in float64
  (`Task.instantiate(binding, dtype=torch.float64)`), so unless the task's code forces a lower
  precision a correct program differs from the reference only by summation-order rounding,
  ~1e-15 relative. Found values are cast to float64 before comparing.
* The bound is **magnitude-relative**: element i passes iff
  ``|found_i - expected_i| <= atol + rtol * scale`` with ``scale = max(max_j |expected_j|, 1)``
  over the finite expected values of that output field. Per-element relative error would
  reject correct programs where the reference has values near zero (cancellation in LayerNorm,
  softmax tails); one scale per output keeps the bound meaningful for the large entries and
  forgiving for the tiny ones.
* Defaults ``rtol = 1e-8``, ``atol = 1e-10``. Why so tight: programs only wire primitives and
  the task's own fns, so a correct candidate differs from the float64 reference by rounding
  alone — measured worst error over the whole benchmark suite, 20 seeds x every binding:
  5e-16 relative, i.e. 7+ orders of magnitude inside the bound. A looser bound (we first tried
  1e-5) let the mutant self-audit find a real blind spot: swapping `AddEps` and `DivByD` in
  RMSNorm (``ms/D + eps`` vs ``(ms + eps)/D``) moves outputs by ~eps/2 ≈ 5e-6 relative and
  was accepted. Gross bugs (wrong index, missing term, swapped fns) are > 1e-2 relative.
* **Precision-aware.** The defaults follow the precision the task's own code actually computed
  in (`Instance.precision`, recorded, not guessed from the text): float64 gets the bounds
  above; a task whose code forces float32 (``torch.arange(..., dtype=torch.float)`` for RoPE
  frequencies) gets ``rtol = 1e-5, atol = 1e-7`` (table and rationale:
  `stepsmith.tasks.instance.PRECISION_TOLERANCE`). Fields set in the task's ``tolerance:``
  override either default. The self-audit runs over float32 tasks too, so a looser bound
  cannot hide a planted mutant unnoticed.
* Non-finite values: ``+inf`` matches only ``+inf``, ``-inf`` only ``-inf``; NaN matches only
  an expected NaN at the same index. A found NaN/inf where the reference is finite fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from stepsmith.tasks.schema import DEFAULT_ATOL, DEFAULT_RTOL

__all__ = ["DEFAULT_ATOL", "DEFAULT_RTOL", "Comparison", "compare", "format_index", "fmt_value"]


@dataclass(frozen=True)
class Comparison:
    """Result of comparing one output field; the worst element is reported for feedback."""

    ok: bool
    max_abs_error: float
    max_rel_error: float  # max_abs_error / scale
    scale: float
    bound: float  # atol + rtol * scale
    n_bad: int
    n_total: int
    index: tuple[int, ...] | None = None  # worst element (tensor layout, outermost first)
    expected_value: float | None = None
    found_value: float | None = None


def compare(found: torch.Tensor, expected: torch.Tensor, *, rtol: float = DEFAULT_RTOL,
            atol: float = DEFAULT_ATOL) -> Comparison:
    """Compare `found` to `expected` (same shape) under the module's tolerance policy."""
    if tuple(found.shape) != tuple(expected.shape):
        raise ValueError(f"compare() needs equal shapes; found {tuple(found.shape)}, "
                         f"expected {tuple(expected.shape)}")
    f = found.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    n_total = e.numel()
    if n_total == 0:
        return Comparison(True, 0.0, 0.0, 1.0, atol + rtol, 0, 0)
    # fast path (the common case: everything finite and within the bound) in a few tensor ops
    diff = (f - e).abs()
    max_diff = float(diff.max())
    if math.isfinite(max_diff):
        max_e = float(e.abs().max())
        if math.isfinite(max_e):
            scale = max(max_e, 1.0)
            bound = atol + rtol * scale
            if max_diff <= bound:
                return Comparison(True, max_diff, max_diff / scale, scale, bound, 0, n_total)
    finite_e = torch.isfinite(e)
    scale = 1.0
    if bool(finite_e.any()):
        scale = max(float(e[finite_e].abs().max()), 1.0)
    bound = atol + rtol * scale

    both_finite = finite_e & torch.isfinite(f)
    diff = torch.where(both_finite, (f - e).abs(), torch.zeros_like(e))
    ok_finite = both_finite & (diff <= bound)
    both_nan = torch.isnan(e) & torch.isnan(f)
    same_inf = torch.isinf(e) & torch.isinf(f) & (torch.sign(e) == torch.sign(f))
    good = ok_finite | both_nan | same_inf
    bad = ~good
    n_bad = int(bad.sum())

    # Error magnitude: non-finite mismatches count as infinite error.
    err = torch.where(bad & ~both_finite, torch.full_like(e, math.inf), diff)
    max_abs = float(err.max())
    worst = torch.where(bad, err, torch.full_like(e, -1.0)) if n_bad else err
    flat = int(torch.argmax(worst))
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), e.shape))
    return Comparison(ok=n_bad == 0, max_abs_error=max_abs, max_rel_error=max_abs / scale,
                      scale=scale, bound=bound, n_bad=n_bad, n_total=n_total, index=index,
                      expected_value=float(e.reshape(-1)[flat]),
                      found_value=float(f.reshape(-1)[flat]))


def format_index(index: tuple[int, ...] | None, dim_names: list[str] | None = None) -> str:
    """`[M=2, N=0, D=5]` when the dims can be named, `[2, 0, 5]` otherwise."""
    if index is None:
        return "[]"
    if dim_names and len(dim_names) == len(index):
        return "[" + ", ".join(f"{n}={i}" for n, i in zip(dim_names, index, strict=True)) + "]"
    return "[" + ", ".join(str(i) for i in index) + "]"


def fmt_value(x: float | None) -> str:
    """Short, exact-enough number for an LLM to read."""
    if x is None:
        return "?"
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.6g}"
