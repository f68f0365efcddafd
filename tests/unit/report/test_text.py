"""The plain-text loss table, from a stored summary."""

from __future__ import annotations

import msgspec

from lossbench.contract.summary import FoundFigures, Summary, TechniqueFigures
from lossbench.report.text import summary_to_text
from lossbench.stats import wilson_interval

# what `lossbench run` printed for this run before issue 10, and the browser preset it played (its run.json
# is from before the presets: seed, whose events asked no pool, so that is all there is to say)
PRINTED = """\
technique        sent  lost   loss  95% interval  predicted
ajax               83     9  10.8%  [5.8, 19.3]   7.9% [7.7, 8.0]
pixel              83     4   4.8%  [1.9, 11.7]   3.1% [3.0, 3.1]
pixel-prewarm      83     1   1.2%  [0.2, 6.5]    2.0% [1.9, 2.1]
pixel-keepalive    83     0   0.0%  [0.0, 4.4]    0.0% [0.0, 0.0]

browser preset: seed

pixel and ajax lose the same within noise (p = 0.15)
pixel-prewarm loses 9.0× less than ajax (p = 0.009)
pixel-keepalive lost nothing; ajax lost 10.8% (p = 0.003)

timing error p50 0.7 ms, p90 1.7 ms, p99 18.1 ms; losses decided on intended time (deciding on real time \
would add up to 0.00 points)
"""


def test_the_table_is_what_the_run_printed(stored: Summary) -> None:
    assert summary_to_text(stored) == PRINTED


def test_phantoms_missing_prediction_and_warnings_are_shown(stored: Summary) -> None:
    pixel = msgspec.structs.replace(stored.techniques["pixel"], predicted_loss=None, predicted_ci95=None)
    summary = msgspec.structs.replace(
        stored,
        techniques={**stored.techniques, "pixel": pixel},
        phantoms=1234,
        warnings=["sent/a.jsonl: incomplete ledger (no footer)"],
    )
    lines = summary_to_text(summary).splitlines()
    assert lines[2] == "pixel              83     4   4.8%  [1.9, 11.7]   -"
    assert lines[5] == "phantoms (received, never sent): 1,234"
    assert lines[-2:] == ["warnings:", "  - sent/a.jsonl: incomplete ledger (no footer)"]


def test_a_run_without_written_events_has_no_timing_line(stored: Summary) -> None:
    timing = msgspec.structs.replace(stored.timing, p50=None, p90=None, p99=None)
    text = summary_to_text(msgspec.structs.replace(stored, timing=timing, comparisons=[]))
    assert "timing error" not in text and text.endswith("0.0% [0.0, 0.0]\n\nbrowser preset: seed\n")


def _found(t: TechniqueFigures, **kinds: tuple[int, int]) -> dict[str, FoundFigures]:
    """``found`` from (sent, lost) per kind."""
    return {
        kind: FoundFigures(sent=n, share=n / t.sent, lost=lost, loss=lost / n, ci95=wilson_interval(lost, n))
        for kind, (n, lost) in kinds.items()
    }


def test_a_pooled_run_says_what_each_techniques_events_found(stored: Summary) -> None:
    """Under the table: the preset, then per technique the kinds its events found (warm first, only those
    that occur) with the share and the loss of each, and its preflights per delivered event."""
    t = stored.techniques
    ajax = msgspec.structs.replace(
        t["ajax"],
        found=_found(t["ajax"], cold=(30, 8), warm=(53, 1)),
        preflights_sent=31,
        preflights_cached=52,
        preflights_per_delivered=31 / 74,
    )
    pixel = msgspec.structs.replace(t["pixel"], found=_found(t["pixel"], warm=(82, 3), pending=(1, 1)))
    keepalive = msgspec.structs.replace(
        t["pixel-keepalive"], found=_found(t["pixel-keepalive"], none=(83, 0))
    )
    summary = msgspec.structs.replace(
        stored,
        browser="chromium",
        techniques={**t, "ajax": ajax, "pixel": pixel, "pixel-keepalive": keepalive},
    )
    lines = summary_to_text(summary).splitlines()
    assert lines[5:11] == [
        "",
        "browser preset: chromium",
        "  ajax             warm 64% (loss 1.9% [0.3, 9.9]) · cold 36% (26.7% [14.2, 44.4])",
        "                   preflights per delivered event 0.419 (52 cached)",
        "  pixel            warm 99% (loss 3.7% [1.3, 10.2]) · pending 1% (100.0% [20.7, 100.0])",
        "",
    ]
