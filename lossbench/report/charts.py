"""Charts for the report, drawn from the ``Summary`` alone (docs/FORMATS.md).

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas, never through pyplot:
no global figure registry, no rcParams changes, safe to call from tests. The one global touch is selecting
the Agg backend, so a pyplot imported elsewhere never looks for a display. PNG metadata is stripped of the
matplotlib version so the same summary gives the same bytes.

Every chart tolerates missing pieces (a technique with 0 sent, ``predicted_loss`` null, no cost figure): the
element is left out and the rest is drawn. A chart with nothing at all to show is not written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display needed; Figure.savefig uses Agg for PNG regardless

from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator

from lossbench.contract.summary import Summary, TechniqueFigures, TimeToWritten
from lossbench.contract.techniques import DONE, STAGES
from lossbench.report.content import label, ordered_techniques

WIDTH_IN = 9.0
DPI = 150  # 9 in × 150 = 1350 px: crisp when shown 900 px wide on a high-density screen

# Okabe–Ito colours: distinguishable with the common colour-vision deficiencies. Its eighth, yellow, is
# too pale on white; the cache-busting variant of ajax takes Paul Tol's wine instead.
TECH_COLORS: dict[str, str] = {
    "ajax": "#D55E00",
    "pixel": "#0072B2",
    "pixel-prewarm": "#009E73",
    "pixel-keepalive": "#CC79A7",
    "pixel-preconnect": "#000000",
    "beacon": "#E69F00",
    "fetch-keepalive": "#56B4E9",
    "ajax-cachebust": "#882255",
}
_OTHER_COLOR = "#777777"

STAGE_ORDER: tuple[str, ...] = (*dict.fromkeys(s for stages in STAGES.values() for s in stages), DONE)
"""Stages bottom to top: each technique's in the order they happen, then ``done``; any other after them."""
# One fixed colour per stage (Tableau 10), so a stage looks the same in every run's chart.
STAGE_COLORS: dict[str, str] = {
    "dns": "#4E79A7",
    "connect": "#F28E2B",
    "tls": "#B07AA1",
    "preflight": "#E15759",
    "headers": "#76B7B2",
    "body": "#59A14F",
    "request": "#EDC948",
    "done": "#9C9C9C",
}
STAGE_LABELS: dict[str, str] = {"done": "done (written, never received)"}

COST_METRICS: tuple[tuple[Callable[[TechniqueFigures], float | None], str, float, bool], ...] = (
    # (figure, axis label, scale to the shown unit, the model's rather than measured)
    (lambda t: t.cost.requests_per_delivered, "requests\nper delivered event", 1.0, False),
    (lambda t: t.cost.connections_per_delivered, "connections\nper delivered event", 1.0, False),
    (
        lambda t: t.cost.conn_seconds_per_delivered,
        "connection time at collector\nper delivered event (ms)",
        1000.0,
        False,
    ),
    # what a pool holds open (idle connections until the collector or the browser closes them), predicted
    (lambda t: t.predicted_held_seconds, "held connection-seconds\nper event (model)", 1.0, True),
)


SUBTITLE_CHARS = 90
"""Characters of a subtitle line that fit the figure's width at its font size."""


def subtitle(summary: Summary) -> str:
    """The run's model, so a chart copied out of the report still says what it was measured under."""
    run = summary.run
    parts = [f"profile: {label(run.get('profile'))}", f"exit model: {label(run.get('exit_model'))}"]
    if run.get("abort") is not None:
        parts.append(f"abort: {label(run.get('abort'))}")
    parts.append(f"browser: {summary.browser}")
    text = "  ·  ".join(parts)
    if run.get("run_id") is not None:  # on a line of its own when the model's line is already long
        run_id = f"run {label(run.get('run_id'))}"
        text += ("\n" if len(text) + len(run_id) > SUBTITLE_CHARS else "  ·  ") + run_id
    return text


def _figure(height: float, title: str, summary: Summary, **kw: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    axes = fig.subplots(**kw)
    fig.suptitle(f"{title}\n{subtitle(summary)}", fontsize=12)
    return fig, axes


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})


def _color(tech: str) -> str:
    return TECH_COLORS.get(tech, _OTHER_COLOR)


def _pct_text(value: float) -> str:
    return f"{value:.2f}%" if value < 10 else f"{value:.1f}%"


_PREDICTION_STYLE = {
    "fmt": "D",
    "color": "black",
    "mfc": "white",
    "ms": 7,
    "capsize": 3,
    "lw": 1,
    "zorder": 4,
    "label": "model prediction (95% interval)",
}
_SEGMENT_STYLE = {"edgecolor": "white", "linewidth": 0.6, "zorder": 2}
_LEGEND_RIGHT = {"loc": "center left", "bbox_to_anchor": (1.01, 0.5), "fontsize": 9, "frameon": False}


def _yerr(center: float, ci: tuple[float, float] | None) -> list[list[float]] | None:
    """Asymmetric error-bar lengths (percent points) for an interval given as fractions."""
    return None if ci is None else [[max(center - 100 * ci[0], 0.0)], [max(100 * ci[1] - center, 0.0)]]


def _note(ax: Any, x: float, y: float, text: str, **kw: Any) -> None:
    style = {"ha": "center", "va": "bottom", "fontsize": 10, "fontweight": "bold", **kw}
    ax.annotate(text, (x, y), xytext=(0, 4), textcoords="offset points", **style)


def _no_data(ax: Any, x: float) -> None:
    _note(ax, x, 0, "no events\nsent", fontsize=9, fontweight="normal", color="#555555")


def _tech_ticks(ax: Any, techs: list[tuple[str, TechniqueFigures]]) -> None:
    ax.set_xticks(range(len(techs)), [f"{t}\nn = {d.sent:,}" for t, d in techs])
    ax.set_xlim(-0.6, len(techs) - 0.4)


def loss_chart(summary: Summary, path: Path) -> Path | None:
    """Measured loss with its 95% interval beside the model's prediction: the report's headline."""
    techs = ordered_techniques(summary)
    if not techs:
        return None
    fig, ax = _figure(5.0, "Events lost when the page goes away", summary)
    top = 0.0
    for x, (tech, data) in enumerate(techs):
        if data.sent > 0:
            value, ci = 100 * data.loss, data.ci95
            ax.bar(x, value, width=0.6, color=_color(tech), alpha=0.85, zorder=2)
            ax.errorbar(x, value, yerr=_yerr(value, ci), fmt="none", ecolor="black", capsize=5, zorder=3)
            bar_top = max(value, 100 * ci[1])
            _note(ax, x, bar_top, _pct_text(value))
            top = max(top, bar_top)
        else:
            _no_data(ax, x)
        pred, pci = data.predicted_loss, data.predicted_ci95
        if pred is not None:  # beside the bar, not on it: never hides the bar's own label or whiskers
            pv = 100 * pred
            ax.errorbar(x + 0.38, pv, yerr=_yerr(pv, pci), **_PREDICTION_STYLE)
            top = max(top, pv if pci is None else 100 * pci[1])
    _tech_ticks(ax, techs)
    ax.set_ylim(0, max(top * 1.18, 1.0))
    ax.set_ylabel("events lost (% of sent)")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    handles, labels = ax.get_legend_handles_labels()
    measured = Patch(facecolor="#bbbbbb", edgecolor="black", label="measured loss (whiskers: 95% interval)")
    unique = dict(zip(labels, handles, strict=True)).values()
    ax.legend(handles=[measured, *unique], loc="best", fontsize=9, frameon=False)
    _save(fig, path)
    return path


def stages_chart(summary: Summary, path: Path) -> Path | None:
    """Where lost events were cut: which network stage each technique pays for."""
    techs = ordered_techniques(summary)
    counts = [{s: n for s, n in d.by_stage.items() if n} if d.sent > 0 else None for _, d in techs]
    present = {s for c in counts if c for s in c}
    stages = [s for s in STAGE_ORDER if s in present] + sorted(present - set(STAGE_ORDER))
    if not stages:
        return None
    fig, ax = _figure(5.0, "Lost events by the stage the client was in at the cut", summary)
    sent = [d.sent for _, d in techs]
    bottom = [0.0] * len(techs)
    for stage in stages:
        heights = [100 * c.get(stage, 0.0) / n if c else 0.0 for c, n in zip(counts, sent, strict=True)]
        color, name = STAGE_COLORS.get(stage, _OTHER_COLOR), STAGE_LABELS.get(stage, stage)
        ax.bar(range(len(techs)), heights, 0.6, bottom=bottom, color=color, label=name, **_SEGMENT_STYLE)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    for x, (total, c) in enumerate(zip(bottom, counts, strict=True)):
        if c is not None:
            _note(ax, x, total, _pct_text(total))
        else:
            _no_data(ax, x)
    _tech_ticks(ax, techs)
    ax.set_ylim(0, max(max(bottom) * 1.15, 1.0))
    ax.set_ylabel("lost events (% of sent)")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.legend(title="stage at the cut (first at the bottom)", reverse=True, **_LEGEND_RIGHT)
    _save(fig, path)
    return path


def _quantile_points(ttw: TimeToWritten) -> tuple[list[float], list[float]] | None:
    """(t seconds, q) of the CDF's points; None when no event of the technique was written."""
    quant = ttw.quantiles
    if not quant.t:
        return None
    points = sorted((t, q) for q, t in zip(quant.q, quant.t, strict=False) if 0 <= q <= 1)
    return [t for t, _ in points], [q for _, q in points]


def time_to_written_chart(summary: Summary, path: Path) -> Path | None:
    """How long each technique needs before the event is safe: the quantity exit times race against."""
    curves = []
    for tech, data in ordered_techniques(summary):
        points = _quantile_points(data.time_to_written)
        if points is not None and data.sent > 0:
            curves.append((tech, *points))
    if not curves:
        return None
    fig, ax = _figure(5.0, "Time until the event's data was written (client time since firing)", summary)
    positive = [1000 * t for c in curves for t in c[1] if t > 0]
    log = bool(positive) and max(positive) / min(positive) >= 20
    for tech, ts, qs in curves:
        pts = [(1000 * t, 100 * q) for t, q in zip(ts, qs, strict=True) if t > 0 or not log]
        if pts:
            marker = None if len(pts) > 12 else "o"
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, color=_color(tech), lw=2, label=tech, marker=marker, ms=5)
    if log:  # ticks at 1-2-5 steps with plain numbers: "200 ms" reads faster than 2×10²
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.{0 if v >= 1 else 2}f}"))
    ax.set_xlabel("time until the complete data was written (ms" + (", log scale)" if log else ")"))
    ax.set_ylabel("events written by then (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=9, frameon=False)
    _save(fig, path)
    return path


def cost_chart(summary: Summary, path: Path) -> Path | None:
    """What each technique costs the collector per event it actually delivers; one panel per unit."""
    techs = ordered_techniques(summary)
    metrics = [m for m in COST_METRICS if any(m[0](c) is not None for _, c in techs)]
    if not metrics:
        return None
    fig, axes = _figure(4.2, "Collector cost per delivered event", summary, ncols=len(metrics), sharey=True)
    axes = axes if len(metrics) > 1 else [axes]
    names = [t for t, _ in techs]
    for ax, (figure, axis_label, scale, model) in zip(axes, metrics, strict=True):
        values = [figure(c) for _, c in techs]
        top = max((v * scale for v in values if v is not None), default=0.0)
        for y, (tech, v) in enumerate(zip(names, values, strict=True)):
            if v is None:
                ax.text(0, y, " n/a", va="center", fontsize=9, color="#555555")
                continue
            style = {"hatch": "//", "edgecolor": "black", "alpha": 0.55} if model else {}
            ax.barh(y, v * scale, 0.6, color=_color(tech), zorder=2, **style)
            ax.text(v * scale, y, f" {_fmt_value(v * scale)}", va="center", fontsize=9)
        ax.set_xlim(0, max(top * 1.3, 1e-9))
        ax.set_xlabel(axis_label)
        ax.grid(axis="x", alpha=0.3, zorder=0)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].set_ylim(len(names) - 0.5, -0.5)  # first technique on top, and room for rows with no bar
    _save(fig, path)
    return path


_CLIENT_BARS: tuple[tuple[float, str, str, str], ...] = (
    # (x offset, client, colour, hatch): Chromium, the ground truth, solid; the socket client hatched
    (-0.2, "chromium", "#1f77b4", ""),
    (0.2, "socket", "#bbbbbb", "//"),
)


def calibration_chart(summary: Summary, path: Path) -> Path | None:
    """Chromium's loss beside the socket client's for the same visits: two bars per technique."""
    if not summary.calibration:
        return None
    techs = list(summary.calibration.items())
    fig, ax = _figure(5.0, "Chromium (ground truth) vs the socket client, same visits", summary)
    top = 0.0
    for x, (_, entry) in enumerate(techs):
        for dx, client, color, hatch in _CLIENT_BARS:
            figures = entry.chromium if client == "chromium" else entry.socket
            if figures is None or not figures.sent:
                _note(ax, x + dx, 0, "n/a", fontsize=8, fontweight="normal", color="#555555")
                continue
            value = 100 * figures.loss
            ax.bar(x + dx, value, width=0.38, color=color, hatch=hatch, edgecolor="black", zorder=2)
            yerr = _yerr(value, figures.ci95)
            ax.errorbar(x + dx, value, yerr=yerr, fmt="none", ecolor="black", capsize=4, zorder=3)
            bar_top = max(value, 100 * figures.ci95[1])
            _note(ax, x + dx, bar_top, _pct_text(value), fontsize=8)
            top = max(top, bar_top)
        if entry.difference is not None and entry.difference.significant:
            _note(ax, x, top * 1.08 + 1, "differ", fontsize=8, color="#b91c1c")
    ax.set_xticks(range(len(techs)), [t for t, _ in techs])
    ax.set_xlim(-0.6, len(techs) - 0.4)
    ax.set_ylim(0, max(top * 1.25, 1.0))
    ax.set_ylabel("events lost (% of sent)")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.legend(
        handles=[
            Patch(facecolor=color, edgecolor="black", hatch=hatch, label=label)
            for (_, _, color, hatch), label in zip(_CLIENT_BARS, ("Chromium", "socket client"), strict=True)
        ],
        loc="best",
        fontsize=9,
        frameon=False,
    )
    _save(fig, path)
    return path


def _fmt_value(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"


CHARTS: dict[str, Callable[[Summary, Path], Path | None]] = {
    "loss": loss_chart,
    "stages": stages_chart,
    "time_to_written": time_to_written_chart,
    "cost": cost_chart,
    "calibration": calibration_chart,
}
"""Chart name → drawing function; the file is ``charts/<name>.png``."""


def render_charts(summary: Summary, charts_dir: Path) -> dict[str, Path]:
    """Draw every chart that has data; returns name → path of the PNGs written, in report order."""
    charts_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, draw in CHARTS.items():
        path = draw(summary, charts_dir / f"{name}.png")
        if path is not None:
            written[name] = path
        else:
            (charts_dir / f"{name}.png").unlink(missing_ok=True)  # no stale chart from an earlier render
    return written
