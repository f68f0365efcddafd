"""Visits: one page view in one tab, its events and when the page goes away; one by one or as arrays.

A *visit* is one page view in one tab. Visit time runs from the moment the tracker script starts on the page
(visit time 0, when ``pixel-prewarm`` fires its empty ping and ``pixel-keepalive`` opens its connection).
Each visit draws a network condition from a :class:`NetworkProfile`, then a list of tracking events and the
moment the page goes away from an :class:`ExitModel`. An event's exit time A (seconds from firing until the
page goes away) is what the technique races against.

Everything random is drawn from the ``numpy.random.Generator`` handed in: the same seed gives the same visits.
Each model draws whole batches of visits with numpy (:meth:`ExitModel.draw_batch`, used by the predictor
for hundreds of thousands of events); :meth:`ExitModel.draw_visit` is the same code for one visit, used by
the load generator. Pure numpy and Python: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lossbench.contract.techniques import EVENT_TYPES
from lossbench.model.profiles import NetworkBatch, NetworkDraw

if TYPE_CHECKING:
    from lossbench.model.exits import ExitModel
    from lossbench.model.profiles import NetworkProfile

# ---------------------------------------------------------------------------------------------- visits


@dataclass(frozen=True)
class PlannedEvent:
    """A tracking event of a visit: its type and the visit time (s since the tracker started) it fires."""

    type: str
    at: float


@dataclass(frozen=True)
class Visit:
    """One page view in one tab: its network, its events in firing order, when the page goes away, and how."""

    net: NetworkDraw
    events: tuple[PlannedEvent, ...]
    leave_at: float
    abort: str = "unload"

    def exit_time(self, event: PlannedEvent) -> float:
        """The event's A: seconds from firing until the page goes away (``inf``: never)."""
        return self.leave_at - event.at


@dataclass(frozen=True, eq=False)
class VisitBatch:
    """n visits as flat arrays: the vectorised form of a list of :class:`Visit`.

    Events are ordered by visit, then by firing time; ``visit[j]`` is the index of event j's visit and
    ``type[j]`` its index into :data:`EVENT_TYPES`. Every visit drawn by an exit model has at least one event.
    """

    net: NetworkBatch
    leave_at: np.ndarray
    visit: np.ndarray
    type: np.ndarray
    at: np.ndarray
    abort: str

    def __len__(self) -> int:
        return len(self.leave_at)

    @property
    def events(self) -> int:
        return len(self.at)

    def exit_times(self) -> np.ndarray:
        """A for every event (``inf`` where the page never goes away)."""
        times: np.ndarray = self.leave_at[self.visit] - self.at
        return times

    def visit_at(self, i: int) -> Visit:
        lo, hi = np.searchsorted(self.visit, [i, i + 1])
        events = tuple(
            PlannedEvent(EVENT_TYPES[int(k)], float(t))
            for k, t in zip(self.type[lo:hi], self.at[lo:hi], strict=True)
        )
        return Visit(self.net.draw(i), events, float(self.leave_at[i]), self.abort)

    def visits(self) -> list[Visit]:
        return list(self.iter_visits())

    def iter_visits(self) -> Iterator[Visit]:
        """The visits one by one, as ``visit_at`` gives them, converting the arrays to Python once."""
        starts = np.searchsorted(self.visit, np.arange(len(self) + 1)).tolist()
        types, ats, leave = self.type.tolist(), self.at.tolist(), self.leave_at.tolist()
        rtt, dns, up = self.net.rtt.tolist(), self.net.dns.tolist(), self.net.uplink_bps.tolist()
        for i in range(len(self)):
            lo, hi = starts[i], starts[i + 1]
            events = tuple(
                PlannedEvent(EVENT_TYPES[k], t) for k, t in zip(types[lo:hi], ats[lo:hi], strict=True)
            )
            draw = NetworkDraw(rtt[i], dns[i], None if math.isinf(up[i]) else up[i])
            yield Visit(draw, events, leave[i], self.abort)

    @classmethod
    def of(cls, visits: Sequence[Visit]) -> VisitBatch:
        """The batch form of hand-made visits (all with the same abort kind)."""
        aborts = {v.abort for v in visits}
        if len(aborts) != 1:
            raise ValueError(f"a batch needs visits with one abort kind, got {sorted(aborts)}")
        return cls(
            net=NetworkBatch.of([v.net for v in visits]),
            leave_at=np.array([v.leave_at for v in visits], dtype=float),
            visit=np.array([i for i, v in enumerate(visits) for _ in v.events], dtype=np.int64),
            type=np.array([EVENT_TYPES.index(e.type) for v in visits for e in v.events], dtype=np.int8),
            at=np.array([e.at for v in visits for e in v.events], dtype=float),
            abort=aborts.pop(),
        )

    @classmethod
    def concat(cls, batches: Sequence[VisitBatch]) -> VisitBatch:
        offsets = np.cumsum([0] + [len(b) for b in batches[:-1]])
        return cls(
            net=NetworkBatch(
                rtt=np.concatenate([b.net.rtt for b in batches]),
                dns=np.concatenate([b.net.dns for b in batches]),
                uplink_bps=np.concatenate([b.net.uplink_bps for b in batches]),
            ),
            leave_at=np.concatenate([b.leave_at for b in batches]),
            visit=np.concatenate([b.visit + o for b, o in zip(batches, offsets, strict=True)]),
            type=np.concatenate([b.type for b in batches]),
            at=np.concatenate([b.at for b in batches]),
            abort=batches[0].abort,
        )


def _assemble(
    net: NetworkBatch, leave_at: np.ndarray, abort: str, parts: list[tuple[np.ndarray, int, np.ndarray]]
) -> VisitBatch:
    """Join (visit index, type code, firing time) columns into a batch ordered by visit, then time."""
    visit = np.concatenate([v for v, _, _ in parts])
    kind = np.concatenate([np.full(len(v), k, dtype=np.int8) for v, k, _ in parts])
    at = np.concatenate([t for _, _, t in parts])
    order = np.lexsort((kind, at, visit))
    return VisitBatch(net, leave_at, visit[order].astype(np.int64), kind[order], at[order], abort)


# ------------------------------------------------------------------------------------ visit sampler


def sample_visits(
    profile: NetworkProfile, exit_model: ExitModel, abort: str, rng: np.random.Generator, *, events: int
) -> VisitBatch:
    """Whole visits holding at least ``events`` events in all, drawn in a few vectorised batches."""
    if events <= 0:
        raise ValueError("events must be > 0")
    batches: list[VisitBatch] = []
    total = 0
    n = min(events, 1000)  # pilot batch: learn how many events a visit has
    while True:
        batch = exit_model.draw_batch(rng, profile.draw_batch(rng, n), abort)
        batches.append(batch)
        total += batch.events
        if total >= events:
            break
        per_visit = max(total / sum(len(b) for b in batches), 1e-9)
        n = min(max(int((events - total) / per_visit * 1.02) + 16, 16), 10 * events)
    return batches[0] if len(batches) == 1 else VisitBatch.concat(batches)
