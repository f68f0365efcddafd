"""The sentences that report loss rates and their comparisons (the statistics are ``lossbench.stats``)."""

from __future__ import annotations

from lossbench.contract.summary import format_pct
from lossbench.stats import ALPHA, ratio


def format_p(p: float) -> str:
    """ "p < 0.001" or "p = 0.03": enough digits to judge, no false precision."""
    if p < 0.001:
        return "p < 0.001"
    if p < 0.01:
        return f"p = {p:.3f}"
    return f"p = {p:.2f}"


def _format_ratio(r: float) -> str:
    return f"{r:.1f}×" if r < 10 else f"{r:.0f}×"


def ratio_text(tech: str, ref: str, loss: float, ref_loss: float, p: float, alpha: float = ALPHA) -> str:
    """The sentence printed under the loss table, e.g. "pixel loses 3.2× less than ajax (p < 0.001)".

    A difference is claimed only when significant at ``alpha``; otherwise the sentence says "within noise".
    A zero loss has no ratio, so it is stated with the other loss instead.
    """
    ptext = format_p(p)
    if loss == 0 and ref_loss == 0:
        return f"{tech} and {ref} both lost nothing"
    if p >= alpha:
        return f"{tech} and {ref} lose the same within noise ({ptext})"
    if loss == 0:
        return f"{tech} lost nothing; {ref} lost {format_pct(ref_loss)} ({ptext})"
    if ref_loss == 0:
        return f"{ref} lost nothing; {tech} lost {format_pct(loss)} ({ptext})"
    factor, direction = ratio(loss, ref_loss)
    assert factor is not None
    return f"{tech} loses {_format_ratio(factor)} {direction} than {ref} ({ptext})"


def collector_loss_text(
    target: str,
    reference: str,
    technique: str | None,
    loss: float,
    ref_loss: float,
    p: float,
    alpha: float = ALPHA,
) -> str:
    """The sentence of a target's collector-side loss against the reference target's, e.g. "the aiohttp
    target lost 0.04% of the events it fully received (p = 0.02: more than the reference target's 0%)".

    A difference is claimed only when significant at ``alpha``; otherwise it says "within noise"."""
    of = "events" if technique is None else f"{technique} events"
    said = f"the {target} target lost {format_pct(loss)} of the {of} it fully received"
    ref = f"the {reference} target's {format_pct(ref_loss)}"
    if p >= alpha:
        return f"{said} ({format_p(p)}: the same as {ref} within noise)"
    return f"{said} ({format_p(p)}: {ratio(loss, ref_loss)[1]} than {ref})"
