"""A non-editable install must run on its own: scenarios and report templates ship inside the wheel.

Building the wheel takes seconds; installing it with its dependencies into a fresh environment takes
minutes, so these tests check what the wheel carries, and that `lossbench run` finds its scenario from
another directory (the whole install is a manual check: `pip install .` in a new venv, then run).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from support import ROOT


def test_the_wheel_carries_the_scenarios_and_templates(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("lossbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for scenario in ("all.py", "pixel.py", "ajax.py"):
        assert f"lossbench/scenarios/{scenario}" in names
    templates = [n for n in names if n.startswith("lossbench/report/templates/")]
    assert templates, "the report's templates are not in the wheel"


def test_lossbench_run_finds_its_scenario_from_another_directory(tmp_path: Path) -> None:
    """Run from a directory with no scenarios/ in it: the scenario comes from the package."""
    result = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "run", "--duration", "3", "--users", "8", "--processes", "1",
         "--out", str(tmp_path / "results"), "--run-id", "elsewhere"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "results" / "elsewhere" / "summary.json").is_file()
    assert "pixel-keepalive" in result.stdout
