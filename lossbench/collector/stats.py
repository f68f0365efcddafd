"""The collector's counters: served at /stats, written next to the ledger at shutdown (docs/FORMATS.md)."""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from lossbench.contract.latency import ANSWER_KINDS, LAYOUT, LatencyHistogram


@dataclass
class Stats:
    """Counters served at /stats and written next to the ledger at shutdown."""

    events: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    conn_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    preflights: int = 0
    pings: int = 0
    bodies_incomplete: int = 0
    headers_incomplete: int = 0
    header_timeouts: int = 0
    body_timeouts: int = 0
    idle_timeouts: int = 0
    connections_open: int = 0
    connections_total: int = 0
    connections_refused: int = 0
    connections_aborted: int = 0
    ledger_errors: int = 0
    answers: dict[str, LatencyHistogram] = field(
        default_factory=lambda: {kind: LatencyHistogram() for kind in ANSWER_KINDS}
    )  # seconds from a request complete to its answer written, by kind (collector's clock)
    answer_times: dict[str, list[float]] = field(
        default_factory=lambda: {kind: [] for kind in ANSWER_KINDS}
    )  # answer times not yet in ``answers``: appended per answer, added in bulk (``fold``)
    served_from: float | None = None  # when the earliest request timed was complete (collector's clock)
    served_to: float = 0.0  # when the last answer timed was written
    unanswered: int = 0  # requests complete but never answered: still queued at shutdown (--service-time)
    started: float = field(default_factory=time.time)

    def served(self, done_at: float, now: float) -> None:
        """Answers were timed, the earliest to a request complete at ``done_at``, the last written at
        ``now``: the earliest request complete and the last answer written bound the seconds served (with
        --service-time the first answer written need not be to the earliest request: a ping behind no one
        on a free worker goes before an event still in service)."""
        served_from = self.served_from
        if served_from is None or done_at < served_from:
            self.served_from = done_at
        self.served_to = now

    FOLD_EVERY = 4096
    """Answer times kept in ``answer_times`` before ``fold`` adds them to the histograms."""

    def fold(self, at_least: int = 1) -> None:
        """Add the answer times waiting in ``answer_times`` to ``answers``, for kinds with ``at_least``
        of them (one numpy pass per kind, where adding each as it comes costs a bisection per answer)."""
        for kind, times in self.answer_times.items():
            if len(times) >= at_least:
                self.answers[kind].add_many(times)
                times.clear()

    @property
    def served_seconds(self) -> float:
        """Seconds from the earliest timed request complete to the last timed answer written (``/stats`` and
        ``/healthz`` are not timed: polling them after the load does not stretch it)."""
        return 0.0 if self.served_from is None else max(0.0, self.served_to - self.served_from)

    def as_dict(self) -> dict[str, Any]:
        self.fold()
        return {
            "events": dict(self.events),
            "requests": dict(self.requests),
            "refused": dict(self.refused),
            "conn_seconds": {k: round(v, 6) for k, v in self.conn_seconds.items()},
            "preflights": self.preflights,
            "pings": self.pings,
            "bodies_incomplete": self.bodies_incomplete,
            "headers_incomplete": self.headers_incomplete,
            "header_timeouts": self.header_timeouts,
            "body_timeouts": self.body_timeouts,
            "idle_timeouts": self.idle_timeouts,
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
            "connections_refused": self.connections_refused,
            "connections_aborted": self.connections_aborted,
            "ledger_errors": self.ledger_errors,
            "answers": {"layout": dict(LAYOUT), **{kind: h.as_dict() for kind, h in self.answers.items()}},
            "cpu_seconds": round(time.process_time(), 3),
            "started": self.started,
            "pid": os.getpid(),
        }
