"""``lossbench calibrate``: the same visit draws in Chromium and in the socket client, side by side.

The run directory is the Chromium run (``sent/``, ``received/``, ``summary.json``); the socket client's run
is its ``socket/`` folder, a run directory of its own. Both are compared as any run is, and the Chromium
summary gets a ``calibration`` object: per technique, each client's sent, received, loss and interval,
the lost events by the stage they were in, and the difference with its two-sided test. Where they
disagree, the text says so with the numbers; nothing is tuned away (the next issue brings the socket
client into agreement with Chromium).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lossbench.runner import RunError
from lossbench.stats import ALPHA, format_p, format_pct, two_proportion_test

Say = Callable[[str], None]
CLIENTS = ("chromium", "socket")
LATE_EXIT = 0.02  # seconds of median exit lag past which a calibration says its Chromium losses read low


def client_entry(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """One client's figures for a technique, from its summary's technique entry."""
    if not data:
        return None
    return {
        "sent": data["sent"],
        "received": data["received"],
        "lost": data["lost"],
        "loss": data["loss"],
        "ci95": data["ci95"],
        "lost_by_stage": {k: v for k, v in (data.get("by_stage") or {}).items() if v},
    }


def difference(chromium: Mapping[str, Any], socket: Mapping[str, Any]) -> dict[str, Any]:
    """Chromium's loss minus the socket client's, with the two-proportion test (Fisher when small)."""
    p = two_proportion_test(chromium["lost"], chromium["sent"], socket["lost"], socket["sent"])
    diff = chromium["loss"] - socket["loss"]
    significant = p < ALPHA
    return {
        "loss": diff,
        "p_value": p,
        "significant": significant,
        "test": "two-proportion z-test (Fisher's exact test when an expected count is below 5)",
    }


def calibration(chromium: Mapping[str, Any], socket: Mapping[str, Any]) -> dict[str, Any]:
    """The ``calibration`` object: per technique of the Chromium run, both clients and their difference."""
    out: dict[str, Any] = {}
    socket_techs = socket.get("techniques") or {}
    for tech, data in (chromium.get("techniques") or {}).items():
        mine, theirs = client_entry(data), client_entry(socket_techs.get(tech))
        entry: dict[str, Any] = {"chromium": mine, "socket": theirs}
        if mine is not None and theirs is not None and mine["sent"] and theirs["sent"]:
            entry["difference"] = difference(mine, theirs)
        entry["text"] = disagreement_text(tech, entry)
        out[tech] = entry
    return out


def disagreement_text(tech: str, entry: Mapping[str, Any]) -> str:
    """One sentence: whether the clients agree on the technique, with both losses and the test."""
    c, s, d = entry.get("chromium"), entry.get("socket"), entry.get("difference")
    if c is None:
        return f"{tech}: no Chromium events"
    chromium_loss = f"Chromium loses {format_pct(c['loss'])} {_ci(c['ci95'])} of {c['sent']:,}"
    if s is None or d is None:
        return f"{tech}: {chromium_loss}; the socket client has no such technique"
    socket_loss = f"the socket client {format_pct(s['loss'])} {_ci(s['ci95'])} of {s['sent']:,}"
    if not d["significant"]:
        p = format_p(d["p_value"])
        return f"{tech}: the clients agree within noise — {chromium_loss}, {socket_loss} ({p})"
    side = "more" if d["loss"] > 0 else "less"
    return (
        f"{tech}: the clients DISAGREE — {chromium_loss}, {socket_loss}: Chromium loses "
        f"{abs(d['loss']) * 100:.1f} points {side} ({format_p(d['p_value'])}); lost by stage in Chromium "
        f"{_stages(c)}, in the socket client {_stages(s)}"
    )


def _ci(ci: Any) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""


def _stages(entry: Mapping[str, Any]) -> str:
    stages = entry.get("lost_by_stage") or {}
    return ", ".join(f"{k} {v}" for k, v in stages.items()) or "none"


def calibration_table(cal: Mapping[str, Any]) -> list[str]:
    """The calibration as a text table, one line per technique (the CLI prints it)."""
    rows = [f"{'technique':<16} {'chromium loss [95%]':>26} {'socket loss [95%]':>26} {'diff':>8}  p"]
    for tech, entry in cal.items():
        c, s, d = entry.get("chromium"), entry.get("socket"), entry.get("difference")
        cell = lambda e: f"{format_pct(e['loss'])} {_ci(e['ci95'])} n={e['sent']}" if e else "-"  # noqa: E731
        diff = f"{d['loss'] * 100:+.1f}" if d else "-"
        p = format_p(d["p_value"]) if d else ""
        rows.append(f"{tech:<16} {cell(c):>26} {cell(s):>26} {diff:>8}  {p}")
    return rows


def attach(run_dir: Path, socket_dir: Path) -> dict[str, Any]:
    """Compare both runs, add the ``calibration`` object to the Chromium run's summary, write it and
    render the report (which shows the calibration chart and words)."""
    from lossbench.compare import compare, write_summary
    from lossbench.ledger_read import LedgerError
    from lossbench.report import render_report

    try:
        socket_summary = compare(socket_dir)
        write_summary(socket_summary, socket_dir)
        summary = compare(run_dir)
    except LedgerError as exc:
        raise RunError(str(exc)) from None
    summary["calibration"] = calibration(summary, socket_summary)
    timing = summary.get("timing") or {}
    if timing.get("p50") is not None and timing["p50"] > LATE_EXIT:
        summary.setdefault("warnings", []).append(
            f"calibration: Chromium's pages went away {timing['p50']:.3f} s (median), {timing['p90']:.3f} s "
            "(p90) after their planned exit; a late exit gives Chromium's requests more time than the socket "
            "client's, so its losses read too low: calibrate on an idle machine"
        )
    summary["calibration_runs"] = {"chromium": ".", "socket": str(socket_dir.relative_to(run_dir))}
    write_summary(summary, run_dir)
    render_report(run_dir, summary)
    return summary
