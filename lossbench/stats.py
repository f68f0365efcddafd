"""Small statistics for loss rates: an interval, a two-sample test and a ratio, for the model and compare.

The bottom layer (it imports nothing of lossbench): the model's predictions and compare's measurements get
their intervals from the same function. Only the standard library: these run on a handful of counts, and
scipy is not a dependency. How they are written out (percentages, p-values, sentences) is presentation,
elsewhere.
"""

from __future__ import annotations

import math
from typing import Literal

ALPHA = 0.05
"""Significance level of every comparison lossbench prints."""

Z95 = 1.959964


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k losses out of n: honest near 0 and 1, where losses of techniques live.

    n = 0 says nothing, so the interval is the whole of [0, 1].
    """
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval: k={k} must lie in [0, n={n}]")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def wilson_half_width(p: float, n: float, z: float = Z95) -> float:
    """Half the width of the Wilson interval, (hi − lo) / 2, at a loss rate ``p`` over ``n`` events, for any
    real n > 0: what :func:`wilson_interval` gives for k = p·n (its bounds never clamp: the centre is at
    least the half-width, and at most 1 minus it)."""
    z2 = z * z
    return z / (1.0 + z2 / n) * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))


def events_for_half_width(p: float, half_width: float, z: float = Z95) -> int:
    """The fewest events whose Wilson interval at the loss rate ``p`` is at most ``half_width`` wide on each
    side of its centre (the half-width falls with n like 1/sqrt(n), faster near 0, where it goes like 1/n)."""
    if half_width <= 0:
        raise ValueError(f"events_for_half_width: half_width={half_width} must be positive")
    lo, hi = 1, 2
    while wilson_half_width(p, hi, z) > half_width:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # wilson_half_width(p, lo) > half_width >= wilson_half_width(p, hi)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if wilson_half_width(p, mid, z) <= half_width else (mid, hi)
    return hi if wilson_half_width(p, lo, z) > half_width else lo


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher exact p-value for the 2×2 table (k1, n1−k1; k2, n2−k2).

    Sums the hypergeometric probabilities of every table with the same margins that is no more likely
    than the observed one (the usual two-sided definition, as in R's fisher.test).
    """
    total_k = k1 + k2
    n = n1 + n2
    lo, hi = max(0, total_k - n2), min(total_k, n1)
    log_denom = _log_choose(n, total_k)

    def log_p(x: int) -> float:
        return _log_choose(n1, x) + _log_choose(n2, total_k - x) - log_denom

    observed = log_p(k1)
    cutoff = observed + 1e-7  # relative tolerance against rounding, as R does
    p = sum(math.exp(lp) for x in range(lo, hi + 1) if (lp := log_p(x)) <= cutoff)
    return min(1.0, p)


def two_proportion_test(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value for "k1/n1 and k2/n2 are the same rate".

    The pooled z-test when every expected cell of the 2×2 table is at least 5 (the normal approximation
    then holds); Fisher's exact test otherwise, because loss counts of good techniques are often tiny.
    Without events on either side there is no evidence of a difference: p = 1.
    """
    if n1 <= 0 or n2 <= 0:
        return 1.0
    n = n1 + n2
    total_k = k1 + k2
    expected = [r * c / n for r in (n1, n2) for c in (total_k, n - total_k)]
    if min(expected) < 5:
        return fisher_exact(k1, n1, k2, n2)
    pooled = total_k / n
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return 1.0
    z = (k1 / n1 - k2 / n2) / se
    return min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))


def ratio(loss: float, ref_loss: float) -> tuple[float | None, Literal["less", "more", "same"]]:
    """(factor ≥ 1, "less" | "more" | "same") of loss against ref_loss; factor None when one side is 0."""
    if loss == ref_loss:
        return (1.0, "same")
    direction: Literal["less", "more"] = "less" if loss < ref_loss else "more"
    small, large = sorted((loss, ref_loss))
    return (None if small == 0 else large / small, direction)


def beside(ci: tuple[float, float], predicted: tuple[float, float]) -> Literal["above", "below", "within"]:
    """Where a measured interval lies against a predicted one: wholly above it, wholly below it, or
    overlapping it ("within"). The one rule by which a measurement departs from the model (compare's
    warning, a sweep's findings and markers)."""
    if ci[0] > predicted[1]:
        return "above"
    if ci[1] < predicted[0]:
        return "below"
    return "within"
