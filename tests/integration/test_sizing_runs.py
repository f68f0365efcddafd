"""Sizing with real probes: Locust and the reference collector on loopback, as lossbench run sizes its load.

The same sizing twice in one test: on the machine as it is, then with the generator slowed (this process,
and so the collector and Locust, pinned to one CPU that two busy loops of the same session take): the
slowed generator must get fewer tabs. The plan starts at 200 tabs here (200, 100, 50) to keep the test
short. Measured here: 200 tabs in 2 processes at 1.7 ms free; pinned, 200 tabs in 1 process at 22 ms,
100 at 5.7 ms.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lossbench import sizing
from lossbench.runner import RunOptions
from lossbench.sizing import size_load

BUSY = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_sizing_picks_fewer_tabs_when_the_generator_is_slowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sizing, "CAP_USERS", 200)
    said: list[str] = []
    options = RunOptions(out=tmp_path, duration=30.0)
    free = size_load(options, tmp_path / "free", said.append)
    assert not (tmp_path / "free").exists()  # the probes' ledgers are gone
    assert free.probes and free.probes[0].users == 200 and free.probes[0].events > 0

    cpu = min(os.sched_getaffinity(0))
    affinity = os.sched_getaffinity(0)
    busy = [subprocess.Popen([sys.executable, "-c", BUSY, str(cpu)]) for _ in range(2)]
    try:
        os.sched_setaffinity(0, {cpu})  # the collector and Locust inherit it
        slowed = size_load(options, tmp_path / "slowed", said.append)
    finally:
        os.sched_setaffinity(0, affinity)
        for proc in busy:
            proc.kill()
            proc.wait()
    report = "\n".join(said)
    assert slowed.machine.cpus == 1 and slowed.processes == 1, report
    assert slowed.users < free.users, report
    slowed_first, free_first = slowed.probes[0], free.probes[0]
    assert slowed_first.p90 is not None and free_first.p90 is not None
    assert slowed_first.p90 > free_first.p90, report  # the same 200 tabs lag more on the slowed machine
    print(report)  # pytest -s shows the probes
