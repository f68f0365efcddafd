"""The running loss: Locust's statistics (constructed here, no Locust) into a Progress snapshot, the goal of
--precision, the time to it, progress.json and the rows of the web UI's Loss tab."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest

from lossbench.contract.progress import FILE_NAME, Progress, goal_words, read_progress, write_progress
from lossbench.loadgen.locust.live import (
    LOSS_TABLE,
    MIN_EVENTS,
    RATE_WINDOW,
    LiveLoss,
    counts,
    eta,
    goal_of,
    goal_reached,
    loss_rows,
    technique_progress,
)
from lossbench.loadgen.locust.options import OPTIONS
from lossbench.stats import wilson_half_width, wilson_interval

TECHNIQUES = ("ajax", "pixel", "pixel-keepalive")


def stats(rows: dict[tuple[str, str], tuple[int, int]]) -> SimpleNamespace:
    """Locust's statistics as the plugin reads them: rows by (name, method) with requests and failures;
    the aggregate row has no method."""
    entries = {
        key: SimpleNamespace(method=key[1], num_requests=sent, num_failures=lost)
        for key, (sent, lost) in rows.items()
    }
    entries[("Aggregated", "")] = SimpleNamespace(method="", num_requests=10**9, num_failures=10**9)
    return SimpleNamespace(entries=entries)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_counts_add_up_every_event_type_of_a_technique() -> None:
    got = counts(
        stats({("pageview", "ajax"): (100, 8), ("click", "ajax"): (50, 2), ("pageview", "pixel"): (150, 3)}),
        TECHNIQUES,
    )
    assert got == {"ajax": (150, 10), "pixel": (150, 3), "pixel-keepalive": (0, 0)}
    assert list(got) == list(TECHNIQUES)  # the run's order, a technique without events included


def test_a_technique_s_interval_is_wilson_s_and_the_events_it_needs_reach_the_goal() -> None:
    t = technique_progress(sent=1_000, lost=80, predicted=0.079, goal=0.005)
    assert t.ci95 == wilson_interval(80, 1_000)
    assert t.half_width == pytest.approx((t.ci95[1] - t.ci95[0]) / 2)
    assert t.loss == 0.08 and t.predicted == 0.079
    assert t.events_to_goal is not None and t.events_to_goal > 11_000
    assert wilson_half_width(0.08, t.events_to_goal) <= 0.005 < wilson_half_width(0.08, t.events_to_goal - 1)
    assert technique_progress(10, 0, None, 0.05).events_to_goal == MIN_EVENTS  # never fewer than the minimum
    assert technique_progress(0, 0, None, 0.005).events_to_goal is None  # nothing to extrapolate from
    assert technique_progress(1_000, 80, None, None).events_to_goal is None  # no goal


def test_the_goal_needs_every_technique_narrow_enough_and_the_minimum_of_events() -> None:
    goal = 0.02
    narrow = technique_progress(MIN_EVENTS, 0, None, goal)
    assert narrow.half_width <= goal
    wide = technique_progress(MIN_EVENTS, MIN_EVENTS // 2, None, goal)  # 50%: ±2.2 points
    assert wide.half_width > goal
    few = technique_progress(MIN_EVENTS - 1, 0, None, goal)  # narrow enough, but too few events
    assert few.half_width <= goal
    assert goal_reached({"a": narrow, "b": narrow}, goal)
    assert not goal_reached({"a": narrow, "b": wide}, goal)
    assert not goal_reached({"a": narrow, "b": few}, goal)
    assert not goal_reached({"a": narrow}, None)
    assert not goal_reached({}, goal)


def test_eta_is_the_slowest_technique_at_its_own_rate() -> None:
    goal = 0.005
    ajax = technique_progress(1_000, 80, None, goal)  # needs about 11,300 events
    keepalive = technique_progress(1_000, 0, None, goal)  # needs MIN_EVENTS
    assert ajax.events_to_goal is not None
    seconds = eta({"ajax": ajax, "pixel-keepalive": keepalive}, elapsed=10.0)  # 100 events/s each
    assert seconds == pytest.approx((ajax.events_to_goal - 1_000) / 100)
    done = technique_progress(20_000, 0, None, goal)
    assert eta({"x": done}, elapsed=10.0) == 0.0
    assert eta({"x": technique_progress(0, 0, None, goal)}, elapsed=10.0) is None
    assert eta({"x": ajax}, elapsed=0.0) is None


def test_precision_points_are_a_half_width_goal() -> None:
    assert goal_of(0.5) == 0.005
    assert goal_of(0.0) is None  # the default: off


def test_the_option_says_what_it_needs() -> None:
    option = next(o for o in OPTIONS if o.name == "precision")
    assert option.default == 0.0 and option.env == "LOSSBENCH_PRECISION"
    assert f"{MIN_EVENTS:,} events" in option.help and "±PRECISION percentage points" in option.help


def test_a_snapshot_counts_events_per_second_over_the_last_seconds() -> None:
    clock = Clock()
    live = LiveLoss(("ajax", "pixel"), {"ajax": 0.08, "pixel": 0.03}, goal=0.02, duration=None, clock=clock)
    live.start(duration=60.0, goal=0.02)
    first = live.snapshot(stats({("e", "ajax"): (0, 0)}), state="spawning", users=10)
    assert (first.events, first.events_per_second, first.elapsed) == (0, 0.0, 0.0)
    assert first.techniques["pixel"].sent == 0 and first.eta is None and not first.reached
    for second in range(1, 21):  # 200 events a second of each technique, 10% of ajax and none of pixel lost
        clock.now += 1.0
        n = 200 * second
        progress = live.snapshot(
            stats({("e", "ajax"): (n, n // 10), ("e", "pixel"): (n, 0)}), state="running", users=10
        )
    assert progress.elapsed == 20.0 and progress.duration == 60.0 and progress.users == 10
    assert progress.events == 8_000
    assert progress.events_per_second == pytest.approx(400.0)
    assert clock.now - live.recent[0][0] <= RATE_WINDOW + 1
    assert progress.techniques["ajax"].predicted == 0.08
    assert progress.reached  # 4,000 events each: ajax ±0.93 points, pixel ±0.05
    assert progress.eta == 0.0 and progress.precision == 0.02 and progress.min_events == MIN_EVENTS
    assert live.last is progress


def test_progress_json_is_written_whole_and_read_back(tmp_path: Path) -> None:
    live = LiveLoss(TECHNIQUES, {}, goal=None, duration=10.0, clock=Clock())
    progress = live.snapshot(stats({("e", "ajax"): (500, 40)}), state="running", users=5)
    path = tmp_path / FILE_NAME
    write_progress(path, progress)
    assert read_progress(path) == progress
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # no temporary file left
    assert read_progress(tmp_path / "missing.json") is None
    path.write_text('{"schema": "lossbench.progress/0"}')
    assert read_progress(path) is None
    path.write_text("{half")
    assert read_progress(path) is None


def test_the_loss_tab_rows_have_each_technique_with_its_interval_and_prediction() -> None:
    live = LiveLoss(
        ("ajax", "pixel"), {"ajax": 0.079, "pixel": 0.031}, goal=0.005, duration=60.0, clock=Clock()
    )
    progress = live.snapshot(
        stats({("e", "ajax"): (1_000, 80), ("e", "pixel"): (1_000, 30)}), state="running", users=5
    )
    rows = loss_rows(progress)
    assert [r["technique"] for r in rows] == ["ajax", "pixel", "goal"]
    assert rows[0] == {
        "technique": "ajax",
        "sent": "1,000",
        "lost": "80",
        "loss": "8.0%",
        "interval": "[6.5, 9.8]",
        "width": "±1.69",
        "predicted": "7.9%",
    }
    assert rows[2]["width"] == "±0.5" and rows[2]["loss"] == goal_words(progress)
    columns = {c["key"] for c in LOSS_TABLE["structure"]}
    assert set(rows[0]) == columns
    assert loss_rows(None) == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"precision": None}, ""),
        ({"reached": True}, "goal ±0.5 points: reached"),
        ({"eta": None}, "goal ±0.5 points: too early to say when"),
        ({"eta": 30.0}, "goal ±0.5 points in about 30 s"),
        ({"eta": 300.0}, "goal ±0.5 points: not within the 90 s limit at this rate (about 300 s)"),
    ],
)
def test_goal_words(changes: dict[str, object], words: str) -> None:
    base = Progress(
        state="running",
        elapsed=20.0,
        duration=90.0,
        users=1,
        events=0,
        events_per_second=0.0,
        precision=0.005,
        eta=None,
        reached=False,
        min_events=MIN_EVENTS,
        techniques={},
        updated=0.0,
    )
    assert goal_words(msgspec.structs.replace(base, **changes)) == words
