"""A sweep rendered: the progress line of a point, a text table, a chart, an HTML page and Markdown, from
the ``SweepDocument`` (``sweep.json``) alone.

The content is gathered once as plain strings (``points_table``, ``fixed_rows``, the findings); the text,
the HTML template (autoescaped, the chart as a data URI) and the Markdown template (escaped as the run
report's) only lay it out. The chart draws with the run report's technique colours: loss per technique
against the varied parameter with its 95% band, the model's prediction dashed, a triangle where the loss
leaves the prediction's interval and the finding written beside it; for a load sweep a second panel with
the collector's answer times and utilisation (or the events/s offered, when the summaries lack them).
"""

from __future__ import annotations

import base64
import textwrap
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup
from matplotlib.figure import Figure  # saves PNG through Agg whatever the backend (see report.charts)
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from lossbench import __version__
from lossbench.contract.latency import ANSWER_EVENT, ANSWER_PING, ANSWER_PREFLIGHT
from lossbench.contract.summary import format_pct, format_pct_interval
from lossbench.contract.sweep import (
    COLLECTOR_PARAMETERS,
    SweepDocument,
    SweepPoint,
    SweepTechnique,
    Value,
    ordered_points,
    technique_names,
    value_text,
    varies_load,
)
from lossbench.report.charts import DPI, TECH_COLORS, WIDTH_IN
from lossbench.report.markdown import md_escape
from lossbench.report.targets import jinja_environment

_HTML, _MD = jinja_environment(True), jinja_environment(False, md_escape)

NONE = "–"
MARKS = {"above": " ▲", "below": " ▼"}
"""After a loss whose 95% interval lies wholly above (below) the prediction's."""
ANSWER_STYLES = ((ANSWER_EVENT, "#222222"), (ANSWER_PREFLIGHT, "#777777"), (ANSWER_PING, "#aaaaaa"))
UTILISATION_COLOR = "#b91c1c"
CHART = "sweep"
"""The chart's name: ``charts/sweep.png``."""
CAPTION = (
    "Loss per technique against the varied parameter: lines are measured loss with their 95% bands, dashed "
    "lines the model's prediction (its band lighter); a triangle marks a loss beyond the prediction's "
    "interval. For a load sweep, the lower panel shows what the collector reported."
)


@dataclass(frozen=True)
class SweepReportPaths:
    """Where ``render_sweep_report`` wrote; ``charts`` maps chart name to PNG, only those drawn."""

    html: Path
    markdown: Path
    charts: dict[str, Path]


# ------------------------------------------------------------------------------------------- content


def title(document: SweepDocument) -> str:
    values = ", ".join(value_text(v) for v in document.values)
    return f"lossbench sweep — {document.parameter} = {values}"


_FIXED_SHOWN = (
    ("network_profile", "profile"),
    ("exit_model", "exit model"),
    ("abort", "abort"),
    ("seed", "seed"),
    ("users", "users"),
    ("duration", "s each"),
)


def fixed_line(document: SweepDocument) -> str:
    """What every point shared, in one line: ``profile 3G · exit model mix · seed 1 · 20 users · 3 s``."""
    fixed = document.fixed
    parts = []
    for key, name in _FIXED_SHOWN:
        value = fixed.get(key)
        if value is None:
            continue
        if key == "users":
            parts.append(f"{value} users")
        elif key == "duration":
            parts.append(f"{value:g} s each" if isinstance(value, int | float) else f"{value} s each")
        else:
            parts.append(f"{name} {value}")
    techniques = fixed.get("techniques")
    parts.append(f"techniques {', '.join(techniques)}" if techniques else "every technique")
    return " · ".join(parts)


def _option_text(key: str, value: object) -> str:
    if key == "techniques" and value == []:
        return "every technique of the scenario"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return NONE if value is None else str(value)


def fixed_rows(document: SweepDocument) -> list[list[str]]:
    """(option, value) for every option the points shared, named as lossbench run's flags."""
    return [[f"--{key.replace('_', '-')}", _option_text(key, v)] for key, v in document.fixed.items()]


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    ms = 1000 * seconds
    return f"{ms:.0f}" if ms >= 10 else f"{ms:.2g}"


def _technique_cell(t: SweepTechnique | None) -> str:
    if t is None or not t.sent:
        return NONE
    text = f"{format_pct(t.loss)} {format_pct_interval(t.ci95)}"
    if t.predicted_loss is not None:
        text += f" · model {format_pct(t.predicted_loss)}"
    return text + MARKS.get(t.departure or "", "")


def _collector_cells(point: SweepPoint) -> list[str]:
    collector = point.collector
    if collector is None:
        return [NONE, NONE]
    answers = collector.answer_seconds.get(ANSWER_EVENT)
    answered = NONE if answers is None else f"{_ms(answers.p50)} / {_ms(answers.p99)} ms"
    utilisation = NONE if collector.utilisation is None else f"{100 * collector.utilisation:.0f}%"
    return [answered, utilisation]


def points_columns(document: SweepDocument) -> list[str]:
    techniques = [f"{name}: loss [95%] · model" for name in technique_names(document)]
    return [document.parameter, "events/s", *techniques, "answer p50 / p99 (events)", "utilisation"]


@dataclass(frozen=True)
class Row:
    """One value of the sweep: its cells, and its run directory (None: the point is missing)."""

    cells: list[str]
    run_dir: str | None


def points_table(document: SweepDocument) -> list[Row]:
    """One row per value, in the order run; a missing point's row says so."""
    names = technique_names(document)
    by_value = {p.value: p for p in document.points}
    rows = []
    for value in document.values:
        point = by_value.get(value)
        if point is None:
            blank = [NONE] * (len(names) + 2)
            rows.append(Row([value_text(value), "missing", *blank], None))
            continue
        cells = [value_text(value), f"{point.events_per_second:,.0f}"]
        cells += [_technique_cell(point.techniques.get(name)) for name in names]
        rows.append(Row(cells + _collector_cells(point), point.run_dir))
    return rows


def finding_texts(document: SweepDocument) -> list[str]:
    return [f.text for f in document.findings]


def warnings(document: SweepDocument) -> list[str]:
    """Each point's summary warnings, named by the point."""
    return [
        f"{document.parameter}={value_text(p.value)}: {w}" for p in document.points for w in p.warnings if w
    ]


def state_text(document: SweepDocument) -> str | None:
    """A word on an unfinished sweep; None for a complete one."""
    if document.state == "complete" and not document.missing:
        return None
    missing = ", ".join(value_text(v) for v in document.missing) or "none"
    why = document.stopped or "it was still running when sweep.json was written, or was killed"
    return f"The sweep is {document.state}: {why}. Points missing: {missing}."


def point_line(document: SweepDocument, point: SweepPoint) -> str:
    """The progress line of a finished point: its load, each technique's loss beside the model's, and the
    collector's figures when known."""
    k, n = document.values.index(point.value) + 1, len(document.values)
    parts = []
    for name in technique_names(document):
        t = point.techniques.get(name)
        if t is None or not t.sent:
            continue
        model = "" if t.predicted_loss is None else f" (model {format_pct(t.predicted_loss)})"
        beyond = {"above": " ABOVE the model", "below": " BELOW the model"}.get(t.departure or "", "")
        parts.append(f"{name} {format_pct(t.loss)}{model}{beyond}")
    answered, utilisation = _collector_cells(point)
    collector = (
        "" if answered == NONE else f"; collector answers p50 / p99 {answered}, utilisation {utilisation}"
    )
    return (
        f"point {k} of {n}, {document.parameter}={value_text(point.value)}: "
        f"{point.events_per_second:,.0f} events/s; {'; '.join(parts) or 'no events'}{collector}"
    )


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    ]


def sweep_text(document: SweepDocument) -> str:
    """The sweep as the terminal shows it at the end: the points, then the findings."""
    lines = [title(document), fixed_line(document), ""]
    lines += _text_table(points_columns(document), [r.cells for r in points_table(document)])
    lines += ["", *(f"- {text}" for text in finding_texts(document))]
    if said := state_text(document):
        lines += ["", said]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- chart


def _color(name: str) -> str:
    return TECH_COLORS.get(name, "#777777")


def _numeric(document: SweepDocument, points: Sequence[SweepPoint]) -> bool:
    return document.scale == "numeric" and all(not isinstance(p.value, str) for p in points)


def _positions(document: SweepDocument, points: Sequence[SweepPoint]) -> tuple[list[float], bool]:
    """Where each point sits on the x axis, and whether the axis is logarithmic: a numeric parameter at its
    value (log when the values span 10× or more), a categorical one at its place among the values."""
    if _numeric(document, points):
        xs = [float(p.value) for p in points]
        log = bool(xs) and min(xs) > 0 and max(xs) >= 10 * min(xs)
        return xs, log
    return [float(document.values.index(p.value)) for p in points], False


def _pct(x: float) -> float:
    return 100.0 * x


def _numeric_loss(ax: Any, points: Sequence[SweepPoint], xs: Sequence[float], names: Sequence[str]) -> None:
    for name in names:
        color = _color(name)
        measured = [
            (x, t) for x, p in zip(xs, points, strict=True) if (t := p.techniques.get(name)) and t.sent
        ]
        if not measured:
            continue
        mx = [x for x, _ in measured]
        ax.fill_between(
            mx, [_pct(t.ci95[0]) for _, t in measured], [_pct(t.ci95[1]) for _, t in measured], color=color,
            alpha=0.18, lw=0, zorder=1,
        )  # fmt: skip
        ax.plot(mx, [_pct(t.loss) for _, t in measured], color=color, marker="o", ms=4, lw=1.8, zorder=3)
        predicted = [(x, t) for x, t in measured if t.predicted_loss is not None]
        if not predicted:
            continue
        px = [x for x, _ in predicted]
        ax.plot(
            px, [_pct(t.predicted_loss or 0.0) for _, t in predicted], color=color, ls="--", lw=1.2, zorder=2
        )
        bands = [(x, t.predicted_ci95) for x, t in predicted if t.predicted_ci95 is not None]
        if len(bands) == len(predicted):
            ax.fill_between(
                px, [_pct(b[0]) for _, b in bands if b], [_pct(b[1]) for _, b in bands if b], color=color,
                alpha=0.08, lw=0, zorder=1,
            )  # fmt: skip


def _offsets(names: Sequence[str]) -> dict[str, float]:
    width = 0.8 / max(len(names), 1)
    return {name: (i - (len(names) - 1) / 2) * width for i, name in enumerate(names)}


def _categorical_loss(
    ax: Any, points: Sequence[SweepPoint], xs: Sequence[float], names: Sequence[str]
) -> dict[str, float]:
    offsets = _offsets(names)
    half = 0.4 / max(len(names), 1)
    for name in names:
        color, dx = _color(name), offsets[name]
        for x, p in zip(xs, points, strict=True):
            t = p.techniques.get(name)
            if t is None or not t.sent:
                continue
            y = _pct(t.loss)
            err = [[max(y - _pct(t.ci95[0]), 0.0)], [max(_pct(t.ci95[1]) - y, 0.0)]]
            ax.errorbar(x + dx, y, yerr=err, fmt="o", color=color, ms=5, capsize=3, lw=1.4, zorder=3)
            if t.predicted_loss is not None:
                span = [x + dx - half, x + dx + half]
                ax.plot(span, [_pct(t.predicted_loss)] * 2, color=color, ls="--", lw=1.2, zorder=2)
                if t.predicted_ci95 is not None:
                    lo, hi = _pct(t.predicted_ci95[0]), _pct(t.predicted_ci95[1])
                    ax.fill_between(span, [lo, lo], [hi, hi], color=color, alpha=0.12, lw=0, zorder=1)
    return offsets


def _departures(
    ax: Any,
    document: SweepDocument,
    points: Sequence[SweepPoint],
    xs: Sequence[float],
    offsets: dict[str, float],
) -> None:
    """A triangle on every loss beyond the prediction's interval; each finding written beside its point."""
    at: dict[tuple[str, Value], tuple[float, float]] = {}
    for x, p in zip(xs, points, strict=True):
        for name, t in p.techniques.items():
            xy = (x + offsets.get(name, 0.0), _pct(t.loss))
            at[(name, p.value)] = xy
            if t.departure in ("above", "below"):
                marker = "^" if t.departure == "above" else "v"
                ax.scatter(*xy, marker=marker, s=110, color=_color(name), edgecolors="black", zorder=5)
    notes = [
        (f.technique, f.text, at[(f.technique, f.at)])
        for f in document.findings
        if f.technique is not None and f.at is not None and (f.technique, f.at) in at
    ]
    for i, (name, text, xy) in enumerate(notes):
        color = _color(name)
        ax.annotate(
            textwrap.fill(text, 48),
            xy,
            xytext=(0.02, 0.97 - 0.2 * i),
            textcoords="axes fraction",
            va="top",
            fontsize=7.5,
            color=color,
            bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": color, "alpha": 0.9},
            arrowprops={"arrowstyle": "->", "color": color, "lw": 0.8},
            zorder=6,
        )


def _x_axis(
    ax: Any,
    document: SweepDocument,
    points: Sequence[SweepPoint],
    xs: Sequence[float],
    *,
    log: bool,
    numeric: bool,
) -> None:
    if numeric:
        if log:
            ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([value_text(p.value) for p in points])
        pad = 0.08 * (max(xs) - min(xs)) if not log and len(xs) > 1 else 0.0
        if not log and pad:
            ax.set_xlim(min(xs) - pad, max(xs) + pad)
    else:
        done = {p.value for p in points}
        labels = [value_text(v) + ("" if v in done else "\n(missing)") for v in document.values]
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_xlabel(f"{document.parameter} ({document.option})")


def _events_axis(ax: Any, points: Sequence[SweepPoint], xs: Sequence[float], log: bool) -> None:
    """Events/s offered at each point, on a top axis over the parameter's."""
    top = ax.twiny()
    if log:
        top.set_xscale("log")
    top.set_xlim(ax.get_xlim())
    top.xaxis.set_major_locator(FixedLocator(xs))
    top.xaxis.set_minor_locator(NullLocator())
    top.set_xticklabels([f"{p.events_per_second:,.0f}" for p in points], fontsize=8)
    top.set_xlabel("events/s offered", fontsize=9)


def _collector_panel(ax: Any, points: Sequence[SweepPoint], xs: Sequence[float]) -> None:
    """The collector's answer times (p50 solid, p99 dashed) and its utilisation; or the events/s offered
    with a note when no point's summary has the collector's figures."""
    handles: list[Any] = []
    times: list[float] = []
    for kind, color in ANSWER_STYLES:
        for q, style, marker in (("p50", "-", "o"), ("p99", "--", "s")):
            pts = []
            for x, p in zip(xs, points, strict=True):
                answers = None if p.collector is None else p.collector.answer_seconds.get(kind)
                value = None if answers is None else getattr(answers, q)
                if value is not None:
                    pts.append((x, 1000 * value))
            if pts:
                (line,) = ax.plot(*zip(*pts, strict=True), color=color, ls=style, marker=marker, ms=4)
                line.set_label(f"{kind} answer {q}")
                handles.append(line)
                times += [v for _, v in pts]
    utilisation = [
        (x, 100 * p.collector.utilisation)
        for x, p in zip(xs, points, strict=True)
        if p.collector is not None and p.collector.utilisation is not None
    ]
    if not handles and not utilisation:
        ax.plot(xs, [p.events_per_second for p in points], color="#444444", marker="o", ms=4)
        ax.set_ylabel("events/s offered")
        ax.set_ylim(bottom=0)
        note = "the collector's answer times and utilisation are not in these runs' summaries"
        ax.set_title(note, fontsize=8, color="#555555")
        ax.grid(alpha=0.3)
        return
    if times:
        positive = [t for t in times if t > 0]
        if positive and max(positive) >= 10 * min(positive):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 100, not 10²
        ax.set_ylabel("collector answer time (ms)")
    ax.grid(alpha=0.3)
    if utilisation:
        right = ax.twinx()
        (line,) = right.plot(
            *zip(*utilisation, strict=True), color=UTILISATION_COLOR, ls=":", marker="D", ms=4
        )
        line.set_label("utilisation")
        handles.append(line)
        right.set_ylabel("utilisation (%)", color=UTILISATION_COLOR)
        right.set_ylim(0, max(105.0, max(u for _, u in utilisation) * 1.1))
    # outside, as the loss panel's: inside it covered the lines it names (beyond the utilisation axis)
    ax.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.12 if utilisation else 1.01, 0.5),
        fontsize=8,
        frameon=False,
    )


def sweep_chart(document: SweepDocument, path: Path) -> Path | None:
    """The sweep's chart (see the module docstring); None when no point finished."""
    points = ordered_points(document)
    names = technique_names(document)
    if not points or not names:
        return None
    load = varies_load(document)
    has_collector = any(p.collector is not None for p in points)
    second = load or (has_collector and document.parameter in COLLECTOR_PARAMETERS)
    fig = Figure(figsize=(WIDTH_IN, 8.0 if second else 5.4), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2)) if second else [fig.subplots()]
    ax = axes[0]
    fig.suptitle(f"Loss against {document.parameter}\n{fixed_line(document)}", fontsize=11)
    xs, log = _positions(document, points)
    numeric = _numeric(document, points)
    offsets = {} if numeric else _categorical_loss(ax, points, xs, names)
    if numeric:
        _numeric_loss(ax, points, xs, names)
    _departures(ax, document, points, xs, offsets)
    ax.set_ylabel("events lost (% of sent)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    legend: list[Any] = [Line2D([], [], color=_color(n), marker="o", lw=1.8, label=n) for n in names]
    legend += [
        Patch(facecolor="#999999", alpha=0.35, label="95% interval"),
        Line2D([], [], color="#555555", ls="--", lw=1.2, label="model's prediction"),
        Line2D([], [], color="#999999", marker="^", ls="", mec="black", ms=8, label="beyond the prediction"),
    ]
    ax.legend(handles=legend, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    if second:
        _collector_panel(axes[1], points, xs)
    _x_axis(axes[-1], document, points, xs, log=log, numeric=numeric)
    if load and numeric:
        _events_axis(ax, points, xs, log)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path


# --------------------------------------------------------------------------------------------- pages


def _link(run_dir: str, page: str) -> Markup:
    """A point's own report, relative to the sweep's page; quoted, so it can be no markup."""
    return Markup(urllib.parse.quote(f"{run_dir.strip('/')}/{page}"))


def _context(document: SweepDocument) -> dict[str, object]:
    return {
        "title": title(document),
        "fixed": fixed_line(document),
        "state": state_text(document),
        "findings": finding_texts(document),
        "point_columns": points_columns(document),
        "points": points_table(document),
        "fixed_rows": fixed_rows(document),
        "warnings": warnings(document),
        "caption": CAPTION,
        "schema": document.schema,
        "version": __version__,
    }


def render_sweep_report(folder: Path, document: SweepDocument) -> SweepReportPaths:
    """Write ``charts/sweep.png``, ``sweep.html`` (self-contained) and ``sweep.md`` into ``folder``."""
    folder = Path(folder)
    chart_path = folder / "charts" / f"{CHART}.png"
    chart = sweep_chart(document, chart_path)
    if chart is None:
        chart_path.unlink(missing_ok=True)  # no stale chart from an earlier render
    context = _context(document)
    png = None if chart is None else base64.b64encode(chart.read_bytes()).decode("ascii")
    html = _HTML.get_template("sweep.html.j2").render(
        chart=png, link=lambda run_dir: _link(run_dir, "report.html"), **context
    )
    markdown = _MD.get_template("sweep.md.j2").render(
        chart=None if chart is None else Markup(f"charts/{CHART}.png"),
        link=lambda run_dir: _link(run_dir, "report.md"),
        **context,
    )
    paths = SweepReportPaths(
        html=folder / "sweep.html",
        markdown=folder / "sweep.md",
        charts={} if chart is None else {CHART: chart},
    )
    paths.html.write_text(html, encoding="utf-8")
    paths.markdown.write_text(markdown, encoding="utf-8")
    return paths
