"""The verifier's tolerance policy (magnitude-relative, float64, NaN/inf rules)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stepsmith.verify.tolerance import DEFAULT_ATOL, DEFAULT_RTOL, compare, format_index


def test_identical_tensors_pass_and_report_zero_error() -> None:
    e = torch.randn(3, 4, dtype=torch.float64)
    c = compare(e.clone(), e)
    assert c.ok and c.n_bad == 0 and c.max_abs_error == 0.0


def test_bound_is_relative_to_the_largest_magnitude() -> None:
    e = torch.tensor([1000.0, 1e-3], dtype=torch.float64)
    # an error of 5e-6 (0.5% of it) on the tiny entry is fine: the bound scales with 1000
    f = e + torch.tensor([0.0, 5e-6], dtype=torch.float64)
    c = compare(f, e)
    assert c.ok, c
    assert c.bound == pytest.approx(DEFAULT_ATOL + DEFAULT_RTOL * 1000.0)
    # ... but 2x the bound is not
    f2 = e + torch.tensor([0.0, 2 * c.bound], dtype=torch.float64)
    assert not compare(f2, e).ok


def test_scale_is_at_least_one_for_small_outputs() -> None:
    e = torch.full((4,), 1e-4, dtype=torch.float64)
    c = compare(e + 5e-9, e)  # 5e-9 <= atol + rtol * 1
    assert c.ok and c.scale == 1.0
    assert not compare(e + 2e-8, e).ok


def test_float64_rounding_passes_but_real_bugs_fail() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 64, dtype=torch.float64, generator=g)
    b = torch.randn(64, 32, dtype=torch.float64, generator=g)
    exact = a @ b
    reordered = torch.einsum("ik,kj->ij", a.flip(1), b.flip(0))  # other summation order
    assert compare(reordered, exact).ok
    f32 = (a.float() @ b.float()).double()  # float32 leak: ~1e-7, only with a task tolerance
    assert not compare(f32, exact).ok
    assert compare(f32, exact, rtol=1e-5).ok
    wrong = exact.clone()
    wrong[3, 7] += 0.01 * exact.abs().max()  # one element off by 1% of the magnitude
    c = compare(wrong, exact)
    assert not c.ok and c.n_bad == 1 and c.index == (3, 7)
    assert c.expected_value == pytest.approx(float(exact[3, 7]))


def test_reports_worst_element() -> None:
    e = torch.zeros(2, 3, dtype=torch.float64)
    f = e.clone()
    f[0, 1] = 0.5
    f[1, 2] = 2.0
    c = compare(f, e)
    assert (c.n_bad, c.index, c.found_value, c.max_abs_error) == (2, (1, 2), 2.0, 2.0)


def test_inf_matches_same_sign_only() -> None:
    e = torch.tensor([math.inf, -math.inf, 1.0], dtype=torch.float64)
    assert compare(e.clone(), e).ok
    f = torch.tensor([-math.inf, -math.inf, 1.0], dtype=torch.float64)
    c = compare(f, e)
    assert not c.ok and c.index == (0,) and math.isinf(c.max_abs_error)
    assert not compare(torch.tensor([1e300, -math.inf, 1.0], dtype=torch.float64), e).ok


def test_nan_only_where_expected() -> None:
    e = torch.tensor([math.nan, 1.0], dtype=torch.float64)
    assert compare(torch.tensor([math.nan, 1.0], dtype=torch.float64), e).ok
    assert not compare(torch.tensor([0.0, 1.0], dtype=torch.float64), e).ok
    c = compare(torch.tensor([math.nan, math.nan], dtype=torch.float64), e)
    assert not c.ok and c.index == (1,)


def test_scale_ignores_non_finite_expected_values() -> None:
    e = torch.tensor([-math.inf, 2.0], dtype=torch.float64)
    c = compare(torch.tensor([-math.inf, 2.0 + 1e-8], dtype=torch.float64), e)
    assert c.scale == 2.0 and c.ok


def test_overrides_and_shape_guard() -> None:
    e = torch.ones(3, dtype=torch.float64)
    assert compare(e + 1e-3, e, rtol=1e-2).ok
    assert not compare(e + 1e-3, e).ok
    assert compare(e + 1e-3, e, rtol=0.0, atol=2e-3).ok
    with pytest.raises(ValueError, match="equal shapes"):
        compare(torch.ones(2), torch.ones(3))


def test_empty_and_format_index() -> None:
    assert compare(torch.ones(0), torch.ones(0)).ok
    assert format_index((2, 0, 5), ["M", "N", "D"]) == "[M=2, N=0, D=5]"
    assert format_index((2, 0), ["M"]) == "[2, 0]"


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    seed=st.integers(0, 2**31 - 1),
    magnitude=st.sampled_from([1e-3, 1.0, 1e3]),
    frac=st.floats(0.0, 0.9),
)
def test_property_below_bound_passes_above_fails_at_the_right_index(
    shape: list[int], seed: int, magnitude: float, frac: float
) -> None:
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(shape, dtype=torch.float64, generator=g) * magnitude
    c0 = compare(e, e)
    # anything strictly inside the bound passes ...
    noise = (torch.rand(shape, dtype=torch.float64, generator=g) * 2 - 1) * frac * c0.bound
    assert compare(e + noise, e).ok
    # ... and one element pushed past it fails, reported at that index
    flat = int(torch.randint(0, e.numel(), (1,), generator=g))
    bad = e.clone().reshape(-1)
    bad[flat] += 3 * c0.bound
    c = compare(bad.reshape(shape), e)
    assert not c.ok and c.n_bad == 1
    assert c.index == tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), e.shape))
