"""Answer times as a fixed-bucket histogram: recorded by the collector, merged and read by compare.

The buckets are fixed (log-spaced, ``BUCKETS_PER_DECADE`` per decade from ``LOWEST`` to ``HIGHEST``
seconds) so that histograms from several collector processes add up bucket by bucket, and so that a
quantile read from one is off by at most one bucket's width (about 6% of the value at 40 per decade).
In JSON a histogram is ``{"counts": {"<bucket index>": count, ...}}``, empty buckets left out; a bucket
index means something only in its layout (``LAYOUT``), which the stats file records beside its histograms.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence

import msgspec
import numpy as np

LOWEST = 1e-5
"""Seconds: answers faster than 10 µs share the first bucket."""
HIGHEST = 600.0
"""Seconds: answers slower than 10 min share the last bucket."""
BUCKETS_PER_DECADE = 40
ANSWER_EVENT = "event"
"""The kind of answer to an event (an ajax POST or a pixel GET)."""
ANSWER_PREFLIGHT = "preflight"
"""The kind of answer to a CORS preflight (``OPTIONS /e``)."""
ANSWER_PING = "ping"
"""The kind of answer to a ping (``/ping.gif``: the pre-warm and keep-alive pings)."""
ANSWER_KINDS = (ANSWER_EVENT, ANSWER_PREFLIGHT, ANSWER_PING)
"""What the collector times, by what was answered; the stats file has a histogram for each (``answers``),
and the summary's ``collector.answer_seconds`` is keyed by them."""

LAYOUT: Mapping[str, float] = {"lowest": LOWEST, "per_decade": BUCKETS_PER_DECADE}
"""What a bucket index means (bucket i's upper edge is lowest · 10^(i/per_decade) s), recorded beside the
histograms it applies to (the stats file's ``answers.layout``): histograms are read only in this layout."""


def check_layout(layout: object) -> None:
    """ValueError, saying both layouts, unless ``layout`` is ``LAYOUT``; None (a file written before the
    layout was recorded) is this layout, the only one there was."""
    if layout is None:
        return
    if not isinstance(layout, Mapping) or dict(layout) != LAYOUT:
        raise ValueError(f"their bucket layout {layout!r} is not this lossbench's {dict(LAYOUT)}")


_DECADES = math.log10(HIGHEST / LOWEST)
BUCKETS = math.ceil(_DECADES * BUCKETS_PER_DECADE) + 1
UPPER_EDGES: tuple[float, ...] = tuple(LOWEST * 10 ** (i / BUCKETS_PER_DECADE) for i in range(BUCKETS))
"""Upper edge of each bucket, in seconds: bucket i holds values in (UPPER_EDGES[i-1], UPPER_EDGES[i]]."""


_EDGES = np.array(UPPER_EDGES)


def bucket_of(seconds: float) -> int:
    """The bucket a value falls in (values past ``HIGHEST`` fall in the last)."""
    return min(bisect.bisect_left(UPPER_EDGES, seconds), BUCKETS - 1)


class LatencyHistogram(msgspec.Struct, kw_only=True):
    """Counts of answer times by bucket (see the module docstring); mergeable, with quantiles and draws."""

    counts: dict[int, int] = msgspec.field(default_factory=dict)

    def add(self, seconds: float) -> None:
        b = bucket_of(seconds)
        self.counts[b] = self.counts.get(b, 0) + 1

    def add_many(self, seconds: Sequence[float] | np.ndarray) -> None:
        """``add`` each value, in one numpy pass (the same buckets as ``bucket_of``)."""
        if len(seconds) == 0:
            return
        buckets = np.minimum(np.searchsorted(_EDGES, seconds, side="left"), BUCKETS - 1)
        found, n = np.unique(buckets, return_counts=True)
        for b, k in zip(found.tolist(), n.tolist(), strict=True):
            self.counts[b] = self.counts.get(b, 0) + k

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """This histogram plus ``other`` (a new one)."""
        merged = dict(self.counts)
        for b, n in other.counts.items():
            merged[b] = merged.get(b, 0) + n
        return LatencyHistogram(counts=merged)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 < q ≤ 1) as the upper edge of the bucket holding it; None when empty."""
        total = self.total
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return UPPER_EDGES[b]
        return UPPER_EDGES[max(self.counts)]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws from the recorded distribution (uniform in log within a bucket); zeros when empty."""
        if not self.counts:
            return np.zeros(n)
        buckets = np.array(sorted(self.counts))
        weights = np.array([self.counts[b] for b in buckets], dtype=float)
        chosen = rng.choice(buckets, size=n, p=weights / weights.sum())
        upper = np.log10(np.array(UPPER_EDGES))[chosen]
        lower = upper - 1.0 / BUCKETS_PER_DECADE
        return np.asarray(10 ** rng.uniform(lower, upper))

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"counts": {str(b): n for b, n in sorted(self.counts.items())}}

    @classmethod
    def from_dict(cls, doc: object, layout: object = None) -> LatencyHistogram:
        """Read ``as_dict``'s shape, recorded in ``layout`` (None: this one, ``check_layout``); ValueError
        on anything else, another layout, a bucket outside ``BUCKETS`` or a negative count included
        (compare names the file)."""
        check_layout(layout)
        h = msgspec.convert(doc, cls, strict=False)
        for b, n in h.counts.items():
            if not 0 <= b < BUCKETS or n < 0:
                raise ValueError(f"bucket {b} with count {n}: buckets are 0 to {BUCKETS - 1}, counts ≥ 0")
        return h


def merge_all(histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
    merged = LatencyHistogram()
    for h in histograms:
        merged = merged.merge(h)
    return merged


def percentiles(h: LatencyHistogram) -> Mapping[str, float | None]:
    """The p50, p90 and p99 the summary and /stats show."""
    return {"p50": h.quantile(0.5), "p90": h.quantile(0.9), "p99": h.quantile(0.99)}
