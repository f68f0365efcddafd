"""Is stopping on precision honest? A simulation of `--precision`, and of stopping on significance instead.

    python benchmarks/precision_stopping.py [--runs 20000]

Each simulated run counts events of one technique with a true loss p in batches (one batch per look, as
the plugin looks about once a second), and stops at the first look where the 95% Wilson interval's
half-width, (hi - lo) / 2, is at most P points and it has at least the plugin's minimum of events
(lossbench.loadgen.locust.live.MIN_EVENTS), or at the time limit. It prints how often the final interval
contains p (its coverage) beside the coverage of runs of a fixed length with as many events as the
stopped runs' median, the events the stopped runs used and their mean estimate; then the same without
the minimum. Last, what `--precision` does not do: two techniques with the same true loss, stopped at
the first look where the two-proportion test says p < 0.05, and how often that declares a difference
that is not there (a single look promises 5%).

Events are independent here (a real run's events of one visit are not quite); the figures are about the
stopping rule alone. Exits 1 when a precision-stopped coverage (with the minimum) falls more than 1.5
points below 95%.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from lossbench.loadgen.locust.live import MIN_EVENTS

Z = 1.959964
BATCH, LOOKS = 250, 240  # about 250 events of a technique a second, for up to 4 minutes
LOSSES = (0.001, 0.005, 0.02, 0.08, 0.3)
GOALS = (0.0025, 0.005, 0.01, 0.02)


def wilson(k: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lossbench.stats.wilson_interval, vectorised (k = 0 gives lo = 0, k = n gives hi = 1)."""
    p = k / n
    z2 = Z * Z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = Z / denom * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = np.where(k == 0, 0.0, np.maximum(0.0, centre - half))
    hi = np.where(k == n, 1.0, np.minimum(1.0, centre + half))
    return lo, hi


def precision_stop(
    p: float, goal: float, minimum: int, runs: int, rng: np.random.Generator
) -> dict[str, float] | None:
    """Coverage, events and mean estimate of runs stopped at half-width <= goal with at least ``minimum``
    events, and the coverage of fixed runs of their median length; None when fewer than half the runs
    reach the goal within the limit (the limit decides those, not the goal)."""
    k = np.cumsum(rng.binomial(BATCH, p, size=(runs, LOOKS)), axis=1)
    n = np.broadcast_to(BATCH * np.arange(1, LOOKS + 1), k.shape)
    lo, hi = wilson(k, n)
    met = ((hi - lo) / 2 <= goal) & (n >= minimum)
    if met.any(axis=1).mean() < 0.5:
        return None
    stop = np.where(met.any(axis=1), met.argmax(axis=1), LOOKS - 1)
    rows = np.arange(runs)
    median_look = int(np.median(stop))
    return {
        "coverage": float(((lo[rows, stop] <= p) & (p <= hi[rows, stop])).mean()),
        "fixed_coverage": float(((lo[:, median_look] <= p) & (p <= hi[:, median_look])).mean()),
        "median_events": float(BATCH * (median_look + 1)),
        "mean_estimate": float((k[rows, stop] / n[rows, stop]).mean()),
    }


def significance_stop(p: float, looks: int, runs: int, rng: np.random.Generator) -> float:
    """How often two techniques with the same loss p are called different (pooled z-test, p < 0.05) at some
    look among the first ``looks``, when a run stops at the first such look."""
    a = np.cumsum(rng.binomial(BATCH, p, size=(runs, looks)), axis=1)
    b = np.cumsum(rng.binomial(BATCH, p, size=(runs, looks)), axis=1)
    n = BATCH * np.arange(1, looks + 1)[None, :]
    pooled = (a + b) / (2 * n)
    se = np.sqrt(pooled * (1 - pooled) * 2 / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, np.abs(a - b) / n / se, 0.0)
    return float((z > Z).any(axis=1).mean())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=int, default=20_000, help="simulated runs per case (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"stopping at the first look (every {BATCH} events) where the 95% interval is within +/-P points")
    print(f"and has at least {MIN_EVENTS:,} events, as --precision does:")
    print("  true loss  P          coverage: stopped  fixed n   median events  mean estimate")
    worst = 1.0
    for p in LOSSES:
        for goal in GOALS:
            r = precision_stop(p, goal, MIN_EVENTS, args.runs, rng)
            if r is None:
                continue
            worst = min(worst, r["coverage"])
            print(f"  {100 * p:5.1f}%     +/-{100 * goal:4.2f}   {100 * r['coverage']:6.2f}%  "
                  f"{100 * r['fixed_coverage']:6.2f}%   {r['median_events']:12,.0f}  "
                  f"{100 * r['mean_estimate']:.3f}%")  # fmt: skip
    bare = [(p, goal, precision_stop(p, goal, 0, args.runs, rng)) for p in LOSSES for goal in GOALS]
    low = min((r["coverage"], p, goal, r) for p, goal, r in bare if r is not None)
    coverage, p, goal, r = low
    print(f"without the minimum, the worst case: true loss {100 * p:.1f}%, +/-{100 * goal:.2f} points: "
          f"coverage {100 * coverage:.2f}% (fixed n {100 * r['fixed_coverage']:.2f}%), stopped after a "
          f"median of {r['median_events']:,.0f} events, mean estimate "
          f"{100 * r['mean_estimate']:.3f}%")  # fmt: skip
    print("stopping at the first look where two techniques with the same loss differ at p < 0.05:")
    for p in (0.02, 0.08):
        for looks in (1, 10, 60, 240):
            rate = significance_stop(p, looks, args.runs // 4, rng)
            print(f"  true loss {100 * p:4.1f}% for both, up to {looks:3d} look(s): a difference declared in "
                  f"{100 * rate:5.1f}% of runs")  # fmt: skip
    ok = worst >= 0.95 - 0.015
    print(f"worst coverage of a precision-stopped 95% interval (at least {MIN_EVENTS:,} events): "
          f"{100 * worst:.2f}% ({'honest' if ok else 'NOT honest'} within 1.5 points)")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
