"""Issue 14's acceptance in miniature: ``lossbench sweep`` of three short points, each a real run (the
reference collector and Locust on loopback), into one directory that compare and report read as usual."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lossbench.contract.sweep import load_sweep
from lossbench.contract.techniques import TECHNIQUES
from support import ROOT


def lossbench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lossbench.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_three_point_sweep_end_to_end(tmp_path: Path) -> None:
    result = lossbench(
        "sweep", "--vary", "users=10,20,30", "--duration", "3", "--processes", "1", "--seed", "5",
        "--out", str(tmp_path), "--run-id", "s",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    folder = tmp_path / "s"
    document = load_sweep(folder / "sweep.json")
    assert document.state == "complete" and document.missing == [] and document.stopped is None
    assert [p.value for p in document.points] == [10, 20, 30]
    assert document.fixed["seed"] == 5 and document.fixed["duration"] == 3.0
    for k, point in enumerate(document.points, start=1):
        run_dir = folder / point.run_dir
        run = json.loads((run_dir / "run.json").read_text())
        assert (run["users"], run["seed"]) == (point.value, 5)  # one option changed, the seed the same
        assert (run_dir / "summary.json").is_file() and (run_dir / "report.html").is_file()
        assert set(point.techniques) == set(TECHNIQUES)
        assert point.sent > 0 and point.events_per_second > 0
        assert all(
            t.predicted_loss is not None and t.departure is not None for t in point.techniques.values()
        )
        assert f"point {k} of 3, users={point.value}: " in result.stdout
    assert document.points[2].events_per_second > document.points[0].events_per_second
    assert len([f for f in document.findings if f.technique is not None]) >= len(TECHNIQUES)
    for finding in document.findings:
        assert finding.text in result.stdout
    page = (folder / "sweep.html").read_text()
    assert all(f'<a href="{p.run_dir}/report.html">' in page for p in document.points)
    assert (folder / "charts" / "sweep.png").read_bytes().startswith(b"\x89PNG")
    assert result.stdout.rstrip().endswith(f"report: {folder / 'sweep.html'}")

    # each point is a run directory as any other, and the sweep's page renders again from sweep.json
    compared = lossbench("compare", str(folder / document.points[1].run_dir))
    assert compared.returncode == 0, compared.stderr[-2000:]
    (folder / "sweep.md").unlink()
    reported = lossbench("report", str(folder))
    assert reported.returncode == 0, reported.stderr[-2000:]
    assert (folder / "sweep.md").is_file()
