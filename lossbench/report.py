"""The run report: charts, one self-contained HTML page and the same content as Markdown.

Everything renders from ``summary.json`` (docs/FORMATS.md), so a report can be rebuilt at any time from the
run directory. The content is gathered once as plain text (``loss_table``, ``parameters``, ...) and then
written twice, as HTML (every string escaped, charts as data URIs, no external resources) and as Markdown.
Output is deterministic: no timestamps of rendering, no network.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench import __version__
from lossbench.charts import CHARTS, interval, label, num, ordered_techniques, render_charts

SCHEMA = "lossbench.summary/1"

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
    "cost": "Requests, connections and connection time at the collector per delivered event.",
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


@dataclass(frozen=True)
class ReportPaths:
    """Where ``render_report`` wrote the report; ``charts`` maps chart name to PNG, only those drawn."""

    html: Path
    markdown: Path
    charts: dict[str, Path] = field(default_factory=dict)


def render_report(run_dir: Path, summary: dict[str, Any]) -> ReportPaths:
    """Write ``charts/*.png``, ``report.html`` and ``report.md`` into the run directory."""
    run_dir = Path(run_dir)
    if not isinstance(summary.get("run"), Mapping) or "run_id" not in summary["run"]:
        summary = {**summary, "run": {**(summary.get("run") or {}), "run_id": run_dir.name}}
    charts = render_charts(summary, run_dir / "charts")
    pngs = {name: path.read_bytes() for name, path in charts.items()}
    html_path, md_path = run_dir / "report.html", run_dir / "report.md"
    html_path.write_text(summary_html(summary, pngs), encoding="utf-8")
    md_path.write_text(summary_markdown(summary, charts=charts), encoding="utf-8")
    return ReportPaths(html=html_path, markdown=md_path, charts=charts)


# --- content, as plain text -------------------------------------------------------------------------------


def _pct(value: Any) -> str:
    v = num(value)
    if v is None:
        return "–"
    v *= 100
    return f"{v:.2f}%" if abs(v) < 10 else f"{v:.1f}%"


def _pct_ci(value: Any, ci: Any) -> str:
    text, pair = _pct(value), interval(ci)
    return text if pair is None or text == "–" else f"{text} [{_pct(pair[0])}, {_pct(pair[1])}]"


def _count(value: Any) -> str:
    v = num(value)
    return "–" if v is None else f"{v:,.0f}"


def _dec(value: Any, scale: float = 1.0) -> str:
    v = num(value)
    return "–" if v is None else f"{v * scale:.3g}"


def loss_table(summary: Mapping[str, Any]) -> list[list[str]]:
    """One row of text per technique, columns as in ``LOSS_COLUMNS``."""
    rows = []
    for tech, d in ordered_techniques(summary):
        sent = num(d.get("sent")) or 0
        cost = d.get("cost") if isinstance(d.get("cost"), Mapping) else {}
        rows.append(
            [
                tech,
                _count(d.get("sent")),
                _count(d.get("received")),
                _count(d.get("lost")),
                _pct_ci(d.get("loss"), d.get("ci95")) if sent > 0 else "no events sent",
                _pct_ci(d.get("predicted_loss"), d.get("predicted_ci95")),
                _count(d.get("duplicates")),
                _count(d.get("written_lost")),
                _dec(cost.get("requests_per_delivered")),
                _dec(cost.get("connections_per_delivered")),
                _dec(cost.get("conn_seconds_per_delivered"), 1000),
            ]
        )
    return rows


def comparisons(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(sentence, significance) per pairwise comparison."""
    out = []
    for c in summary.get("comparisons") or []:
        if not isinstance(c, Mapping) or not c.get("text"):
            continue
        p = num(c.get("p_value"))
        p_text = "" if p is None else ("p < 0.001" if p < 0.001 else f"p = {p:.3g}")
        if re.search(r"\bp\s*[<=≤]", str(c["text"])):
            p_text = ""  # the sentence already says it
        sig = {True: "significant", False: "not significant"}.get(c.get("significant"), "")
        out.append((str(c["text"]), ", ".join(s for s in (sig, p_text) if s)))
    return out


def calibration_lines(summary: Mapping[str, Any]) -> list[str]:
    """The calibration's sentences (``lossbench calibrate``): where Chromium and the socket client agree
    or disagree, with the numbers."""
    cal = summary.get("calibration")
    if not isinstance(cal, Mapping):
        return []
    return [str(e["text"]) for e in cal.values() if isinstance(e, Mapping) and e.get("text")]


def warnings(summary: Mapping[str, Any]) -> list[str]:
    """The summary's warnings, plus the report's own doubts about its input."""
    out = [str(w) for w in summary.get("warnings") or [] if w]
    if summary.get("schema") != SCHEMA:
        out.append(
            f"summary schema is {summary.get('schema')!r}, this report reads {SCHEMA!r}: check the output"
        )
    timing = summary.get("timing") if isinstance(summary.get("timing"), Mapping) else {}
    if timing.get("flagged") and not any("timing" in w.lower() for w in out):
        out.append(
            "load generator lagging behind its intended timeline: the collector saw a late schedule "
            "(losses are decided on the intended timeline and stand)"
        )
    return out


def _when(value: Any) -> str:
    v = num(value)
    return str(value) if v is None else dt.datetime.fromtimestamp(v, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _plain(value: Any) -> str:
    if isinstance(value, Mapping) and set(value) <= {"name", "id"}:
        return label(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def parameters(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, value) for the model and run parameters: the named ones first, then whatever else run holds."""
    run = summary.get("run") if isinstance(summary.get("run"), Mapping) else {}
    shown = {
        "run_id": ("run id", _plain),
        "scenario": ("scenario", _plain),
        "profile": ("network profile", _plain),
        "exit_model": ("exit model", _plain),
        "abort": ("abort kind", _plain),
        "seed": ("seed", _plain),
        "users": ("users", _plain),
        "duration": ("duration", lambda v: f"{_plain(v)} s" if num(v) is not None else _plain(v)),
        "techniques": ("techniques", lambda v: ", ".join(map(str, v)) if isinstance(v, list) else _plain(v)),
        "host": ("host", _plain),
        "started": ("started", _when),
        "ended": ("ended", _when),
    }
    out = [(name, fmt(run[key])) for key, (name, fmt) in shown.items() if run.get(key) is not None]
    versions = run.get("versions")
    if isinstance(versions, Mapping):
        out.append(("versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))))
    out += [
        (k, _plain(v)) for k, v in sorted(run.items()) if k not in shown and k != "versions" and v is not None
    ]
    return out


def timing_text(summary: Mapping[str, Any]) -> str | None:
    """One sentence on the load generator's timing error (actual minus intended stage end)."""
    t = summary.get("timing")
    if not isinstance(t, Mapping):
        return None
    ms = ", ".join(
        f"{q} {_dec(t.get(q), 1000)} ms" for q in ("p50", "p90", "p99") if num(t.get(q)) is not None
    )
    verdict = (
        "large against stage times: the collector saw a late schedule"
        if t.get("flagged")
        else "small against stage times"
    )
    shift = _pct(t.get("max_loss_shift"))
    return (
        f"Stage timing error {ms or 'unknown'}: {verdict}. Losses are decided on the intended timeline; "
        f"deciding on real time would have added up to {shift}."
    )


def ledger_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """(path, kind, lines, state) per ledger file; state says whether it was closed cleanly."""
    rows = []
    for led in summary.get("ledgers") or []:
        if not isinstance(led, Mapping):
            continue
        state = "complete" if led.get("complete") else "INCOMPLETE (not closed cleanly)"
        if led.get("truncated_last_line"):
            state += ", truncated last line"
        rows.append([str(led.get("path", "?")), str(led.get("kind", "?")), _count(led.get("lines")), state])
    return rows


def phantoms_text(summary: Mapping[str, Any]) -> str:
    n = _count(summary.get("phantoms"))
    return f"{n} — events the collector received that no sent ledger lists (expected 0)."


def _title(summary: Mapping[str, Any]) -> str:
    run = summary.get("run") if isinstance(summary.get("run"), Mapping) else {}
    return f"lossbench report — run {label(run.get('run_id', 'unknown'))}"


# --- Markdown -----------------------------------------------------------------------------------------------


def _md(text: str) -> str:
    """Markdown-safe text: no table breaks, no raw HTML, no accidental emphasis or links."""
    text = " ".join(str(text).split()).replace("\\", "\\\\")
    for ch in "|*_`":
        text = text.replace(ch, "\\" + ch)
    text = text.replace("](", "\\](")  # no inline links; a lone bracket is harmless and stays readable
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_table(header: Iterable[str], rows: list[list[str]], numeric: bool = False) -> list[str]:
    header = list(header)
    align = ["---"] + ["--:" if numeric else "---"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]


def summary_markdown(summary: Mapping[str, Any], *, charts: Iterable[str] = tuple(CHARTS)) -> str:
    """The report as Markdown; ``charts`` names the PNGs under ``charts/`` to link (those that exist)."""
    out = [f"# {_md(_title(summary))}", ""]
    if warns := warnings(summary):
        out += ["> **⚠ Warnings**", ">"] + [f"> - {_md(w)}" for w in warns] + [""]
    out += ["## How to read this", "", HOW_TO_READ, "", "## Loss", ""]
    out += [*_md_table(LOSS_COLUMNS, loss_table(summary), numeric=True), ""]
    if cal := calibration_lines(summary):
        out += ["## Calibration: Chromium vs the socket client", ""] + [f"- {_md(t)}" for t in cal] + [""]
    if comps := comparisons(summary):
        out += (
            ["## Comparisons", ""] + [f"- {_md(t)}" + (f" ({_md(s)})" if s else "") for t, s in comps] + [""]
        )
    if charts := list(charts):
        out += ["## Charts", ""]
        out += [f"![{_md(CHART_CAPTIONS.get(c, c))}](charts/{c}.png)\n" for c in charts]
    out += ["## Model and parameters", "", *_md_table(["parameter", "value"], parameters(summary)), ""]
    if timing := timing_text(summary):
        out += ["## Timing fidelity", "", _md(timing), ""]
    if ledgers := ledger_rows(summary):
        out += ["## Ledgers", "", *_md_table(["file", "kind", "lines", "state"], ledgers), ""]
    out += ["## Phantoms", "", _md(phantoms_text(summary)), ""]
    return "\n".join(out)


# --- HTML ---------------------------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1a1a1a; max-width: 1000px;
       margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #555; }
.warnings { background: #fff4e5; border-left: 6px solid #d97706; padding: 0.6em 1em; margin: 1em 0; }
.warnings h2 { margin: 0; border: 0; font-size: 1.15em; color: #9a3412; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
table.kv td { text-align: left; } .bad { color: #b91c1c; font-weight: bold; }
.sig { color: #555; } figure { margin: 1.2em 0; } figcaption { color: #555; font-size: 0.9em; }
img { width: 900px; max-width: 100%; height: auto; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(header: Iterable[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>\n" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>'


def _figure(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    caption = _e(CHART_CAPTIONS.get(name, name))
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def summary_html(summary: Mapping[str, Any], charts: Mapping[str, bytes]) -> str:
    """The report as one self-contained HTML page; ``charts`` maps chart name to PNG bytes to embed."""
    run = summary.get("run") if isinstance(summary.get("run"), Mapping) else {}
    meta = " · ".join(
        f"{k}: {label(run.get(key))}"
        for k, key in (("profile", "profile"), ("exit model", "exit_model"), ("abort", "abort"))
        if run.get(key) is not None
    )
    parts = [f"<h1>{_e(_title(summary))}</h1>", f'<p class="meta">{_e(meta)}</p>']
    if warns := warnings(summary):
        items = "".join(f"<li>{_e(w)}</li>" for w in warns)
        parts.append(
            f'<section class="warnings"><h2>&#9888; Warnings ({len(warns)})</h2><ul>{items}</ul></section>'
        )
    parts += ["<h2>How to read this</h2>", f"<p>{_e(HOW_TO_READ)}</p>", "<h2>Loss</h2>"]
    parts.append(_html_table(LOSS_COLUMNS, loss_table(summary), "loss"))
    if cal := calibration_lines(summary):
        items = "".join(f"<li>{_e(t)}</li>" for t in cal)
        parts += ["<h2>Calibration: Chromium vs the socket client</h2>", f"<ul>{items}</ul>"]
    if comps := comparisons(summary):
        items = "".join(
            f"<li>{_e(t)}{f' <span class=sig>({_e(s)})</span>' if s else ''}</li>" for t, s in comps
        )
        parts += ["<h2>Comparisons</h2>", f"<ul>{items}</ul>"]
    if charts:
        parts += ["<h2>Charts</h2>"] + [_figure(name, png) for name, png in charts.items()]
    parts += ["<h2>Model and parameters</h2>", _html_table(["parameter", "value"], parameters(summary), "kv")]
    if timing := timing_text(summary):
        flagged = isinstance(summary.get("timing"), Mapping) and summary["timing"].get("flagged")
        parts += ["<h2>Timing fidelity</h2>", f'<p class="{"bad" if flagged else ""}">{_e(timing)}</p>']
    if ledgers := ledger_rows(summary):
        parts += ["<h2>Ledgers</h2>", _html_table(["file", "kind", "lines", "state"], ledgers, "kv")]
    phantoms = num(summary.get("phantoms")) or 0
    parts += ["<h2>Phantoms</h2>", f'<p class="{"bad" if phantoms else ""}">{_e(phantoms_text(summary))}</p>']
    parts.append(
        f'<p class="meta">schema {_e(summary.get("schema"))} · rendered by lossbench {_e(__version__)}</p>'
    )
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(_title(summary))}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
