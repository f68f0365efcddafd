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
from pathlib import Path

import pytest

from lossbench import sizing
from lossbench.runner import RunOptions
from lossbench.sizing import MIN_USERS, size_load

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
