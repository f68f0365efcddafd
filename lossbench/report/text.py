"""The loss table as plain text: what ``lossbench compare`` and ``lossbench run`` print."""

from __future__ import annotations

from lossbench.contract.summary import (
    Summary,
    collector_sentence,
    format_pct,
    format_pct_interval,
    found_sentence,
    preflight_sentence,
)


def _interval(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else format_pct_interval(ci)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.1f} ms"


def _connections(summary: Summary, width: int) -> list[str]:
    """The browser preset, then per technique what its events found for a connection (each kind's share
    and loss) and its preflights: where the pool and the preflight cache show in the loss."""
    out = [f"browser preset: {summary.browser}"]
    for name, t in summary.techniques.items():
        said = [s for s in (found_sentence(t), preflight_sentence(t)) if s]
        # a line each, the technique named on the first
        out += [f"  {(name if i == 0 else '').ljust(width)}  {text}" for i, text in enumerate(said)]
    return out


def summary_to_text(summary: Summary) -> str:
    """The loss table as aligned plain text, then the browser preset with what each technique's events
    found, the comparison sentences, timing and warnings."""
    header = ["technique", "sent", "lost", "loss", "95% interval", "predicted"]
    rows = [header]
    for name, t in summary.techniques.items():
        predicted = "-"
        if t.predicted_loss is not None:
            predicted = f"{format_pct(t.predicted_loss)} {_interval(t.predicted_ci95)}".strip()
        rows.append([name, f"{t.sent:,}", f"{t.lost:,}", format_pct(t.loss), _interval(t.ci95), predicted])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    left = {0, 4, 5}  # text columns left-aligned, numbers right-aligned
    lines = [
        "  ".join(c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip()
        for r in rows
    ]
    if summary.phantoms:
        lines.append(f"phantoms (received, never sent): {summary.phantoms:,}")
    lines.append("")
    lines += _connections(summary, widths[0])
    if summary.comparisons:
        lines.append("")
        lines += [c.text for c in summary.comparisons]
    timing = summary.timing
    if timing.p50 is not None:
        lines.append("")
        lines.append(
            f"timing error p50 {_ms(timing.p50)}, p90 {_ms(timing.p90)}, p99 {_ms(timing.p99)}"
            f"; losses decided on intended time (deciding on real time would add up to "
            f"{100 * timing.max_loss_shift:.2f} points)"
        )
    if summary.collector is not None:
        lines.append(collector_sentence(summary.collector))
    if summary.warnings:
        lines.append("")
        lines.append("warnings:")
        lines += [f"  - {w}" for w in summary.warnings]
    return "\n".join(lines) + "\n"
