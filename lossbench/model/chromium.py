"""The model event by event for the ``chromium`` preset: each technique on the visitor's network state.

The seed preset's model (a new connection and a preflight for every event) is ``lossbench.model.predict``'s
vectorised one. With a socket pool and a preflight cache an event's stages depend on what the earlier
events and the page left behind, so this model walks each visit in order, asking the same
:class:`~lossbench.model.browser.NetworkState` the socket client asks while it plays:

- at page load, ``pixel-prewarm`` and ``pixel-keepalive`` send an empty ping (a request like any other: it
  opens a connection that stays pooled), ``pixel-keepalive`` another every ``PING_INTERVAL`` seconds, and
  ``pixel-preconnect`` opens a connection with no request on it;
- an event takes a connection (``NetworkState.take``): its wait is the ``dns`` and ``connect`` stages;
- a preflighted technique then sends its preflight unless an answer is cached (stage ``preflight``: a round
  trip plus the collector's answer time), then its POST (``headers``, ``body``); the others write their
  request at once (``request``);
- the connection is busy until the answer arrives, one round trip after the data is written;
- ``beacon`` and ``fetch-keepalive`` count against the page's keepalive quota while in flight, and the
  ``unload`` cut does not stop them.

The loss rule is ``predict``'s: an event is lost iff the cut (A, or A - rtt/2 under ``drop``) comes before
its data is written, unless it survives the unload; a refused keepalive request is lost whatever A.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lossbench.contract.server import ServerHints
from lossbench.contract.techniques import PAGE_PINGS, PREFLIGHTED, SURVIVES_UNLOAD, Stage, Technique
from lossbench.model.browser import PING_INTERVAL, NetworkState
from lossbench.model.profiles import NetworkDraw
from lossbench.model.visits import Visit

AJAX_BODY_BYTES = 180
"""A typical event as JSON (id, type, page, referrer, a few properties): the POST body paced by the uplink,
and what a keepalive request holds of the page's quota."""


def body_time(uplink_bps: float | None) -> float:
    return 0.0 if uplink_bps is None or math.isinf(uplink_bps) else AJAX_BODY_BYTES * 8 / uplink_bps


@dataclass
class EventPlan:
    """One event's stage durations until its data is written, and what it found."""

    stages: dict[str, float]
    conn: str  # contract.techniques.CONNECTION_KINDS
    preflight: str  # contract.techniques.PREFLIGHT_STATES
    refused: bool = False  # over the keepalive quota: never sent

    @property
    def written(self) -> float:
        return sum(self.stages.values())


def new_state(net: NetworkDraw, server: ServerHints) -> NetworkState:
    return NetworkState(rtt=net.rtt, lookup=net.dns, server=server)


def page_load(state: NetworkState, technique: str, at: float = 0.0) -> None:
    """What the page does for ``technique`` when the tracker starts (visit time ``at``)."""
    if technique in PAGE_PINGS:
        ping(state, at)
    elif technique == Technique.PIXEL_PRECONNECT:
        state.preconnect(at)


def ping(state: NetworkState, at: float) -> None:
    """An empty GET at ``at``, answered one round trip after it is written."""
    found = state.take(at, state.rtt)
    state.release(found.conn, at + found.wait + state.rtt, found.token)


def pings_due(technique: str, after: float, until: float) -> list[float]:
    """Visit times of the keep-alive pings in (after, until] (``pixel-keepalive`` only)."""
    if technique != Technique.PIXEL_KEEPALIVE:
        return []
    due = []
    t = (math.floor(after / PING_INTERVAL) + 1) * PING_INTERVAL
    while t <= until:
        due.append(t)
        t += PING_INTERVAL
    return due


def plan_event(
    state: NetworkState, technique: str, at: float, net: NetworkDraw, answer: float = 0.0
) -> EventPlan:
    """The stages of an event of ``technique`` fired at visit time ``at``; updates ``state``.
    ``answer``: the collector's answer time to its preflight, if it sends one."""
    rtt = net.rtt
    if technique in SURVIVES_UNLOAD and not state.keepalive_fits(at, AJAX_BODY_BYTES):
        return EventPlan({}, "none", "none", refused=True)
    if technique in PREFLIGHTED:
        cached = technique != Technique.AJAX_CACHEBUST and state.preflight_cached(at)
        preflight = 0.0 if cached else rtt + answer
        body = body_time(net.uplink_bps)
        found = state.take(at, preflight + body + rtt)
        if not cached and technique != Technique.AJAX_CACHEBUST:
            state.store_preflight(at + found.wait + preflight, state.server.cors_max_age)
        stages: dict[str, float] = {
            Stage.DNS: found.dns,
            Stage.CONNECT: found.stale + found.connect,
            Stage.PREFLIGHT: preflight,
            Stage.HEADERS: 0.0,
            Stage.BODY: body,
        }
        state_of_preflight = "cached" if cached else "sent"
    else:
        found = state.take(at, rtt)
        stages = {Stage.DNS: found.dns, Stage.CONNECT: found.stale + found.connect, Stage.REQUEST: 0.0}
        state_of_preflight = "none"
    answered = at + sum(stages.values()) + rtt
    state.release(found.conn, answered, found.token)
    if technique in SURVIVES_UNLOAD:
        state.hold_keepalive(AJAX_BODY_BYTES, answered)
    return EventPlan(stages, found.kind, state_of_preflight)


def plan_visit(
    visit: Visit,
    technique: str,
    server: ServerHints | None = None,
    preflight_answer: Sequence[float] | None = None,
) -> list[EventPlan]:
    """Every event of the visit, in order, as the chromium preset plays it."""
    return play_visit_state(visit, technique, server, preflight_answer)[0]


def play_visit_state(
    visit: Visit,
    technique: str,
    server: ServerHints | None = None,
    preflight_answer: Sequence[float] | None = None,
) -> tuple[list[EventPlan], NetworkState]:
    """:func:`plan_visit`, and the visitor's network state once the visit is over (its pool's cost)."""
    state = new_state(visit.net, server or ServerHints())
    page_load(state, technique)
    last = 0.0
    plans = []
    for i, event in enumerate(visit.events):
        for t in pings_due(technique, last, event.at):
            ping(state, t)
        last = event.at
        answer = 0.0 if preflight_answer is None else preflight_answer[i]
        plans.append(plan_event(state, technique, event.at, visit.net, answer))
    return plans, state
