"""Diagnoses for wrong values: patterns an LLM can act on, appended to value-mismatch feedback.

Each check is cheap (a few tensor ops on one output field) and conservative: it fires only when
the pattern explains *every* element within the verifier's tolerance.
"""

from __future__ import annotations

import torch


def _close(a: torch.Tensor, b: torch.Tensor, bound: float) -> bool:
    return bool(((a - b).abs() <= bound).all())


def value_hint(found: torch.Tensor, expected: torch.Tensor, bound: float) -> str | None:
    """One sentence explaining the mismatch pattern, or None when nothing simple fits."""
    f = found.detach().to(torch.float64).reshape(-1)
    e = expected.detach().to(torch.float64).reshape(-1)
    if f.numel() == 0 or not bool(torch.isfinite(f).all()) or not bool(torch.isfinite(e).all()):
        if bool(torch.isnan(f).any()) and not bool(torch.isnan(e).any()):
            return ("Hint: the output contains NaN where the reference has none — look for a "
                    "sqrt or log of a negative value (fns applied in the wrong order), 0/0, "
                    "inf - inf, or a fold whose init does not suit the fn (e.g. -inf with a sum).")
        return None
    if (f.numel() > 1 and _close(f, f[0].expand_as(f), bound)
            and not _close(e, e[0].expand_as(e), bound)):
        return (f"Hint: every element of the output is {float(f[0]):.6g} — the data never "
                "reached the output (a fold kept its init value, or a stream was reduced over "
                "the wrong dims).")
    if _close(f, -e, bound):
        return "Hint: the output is exactly the negated reference — a sign is flipped."
    if f.numel() > 1 and _close(torch.sort(f).values, torch.sort(e).values, bound):
        return ("Hint: the output holds the right values at the wrong positions — the "
                "dimension order differs from the reference (check Flatten/Reshape/Bufferize/"
                "Promote positions, Zip/Map argument order, or which dims an Accum/Scan folds).")
    nz = e.abs() > bound
    if bool(nz.sum() >= 2):
        ratio = f[nz] / e[nz]
        c = float(ratio.median())
        if abs(c - 1.0) > 1e-6 and abs(c) > 1e-12 and _close(f, c * e, bound):
            return (f"Hint: the output is the reference times {c:.6g} everywhere — a scaling "
                    "step is missing or repeated (e.g. a division by a size, a mean vs. a sum, "
                    "an extra Repeat before a sum).")
    return None
