"""Intervals, tests and sentences against known values (R's binom/prop.test/fisher.test)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lossbench.analysis.stats import format_p, ratio_text
from lossbench.stats import (
    events_for_half_width,
    fisher_exact,
    ratio,
    two_proportion_test,
    wilson_half_width,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (1, 10, 0.0179, 0.4042),
        (10, 10, 0.7225, 1.0),
        (50, 1000, 0.0381, 0.0653),
    ],
)
def test_wilson_known_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_without_events_is_everything() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


@given(st.integers(1, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_the_estimate(kn: tuple[int, int]) -> None:
    k, n = kn
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_z_test_known_value() -> None:
    # prop.test(c(50, 30), c(100, 100), correct=FALSE): X² = 8.3333, p = 0.003892
    assert two_proportion_test(50, 100, 30, 100) == pytest.approx(0.003892, abs=1e-5)


def test_fisher_known_values() -> None:
    # fisher.test(matrix(c(3, 1, 1, 3), 2)): the lady tasting tea, p = 0.4857
    assert fisher_exact(3, 4, 1, 4) == pytest.approx(0.4857, abs=1e-4)
    # fisher.test(matrix(c(1, 11, 9, 3), 2)): p = 0.002759
    assert fisher_exact(1, 10, 11, 14) == pytest.approx(0.002759, abs=1e-5)


def test_small_counts_use_fisher() -> None:
    # expected cells of 2 < 5: the exact test, not the normal approximation
    assert two_proportion_test(3, 4, 1, 4) == pytest.approx(fisher_exact(3, 4, 1, 4))
    # zero losses on one side among many events: still exact, still significant when it should be
    assert two_proportion_test(0, 100_000, 12, 100_000) < 0.001


def test_no_events_no_evidence() -> None:
    assert two_proportion_test(0, 0, 5, 10) == 1.0
    assert two_proportion_test(0, 100, 0, 100) == 1.0
    assert two_proportion_test(100, 100, 100, 100) == 1.0


@given(st.integers(0, 300), st.integers(0, 300), st.integers(0, 300), st.integers(0, 300))
def test_p_value_is_symmetric_and_a_probability(a: int, b: int, c: int, d: int) -> None:
    k1, n1 = min(a, b), max(a, b)
    k2, n2 = min(c, d), max(c, d)
    p = two_proportion_test(k1, n1, k2, n2)
    assert 0.0 <= p <= 1.0
    assert p == pytest.approx(two_proportion_test(k2, n2, k1, n1))


def test_format_p() -> None:
    assert format_p(0.0001) == "p < 0.001"
    assert format_p(0.004) == "p = 0.004"
    assert format_p(0.03) == "p = 0.03"
    assert format_p(0.41) == "p = 0.41"


def test_ratio() -> None:
    assert ratio(0.1, 0.32) == (pytest.approx(3.2), "less")
    assert ratio(0.14, 0.1) == (pytest.approx(1.4), "more")
    assert ratio(0.0, 0.1) == (None, "less")
    assert ratio(0.2, 0.2) == (1.0, "same")


def test_ratio_text() -> None:
    assert ratio_text("pixel", "ajax", 0.1, 0.32, 0.0001) == "pixel loses 3.2× less than ajax (p < 0.001)"
    assert ratio_text("pixel", "ajax", 0.14, 0.1, 0.03) == "pixel loses 1.4× more than ajax (p = 0.03)"
    assert (
        ratio_text("pixel", "ajax", 0.1, 0.11, 0.41) == "pixel and ajax lose the same within noise (p = 0.41)"
    )
    assert ratio_text("pixel", "ajax", 0.0, 0.041, 0.0001) == "pixel lost nothing; ajax lost 4.1% (p < 0.001)"
    assert ratio_text("pixel", "ajax", 0.05, 0.0, 0.001) == "ajax lost nothing; pixel lost 5.0% (p = 0.001)"
    assert ratio_text("pixel", "ajax", 0.0, 0.0, 1.0) == "pixel and ajax both lost nothing"
    assert ratio_text("pixel", "ajax", 0.01, 0.5, 0.0001) == "pixel loses 50× less than ajax (p < 0.001)"


@given(st.integers(min_value=1, max_value=100_000), st.data())
def test_wilson_half_width_is_half_the_interval(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=0, max_value=n))
    lo, hi = wilson_interval(k, n)
    assert wilson_half_width(k / n, n) == pytest.approx((hi - lo) / 2, abs=1e-12)


@pytest.mark.parametrize("p", [0.0, 0.001, 0.03, 0.08, 0.5, 0.97])
@pytest.mark.parametrize("goal", [0.0025, 0.005, 0.02])
def test_events_for_half_width_is_the_fewest_that_reach_it(p: float, goal: float) -> None:
    n = events_for_half_width(p, goal)
    assert wilson_half_width(p, n) <= goal
    assert n == 1 or wilson_half_width(p, n - 1) > goal


def test_events_for_half_width_known_values() -> None:
    """±0.5 points on an 8% loss needs about 11,300 events (1.96² · 0.08 · 0.92 / 0.005² ≈ 11,310); on a loss
    of 0 the interval [0, z²/(n + z²)] is ±0.5 points at about 380 events."""
    assert events_for_half_width(0.08, 0.005) == pytest.approx(11_310, abs=10)
    assert events_for_half_width(0.0, 0.005) == pytest.approx(380, abs=2)
    with pytest.raises(ValueError):
        events_for_half_width(0.1, 0.0)
