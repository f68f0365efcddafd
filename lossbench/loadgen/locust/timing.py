"""The load generator's running timing error, and the guard that stops a run whose generator lags.

Every process that plays events adds each event's timing error (``lossbench.contract.timing``) to a
histogram (``TimingRecorder``); a worker sends it with each statistics report to the master (every 3 s),
the single process hands it over at each snapshot. The master keeps what arrived over the last seconds
(``TimingWindow``), from which the snapshot (``progress.json``) takes p50 and p90. ``LagGuard`` says how long
that p90 has been above the guard's limit without a break; the plugin stops the run once it has been for
``--lag-stop`` seconds (``lossbench.loadgen.locust.progress``).

No Locust import here: this module is tested without gevent.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable

from lossbench.contract.latency import LatencyHistogram
from lossbench.contract.progress import TimingProgress
from lossbench.contract.timing import LAG_FLAG_SHARE, guard_limit, lag_limit, timing_error
from lossbench.loadgen.player import PlayedEvent

WINDOW = 10.0
"""Seconds of reports the running timing error covers (the workers report every 3 s)."""

REPORT_KEY = "lossbench_timing"
"""The key of a worker's statistics report that carries its histogram: ``[[bucket, count], ...]``."""

Counts = list[list[int]]


class TimingRecorder:
    """This process's timing errors since it last handed them over."""

    def __init__(self) -> None:
        self.pending = LatencyHistogram()

    def add(self, played: PlayedEvent) -> None:
        error = timing_error(played.result.plan, played.result.real)
        if not math.isnan(error):
            self.pending.add(max(error, 0.0))  # early by the clock's grain counts as on time

    def take(self) -> Counts:
        """The histogram since the last call, as a report carries it; the next one starts empty."""
        counts, self.pending = self.pending.counts, LatencyHistogram()
        return [[bucket, n] for bucket, n in sorted(counts.items())]


class TimingWindow:
    """On the master (or the single process): the histograms that arrived over the last ``WINDOW``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.parts: deque[tuple[float, LatencyHistogram]] = deque()

    def clear(self) -> None:
        self.parts.clear()

    def add(self, counts: Iterable[Iterable[int]]) -> None:
        histogram = LatencyHistogram(counts={int(b): int(n) for b, n in counts})
        if histogram.counts:
            self.parts.append((self.clock(), histogram))

    def recent(self, seconds: float = WINDOW) -> LatencyHistogram:
        now = self.clock()
        while self.parts and now - self.parts[0][0] > seconds:
            self.parts.popleft()
        merged = LatencyHistogram()
        for _, part in self.parts:
            merged = merged.merge(part)
        return merged


class LagGuard:
    """How long the window's p90 has been above the guard's limit, without a break."""

    def __init__(self, median_rtt: float) -> None:
        self.limit = lag_limit(median_rtt) if median_rtt > 0 else None
        self.guard = guard_limit(median_rtt)
        self.since: float | None = None  # seconds into the test when the p90 went above the guard

    def reset(self) -> None:
        self.since = None

    def figures(self, histogram: LatencyHistogram, elapsed: float) -> TimingProgress:
        """The window's figures, and how long its p90 has been over the guard's limit at ``elapsed``."""
        p90 = histogram.quantile(0.9)
        if p90 is None or self.guard is None or p90 <= self.guard:
            self.since = None
        elif self.since is None:
            self.since = elapsed
        return TimingProgress(
            window=WINDOW,
            events=histogram.total,
            p50=histogram.quantile(0.5),
            p90=p90,
            limit=self.limit,
            guard=self.guard,
            over_for=0.0 if self.since is None else elapsed - self.since,
        )


def lag_message(timing: TimingProgress, elapsed: float, users: int) -> str:
    """Why the guard stopped the run, with its numbers and what to do."""
    assert timing.p90 is not None and timing.guard is not None and timing.limit is not None
    if timing.guard > timing.limit:
        held = f"{_ms(timing.guard)} (the guard's floor; compare warns above {_ms(timing.limit)})"
    else:
        held = f"{_ms(timing.guard)} (the limit compare warns at: {LAG_FLAG_SHARE:.0%} of the median RTT)"
    return (
        f"the load generator lagged: its p90 timing error over the last {timing.window:g} s was "
        f"{_ms(timing.p90)}, above {held} for {timing.over_for:.0f} s with {users} tabs, so the collector "
        f"saw a late schedule. The run was stopped after {elapsed:.0f} s: its losses stand (they are "
        "decided on the intended timeline), but its intervals are wider and its cost figures distorted. "
        "Lower --users, add --processes or free the machine (lossbench run sizes the load to the machine "
        "when neither is given); --lag-stop 0 turns this guard off"
    )


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms" if seconds >= 0.01 else f"{1000 * seconds:.1f} ms"
