"""A visitor's network state in the browser, in visit time: host cache, socket pool and preflight cache.

The model (``lossbench.model.chromium``) and the socket client (``lossbench.loadgen.pooled``) both ask a
:class:`NetworkState` what an event finds when it fires: an idle pooled connection (``warm``), none
(``cold``: a lookup if the host cache has no fresh entry, then a handshake), a connection being opened
that it can join (``pending``), or a pooled connection the collector has just closed (``stale``: one
wasted round trip, then a new connection, as Chromium retries a request on a reused socket once). Both
then tell it when the connection is free again. Everything is decided on visit time, so the client can
compress idle gaps and still age its pool as a page would.

Chromium's rules, each written once here (sources in docs/MODEL.md, "The browser's network state"):

- a host keeps at most :data:`MAX_SOCKETS_PER_HOST` connections; an idle one that has carried a request
  is dropped after :data:`USED_IDLE_SECONDS`, one opened by a preconnect and never used after
  :data:`UNUSED_IDLE_SECONDS`; the collector closes an idle one after its own keep-alive timeout
  (``ServerHints.idle_timeout``), whichever comes first;
- among idle connections, the most recently used one that carried a request is reused first, else the
  oldest unused one;
- a request with no idle connection joins an unbound connection being opened (a preconnect), or starts a
  new one and takes whichever is ready first, that one or a busy connection that frees up ("late
  binding"); the new connection then stays in the pool, unused;
- a preflight answer is cached for its ``Access-Control-Max-Age`` (:func:`preflight_lifetime`), keyed by
  the request's URL.

The ``seed`` preset is the model lossbench started with: no pool, no preflight cache, RST on the cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lossbench.contract.server import ServerHints
from lossbench.model.dns import DnsCache

MAX_SOCKETS_PER_HOST = 6
"""Chromium's limit of connections per host (HTTP/1.1), in its socket pool."""
USED_IDLE_SECONDS = 300.0
"""Chromium drops an idle pooled connection that has carried a request after this long."""
UNUSED_IDLE_SECONDS = 10.0
"""... and one that a preconnect opened and nothing used, after this long."""
PREFLIGHT_MAX_AGE_ABSENT = 5.0
"""Seconds Chromium caches a preflight answer without ``Access-Control-Max-Age``."""
PREFLIGHT_MAX_AGE_CAP = 7200.0
"""Chromium caps ``Access-Control-Max-Age`` at two hours."""
KEEPALIVE_QUOTA_BYTES = 65536
"""A page's in-flight quota for keepalive requests (sendBeacon, fetch keepalive); over it they are refused."""
PING_INTERVAL = 20.0
"""Seconds between a ``pixel-keepalive`` page's pings; below the reference collector's 30 s idle timeout."""
FIN_DELAY = (0.020, 0.060)
"""Seconds after ``pagehide`` at which Chromium ends an in-flight request's connection with a FIN: the range
measured for the design (../shared/DESIGN.md); lossbench's own browser test saw 39 ms
(tests/browser/test_chromium.py)."""


@dataclass(frozen=True)
class BrowserPreset:
    """How the socket client and the model behave as a browser."""

    name: str
    pool: bool  # reuse idle connections per host; False: a new connection for every request
    preflight_cache: bool
    close_mode: str  # how a cut request's connection is closed (an option can override it)
    summary: str


BROWSERS: dict[str, BrowserPreset] = {
    "chromium": BrowserPreset(
        "chromium",
        pool=True,
        preflight_cache=True,
        close_mode="fin",
        summary="Chromium's socket pool, preflight cache and FIN on the cut (docs/CALIBRATION.md)",
    ),
    "seed": BrowserPreset(
        "seed",
        pool=False,
        preflight_cache=False,
        close_mode="rst",
        summary="lossbench's first model: a new connection and a preflight for every event, RST on the cut",
    ),
}
DEFAULT_BROWSER = "chromium"


def get_browser(name: str) -> BrowserPreset:
    try:
        return BROWSERS[name]
    except KeyError:
        raise ValueError(f"unknown browser preset {name!r}; choose from {', '.join(BROWSERS)}") from None


def run_browser(run: Mapping[str, Any]) -> str:
    """The preset a run was played with, from its run.json: runs from before the presets were ``seed``."""
    return str(run.get("browser", "seed"))


def run_server_hints(run: Mapping[str, Any]) -> ServerHints:
    """What the run's target told browsers, from run.json's ``server`` (the defaults when absent)."""
    server = run.get("server") or {}
    default = ServerHints()
    max_age = server.get("cors_max_age", default.cors_max_age)
    return ServerHints(
        idle_timeout=float(server.get("idle_timeout", default.idle_timeout)),
        cors_max_age=None if max_age is None else float(max_age),
    )


def preflight_lifetime(max_age: float | None) -> float:
    """Seconds a preflight answer is cached: ``max_age`` capped at two hours, 5 s without the header."""
    if max_age is None:
        return PREFLIGHT_MAX_AGE_ABSENT
    return min(max(0.0, max_age), PREFLIGHT_MAX_AGE_CAP)


@dataclass(eq=False)
class Connection:
    """One pooled connection, in visit time. ``free_at``: when its current request's answer arrives (or
    arrived); a connection is busy before it. ``real`` is the client's socket (unused by the model)."""

    ready_at: float
    free_at: float
    used: bool
    real: Any = None
    opened_at: float = 0.0  # visit time its handshake began
    reserved: dict[int, float] = field(default_factory=dict)  # requests holding it: token -> until


@dataclass
class Found:
    """What an event found when it asked for a connection. Its waits, in the stages' order: a lookup
    (``dns``), then getting a usable connection (``stale`` + ``connect``)."""

    conn: Connection
    kind: str  # one of contract.techniques.CONNECTION_KINDS
    token: int = 0  # its reservation of ``conn``, for :meth:`NetworkState.release`
    stale: float = 0.0  # a round trip lost on a pooled connection the collector had closed
    dns: float = 0.0
    connect: float = 0.0
    opened: Connection | None = None  # a connection this event started opening (cold, stale, or alongside)
    discarded: Connection | None = None  # the stale connection, dropped from the pool

    @property
    def wait(self) -> float:
        return self.stale + self.dns + self.connect


@dataclass
class NetworkState:
    """One visitor's browser state for the collector's host: host cache, pool, preflight cache, quota."""

    rtt: float
    lookup: float  # seconds of one uncached DNS lookup
    server: ServerHints = field(default_factory=ServerHints)
    dns: DnsCache = field(default_factory=DnsCache)
    conns: list[Connection] = field(default_factory=list)
    preflights: list[tuple[float, float]] = field(default_factory=list)  # cached answers: (arrived, expires)
    keepalive_in_flight: list[tuple[float, int]] = field(default_factory=list)  # (answer at, bytes)
    history: list[Connection] = field(default_factory=list)  # every connection opened, for its cost
    tokens: int = 0  # reservations handed out

    # -- the pool ------------------------------------------------------------------------------------
    def _dies_at(self, conn: Connection) -> tuple[float, float]:
        """(when the browser knows it is gone, from when a request on it would find it closed)."""
        own = USED_IDLE_SECONDS if conn.used else UNUSED_IDLE_SECONDS
        if self.server.idle_timeout < own:
            # The collector closes it; its FIN arrives one way later, and a request sent in the last round
            # trip before that reaches a closed socket.
            gone = conn.free_at + self.server.idle_timeout
            return gone, gone - self.rtt
        gone = conn.free_at + own
        return gone, gone

    def take(self, t: float, hold: float) -> Found:
        """A connection for a request starting at visit time ``t`` that holds it ``hold`` seconds once it
        has it (until its answer arrives). Reserves it until then; :meth:`release` says when it was."""
        self.conns = [c for c in self.conns if c.free_at > t or t < self._dies_at(c)[0]]
        stale, discarded, start = 0.0, None, t
        for _ in range(2):  # a stale connection costs a round trip; then look again
            idle = [c for c in self.conns if c.free_at <= start]
            if not idle:
                break
            conn = _reuse_order(idle)
            if stale or start < self._dies_at(conn)[1]:
                kind = "stale" if stale else "warm"
                return self._found(conn, kind, start + hold, stale=stale, discarded=discarded)
            # Closed by the collector: the request goes out, the answer is a close, and the browser resends
            # it once on a new connection. Idle ones older than it are closed too.
            self.conns = [c for c in self.conns if c.free_at > start]
            stale, discarded, start = self.rtt, conn, start + self.rtt
        kind = "stale" if stale else "pending"
        pending = [c for c in self.conns if not c.used and c.ready_at > start]
        if pending:  # an unbound connection being opened (a preconnect): join it
            conn = min(pending, key=lambda c: c.ready_at)
            wait = conn.ready_at - start
            dns = min(wait, max(0.0, self.dns.filled_at - start))
            return self._found(conn, kind, conn.ready_at + hold, stale, dns, wait - dns, discarded=discarded)
        busy = [c for c in self.conns if c.free_at > start]
        if len(self.conns) >= MAX_SOCKETS_PER_HOST:  # wait for the first to free up
            conn = min(busy, key=lambda c: c.free_at)
            wait = conn.free_at - start
            return self._found(conn, kind, conn.free_at + hold, stale, 0.0, wait, discarded=discarded)
        d = self.dns.wait(start, self.lookup)
        ready = start + d + self.rtt
        opened = self._open(start + d, ready)
        sooner = [c for c in busy if c.free_at < ready]
        if sooner:  # late binding: a busy connection frees up before the new one is ready
            conn = min(sooner, key=lambda c: c.free_at)
            wait = conn.free_at - start
            dns = min(d, wait)
            until = conn.free_at + hold
            return self._found(conn, kind, until, stale, dns, wait - dns, opened=opened, discarded=discarded)
        kind = "stale" if stale else "cold"
        return self._found(opened, kind, ready + hold, stale, d, self.rtt, opened=opened, discarded=discarded)

    def _found(
        self,
        conn: Connection,
        kind: str,
        until: float,
        stale: float = 0.0,
        dns: float = 0.0,
        connect: float = 0.0,
        *,
        opened: Connection | None = None,
        discarded: Connection | None = None,
    ) -> Found:
        """Reserve ``conn`` until ``until`` for the request that asked."""
        self.tokens += 1
        conn.used = True
        conn.reserved[self.tokens] = until
        conn.free_at = max(conn.free_at, until)
        return Found(conn, kind, self.tokens, stale, dns, connect, opened=opened, discarded=discarded)

    def release(self, conn: Connection, free_at: float, token: int | None = None) -> None:
        """The request holding ``conn`` (its reservation ``token``) got its answer at visit time
        ``free_at``: the connection is idle from then, unless a later request is queued on it."""
        if token is not None:
            conn.reserved.pop(token, None)
        conn.free_at = max([free_at, *conn.reserved.values()])

    def drop(self, conn: Connection) -> None:
        """The connection is closed (the cut closed it, or it failed): no longer in the pool."""
        if conn in self.conns:
            self.conns.remove(conn)

    def preconnect(self, t: float) -> Connection:
        """``<link rel=preconnect>``: a lookup and a handshake at ``t``; the connection waits unused."""
        d = self.dns.wait(t, self.lookup)
        return self._open(t + d, t + d + self.rtt)

    def _open(self, started: float, ready: float) -> Connection:
        conn = Connection(ready_at=ready, free_at=ready, used=False, opened_at=started)
        self.conns.append(conn)
        self.history.append(conn)
        return conn

    def held_seconds(self) -> float:
        """Visit-time seconds the collector held this visitor's connections open: each from its handshake
        until it is gone (closed by the collector's idle timeout or dropped by the browser's), assuming
        no request after the last one known: the pool outlives the page."""
        return sum(self._dies_at(c)[0] - c.opened_at for c in self.history)

    # -- the preflight cache --------------------------------------------------------------------------
    def preflight_cached(self, t: float) -> bool:
        """Whether a preflight answer is cached at ``t`` (one still on its way is not: the request sends
        its own preflight)."""
        self.preflights = [(arrived, until) for arrived, until in self.preflights if until > t]
        return any(arrived <= t for arrived, _ in self.preflights)

    def store_preflight(self, answered_at: float, max_age: float | None) -> None:
        """The answer to a preflight arrives at ``answered_at``; cached for its lifetime from then."""
        lifetime = preflight_lifetime(max_age)
        if lifetime > 0:
            self.preflights.append((answered_at, answered_at + lifetime))

    # -- the keepalive quota --------------------------------------------------------------------------
    def keepalive_fits(self, t: float, size: int) -> bool:
        """Whether a keepalive request of ``size`` bytes fits the page's quota at ``t``; False: the browser
        refuses it (``sendBeacon`` returns false)."""
        self.keepalive_in_flight = [(end, n) for end, n in self.keepalive_in_flight if end > t]
        return sum(n for _, n in self.keepalive_in_flight) + size <= KEEPALIVE_QUOTA_BYTES

    def hold_keepalive(self, size: int, until: float) -> None:
        """A keepalive request holds ``size`` bytes of the quota until its answer arrives at ``until``."""
        self.keepalive_in_flight.append((until, size))


def _reuse_order(idle: list[Connection]) -> Connection:
    """Chromium's choice among idle connections: the most recently used one that has carried a request,
    else the oldest unused one (``AssignIdleSocketToRequest``)."""
    used = [c for c in idle if c.used]
    if used:
        return max(used, key=lambda c: c.free_at)
    return min(idle, key=lambda c: c.free_at)
