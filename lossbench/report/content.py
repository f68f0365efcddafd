"""The report's content as plain text, gathered once from a ``Summary`` for both templates (HTML, Markdown).

Each function returns strings (or rows of strings) ready to print; escaping is the templates' job, so a
value from the summary (a warning, a run parameter) can never become markup.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from lossbench.contract.summary import (
    Summary,
    TechniqueFigures,
    collector_sentence,
    found_sentence,
    preflight_sentence,
)
from lossbench.contract.techniques import ALL_TECHNIQUES

HOW_TO_READ = (
    "Each technique fired events from simulated browser tabs that went away at a drawn exit time. An event "
    "is lost when the collector never received it. Loss is shown with its 95% interval: differences "
    "smaller than the intervals are not evidence. The model's prediction comes from the same network "
    "profile and exit model; a measurement outside the predicted interval means something real happened "
    "that the model does not include (collector saturation, keep-alive races, port exhaustion, a collector "
    "fault) — the warnings and the lost-by-stage chart say where to look. Costs are per delivered event."
)

CHART_CAPTIONS: dict[str, str] = {
    "loss": "Loss per technique with 95% intervals; diamonds are the model's prediction.",
    "stages": "Lost events by the stage the client was in when the page went away, as a share of sent.",
    "time_to_written": "Share of written events whose complete data was written by a given time.",
    "cost": (
        "Requests, connections and connection time at the collector per delivered event; with a pooling "
        "browser, the model's connection-seconds held open per event beside them."
    ),
    "calibration": "Chromium's loss beside the socket client's for the same visits (lossbench calibrate).",
}

LOSS_COLUMNS: tuple[str, ...] = (
    "technique",
    "sent",
    "received",
    "lost",
    "loss [95% interval]",
    "predicted [95% interval]",
    "duplicates",
    "written, not received",
    "requests / delivered",
    "connections / delivered",
    "conn-ms / delivered",
)
CONNECTIONS_TEXT = (
    "What each technique's events found when they asked for a connection — warm: an idle pooled one; "
    "cold: none, so a lookup (unless cached) and a handshake; pending: one being opened or freed, joined; "
    "stale: a pooled one the collector had closed, so a lost round trip and a new one — with the share of "
    "events and the loss of each [95% interval]; then the CORS preflights sent per delivered event, and "
    "the connection-seconds the model says the collector holds open per event, the pool included."
)
PARAMETER_COLUMNS: tuple[str, ...] = ("parameter", "value")
LEDGER_COLUMNS: tuple[str, ...] = ("file", "kind", "lines", "state")

NONE = "–"
"""What a table shows for a figure the summary does not have."""


def label(value: object) -> str:
    """A short name for a run parameter that may be a plain name or a ``{"name": ...}`` object."""
    if isinstance(value, Mapping):
        value = value.get("name", value.get("id", "?"))
    return "?" if value is None else str(value)


def ordered_techniques(summary: Summary) -> list[tuple[str, TechniqueFigures]]:
    """Techniques in the canonical order (fewest stages last), then any unknown ones by name."""
    techs = summary.techniques
    known = [t for t in ALL_TECHNIQUES if t in techs]
    extra = sorted(t for t in techs if t not in ALL_TECHNIQUES)
    return [(t, techs[t]) for t in [*known, *extra]]


def title(summary: Summary) -> str:
    return f"lossbench report — run {label(summary.run.get('run_id', 'unknown'))}"


def meta(summary: Summary) -> str:
    """The model the run was measured under, in one line under the title."""
    run = summary.run
    model = [
        f"{k}: {label(run.get(key))}"
        for k, key in (("profile", "profile"), ("exit model", "exit_model"), ("abort", "abort"))
        if run.get(key) is not None
    ]
    return " · ".join([*model, f"browser: {summary.browser}"])


def _pct(value: float | None) -> str:
    if value is None:
        return NONE
    v = 100 * value
    return f"{v:.2f}%" if abs(v) < 10 else f"{v:.1f}%"


def _pct_ci(value: float | None, ci: tuple[float, float] | None) -> str:
    text = _pct(value)
    return text if ci is None or value is None else f"{text} [{_pct(ci[0])}, {_pct(ci[1])}]"


def _count(value: int | None) -> str:
    return NONE if value is None else f"{value:,.0f}"


def _dec(value: float | None, scale: float = 1.0) -> str:
    return NONE if value is None else f"{value * scale:.3g}"


def loss_table(summary: Summary) -> list[list[str]]:
    """One row of text per technique, columns as in ``LOSS_COLUMNS``."""
    rows = []
    for tech, d in ordered_techniques(summary):
        cost = d.cost
        rows.append(
            [
                tech,
                _count(d.sent),
                _count(d.received),
                _count(d.lost),
                _pct_ci(d.loss, d.ci95) if d.sent > 0 else "no events sent",
                _pct_ci(d.predicted_loss, d.predicted_ci95),
                _count(d.duplicates),
                _count(d.written_lost),
                _dec(cost.requests_per_delivered),
                _dec(cost.connections_per_delivered),
                _dec(cost.conn_seconds_per_delivered, 1000),
            ]
        )
    return rows


def connections(summary: Summary) -> list[tuple[str, str]]:
    """(technique, sentence) for each technique whose events asked a pool for a connection or had a
    preflight to send: what they found with the loss of each, preflights per delivered event, and the
    model's held connection-seconds per event."""
    out = []
    for tech, d in ordered_techniques(summary):
        said = [s for s in (found_sentence(d), preflight_sentence(d)) if s]
        if said and d.predicted_held_seconds is not None:
            said.append(f"held connection-seconds per event (model) {d.predicted_held_seconds:.3g}")
        if said:
            out.append((tech, "; ".join(said)))
    return out


def comparisons(summary: Summary) -> list[tuple[str, str]]:
    """(sentence, significance) per comparison against the reference."""
    out = []
    for c in summary.comparisons:
        if not c.text:
            continue
        p_text = "p < 0.001" if c.p_value < 0.001 else f"p = {c.p_value:.3g}"
        if re.search(r"\bp\s*[<=≤]", c.text):
            p_text = ""  # the sentence already says it
        sig = "significant" if c.significant else "not significant"
        out.append((c.text, ", ".join(s for s in (sig, p_text) if s)))
    return out


def calibration(summary: Summary) -> list[str]:
    """The calibration's sentences (``lossbench calibrate``): where Chromium and the socket client agree
    or disagree, with the numbers; none for any other run."""
    return [entry.text for entry in (summary.calibration or {}).values() if entry.text]


def warnings(summary: Summary) -> list[str]:
    """The summary's warnings, plus a word on a lagging load generator if they do not mention it."""
    out = [w for w in summary.warnings if w]
    if summary.timing.flagged and not any("timing" in w.lower() for w in out):
        out.append(
            "load generator lagging behind its intended timeline: the collector saw a late schedule "
            "(losses are decided on the intended timeline and stand)"
        )
    return out


def _when(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def _plain(value: object) -> str:
    if isinstance(value, Mapping) and set(value) <= {"name", "id"}:
        return label(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def _seconds(value: object) -> str:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return f"{_plain(value)} s" if number else _plain(value)


def _names(value: object) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else _plain(value)


def _sizing(value: object) -> str:
    """run.json's sizing (lossbench run sized the load to the machine), in its own words."""
    if isinstance(value, Mapping):
        if value.get("reason"):
            return f"sized to {value['reason']}"
        if value.get("skipped"):
            return f"not sized: {value['skipped']}"
    return _plain(value)


_SHOWN: dict[str, tuple[str, Callable[[Any], str]]] = {
    "run_id": ("run id", _plain),
    "scenario": ("scenario", _plain),
    "profile": ("network profile", _plain),
    "exit_model": ("exit model", _plain),
    "abort": ("abort kind", _plain),
    "seed": ("seed", _plain),
    "browser": ("browser preset", _plain),
    "users": ("users", _plain),
    "processes": ("processes", _plain),
    "sizing": ("load", _sizing),
    "duration": ("duration", _seconds),
    "techniques": ("techniques", _names),
    "host": ("host", _plain),
    "started": ("started", _when),
    "ended": ("ended", _when),
}
"""run.json keys shown first, under these names; the others follow under their own names."""


def parameters(summary: Summary) -> list[tuple[str, str]]:
    """(name, value) for the model and run parameters: the named ones first, then whatever else run holds.

    ``run`` is run.json as the run wrote it, so its values are read as whatever JSON they are."""
    run = {**summary.run, "browser": summary.browser}  # named also where run.json has none (seed)
    out = [(name, fmt(run[key])) for key, (name, fmt) in _SHOWN.items() if run.get(key) is not None]
    versions = run.get("versions")
    if isinstance(versions, Mapping):
        out.append(("versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))))
    rest = sorted((k, v) for k, v in run.items() if k not in _SHOWN and k != "versions" and v is not None)
    return out + [(k, _plain(v)) for k, v in rest]


def timing_text(summary: Summary) -> str:
    """One sentence on the load generator's timing error (actual minus intended stage end)."""
    t = summary.timing
    points = (("p50", t.p50), ("p90", t.p90), ("p99", t.p99))
    ms = ", ".join(f"{q} {_dec(v, 1000)} ms" for q, v in points if v is not None)
    verdict = (
        "large against stage times: the collector saw a late schedule"
        if t.flagged
        else "small against stage times"
    )
    return (
        f"Stage timing error {ms or 'unknown'}: {verdict}. Losses are decided on the intended timeline; "
        f"deciding on real time would have added up to {_pct(t.max_loss_shift)}."
    )


def ledger_rows(summary: Summary) -> list[list[str]]:
    """(path, kind, lines, state) per ledger file; state says whether it was closed cleanly."""
    rows = []
    for led in summary.ledgers:
        state = "complete" if led.complete else "INCOMPLETE (not closed cleanly)"
        if led.truncated_last_line:
            state += ", truncated last line"
        rows.append([led.path, led.kind, _count(led.lines), state])
    return rows


def phantoms_text(summary: Summary) -> str:
    n = _count(summary.phantoms)
    return f"{n} — events the collector received that no sent ledger lists (expected 0)."


def page(summary: Summary) -> dict[str, Any]:
    """What both the HTML page and the Markdown show, as their templates' context (the charts, which
    each format embeds its own way, are added by the renderer)."""
    return {
        "title": title(summary),
        "meta": meta(summary),
        "warnings": warnings(summary),
        "how_to_read": HOW_TO_READ,
        "loss_columns": LOSS_COLUMNS,
        "loss_rows": loss_table(summary),
        "browser": summary.browser,
        "connections": connections(summary),
        "connections_text": CONNECTIONS_TEXT,
        "comparisons": comparisons(summary),
        "calibration": calibration(summary),
        "parameter_columns": PARAMETER_COLUMNS,
        "parameters": parameters(summary),
        "timing": timing_text(summary),
        "timing_flagged": summary.timing.flagged,
        "collector": None if summary.collector is None else collector_sentence(summary.collector),
        "ledger_columns": LEDGER_COLUMNS,
        "ledgers": ledger_rows(summary),
        "phantoms": summary.phantoms,
        "phantoms_text": phantoms_text(summary),
        "schema": summary.schema,
    }
