"""Honest statistics: unbiased pass@k, Pass@n, bootstrap intervals, code-quality metrics.

pass@k is Chen et al.'s unbiased estimator ``1 - C(n-c, k) / C(n, k)`` per task, averaged over
tasks; confidence intervals bootstrap over tasks (the unit that varies between benchmarks).
Maintainability index is radon's, computed with the comment term ("with comments") and with
the comment percentage forced to 0 ("without comments"); radon comes with the ``[report]``
extra, and without it the index is unknown (None), like that of a program that does not parse.
"""

from __future__ import annotations

import math
import random
import textwrap
from collections.abc import Callable, Sequence

from stepsmith.improve.filtering import pure_code_lines


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task with ``c`` correct of ``n`` samples (Chen et al. 2021)."""
    if n < 0 or c < 0 or c > n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if k < 1:
        raise ValueError(f"pass_at_k: k must be >= 1, got {k}")
    if n == 0:
        return 0.0
    if k > n:
        raise ValueError(f"pass_at_k: k={k} exceeds the number of samples n={n}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): numerically stable form of the binomial ratio.
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Average pass@k over tasks given (n, c) per task; tasks with n < k use k = n."""
    if not counts:
        return 0.0
    return sum(pass_at_k(n, c, min(k, n)) if n else 0.0 for n, c in counts) / len(counts)


def bootstrap_ci(
    values: Sequence[float],
    stat: Callable[[Sequence[float]], float] | None = None,
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` (default: mean) over resampled tasks."""
    if not values:
        return (0.0, 0.0)
    stat = stat or (lambda xs: sum(xs) / len(xs))
    rng = random.Random(seed)
    n = len(values)
    stats = sorted(stat([values[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    lo = stats[int(math.floor((1 - level) / 2 * (resamples - 1)))]
    hi = stats[int(math.ceil((1 + level) / 2 * (resamples - 1)))]
    return (lo, hi)


def lines_of_code(impl: str) -> int:
    """Lines of pure code (comments, blank lines and bare strings removed) — the paper's LoC."""
    return pure_code_lines(impl)


def _as_function(impl: str) -> str:
    """An impl is a function body; wrap it so radon can parse ``return`` at top level."""
    return "def impl():\n" + textwrap.indent(impl.rstrip() + "\n", "    ")


def maintainability(impl: str) -> tuple[float, float] | None:
    """(MI with comments, MI without comments) of a program; None if it does not parse or
    radon (the [report] extra) is not installed."""
    try:
        from radon.complexity import cc_visit
        from radon.metrics import h_visit, mi_compute
        from radon.raw import analyze
    except ImportError:
        return None
    src = _as_function(impl)
    try:
        raw = analyze(src)
        volume = h_visit(src).total.volume
        complexity = sum(b.complexity for b in cc_visit(src))
    except (SyntaxError, ValueError, TypeError):
        return None
    comments = raw.comments + raw.multi
    percent = (comments / raw.sloc * 100.0) if raw.sloc else 0.0
    with_c = mi_compute(volume, complexity, raw.sloc, percent)
    without_c = mi_compute(volume, complexity, raw.sloc, 0.0)
    return (float(with_c), float(without_c))
