"""What lossbench run shows while the load runs: plain lines for a log, a live view in a terminal, from
progress.json and the collector's /stats (both constructed here)."""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace
from rich.console import Console

from lossbench.contract.progress import FILE_NAME, Progress, TechniqueProgress, TimingProgress, write_progress
from lossbench.stats import wilson_interval
from lossbench.watch import NOTE, Sample, Sampler, follow, plain_lines, view

COLLECTOR = {"events": {"ajax": 900, "pixel": 1_100}, "connections_open": 42, "cpu_seconds": 3.2}


def technique(sent: int, lost: int, predicted: float) -> TechniqueProgress:
    lo, hi = wilson_interval(lost, sent)
    return TechniqueProgress(
        sent=sent,
        lost=lost,
        loss=lost / sent,
        ci95=(lo, hi),
        half_width=(hi - lo) / 2,
        predicted=predicted,
        events_to_goal=11_000,
    )


def progress(**changes: Any) -> Progress:
    fields: dict[str, Any] = {
        "state": "running",
        "elapsed": 20.0,
        "duration": 90.0,
        "users": 40,
        "events": 4_000,
        "events_per_second": 210.0,
        "precision": 0.005,
        "eta": 35.0,
        "reached": False,
        "min_events": 2_000,
        "techniques": {"ajax": technique(2_000, 160, 0.079), "pixel": technique(2_000, 60, 0.031)},
        "updated": 0.0,
    }
    return Progress(**(fields | changes))


def sample(**changes: Any) -> Sample:
    fields: dict[str, Any] = {
        "seconds": 21.0,
        "duration": 90.0,
        "progress": progress(),
        "collector": COLLECTOR,
        "received_per_second": 190.0,
    }
    return Sample(**(fields | changes))


def test_plain_lines_have_the_collector_and_the_running_losses() -> None:
    first, second = plain_lines(sample())
    assert first == "     20/90 s  received 2,000 events (190/s), 42 connections open, collector CPU 3 s"
    assert second == (
        "         loss so far (client's count): ajax 8.0% [6.9, 9.3], pixel 3.0% [2.3, 3.8]; 210 events/s; "
        "goal ±0.5 points in about 35 s"
    )


def test_plain_lines_before_locust_reports_and_for_another_target() -> None:
    assert plain_lines(sample(progress=None)) == [
        "     21/90 s  received 2,000 events (190/s), 42 connections open, collector CPU 3 s"
    ]
    other = plain_lines(sample(collector=None, received_per_second=None, target_cpu=7.0, progress=None))
    assert other == ["     21/90 s  target CPU 7 s"]
    no_goal = plain_lines(sample(progress=progress(precision=None, eta=None)))[1]
    assert no_goal.endswith("pixel 3.0% [2.3, 3.8]; 210 events/s")


def render(renderable: Any) -> str:
    console = Console(file=io.StringIO(), force_terminal=True, width=130, color_system=None)
    console.print(renderable)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


def test_the_live_view_has_the_bar_the_losses_with_intervals_and_the_collector() -> None:
    text = render(view(sample()))
    assert "━" in text  # the bar
    assert "20 s of at most 90 s · goal ±0.5 points in about 35 s · 210 events/s" in text
    for expected in ("ajax", "2,000", "160", "8.0%", "[6.9, 9.3]", "7.9%", "pixel", "[2.3, 3.8]", "3.1%"):
        assert expected in text, expected
    assert "received 2,000 events (190/s), 42 connections open, collector CPU 3 s" in text
    assert " ".join(NOTE.split()) in " ".join(text.split())  # the running loss is the client's count


def test_the_live_view_before_locust_reports_and_when_the_goal_is_reached() -> None:
    assert "starting Locust" in render(view(sample(progress=None)))
    assert "goal ±0.5 points: reached" in render(view(sample(progress=progress(reached=True, eta=0.0))))


def test_the_sampler_reads_progress_json_and_the_collector_rate(tmp_path: Path) -> None:
    clock = itertools.count(start=100.0, step=10.0)
    answers = iter([{"events": {"ajax": 1_000}}, {"events": {"ajax": 3_000}}])
    sampler = Sampler(tmp_path / FILE_NAME, 90.0, lambda: next(answers), clock=lambda: next(clock))
    first = sampler.sample()
    assert first.progress is None and first.received_per_second == 100.0  # since Locust started
    write_progress(tmp_path / FILE_NAME, progress())
    second = sampler.sample()
    assert second.progress == progress() and second.received_per_second == 200.0
    assert second.seconds == 20.0


def test_follow_prints_plain_lines_and_the_goal_reached(tmp_path: Path) -> None:
    write_progress(tmp_path / FILE_NAME, progress(reached=True, eta=0.0))
    said: list[str] = []
    polls = iter([True, True, False])
    sampler = Sampler(tmp_path / FILE_NAME, 90.0, lambda: COLLECTOR)
    follow(lambda: next(polls), sampler, said.append, live=False, every=0.1)
    assert any("loss so far (client's count): ajax 8.0% [6.9, 9.3]" in line for line in said), said
    assert said[-1] == "  precision reached after 20 s: every interval within ±1.19 points (goal ±0.5)"


def test_follow_live_leaves_the_last_view(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_progress(tmp_path / FILE_NAME, progress())
    polls = iter([True, False])
    follow(lambda: next(polls), Sampler(tmp_path / FILE_NAME, 90.0, None), print, live=True)
    out = capsys.readouterr().out
    assert "[6.9, 9.3]" in out and "loss so far" not in out


LAGGING = TimingProgress(window=10.0, events=900, p50=0.04, p90=0.12, limit=0.03, guard=0.03, over_for=12.0)


def test_the_running_timing_error_is_shown_against_the_limit() -> None:
    line = plain_lines(sample(progress=progress(timing=LAGGING)))[1]
    assert line.endswith(
        "210 events/s; timing error p90 120 ms (compare warns above 30 ms), lagging for 12 s; "
        "goal ±0.5 points in about 35 s"
    )
    on_time = replace(LAGGING, p90=0.004, over_for=0.0)
    assert (
        "timing error p90 4.0 ms (compare warns above 30 ms);"
        in plain_lines(sample(progress=progress(timing=on_time)))[1]
    )
    text = " ".join(render(view(sample(progress=progress(timing=LAGGING)))).split())
    assert "load generator: timing error p90 120 ms (compare warns above 30 ms), lagging for 12 s" in text


def test_follow_says_why_the_plugin_stopped_the_run(tmp_path: Path) -> None:
    write_progress(tmp_path / FILE_NAME, progress(timing=LAGGING, stopped="the load generator lagged: ..."))
    said: list[str] = []
    follow(lambda: False, Sampler(tmp_path / FILE_NAME, 90.0, None), said.append, live=False)
    assert said == ["  stopped: the load generator lagged: ..."]
