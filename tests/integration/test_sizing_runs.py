"""Sizing with real probes: Locust and the reference collector on loopback, as lossbench run sizes its load.

The same sizing twice in one test: on the machine as it is, then with the load generator slowed: a CPU
budget of half its time in 50 ms slices, as a cgroup's ``cpu.max`` of 50 ms per 100 ms gives it (the test
stops and continues the probes' Locust processes). The slowed generator must get fewer tabs. The plan
starts at 200 tabs here (200, 100, 50) to keep the test short.

Busy loops beside the generator do not make a robust test here: in the generator's own session they hardly
slow it (it sleeps between events and preempts them when it wakes), and what they do varies from probe
to probe (pinned beside three of them: 200 tabs 11 ms at p90, 100 tabs 50 ms, 50 tabs 5 ms).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lossbench import sizing
from lossbench.runner import RunOptions, run_measured
from lossbench.sizing import MIN_USERS, Probe, size_load

RUNNING = STOPPED = 0.05  # seconds: the budget's slices


def locust_children() -> list[int]:
    """The probes' Locust processes: this process's children that run Locust, and their workers (with
    ``--processes 2`` the workers are the master's children, and they play the tabs)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found = []
    for pid, ppid in parents.items():
        with contextlib.suppress(OSError):
            if ppid == os.getpid() and b"locust" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    found += [pid for pid, ppid in parents.items() if ppid in found]
    return found


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


@contextlib.contextmanager
def cpu_budget() -> Iterator[None]:
    """Locust children get the CPU half the time, in slices of 50 ms."""
    done = threading.Event()

    def throttle() -> None:
        while not done.is_set():
            pids = locust_children()
            signal_all(pids, signal.SIGSTOP)
            time.sleep(STOPPED)
            signal_all(pids, signal.SIGCONT)
            time.sleep(RUNNING)

    thread = threading.Thread(target=throttle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        signal_all(locust_children(), signal.SIGCONT)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the probes in /proc (Linux)")
def test_sizing_picks_fewer_tabs_when_the_generator_is_slowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sizing, "CAP_USERS", 200)
    said: list[str] = []
    options = RunOptions(out=tmp_path, duration=30.0)
    free = size_load(options, tmp_path / "free", said.append)
    assert not (tmp_path / "free").exists()  # the probes' ledgers are gone
    with cpu_budget():
        slowed = size_load(options, tmp_path / "slowed", said.append)
    report = "\n".join(said)
    assert free.users > MIN_USERS, report  # else the machine is too busy to show a difference
    assert slowed.users < free.users, report
    slowed_first, free_first = slowed.probes[0], free.probes[0]
    assert slowed_first.users == free_first.users == 200
    assert slowed_first.p90 is not None and free_first.p90 is not None
    assert slowed_first.p90 > free_first.p90, report  # the same 200 tabs lag more when slowed
    print(report)  # pytest -s shows the probes


@pytest.fixture
def quick_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sizing's windows shortened (1 s to settle, 1 s measured, 0.5 s for its events to finish), and its
    loads small: 20 tabs, then 10."""
    for name, value in (
        ("SETTLE", 1.0),
        ("WINDOW", 1.0),
        ("TAIL", 0.5),
        ("CAP_USERS", 20),
        ("MIN_USERS", 10),
    ):
        monkeypatch.setattr(sizing, name, value)


def test_a_sized_run_keeps_the_load_its_first_seconds_held(tmp_path: Path, quick_windows: None) -> None:
    said: list[str] = []
    result = run_measured(RunOptions(out=tmp_path, run_id="held", duration=6.0, size=True), said.append)
    report = "\n".join(said)
    record = result.summary.run["sizing"]
    assert record["in_run"] is True and record["users"] == 20 == result.summary.run["users"], report
    assert [p["ok"] for p in record["probes"]] == [True], report
    kept = next(i for i, line in enumerate(said) if line.endswith("in the run's first seconds: kept"))
    assert kept < next(i for i, line in enumerate(said) if line.startswith("load finished")), report
    assert not (tmp_path / "held" / "sizing").exists()  # no probe of its own


def test_a_sized_run_that_lagged_at_first_starts_again_without_a_trace(
    tmp_path: Path, quick_windows: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_measure = sizing.measure

    def lagging_above_ten_tabs(
        users: int, processes: int, events: list[sizing.Timed], seconds: float
    ) -> Probe:
        probe = real_measure(users, processes, events, seconds)
        return replace(probe, p90=1.0) if users > 10 else probe

    monkeypatch.setattr(sizing, "measure", lagging_above_ten_tabs)
    said: list[str] = []
    result = run_measured(RunOptions(out=tmp_path, run_id="again", duration=6.0, size=True), said.append)
    report = "\n".join(said)
    record = result.summary.run["sizing"]
    assert [(p["users"], p["ok"]) for p in record["probes"]] == [(20, False), (10, True)], report
    assert record["in_run"] is False and result.summary.run["users"] == 10, report
    assert any(line.endswith("the run starts again with fewer tabs") for line in said), report
    assert sum(line.startswith("lossbench run again:") for line in said) == 2, report
    # nothing of the first attempt is left: every event received was sent by the run that stayed
    assert result.summary.phantoms == 0 and not (tmp_path / "again" / "sizing").exists(), report
    sent = sum(t.sent for t in result.summary.techniques.values())
    assert 0 < sum(t.received for t in result.summary.techniques.values()) <= sent
