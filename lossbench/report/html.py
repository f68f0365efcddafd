"""The run report: charts, one self-contained HTML page and the same content as Markdown.

Everything renders from the ``Summary`` (docs/FORMATS.md), so a report can be rebuilt at any time from the
run directory's ``summary.json``. The content is gathered once as plain text (``report.content``) and
written by two Jinja2 templates: HTML here (autoescaped, charts as data URIs, no external resources) and
Markdown (``report.markdown``). Output is deterministic: no timestamps of rendering, no network.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import msgspec

from lossbench import __version__
from lossbench.contract.summary import Summary
from lossbench.report import content
from lossbench.report.charts import render_charts
from lossbench.report.markdown import summary_markdown

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("lossbench.report", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass(frozen=True)
class ReportPaths:
    """Where ``render_report`` wrote the report; ``charts`` maps chart name to PNG, only those drawn."""

    html: Path
    markdown: Path
    charts: dict[str, Path] = field(default_factory=dict)


def render_report(run_dir: Path, summary: Summary) -> ReportPaths:
    """Write ``charts/*.png``, ``report.html`` and ``report.md`` into the run directory."""
    run_dir = Path(run_dir)
    if "run_id" not in summary.run:  # a run without run.json is still named, after its directory
        summary = msgspec.structs.replace(summary, run={**summary.run, "run_id": run_dir.name})
    charts = render_charts(summary, run_dir / "charts")
    pngs = {name: path.read_bytes() for name, path in charts.items()}
    html_path, md_path = run_dir / "report.html", run_dir / "report.md"
    html_path.write_text(summary_html(summary, pngs), encoding="utf-8")
    md_path.write_text(summary_markdown(summary, charts=charts), encoding="utf-8")
    return ReportPaths(html=html_path, markdown=md_path, charts=charts)


def summary_html(summary: Summary, charts: Mapping[str, bytes]) -> str:
    """The report as one self-contained HTML page; ``charts`` maps chart name to PNG bytes to embed."""
    embedded = [
        (content.CHART_CAPTIONS.get(name, name), base64.b64encode(png).decode("ascii"))
        for name, png in charts.items()
    ]
    return _ENV.get_template("report.html.j2").render(
        **content.page(summary), charts=embedded, version=__version__
    )
