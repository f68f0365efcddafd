"""The collector's counters: served at /stats, written next to the ledger at shutdown (docs/FORMATS.md)."""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any


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
    started: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
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
            "cpu_seconds": round(time.process_time(), 3),
            "started": self.started,
            "pid": os.getpid(),
        }
