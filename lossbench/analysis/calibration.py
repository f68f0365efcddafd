"""The calibration figures: the same visits in Chromium and in the socket client, side by side.

Given the two runs' summaries (each compared as any run is), the Chromium summary gets a ``calibration``
entry per technique: each client's sent, received, loss and interval, the lost events by the stage they
were in, and the difference with its two-sided test. Where the clients disagree the sentence says so with
the numbers; nothing is tuned away (the next issue brings the socket client into agreement with Chromium).
Playing the visits and comparing the ledgers is ``lossbench.calibrate``'s job.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from lossbench.analysis.compare import compare, write_summary
from lossbench.analysis.stats import format_p
from lossbench.contract.summary import (
    CalibrationDifference,
    CalibrationEntry,
    CalibrationRuns,
    ClientFigures,
    Summary,
    TechniqueFigures,
    format_pct,
    format_pct_interval,
)
from lossbench.stats import ALPHA, two_proportion_test

SOCKET_RUN = "socket"
"""The socket client's run directory inside a calibration's (Chromium's) run directory."""

TEST = "two-proportion z-test (Fisher's exact test when an expected count is below 5)"
"""The test ``difference`` makes (``lossbench.stats.two_proportion_test``), as the summary names it."""


def client_figures(figures: TechniqueFigures | None) -> ClientFigures | None:
    """One client's figures for a technique, from its summary's technique entry."""
    if figures is None:
        return None
    return ClientFigures(
        sent=figures.sent,
        received=figures.received,
        lost=figures.lost,
        loss=figures.loss,
        ci95=figures.ci95,
        lost_by_stage={stage: n for stage, n in figures.by_stage.items() if n},
    )


def difference(chromium: ClientFigures, socket: ClientFigures) -> CalibrationDifference:
    """Chromium's loss minus the socket client's, with the two-proportion test (Fisher when small)."""
    p = two_proportion_test(chromium.lost, chromium.sent, socket.lost, socket.sent)
    return CalibrationDifference(
        loss=chromium.loss - socket.loss, p_value=p, significant=p < ALPHA, test=TEST
    )


def calibration(chromium: Summary, socket: Summary) -> dict[str, CalibrationEntry]:
    """Per technique of the Chromium run: both clients and their difference."""
    out: dict[str, CalibrationEntry] = {}
    for tech, figures in chromium.techniques.items():
        mine, theirs = client_figures(figures), client_figures(socket.techniques.get(tech))
        diff = None
        if mine is not None and theirs is not None and mine.sent and theirs.sent:
            diff = difference(mine, theirs)
        text = disagreement_text(tech, mine, theirs, diff)
        out[tech] = CalibrationEntry(chromium=mine, socket=theirs, difference=diff, text=text)
    return out


LATE_EXIT = 0.02
"""Seconds of median exit lag past which a calibration says its Chromium losses read low."""


def with_calibration(chromium: Summary, socket: Summary, socket_dir: str = SOCKET_RUN) -> Summary:
    """The Chromium run's summary with the ``calibration`` object and where both runs are, and a warning
    when Chromium's pages went away late (that gives its requests more time than the socket client's)."""
    warnings = list(chromium.warnings)
    lag = chromium.timing
    if lag.p50 is not None and lag.p50 > LATE_EXIT:
        p90 = f", {lag.p90:.3f} s (p90)" if lag.p90 is not None else ""
        warnings.append(
            f"calibration: Chromium's pages went away {lag.p50:.3f} s (median){p90} after their planned "
            "exit; a late exit gives Chromium's requests more time than the socket client's, so its losses "
            "read too low: calibrate on an idle machine"
        )
    return msgspec.structs.replace(
        chromium,
        calibration=calibration(chromium, socket),
        calibration_runs=CalibrationRuns(chromium=".", socket=socket_dir),
        warnings=warnings,
    )


def attach(run_dir: str | os.PathLike[str], summary: Summary) -> Summary:
    """``summary`` (just compared from ``run_dir``) with its calibration when ``run_dir`` is a calibration's
    Chromium run (``SOCKET_RUN`` beside its ledgers holds the socket client's run, compared here and its
    summary written): so that comparing a calibration again keeps it. Any other run's is returned as it is.
    Raises LedgerError when the socket client's ledgers cannot be read."""
    socket_dir = Path(run_dir) / SOCKET_RUN
    if summary.run.get("client") != "chromium" or not (socket_dir / "run.json").is_file():
        return summary
    socket = compare(socket_dir)
    write_summary(socket, socket_dir)
    return with_calibration(summary, socket)


def disagreement_text(
    tech: str, c: ClientFigures | None, s: ClientFigures | None, d: CalibrationDifference | None
) -> str:
    """One sentence: whether the clients agree on the technique, with both losses and the test."""
    if c is None:
        return f"{tech}: no Chromium events"
    chromium_loss = f"Chromium loses {format_pct(c.loss)} {format_pct_interval(c.ci95)} of {c.sent:,}"
    if s is None or d is None:
        return f"{tech}: {chromium_loss}; the socket client has no such technique"
    socket_loss = f"the socket client {format_pct(s.loss)} {format_pct_interval(s.ci95)} of {s.sent:,}"
    if not d.significant:
        return (
            f"{tech}: the clients agree within noise — {chromium_loss}, {socket_loss} ({format_p(d.p_value)})"
        )
    side = "more" if d.loss > 0 else "less"
    return (
        f"{tech}: the clients DISAGREE — {chromium_loss}, {socket_loss}: Chromium loses "
        f"{abs(d.loss) * 100:.1f} points {side} ({format_p(d.p_value)}); lost by stage in Chromium "
        f"{_stages(c)}, in the socket client {_stages(s)}"
    )


def _stages(figures: ClientFigures) -> str:
    return ", ".join(f"{stage} {n}" for stage, n in figures.lost_by_stage.items()) or "none"


def calibration_table(cal: dict[str, CalibrationEntry]) -> list[str]:
    """The calibration as a text table, one line per technique (``lossbench calibrate`` prints it)."""

    def cell(f: ClientFigures | None) -> str:
        return f"{format_pct(f.loss)} {format_pct_interval(f.ci95)} n={f.sent}" if f else "-"

    rows = [f"{'technique':<16} {'chromium loss [95%]':>26} {'socket loss [95%]':>26} {'diff':>8}  p"]
    for tech, entry in cal.items():
        d = entry.difference
        diff = f"{d.loss * 100:+.1f}" if d else "-"
        p = format_p(d.p_value) if d else ""
        rows.append(f"{tech:<16} {cell(entry.chromium):>26} {cell(entry.socket):>26} {diff:>8}  {p}")
    return rows
