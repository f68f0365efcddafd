"""The browser run's progress line: visits, rate, when it ends, how late the exits are."""

from __future__ import annotations

from lossbench.loadgen.browser.player import PlayerStats, progress_line


def test_progress_says_rate_time_left_and_exit_lag() -> None:
    stats = PlayerStats(visits=50, exit_lags=[0.01 * i for i in range(1, 11)])
    line = progress_line(stats, total=200, elapsed=100.0, limit=None)
    assert "50 of 200 visits played in 100 s (0.50/s)" in line
    assert "about 300 s left" in line
    assert "exits late by 60 ms (p50), 100 ms (p90)" in line


def test_progress_says_when_the_duration_limit_stops_the_run_first() -> None:
    stats = PlayerStats(visits=10, errors=["visit 3: TimeoutError"])
    line = progress_line(stats, total=200, elapsed=100.0, limit=600.0)
    assert "--duration stops it in 500 s" in line and "1 visit errors" in line
    assert "exits late" not in line
