"""The abortable client: real sockets, emulated network time, and a cut at any instant.

Each technique is a sequence of stages. A stage *acts* at once on a real socket (connect, write a request,
read the collector's real answer) and then *waits* the emulated network time before the next stage may
start (docs/MODEL.md, "An event: act, then wait"). The timeline is deadline-based: every stage has an
intended end in client time (seconds since the event fired) and sleeps until that deadline, so an oversleep
in one stage is absorbed by the next instead of piling up; the actual end is recorded beside the intended
one.

The cut comes at client time A (the page goes away). The decision of whether a stage finished before
the cut is taken on the intended timeline, then the socket is closed — RST by default (SO_LINGER 0: no
FIN, no TIME_WAIT, the way a closing tab tears down its sockets), FIN or nothing at all ("silent": the
network vanished; the collector sees no close and must time the connection out) as options.

Sockets are non-blocking and waited on through gevent when gevent has patched ``socket`` (under Locust),
through ``poll`` otherwise, so the same code is cooperative under Locust and works from plain threads in
tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lossbench.contract.ledger import micro
from lossbench.contract.techniques import ABORTS

RESPONSE_TIMEOUT = 10.0  # reading an answer when no cut bounds the wait


class Cut(Exception):
    """The page went away during ``stage``."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


class Stale(Exception):
    """A kept-alive connection turned out to be closed by the collector."""


@dataclass
class EventResult:
    """What happened to one event, as the sent ledger records it (docs/FORMATS.md)."""

    id: str
    tech: str
    stage: str = "done"
    written: bool = False
    t_written: float | None = None
    acked: bool = False
    retried: bool = False
    requests: int = 0
    connections: int = 0
    conn: str = "none"  # what it found in the pool (contract.techniques.CONNECTION_KINDS); none: no pool
    preflight: str = "none"  # contract.techniques.PREFLIGHT_STATES
    plan: dict[str, float] = field(default_factory=dict)
    real: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "tech": self.tech,
            "stage": self.stage,
            "written": self.written,
            "t_written": None if self.t_written is None else micro(self.t_written),
            "acked": self.acked,
            "retried": self.retried,
            "requests": self.requests,
            "connections": self.connections,
            "conn": self.conn,
            "preflight": self.preflight,
            "plan": {k: micro(v) for k, v in self.plan.items()},
            "real": {k: micro(v) for k, v in self.real.items()},
        }
        if self.error:
            record["error"] = self.error
        return record


class Timeline:
    """Client time of one event: intended stage deadlines, actual times, and the cut.

    ``exit_after`` is A (seconds from firing until the page goes away; None or inf: never). With the
    ``drop`` abort the network vanished, so bytes written in the last one-way delay never arrive: the
    effective cut is A − rtt/2.
    """

    def __init__(
        self,
        result: EventResult,
        exit_after: float | None,
        *,
        abort: str = "unload",
        rtt: float = 0.0,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if abort not in ABORTS:
            raise ValueError(f"abort must be one of {ABORTS}, not {abort!r}")
        self.result = result
        self.clock = clock or time.monotonic  # looked up now, after any gevent monkey-patching
        self.sleep = sleep or time.sleep
        self.t0 = self.clock()
        self.intended = 0.0
        if exit_after is None or math.isinf(exit_after):
            self.cut_after = math.inf
        else:
            self.cut_after = exit_after - (rtt / 2 if abort == "drop" else 0.0)

    def now(self) -> float:
        return self.clock() - self.t0

    def remaining(self) -> float:
        """Real seconds until the cut (inf without one); the timeout of a real socket operation."""
        return self.cut_after - self.now()

    def acted(self, stage: str, started: float, finished: float | None = None) -> None:
        """A real operation ran from client time ``started`` to ``finished`` (default: now): the
        collector's real response time joins the intended timeline (a saturated collector lengthens the
        stage)."""
        self.intended += max(0.0, (self.now() if finished is None else finished) - started)
        if self.intended >= self.cut_after:
            self._sleep_until(self.cut_after)
            raise Cut(stage)

    def wait(self, stage: str, seconds: float) -> None:
        """Emulated network time: sleep until the stage's intended end, or be cut first."""
        end = self.intended + max(0.0, seconds)
        if end >= self.cut_after:
            self._sleep_until(self.cut_after)
            raise Cut(stage)
        self._sleep_until(end)
        self.intended = end
        self.mark(stage)

    def mark(self, stage: str) -> None:
        self.result.plan[stage] = self.intended
        self.result.real[stage] = self.now()

    def check(self, stage: str) -> None:
        """Raise Cut if the page is already gone (before acting on the wire)."""
        if self.intended >= self.cut_after or self.now() >= self.cut_after:
            raise Cut(stage)

    def _sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            self.sleep(delay)
