"""The calibration figures from two summaries (no Chromium here: ``tests/browser`` plays the real thing),
their place in summary.json, and the report's words and chart for them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import msgspec
import pytest
from markupsafe import escape

from lossbench.analysis.calibration import SOCKET_RUN, attach, calibration_table, with_calibration
from lossbench.analysis.compare import compare
from lossbench.contract.summary import Summary, TechniqueFigures, load_summary, summary_json
from lossbench.report.charts import render_charts
from lossbench.report.html import summary_html
from lossbench.report.markdown import summary_markdown
from lossbench.stats import wilson_interval

STORED = Path(__file__).parents[2] / "data" / "run-before" / "summary.before.json"


def _lossier(figures: TechniqueFigures, lost: int) -> TechniqueFigures:
    """The same technique losing ``lost`` events, all in the DNS stage."""
    return msgspec.structs.replace(
        figures,
        received=figures.sent - lost,
        lost=lost,
        loss=lost / figures.sent,
        ci95=wilson_interval(lost, figures.sent),
        by_stage={stage: 0 for stage in figures.by_stage} | {"dns": lost},
    )


@pytest.fixture
def clients() -> tuple[Summary, Summary]:
    """(Chromium, socket): the stored run as the socket client; Chromium loses far more pixels (40 of 83
    against 4) and also played a beacon, which the socket client does not have."""
    socket = load_summary(STORED)
    techniques = dict(socket.techniques)
    techniques["pixel"] = _lossier(techniques["pixel"], 40)
    techniques["beacon"] = _lossier(techniques["ajax"], 0)
    chromium = msgspec.structs.replace(
        socket, techniques=techniques, run={**socket.run, "client": "chromium"}
    )
    return chromium, socket


def test_each_technique_gets_both_clients_and_their_difference(clients: tuple[Summary, Summary]) -> None:
    chromium, socket = clients
    cal = with_calibration(chromium, socket, "socket").calibration
    assert cal is not None and list(cal) == list(chromium.techniques)
    same = cal["ajax"]
    assert same.chromium == same.socket and same.difference is not None
    assert same.difference.loss == 0.0 and not same.difference.significant
    assert same.chromium is not None
    assert same.chromium.lost_by_stage == {"dns": 1, "connect": 3, "preflight": 5}
    assert same.text == (
        "ajax: the clients agree within noise — Chromium loses 10.8% [5.8, 19.3] of 83, the socket client "
        "10.8% [5.8, 19.3] of 83 (p = 1.00)"
    )
    pixel = cal["pixel"]
    assert pixel.difference is not None and pixel.difference.significant
    assert pixel.difference.loss == pytest.approx(36 / 83)
    assert pixel.difference.p_value < 0.001
    assert pixel.text == (
        "pixel: the clients DISAGREE — Chromium loses 48.2% [37.8, 58.8] of 83, the socket client 4.8% "
        "[1.9, 11.7] of 83: Chromium loses 43.4 points more (p < 0.001); lost by stage in Chromium dns 40, "
        "in the socket client dns 1, connect 3"
    )
    beacon = cal["beacon"]
    assert beacon.socket is None and beacon.difference is None
    assert (
        beacon.text == "beacon: Chromium loses 0.0% [0.0, 4.4] of 83; the socket client has no such technique"
    )
    table = calibration_table(cal)
    assert len(table) == 1 + len(cal) and table[2].split()[:2] == ["pixel", "48.2%"]


def test_the_calibration_is_in_summary_json_only_for_a_calibration(
    clients: tuple[Summary, Summary], tmp_path: Path
) -> None:
    chromium, socket = clients
    assert "calibration" not in json.loads(summary_json(chromium))  # any other run: the /2 shape
    summary = with_calibration(chromium, socket, "socket")
    doc = json.loads(summary_json(summary))
    assert doc["calibration_runs"] == {"chromium": ".", "socket": "socket"}
    assert doc["calibration"]["beacon"]["socket"] is None
    path = tmp_path / "summary.json"
    path.write_text(summary_json(summary), encoding="utf-8")
    assert load_summary(path) == summary


def test_the_report_shows_the_calibration(clients: tuple[Summary, Summary], tmp_path: Path) -> None:
    summary = with_calibration(*clients, "socket")
    assert summary.calibration is not None
    pixel = summary.calibration["pixel"].text
    markdown = summary_markdown(summary, charts=[])
    assert "## Calibration: Chromium vs the socket client" in markdown
    assert "- pixel: the clients DISAGREE — Chromium loses 48.2% [37.8, 58.8] of 83" in markdown
    html = summary_html(summary, {})
    assert "<h2>Calibration: Chromium vs the socket client</h2>" in html
    assert f"<li>{escape(pixel)}</li>" in html
    assert "Calibration" not in summary_markdown(clients[0], charts=[])
    charts = render_charts(summary, tmp_path / "charts")
    assert "calibration" in charts and charts["calibration"].stat().st_size > 0
    assert "calibration" not in render_charts(clients[0], tmp_path / "charts")


def test_comparing_a_calibration_again_keeps_it(tmp_path: Path) -> None:
    """A calibration's run directory (Chromium's ledgers, the socket client's run in ``socket/``) compared
    again gets its calibration again; any other run gets none. Here both clients are the stored run."""
    run = tmp_path / "run"
    shutil.copytree(STORED.parent, run, ignore=shutil.ignore_patterns("*.before.*"))
    assert attach(run, compare(run)).calibration is None  # not a calibration: no client in run.json
    shutil.copytree(run, tmp_path / "socket")
    (tmp_path / "socket").rename(run / SOCKET_RUN)
    run_json = run / "run.json"
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "client": "chromium"}))
    summary = attach(run, compare(run))
    assert summary.calibration is not None and set(summary.calibration) == set(summary.techniques)
    assert all("agree within noise" in entry.text for entry in summary.calibration.values())
    assert (run / SOCKET_RUN / "summary.json").is_file()
