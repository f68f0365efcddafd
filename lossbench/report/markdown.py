"""The run report as Markdown, from ``templates/report.md.j2``.

Every value the template prints is Markdown-escaped (``finalize``), the Markdown counterpart of HTML
autoescaping: a warning or a run parameter can break no table, start no link and carry no raw HTML.
"""

from __future__ import annotations

from collections.abc import Iterable

import jinja2
from markupsafe import Markup

from lossbench.contract.summary import Summary
from lossbench.report import content
from lossbench.report.charts import CHARTS


def md_escape(value: object) -> str:
    """Markdown-safe text: no table breaks, no raw HTML, no accidental emphasis or links."""
    if isinstance(value, Markup):  # marked |safe in the template: a chart's file name
        return str(value)
    text = " ".join(str(value).split()).replace("\\", "\\\\")
    for ch in "|*_`":
        text = text.replace(ch, "\\" + ch)
    text = text.replace("](", "\\](")  # no inline links; a lone bracket is harmless and stays readable
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("lossbench.report", "templates"),
    autoescape=False,  # Markdown, not HTML: md_escape does the escaping
    finalize=md_escape,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)


def summary_markdown(summary: Summary, *, charts: Iterable[str] = tuple(CHARTS)) -> str:
    """The report as Markdown; ``charts`` names the PNGs under ``charts/`` to link (those that exist)."""
    linked = [(content.CHART_CAPTIONS.get(name, name), name) for name in charts]
    return _ENV.get_template("report.md.j2").render(**content.page(summary), charts=linked)
