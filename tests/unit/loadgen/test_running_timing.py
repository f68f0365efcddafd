"""The running timing error (histograms from each process, the master's window) and the lag guard, with
made-up events and a made-up clock: no Locust."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from lossbench.contract.latency import LatencyHistogram
from lossbench.loadgen.locust.live import LiveLoss
from lossbench.loadgen.locust.timing import WINDOW, LagGuard, TimingRecorder, TimingWindow, lag_message


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def played(late: float) -> Any:
    """A played event whose last stage ended ``late`` seconds after its plan."""
    result = SimpleNamespace(plan={"connect": 0.3, "body": 0.6}, real={"connect": 0.3, "body": 0.6 + late})
    return SimpleNamespace(result=result)


def histogram(*values: float) -> LatencyHistogram:
    h = LatencyHistogram()
    for v in values:
        h.add(v)
    return h


def report(*lates: float) -> list[list[int]]:
    """A process's report of events this late."""
    recorder = TimingRecorder()
    for late in lates:
        recorder.add(played(late))
    return recorder.take()


def test_a_process_hands_over_its_timing_errors_once() -> None:
    recorder = TimingRecorder()
    for late in (0.001, 0.001, 0.2, -0.000001):  # early by the clock's grain counts as on time
        recorder.add(played(late))
    recorder.add(SimpleNamespace(result=SimpleNamespace(plan={}, real={})))  # no stage ended: not timed
    counts = recorder.take()
    assert sum(n for _, n in counts) == 4
    assert recorder.take() == []  # the next report starts empty
    window = TimingWindow(Clock())
    window.add(counts)
    assert window.recent().quantile(0.5) == pytest.approx(0.001, rel=0.07)


def test_the_window_keeps_the_reports_of_its_last_seconds() -> None:
    clock = Clock()
    window = TimingWindow(clock)
    window.add(report(0.5))
    clock.now += WINDOW / 2
    window.add(report(0.002, 0.002))
    assert window.recent().total == 3
    clock.now += WINDOW / 2 + 1  # the first report is older than the window
    assert window.recent().total == 2
    window.add([])  # a report without events adds nothing
    assert len(window.parts) == 1


def test_the_guard_counts_the_seconds_the_p90_stays_above_its_limit() -> None:
    guard = LagGuard(median_rtt=0.3)  # 3G: the 30 ms limit compare warns at
    assert guard.figures(histogram(0.001), 1.0).over_for == 0.0
    late = histogram(*[0.1] * 20)
    assert guard.figures(late, 2.0).over_for == 0.0  # above from now
    figures = guard.figures(late, 9.5)
    assert figures.over_for == 7.5 and figures.limit == pytest.approx(0.03) and figures.guard == figures.limit
    assert figures.p90 == pytest.approx(0.1, rel=0.07) and figures.events == 20
    assert guard.figures(histogram(0.001), 10.0).over_for == 0.0  # a break starts the count again
    assert guard.figures(LatencyHistogram(), 11.0).over_for == 0.0  # no events: not lagging
    assert guard.figures(late, 12.0).over_for == 0.0


def test_no_guard_without_network_delay_and_a_floor_on_fast_profiles() -> None:
    assert LagGuard(0.0).figures(histogram(5.0), 30.0).over_for == 0.0
    fios = LagGuard(0.004)  # a 0.4 ms limit: the guard holds to 30 ms
    fios.figures(histogram(0.01), 0.0)
    assert fios.figures(histogram(0.01), 30.0).over_for == 0.0
    fios.figures(histogram(0.05), 31.0)
    figures = fios.figures(histogram(0.05), 40.0)
    assert figures.over_for == 9.0
    message = lag_message(figures, elapsed=41.0, users=400)
    assert "above 30 ms (the guard's floor; compare warns above 0.4 ms) for 9 s with 400 tabs" in message


def test_a_snapshot_has_the_running_timing_error_and_the_guard() -> None:
    clock = Clock()
    live = LiveLoss(("ajax",), {}, goal=None, duration=None, clock=clock, median_rtt=0.3)
    live.start(duration=60.0, goal=None)
    stats = SimpleNamespace(entries={})
    for _ in range(12):
        clock.now += 1.0
        live.timing.add(report(*[0.2] * 10))
        progress = live.snapshot(stats, state="running", users=400)
    timing = progress.timing
    assert timing is not None and timing.events == 110  # 11 reports within the last 10 s
    assert timing.p90 == pytest.approx(0.2, rel=0.07) and timing.over_for == 11.0
    live.stopped = lag_message(timing, progress.elapsed, 400)
    last = live.snapshot(stats, state="stopping", users=400)
    assert last.stopped is not None and last.stopped.startswith(
        "the load generator lagged: its p90 timing error"
    )
    assert "above 30 ms (the limit compare warns at: 10% of the median RTT) for 11 s" in last.stopped
    assert "Lower --users, add --processes" in last.stopped
    live.start(duration=60.0, goal=None)  # a new test starts afresh
    fresh = live.snapshot(stats, state="running", users=400)
    assert fresh.stopped is None and fresh.timing is not None and fresh.timing.events == 0
