"""The running loss while the load runs: --precision stops a run once every interval is narrow enough, and
Locust's web UI shows the Loss tab. Short real runs on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from lossbench.contract.techniques import TECHNIQUES
from support import ROOT, free_port, wait_until

GOAL_POINTS = 2.0


def test_precision_stops_the_run_once_every_interval_is_within_the_goal(tmp_path: Path) -> None:
    """FIOS (4 ms RTT) with the page gone 8 ms after each event: short visits, so events come fast and
    ajax and pixel lose most of theirs. ±2 points then needs about 2,000 events of each technique (the
    minimum): about 5 s here, against a limit of 30 s (room for a busy machine). A run that did not stop
    would last the 30 s."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "run", "--duration", "30", "--users", "40",
         "--processes", "2", "--profile", "FIOS", "--exit-model", "fixed:0.008",
         "--precision", f"{GOAL_POINTS:g}", "--out", str(tmp_path), "--run-id", "p"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    run_dir = tmp_path / "p"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["precision"] == GOAL_POINTS
    assert run["precision_reached"] is not None and run["precision_reached"] < 20, run
    assert run["ended"] - run["started"] < 25, run  # the load stopped well before its 30 s
    assert "or until every interval is within ±2 points" in result.stdout
    assert "precision reached after" in result.stdout  # plain lines: stdout is not a terminal here
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["reached"] and progress["state"] == "stopped"
    timing = progress["timing"]  # the workers' timing errors reached the master with their reports
    assert timing["events"] > 0 and timing["p90"] is not None and timing["limit"] == pytest.approx(0.0004)
    assert progress["stopped"] is None  # the goal stopped it, not the lag guard
    assert run["sizing"] == {"skipped": "--users or --processes given"}
    assert "load: 40 tabs in 2 process(es), as given (not sized)" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["techniques"]) == set(TECHNIQUES)
    for name, row in summary["techniques"].items():  # the ledgers' join: at least as many events
        lo, hi = row["ci95"]
        assert (hi - lo) / 2 <= GOAL_POINTS / 100, (name, row["ci95"])
        assert row["sent"] >= progress["min_events"], (name, row["sent"])
    assert wall < 60, f"lossbench run took {wall:.0f} s"


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=3) as response:
        body: bytes = response.read()
        return body


def test_the_web_ui_shows_the_loss_tab_while_the_load_runs(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", "scenarios/pixel.py", "--web-host", "127.0.0.1",
         "--web-port", str(port), "--autostart", "--autoquit", "2", "-u", "10", "-r", "10", "-t", "8s",
         "--run-dir", str(tmp_path / "ui"), "--precision", "0.5"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    techniques = {"pixel", "pixel-prewarm", "pixel-keepalive", "pixel-preconnect"}
    try:
        seen: dict[str, Any] = {}

        def running_with_events() -> bool:
            try:
                snapshot = json.loads(get(f"{base}/lossbench/progress"))
            except OSError:
                return False
            seen["progress"] = snapshot
            return bool(snapshot) and snapshot["state"] == "running" and snapshot["events"] > 20

        assert wait_until(running_with_events, timeout=30), seen
        progress = seen["progress"]
        assert set(progress["techniques"]) == techniques
        assert progress["precision"] == 0.005 and not progress["reached"]
        for row in progress["techniques"].values():
            assert 0 <= row["ci95"][0] <= row["loss"] <= row["ci95"][1] <= 1
            assert row["predicted"] is not None

        stats = json.loads(get(f"{base}/stats/requests"))  # what the web UI polls
        tab = next(s for s in stats["extended_stats"] if s["key"] == "loss")
        rows = {row["technique"]: row for row in tab["data"]}
        assert techniques | {"goal"} == set(rows)
        for name in techniques:
            assert rows[name]["interval"].startswith("[") and rows[name]["predicted"].endswith("%"), rows[
                name
            ]

        page = get(f"{base}/").decode()  # the tab and its columns in the page's template arguments
        assert '"extended_tabs": [{"key": "loss", "title": "Loss"}]' in page
        assert '"extended_tables": [{"key": "loss"' in page and "Cut before written" in page
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # SIGTERM first: Locust then stops the collector it started
            proc.terminate()
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "pixel-keepalive" in out  # the loss table at the end
