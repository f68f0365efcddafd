"""``lossbench calibrate`` end to end (a short one, as CI runs it), the clear error when Chromium is
missing, and how a visit's idle time is compressed for the browser."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from browser_support import needs_chromium
from lossbench.calibrate import (
    BrowserRunOptions,
    calibrate,
    draw_visits,
    spans,
    stored_options,
    stored_played,
)
from lossbench.cli import main
from lossbench.contract.ledger import micro
from lossbench.contract.summary import Summary, load_summary
from lossbench.contract.techniques import TECHNIQUES
from lossbench.loadgen.browser import chromium
from lossbench.loadgen.browser.player import schedule
from lossbench.model.profiles import NetworkDraw
from lossbench.model.visits import PlannedEvent, Visit
from lossbench.runner import RunError


@pytest.fixture(scope="module")
def short_calibration(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Summary, list[str]]:
    """A short calibration, as CI runs it: its run directory, summary and what it said."""
    said: list[str] = []
    options = BrowserRunOptions(
        out=tmp_path_factory.mktemp("calibrate"),
        run_id="cal",
        visits=6,
        profile="3G",
        exit_model="mix",
        seed=3,
        workers=3,
    )
    run_dir, summary = calibrate(options, say=said.append)
    return run_dir, summary, said


@needs_chromium
@pytest.mark.browser
def test_short_calibration(short_calibration: tuple[Path, Summary, list[str]]) -> None:
    run_dir, summary, said = short_calibration
    cal = summary.calibration
    assert cal is not None and set(cal) == set(TECHNIQUES)  # the socket client now plays all seven
    for tech in TECHNIQUES:
        chromium_entry, socket_entry = cal[tech].chromium, cal[tech].socket
        assert chromium_entry is not None and socket_entry is not None
        assert chromium_entry.sent == socket_entry.sent > 0  # the same visits, event for event
        difference = cal[tech].difference
        assert difference is not None and 0.0 <= difference.p_value <= 1.0
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
def test_browser_from_plays_only_the_socket_client(
    short_calibration: tuple[Path, Summary, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--browser-from: the stored Chromium half as it was, the socket client played again on the same
    visits (the draws taken from the stored run.json), compared and reported as a calibration."""
    stored, stored_summary, _ = short_calibration
    argv = ["calibrate", "--browser-from", str(stored), "--out", str(tmp_path), "--run-id", "again"]
    assert main([*argv, "--seed", "3", "--visits", "6"]) == 0  # given and agreeing: fine
    out = capsys.readouterr().out
    assert "not played again" in out and "chromium: 6 visits, 3 tabs" not in out
    run_dir = tmp_path / "again"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["browser_from"] == {"run_dir": str(stored.resolve()), "run_id": "cal"}
    assert run["run_id"] == "again" and run["seed"] == 3 and run["client"] == "chromium"
    for name in ("sent", "received"):
        assert sorted(p.name for p in (run_dir / name).iterdir()) == sorted(
            p.name for p in (stored / name).iterdir()
        )
    summary = load_summary(run_dir / "summary.json")
    cal, stored_cal = summary.calibration, stored_summary.calibration
    assert cal is not None and stored_cal is not None and set(cal) == set(stored_cal)
    for tech, entry in cal.items():
        assert entry.chromium == stored_cal[tech].chromium  # the stored half, unchanged
        if tech in TECHNIQUES:
            socket_entry, stored_socket = entry.socket, stored_cal[tech].socket
            assert socket_entry is not None and stored_socket is not None
            assert socket_entry.sent == stored_socket.sent  # the same visits, event for event
    socket_run = json.loads((run_dir / "socket" / "run.json").read_text())
    assert socket_run["techniques"] == list(TECHNIQUES) and socket_run["seed"] == 3
    assert (run_dir / "report.html").is_file()


def _stored_run(folder: Path, **keys: object) -> Path:
    """A stored Chromium half as far as --browser-from reads it before playing: run.json and its ledgers."""
    run = {
        "client": "chromium",
        "run_id": "old",
        "profile": "3G",
        "exit_model": "mix",
        "abort": "unload",
        "seed": 11,
        "visits": 40,
        "techniques": ["ajax", "pixel", "beacon"],
        "exit_how": "auto",
    }
    run.update(keys)
    folder.mkdir()
    (folder / "sent").mkdir()
    (folder / "received").mkdir()
    (folder / "run.json").write_text(json.dumps(run))
    return folder


@pytest.mark.parametrize(
    ("option", "value", "key"),
    [
        ("--seed", "12", "seed"),
        ("--exit-model", "outbound", "exit_model"),
        ("--visits", "41", "visits"),
        ("--techniques", "ajax,pixel", "techniques"),
        ("--cors-max-age", "60", "cors_max_age"),
    ],
)
def test_browser_from_refuses_options_that_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, key: str
) -> None:
    stored = _stored_run(tmp_path / "old")
    argv = ["calibrate", "--browser-from", str(stored), "--out", str(tmp_path), "--run-id", "new"]
    assert main([*argv, option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{option} {value} differs" in err and f"'s {key} " in err, err
    assert not (tmp_path / "new").exists()


def test_browser_from_takes_the_stored_options(tmp_path: Path) -> None:
    stored = _stored_run(tmp_path / "old", cors_max_age=600)
    options = stored_options(stored, BrowserRunOptions(seed=1, visits=3), {"profile": "3G"})
    assert (options.seed, options.visits, options.exit_model, options.cors_max_age) == (11, 40, "mix", 600)
    assert options.techniques == ("ajax", "pixel", "beacon")
    assert stored_options(_stored_run(tmp_path / "older"), options, {}).cors_max_age == 0  # before the option
    with pytest.raises(RunError, match="not a Chromium run"):
        stored_options(_stored_run(tmp_path / "socket", client="socket"), options, {})


def test_visits_played_by_a_stored_run(tmp_path: Path) -> None:
    """run.json's ranges; or, in a run made before they were recorded, the visits whose network draws its
    sent ledger holds."""
    assert spans([0, 1, 2, 5, 6, 9]) == [[0, 3], [5, 7], [9, 10]] and spans([]) == []
    options = BrowserRunOptions(visits=8, seed=5)
    visits = draw_visits(options)
    stored = _stored_run(tmp_path / "old", visits=8)
    assert stored_played(stored, {"player": {"played": [[0, 3], [5, 7]]}}, visits) == [0, 1, 2, 5, 6]
    assert stored_played(stored, {"player": {"visits": 8}}, visits) == list(range(8))
    lines = [
        {"id": f"{i:016x}", "rtt": micro(visits[i].net.rtt), "dns": micro(visits[i].net.dns)} for i in (1, 4)
    ]
    (stored / "sent" / "chromium-h-1.0.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert stored_played(stored, {"player": {"visits": 2}}, visits) == [1, 4]


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
