"""Playing a visit for real: the same visit, side by side, once per technique.

A visit (drawn from a network profile and an exit model) says when each event fires and when the page goes
away. ``play_visit`` opens one ``Tab`` per technique under the same network draw, fires every event on
every tab at its visit time, and hands each result to ``record``.

Idle time is compressed: only the moments around an event in flight need real time. Between two events,
the player waits for the gap *or* until no event is in flight, whichever comes first; what depends on idle
time (DNS cache age, when the kept connection is ready) is decided on visit time, which is never
compressed. ``real_time=True`` keeps every gap real, and pings the kept connection as the page would,
for keep-alive races with the collector's idle timeout.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossbench.contract.ledger import micro
from lossbench.contract.lines import SentEvent, SentPing, encode_line
from lossbench.contract.server import ServerHints
from lossbench.loadgen.pooled import PooledTab
from lossbench.loadgen.techniques import Tab
from lossbench.loadgen.timeline import EventResult
from lossbench.model.browser import PING_INTERVAL, get_browser
from lossbench.model.exits import ExitModel
from lossbench.model.profiles import NetworkProfile
from lossbench.model.visits import PlannedEvent, Visit, sample_visits

KEEPALIVE_PING_INTERVAL = PING_INTERVAL  # seconds between keep-alive pings (lossbench.model.browser)
MAX_EVENT_SECONDS = 30.0  # an event in flight longer than this is a bug or a stuck collector


@dataclass(frozen=True)
class PlayedEvent:
    """One event's outcome with the draw it was played under, as the sent ledger records it."""

    result: EventResult
    event_type: str
    visit: Visit
    exit_after: float
    fired_wall: float
    visit_number: int = 0
    at: float = 0.0

    def line(self) -> SentEvent:
        """The sent ledger's line: seconds to the microsecond, A None when the page never went away."""
        r, net = self.result, self.visit.net
        return SentEvent(
            id=r.id,
            tech=r.tech,
            type=self.event_type,
            visit=self.visit_number,
            at=micro(self.at),
            rtt=micro(net.rtt),
            dns=micro(net.dns),
            A=None if math.isinf(self.exit_after) else micro(self.exit_after),
            abort=self.visit.abort,
            stage=r.stage,
            written=r.written,
            t_written=None if r.t_written is None else micro(r.t_written),
            acked=r.acked,
            retried=r.retried,
            requests=r.requests,
            connections=r.connections,
            conn=r.conn,
            preflight=r.preflight,
            plan={k: micro(v) for k, v in r.plan.items()},
            real={k: micro(v) for k, v in r.real.items()},
            error=r.error or None,
            t0=micro(self.fired_wall),
        )

    def record_line(self) -> bytes:
        """``line()`` encoded, newline included (hot path: every event)."""
        return encode_line(self.line())


class EventIds:
    """16-hex-character ids, unique across processes: 24 bits of process salt, 40 bits of counter."""

    def __init__(self, salt: int | None = None) -> None:
        self.salt = (int.from_bytes(os.urandom(3), "big") if salt is None else salt) & 0xFFFFFF
        self._counter = itertools.count()
        self._visits = itertools.count()
        self._prefix = f"{self.salt:06x}"

    def next(self) -> str:
        # itertools.count is implemented in C: next() on it is atomic for threads and greenlets alike
        return f"{self._prefix}{next(self._counter):010x}"

    def next_visit(self) -> int:
        """The next visit's number in this process (the sent ledger's ``visit``; with the salt, unique)."""
        return next(self._visits)


class VisitSource:
    """An endless, seeded stream of visits, drawn in vectorised batches."""

    def __init__(
        self, profile: NetworkProfile, exit_model: ExitModel, abort: str, seed: int, batch: int = 256
    ):
        self.profile = profile
        self.exit_model = exit_model
        self.abort = abort
        self.rng = np.random.default_rng(seed)
        self.batch = batch

    def __iter__(self) -> Iterator[Visit]:
        while True:
            drawn = sample_visits(self.profile, self.exit_model, self.abort, self.rng, events=self.batch)
            yield from drawn.iter_visits()  # one at a time: a tab starting up does not pay for the batch


Spawn = Callable[[Callable[[], None]], Any]
CallLater = Callable[[float, Callable[[], None]], Any]  # returns a handle with cancel()


def thread_spawn(fn: Callable[[], None]) -> threading.Thread:
    """Run ``fn`` in a thread (a greenlet once gevent has patched threading, as under Locust)."""
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def thread_call_later(delay: float, fn: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()
    return timer


def play_visit(
    visit: Visit,
    address: tuple[str, int],
    techniques: Sequence[str],
    ids: EventIds,
    record: Callable[[PlayedEvent], None],
    *,
    browser: str = "chromium",
    close_mode: str | None = None,
    server: ServerHints | None = None,
    real_time: bool = False,
    spawn: Spawn = thread_spawn,
    call_later: CallLater = thread_call_later,
    sleep: Callable[[float], None] | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> list[SentPing]:
    """Play ``visit`` on one tab per technique; returns what the page itself cost per technique (its pings
    and the connections it opened for them or for a preconnect), for the sent ledger.

    The techniques of one event run side by side, all but one in their own thread or greenlet, the last
    in the player's. Events overlap exactly as in the visit: if the next event comes due while the
    player is still busy, the rest of the visit goes on in a new thread or greenlet (``_Handoff``).
    ``keep_going`` is asked before each event: the run is ending when it says False. ``browser`` names the
    preset (``lossbench.model.browser.BROWSERS``); ``close_mode`` overrides its way of closing a cut
    connection; ``server`` is what the collector tells browsers (its keep-alive timeout, its preflight
    max-age).
    """
    preset = get_browser(browser)
    mode = close_mode or preset.close_mode
    tabs: dict[str, Tab | PooledTab] = {}
    for tech in techniques:
        if preset.pool:
            tabs[tech] = PooledTab(
                address, visit.net, abort=visit.abort, close_mode=mode, server=server, real_time=real_time
            )
        else:
            tabs[tech] = Tab(address, visit.net, abort=visit.abort, close_mode=mode)
    player = _Player(visit, tabs, ids, record, real_time, spawn, call_later, sleep or time.sleep, keep_going)
    try:
        for tech, tab in tabs.items():
            tab.page_load([tech], visit_time=0.0)
        player.play(0)
        player.finished.wait(MAX_EVENT_SECONDS + (visit.events[-1].at if visit.events else 0.0))
    finally:
        player.in_flight.wait(MAX_EVENT_SECONDS)
        for tab in tabs.values():
            tab.close()
    last = max((e.at for e in visit.events), default=0.0)
    stayed = min(visit.leave_at, last) if math.isfinite(visit.leave_at) else last
    costs = []
    for tech, tab in tabs.items():
        if isinstance(tab, PooledTab):
            virtual = tab.virtual_pings
        else:  # the seed's tab counts none itself: the pings its page would have sent while idle
            virtual = (
                int(stayed // KEEPALIVE_PING_INTERVAL) if tech == "pixel-keepalive" and not real_time else 0
            )
        requests, connections = tab.pings_sent + virtual, tab.connections_opened
        if requests or connections:
            costs.append(SentPing(ping=tech, requests=requests, connections=connections, virtual=virtual > 0))
    return costs


class InFlight:
    """The events of one visit still in flight: the player waits on it instead of on each event.

    A lock and an event rather than a condition: under gevent, ``Condition.notify`` yields to the hub
    (its ownership check is a failed non-blocking acquire), a trip around the event loop per event.
    """

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()

    def add(self) -> None:
        with self.lock:
            self.count += 1
            self.idle.clear()

    def done(self) -> None:
        with self.lock:
            self.count -= 1
            if not self.count:
                self.idle.set()

    def wait(self, timeout: float) -> bool:
        """Until no event is in flight or ``timeout`` seconds passed; True if none is."""
        return self.idle.wait(max(0.0, timeout))


class _Player:
    """Fires a visit's events at their visit times, each on every tab."""

    def __init__(
        self,
        visit: Visit,
        tabs: dict[str, Tab | PooledTab],
        ids: EventIds,
        record: Callable[[PlayedEvent], None],
        real_time: bool,
        spawn: Spawn,
        call_later: CallLater,
        sleep: Callable[[float], None],
        keep_going: Callable[[], bool] | None,
    ) -> None:
        self.visit, self.tabs, self.ids, self.record = visit, tabs, ids, record
        self.real_time, self.spawn, self.call_later, self.sleep = real_time, spawn, call_later, sleep
        self.keep_going = keep_going
        self.in_flight = InFlight()
        self.handoff_lock = threading.Lock()  # one for all the visit's hand-offs
        self.finished = threading.Event()  # the last event has been fired (or the player failed)
        self.started = time.monotonic()
        self.number = ids.next_visit()

    def play(self, index: int) -> None:
        """Fire events from ``index`` on; returns early, leaving ``finished`` unset, when a hand-off took
        over the rest of the visit."""
        events = self.visit.events
        handed_off = False
        try:
            while index < len(events):
                if self.keep_going is not None and not self.keep_going():
                    break
                event = events[index]
                self._wait_until(event.at)
                if self.keep_going is not None and not self.keep_going():
                    break  # the run ended during the wait (minutes, in real time)
                exit_after = self.visit.exit_time(event)
                *others, (tech, tab) = self.tabs.items()
                for other_tech, other_tab in others:
                    self.in_flight.add()
                    self.spawn(functools.partial(self._fire, other_tab, other_tech, event, exit_after))
                handoff = _Handoff(self, index + 1) if index + 1 < len(events) else None
                self.in_flight.add()
                self._fire(tab, tech, event, exit_after)
                if handoff is not None and not handoff.cancel():
                    handed_off = True
                    return
                index += 1
        finally:
            if not handed_off:
                self.finished.set()

    def _wait_until(self, at: float) -> None:
        _wait_for_visit_time(at, self.started, self.in_flight, self.real_time, self.tabs, self.sleep)

    def _fire(self, tab: Tab | PooledTab, tech: str, event: PlannedEvent, exit_after: float) -> None:
        try:
            fired = time.time()
            event_id = self.ids.next()
            result = tab.fire(
                tech, event_id, event_type=event.type, exit_after=exit_after, visit_time=event.at
            )
            self.record(PlayedEvent(result, event.type, self.visit, exit_after, fired, self.number, event.at))
        finally:
            self.in_flight.done()


class _Handoff:
    """Armed while the player is busy with an event: if the next event comes due first, the rest of the
    visit is played in a new thread or greenlet, so that events overlap as in the visit. Costs one timer
    per event instead of one thread or greenlet per event."""

    def __init__(self, player: _Player, index: int) -> None:
        self.player, self.index = player, index
        self.lock = player.handoff_lock
        self.state = "armed"
        due = player.started + player.visit.events[index].at - time.monotonic()
        self.timer = player.call_later(max(0.0, due), self._due)

    def _due(self) -> None:
        with self.lock:
            if self.state != "armed":
                return
            self.state = "fired"
        self.player.spawn(lambda: self.player.play(self.index))

    def cancel(self) -> bool:
        """Disarm; False if the rest of the visit was already handed off."""
        with self.lock:
            if self.state == "fired":
                return False
            self.state = "cancelled"
        self.timer.cancel()
        return True


def _wait_for_visit_time(
    at: float,
    started: float,
    in_flight: InFlight,
    real_time: bool,
    tabs: dict[str, Tab | PooledTab],
    sleep: Callable[[float], None],
) -> None:
    """Wait until visit time ``at``; unless real time is asked for, stop early once nothing is in flight."""
    deadline = started + at
    if not real_time:
        in_flight.wait(deadline - time.monotonic())  # visit time reached with events in flight: overlap
        return
    keepalive = tabs.get("pixel-keepalive")
    while (remaining := deadline - time.monotonic()) > 0:
        step = min(remaining, KEEPALIVE_PING_INTERVAL)
        sleep(step)
        if keepalive is not None and step >= KEEPALIVE_PING_INTERVAL:
            keepalive.keepalive_tick()
