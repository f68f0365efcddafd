"""``lossbench calibrate`` end to end (a short one, as CI runs it), the clear error when Chromium is
missing, and how a visit's idle time is compressed for the browser."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from browser_support import needs_chromium
from lossbench.calibrate import BrowserRunOptions, calibrate
from lossbench.cli import main
from lossbench.contract.summary import load_summary
from lossbench.contract.techniques import BROWSER_TECHNIQUES, TECHNIQUES
from lossbench.loadgen.browser import chromium
from lossbench.loadgen.browser.player import schedule
from lossbench.model.profiles import NetworkDraw
from lossbench.model.visits import PlannedEvent, Visit


@needs_chromium
@pytest.mark.browser
def test_short_calibration(tmp_path: Path) -> None:
    said: list[str] = []
    options = BrowserRunOptions(
        out=tmp_path, run_id="cal", visits=6, profile="3G", exit_model="mix", seed=3, workers=3
    )
    run_dir, summary = calibrate(options, say=said.append)
    cal = summary.calibration
    assert cal is not None and set(cal) == set(TECHNIQUES) | set(BROWSER_TECHNIQUES)
    for tech in TECHNIQUES:
        chromium_entry, socket_entry = cal[tech].chromium, cal[tech].socket
        assert chromium_entry is not None and socket_entry is not None
        assert chromium_entry.sent == socket_entry.sent > 0  # the same visits, event for event
        difference = cal[tech].difference
        assert difference is not None and 0.0 <= difference.p_value <= 1.0
    for tech in BROWSER_TECHNIQUES:
        browser_only = cal[tech].chromium
        assert cal[tech].socket is None and browser_only is not None and browser_only.sent > 0
    assert summary.run["client"] == "chromium"
    assert summary.calibration_runs is not None and summary.calibration_runs.socket == "socket"
    assert load_summary(run_dir / "summary.json") == summary  # written as it was returned, and read back
    assert (run_dir / "charts" / "calibration.png").is_file()
    assert "Calibration: Chromium vs the socket client" in (run_dir / "report.md").read_text()
    assert (run_dir / "socket" / "summary.json").is_file()
    assert any(line.startswith("ajax: ") for line in said)
    assert main(["compare", str(run_dir)]) == 0  # compare works on a browser run unchanged,
    assert load_summary(run_dir / "summary.json").calibration == cal  # and keeps a calibration's


@needs_chromium
@pytest.mark.browser
def test_run_with_the_chromium_client(tmp_path: Path) -> None:
    """``lossbench run --client chromium``: a run directory of the usual shape, compared and reported."""
    argv = ["run", "--client", "chromium", "--visits", "3", "--workers", "3", "--profile", "Cable"]
    argv += [
        "--exit-model",
        "outbound",
        "--techniques",
        "pixel,beacon",
        "--out",
        str(tmp_path),
        "--run-id",
        "r",
    ]
    assert main(argv) == 0
    run_dir = tmp_path / "r"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run"]["client"] == "chromium"
    assert {t: summary["techniques"][t]["sent"] for t in ("pixel", "beacon")} == {"pixel": 6, "beacon": 6}
    assert (run_dir / "report.html").is_file()


def test_missing_chromium_names_the_install_lines(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setattr(chromium, "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(chromium.ChromiumMissing) as excinfo:
        chromium.chromium_path()
    assert "apt-get install -y chromium" in str(excinfo.value)
    assert "pip install '.[browser]'" in str(excinfo.value)
    status = main(["calibrate", "--visits", "2", "--out", str(tmp_path), "--run-id", "x"])
    assert status == 2
    assert "apt-get install -y chromium" in capsys.readouterr().err


def test_launch_is_fenced_to_loopback() -> None:
    args = chromium.launch_args(4242)
    joined = " ".join(args)
    assert "--host-resolver-rules=MAP *.lossbench.test 127.0.0.1" in joined and "MAP * ~NOTFOUND" in joined
    assert "EXCLUDE 127.0.0.1" in joined
    for flag in ("--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--no-first-run", "--disable-quic"):  # fmt: skip
        assert flag in args
    assert "--proxy-server=socks5://127.0.0.1:4242" in args
    assert not any(a.startswith("--disable-features") for a in args)  # would replace Playwright's list


def test_idle_gaps_are_compressed_and_visit_time_is_kept() -> None:
    visit = Visit(
        NetworkDraw(0.3, 0.3, None),
        (PlannedEvent("pageview", 1.5), PlannedEvent("click", 2.0), PlannedEvent("click", 40.0)),
        41.0,
        "unload",
    )
    timing = schedule(visit, max_gap=2.0)
    assert timing.offsets == pytest.approx([1.5, 2.0, 4.0])  # the 38 s gap is played as 2 s
    assert timing.leave == pytest.approx(5.0)  # the exit keeps its 1 s after the last event
    assert timing.breakpoints == [(0.0, 0.0), (4.0, 40.0)]
    never = schedule(Visit(visit.net, visit.events, math.inf, "unload"), max_gap=2.0)
    assert never.leave is None
