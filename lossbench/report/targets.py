"""The targets comparison rendered: a text table, a chart, an HTML page and Markdown, from the
``TargetsDocument`` (``targets.json``) alone.

The content is gathered once as plain strings (``targets_table``, ``loss_table``, ``sentences``); the text,
the HTML template (autoescaped, the chart as a data URI) and the Markdown template (escaped as the run
report's) only lay it out.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2
from matplotlib.figure import Figure  # saves PNG through Agg whatever the backend (see report.charts)
from matplotlib.patches import Patch

from lossbench import __version__
from lossbench.contract.summary import format_pct, format_pct_interval
from lossbench.contract.targets import TargetsDocument
from lossbench.report.charts import DPI, TECH_COLORS, WIDTH_IN
from lossbench.report.markdown import md_escape

HATCHES = ("", "//", "..", "xx", "\\\\")
"""One hatch per target, in order (the colour is the technique's, as in the run report)."""
TARGET_COLUMNS = ["target", "events sent", "events/s", "target CPU", "CPU per event", "collector-side loss"]


def jinja_environment(
    autoescape: bool, finalize: Callable[[object], str] | None = None
) -> jinja2.Environment:
    """Jinja2 set up as the run report's (for the targets and sweep pages): HTML autoescaped; Markdown
    escaped by ``md_escape`` (pass it as ``finalize``)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("lossbench.report", "templates"),
        autoescape=autoescape,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


_HTML, _MD = jinja_environment(True), jinja_environment(False, md_escape)


@dataclass(frozen=True)
class TargetsReportPaths:
    html: Path
    markdown: Path
    chart: Path


def load_text(document: TargetsDocument) -> str:
    """The load every target got, in one line."""
    load = document.load
    techniques = ", ".join(load.get("techniques") or []) or "?"
    return (
        f"{techniques} on {load.get('profile')}, exit model {load.get('exit_model')}, "
        f"seed {load.get('seed')}, {load.get('users')} users for {load.get('duration')} s; "
        f"reference target: {document.reference}"
    )


def _with_interval(loss: float, ci: tuple[float, float]) -> str:
    return f"{format_pct(loss)} {format_pct_interval(ci)}"


def targets_table(document: TargetsDocument) -> list[list[str]]:
    """One row per target: throughput, CPU, collector-side loss with its count and interval."""
    rows = []
    for t in document.targets:
        per_event = "–" if t.cpu_per_event_us is None else f"{t.cpu_per_event_us:,.0f} µs"
        rows.append(
            [
                t.target,
                f"{t.sent:,}",
                f"{t.throughput:,.0f}",
                f"{t.cpu_seconds:.1f} s",
                per_event,
                f"{t.written_lost:,} of {t.written:,}: {_with_interval(t.collector_loss, t.collector_ci95)}",
            ]
        )
    return rows


def loss_columns(document: TargetsDocument) -> list[str]:
    return ["technique", *(f"{t.target}: loss [95%]" for t in document.targets)]


def loss_table(document: TargetsDocument) -> list[list[str]]:
    """One row per technique, one column per target: loss with its interval."""
    names = list(dict.fromkeys(n for t in document.targets for n in t.techniques))
    rows = []
    for name in names:
        row = [name]
        for t in document.targets:
            f = t.techniques.get(name)
            row.append("–" if f is None else f"{_with_interval(f.loss, f.ci95)} (n = {f.sent:,})")
        rows.append(row)
    return rows


def sentences(document: TargetsDocument) -> list[str]:
    """The comparisons in words: all techniques together, then the significant per-technique ones."""
    return [c.text for c in document.comparisons if c.technique is None or c.significant]


def warnings(document: TargetsDocument) -> list[str]:
    return [*document.warnings, *(f"{t.target}: {w}" for t in document.targets for w in t.warnings)]


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    ]


def targets_text(document: TargetsDocument) -> str:
    """The comparison as the terminal shows it."""
    lines = [load_text(document), ""]
    lines += _text_table(TARGET_COLUMNS, targets_table(document))
    lines += ["", *_text_table(loss_columns(document), loss_table(document)), ""]
    lines += sentences(document)
    if warns := warnings(document):
        lines += ["", "warnings:", *(f"  - {w}" for w in warns)]
    return "\n".join(lines) + "\n"


def targets_chart(document: TargetsDocument, path: Path) -> Path:
    """Loss per technique and target (bars with 95% intervals), and collector-side loss per target."""
    fig = Figure(figsize=(WIDTH_IN, 7.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 2))
    load, reference = load_text(document).split("; ")
    fig.suptitle(f"Loss per target, the same load\n{load}\n{reference}", fontsize=11)
    names = list(dict.fromkeys(n for t in document.targets for n in t.techniques))
    width = 0.8 / max(len(document.targets), 1)
    for i, t in enumerate(document.targets):
        for j, name in enumerate(names):
            f = t.techniques.get(name)
            if f is None:
                continue
            x = j - 0.4 + width * (i + 0.5)
            y = 100 * f.loss
            err = [[y - 100 * f.ci95[0]], [100 * f.ci95[1] - y]]
            color, hatch = TECH_COLORS.get(name, "#777777"), HATCHES[i % len(HATCHES)]
            top.bar(x, y, width, color=color, hatch=hatch, edgecolor="white")
            top.errorbar(x, y, yerr=err, fmt="none", ecolor="black", capsize=3, lw=1)
    top.set_xticks(range(len(names)), names)
    top.set_ylabel("loss (%), 95% interval")
    legend = [
        Patch(facecolor="#999999", edgecolor="white", hatch=HATCHES[i % len(HATCHES)], label=t.target)
        for i, t in enumerate(document.targets)
    ]
    top.legend(handles=legend, title="target", fontsize=9, frameon=False)
    xs = range(len(document.targets))
    values = [100 * t.collector_loss for t in document.targets]
    errors = [
        [v - 100 * t.collector_ci95[0] for v, t in zip(values, document.targets, strict=True)],
        [100 * t.collector_ci95[1] - v for v, t in zip(values, document.targets, strict=True)],
    ]
    bottom.bar(xs, values, 0.5, color="#777777")
    bottom.errorbar(xs, values, yerr=errors, fmt="none", ecolor="black", capsize=4, lw=1)
    bottom.set_xticks(
        list(xs), [f"{t.target}\n{t.written_lost:,} of {t.written:,}" for t in document.targets]
    )
    bottom.set_ylabel("collector-side loss (%)\nof events fully written")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path


def _context(document: TargetsDocument) -> dict[str, object]:
    return {
        "title": "lossbench: one load, several collectors",
        "load": load_text(document),
        "warnings": warnings(document),
        "target_columns": TARGET_COLUMNS,
        "target_rows": targets_table(document),
        "loss_columns": loss_columns(document),
        "loss_rows": loss_table(document),
        "sentences": sentences(document),
        "runs": [(t.target, t.run_dir) for t in document.targets],
        "schema": document.schema,
        "version": __version__,
    }


def render_targets_report(folder: Path, document: TargetsDocument) -> TargetsReportPaths:
    """Write ``charts/targets.png``, ``targets.html`` (self-contained) and ``targets.md`` into ``folder``."""
    chart = targets_chart(document, folder / "charts" / "targets.png")
    context = _context(document)
    html = _HTML.get_template("targets.html.j2").render(
        chart=base64.b64encode(chart.read_bytes()).decode("ascii"), **context
    )
    markdown = _MD.get_template("targets.md.j2").render(chart="charts/targets.png", **context)
    paths = TargetsReportPaths(html=folder / "targets.html", markdown=folder / "targets.md", chart=chart)
    paths.html.write_text(html, encoding="utf-8")
    paths.markdown.write_text(markdown, encoding="utf-8")
    return paths
