"""pass@k against brute force, bootstrap intervals, code metrics."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepsmith.evaluate.metrics import (
    bootstrap_ci,
    lines_of_code,
    maintainability,
    mean_pass_at_k,
    pass_at_k,
)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of the n samples that contain at least one correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@given(st.integers(1, 12).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_equals_brute_force(args: tuple[int, int, int]) -> None:
    n, c, k = args
    assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_closed_forms() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(64, 2, 8) == pytest.approx(1 - math.comb(62, 8) / math.comb(64, 8))
    assert pass_at_k(0, 0, 1) == 0.0


def test_pass_at_k_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="k=5 exceeds"):
        pass_at_k(3, 1, 5)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(3, 1, 0)


def test_mean_pass_at_k_averages_tasks() -> None:
    assert mean_pass_at_k([(4, 1), (4, 4), (4, 0)], 1) == pytest.approx((0.25 + 1 + 0) / 3)
    assert mean_pass_at_k([], 1) == 0.0


def test_bootstrap_ci_brackets_mean_and_is_deterministic() -> None:
    values = [1.0] * 7 + [0.0] * 3
    lo, hi = bootstrap_ci(values)
    assert lo <= 0.7 <= hi
    assert 0.3 < lo < 0.7 < hi <= 1.0
    assert bootstrap_ci(values) == (lo, hi)
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert bootstrap_ci([]) == (0.0, 0.0)


def test_code_metrics() -> None:
    prog = ("# stash the row\nb = step.Bufferize(a=1).apply(x)\n"
            "r = step.Repeat(n=N).apply(b)\n\nreturn step.Streamify().apply(r)\n")
    assert lines_of_code(prog) == 3
    mi = maintainability(prog)
    assert mi is not None
    with_c, without_c = mi
    assert 0 < without_c <= with_c <= 100
    assert maintainability("x = (") is None
    branchy = prog + "".join(f"if N_value > {i}:\n    b = step.Identity().apply(b)\n" for i in range(12))
    assert maintainability(branchy)[1] < without_c  # type: ignore[index]
