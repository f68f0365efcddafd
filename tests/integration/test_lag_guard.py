"""The lag guard: a run whose load generator falls behind its intended timeline is stopped, with a message
that says so, and its summary carries the warning. The lag is real: the test pauses the Locust process
(SIGSTOP, SIGCONT) on and off, so every event whose last stage should end during a pause ends late."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lossbench.contract.progress import read_progress
from support import ROOT, wait_until

PAUSE = 0.15  # seconds paused, then as long running: about half the events end up to 150 ms late


def test_a_lagging_run_is_stopped_and_its_summary_says_why(tmp_path: Path) -> None:
    run_dir = tmp_path / "lag"
    proc = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", "scenarios/all.py", "--headless", "-u", "40", "-r", "40",
         "-t", "60s", "--run-dir", str(run_dir), "--network-profile", "3G", "--lag-stop", "3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        progress_path = run_dir / "progress.json"

        def events() -> bool:
            progress = read_progress(progress_path)
            return progress is not None and progress.events > 0

        assert wait_until(events, timeout=30), "no events reported"
        started = time.monotonic()
        while proc.poll() is None and time.monotonic() - started < 40:
            progress = read_progress(progress_path)
            if progress is not None and progress.stopped:
                break
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(PAUSE)
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(PAUSE)
        lagged_for = time.monotonic() - started
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-2000:] + err[-3000:]
    assert lagged_for < 30, f"the guard did not stop the run after {lagged_for:.0f} s of lag"
    run = json.loads((run_dir / "run.json").read_text())
    stopped = run["lag_stopped"]
    assert run["lag_stop"] == 3.0 and stopped["over_for"] >= 3.0 and stopped["at"] < 45
    assert stopped["p90"] > stopped["guard"] == stopped["limit"] == 0.03  # 3G: 10% of 300 ms
    assert stopped["message"].startswith("the load generator lagged: its p90 timing error over the last 10 s")
    assert "lossbench: the load generator lagged" in err  # Locust's log says it as it stops
    final = read_progress(run_dir / "progress.json")
    assert final is not None and final.state == "stopped" and final.stopped == stopped["message"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["timing"]["flagged"]
    assert f"stopped early: {stopped['message']}" in summary["warnings"]
    assert "stopped early: the load generator lagged" in out  # the loss table's warnings
    assert all(row["sent"] > 0 for row in summary["techniques"].values())  # the ledgers were closed whole
    assert all(ledger["complete"] for ledger in summary["ledgers"])
