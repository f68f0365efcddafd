"""A browser tab as Chromium plays it: the techniques on a visitor's pooled connections.

The ``chromium`` preset of the socket client (``--browser chromium``, the default). What an event finds (an
idle pooled connection, none, one being opened, a cached preflight) is decided in visit time by
``lossbench.model.browser.NetworkState``, the object the model asks too, so the client and the model cannot
disagree on it; this module then acts on real sockets and waits the emulated network time, as
``lossbench.loadgen.techniques.Tab`` does for the ``seed`` preset:

- a connection the state opens is a real connect to the collector, made at once (the collector counts it
  even if the page goes away during the lookup: Chromium's connect job completes after the exit);
- a connection the state reuses is the same real socket, held by one request at a time; if the collector
  really closed it (real-time runs, past its keep-alive timeout), the request goes on a new one;
- the cut (the page goes away) closes the connection of a request in flight with a FIN, a few tens of
  milliseconds later (``FIN_DELAY``), or as ``close_mode`` says; idle pooled connections stay open until the
  visit's last event is over (not the collector's timeout past it, as a browser's would: the model counts
  that cost, docs/MODEL.md);
- ``beacon`` and ``fetch-keepalive`` are finished after an ``unload`` cut, as the browser finishes them.
"""

from __future__ import annotations

import _socket
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from lossbench.contract.server import ServerHints
from lossbench.contract.techniques import (
    PREFLIGHTED,
    SURVIVES_UNLOAD,
    Stage,
    Technique,
)
from lossbench.loadgen.techniques import (
    BODY_CHUNK_SECONDS,
    HOST_HEADER,
    ORIGIN,
    PING_TIMEOUT,
    TabBase,
    event_body,
    ping_request,
    pixel_request,
)
from lossbench.loadgen.timeline import Cut, EventResult, Stale, Timeline
from lossbench.loadgen.wire import (
    close,
    connect,
    read_response,
    read_response_stamped,
    send_all,
    send_before_cut,
)
from lossbench.model.browser import FIN_DELAY, Connection, Found, NetworkState
from lossbench.model.chromium import AJAX_BODY_BYTES, page_load, ping, pings_due
from lossbench.model.profiles import NetworkDraw


@dataclass(eq=False)
class RealSocket:
    """The real socket behind a pooled connection; one request on it at a time."""

    sock: _socket.socket | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # held by the request on it
    connecting: threading.Lock = field(default_factory=threading.Lock)

    def looks_closed(self) -> bool:
        """True if the collector closed it (readable with EOF), as a browser checks before reuse."""
        if self.sock is None:
            return True
        try:
            return self.sock.recv(1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True


def _http(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: {HOST_HEADER}",
        *(f"{k}: {v}" for k, v in headers),
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1") + body


def _target(tech: str, event_id: str) -> str:
    """The POST's URL: fixed (so a preflight answer is reused), unique per event for ``ajax-cachebust``."""
    return f"/e?n={event_id}" if tech == Technique.AJAX_CACHEBUST else "/e"


def preflight_request(target: str) -> bytes:
    return _http(
        "OPTIONS",
        target,
        [
            ("Origin", ORIGIN),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
    )


def post_head(target: str, content_type: str, length: int) -> bytes:
    return _http(
        "POST", target, [("Origin", ORIGIN), ("Content-Type", content_type), ("Content-Length", str(length))]
    )


class PooledTab(TabBase):
    """One technique's tab in one visit, with the visitor's network state (pool, caches, quota)."""

    def __init__(
        self,
        address: tuple[str, int],
        network: NetworkDraw,
        *,
        abort: str = "unload",
        close_mode: str = "fin",
        server: ServerHints | None = None,
        real_time: bool = False,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(address, network, abort=abort, close_mode=close_mode, clock=clock, sleep=sleep)
        self.real_time = real_time
        self.state = NetworkState(rtt=network.rtt, lookup=network.dns, server=server or ServerHints())
        self.lock = threading.Lock()  # the state: one visit's events may overlap
        self.techniques: tuple[str, ...] = ()
        self.loaded_at = 0.0  # monotonic time of page load (real-time keep-alive ticks)
        self.last_at = 0.0  # visit time of the last event or ping the state has seen
        self.virtual_pings = 0  # pings the state sent while idle time was compressed

    # -- page lifecycle ----------------------------------------------------------------------------------
    def page_load(self, techniques: tuple[str, ...] | list[str], visit_time: float = 0.0) -> None:
        """The page's own requests at load: a ping (pre-warm, keep-alive) or a preconnect, really made."""
        self.techniques = tuple(techniques)
        self.loaded_at = self.clock() - visit_time
        for tech in self.techniques:
            with self.lock:
                before = list(self.state.conns)
                page_load(self.state, tech, visit_time)
                opened = [c for c in self.state.conns if c not in before]
            for conn in opened:
                self.connections_opened += self._real(conn)[1]
            if opened and tech in (Technique.PIXEL_PREWARM, Technique.PIXEL_KEEPALIVE):
                self._ping_on(opened[0], tech)

    def keepalive_tick(self) -> None:
        """The page's keep-alive timer in a real-time run: a real ping on a pooled connection."""
        at = self.clock() - self.loaded_at
        with self.lock:
            found = self._ping_state(at)
        try:
            self.connections_opened += self._real(found.conn)[1]
            self._ping_on(found.conn, Technique.PIXEL_KEEPALIVE)
        except (OSError, Stale):
            with self.lock:
                self.state.drop(found.conn)
            self._discard(found.conn, "rst")

    def close(self) -> None:
        """The visit is over: close the pooled connections (FIN) and any abandoned sockets."""
        with self.lock:  # every connection it opened: the state forgets those it knows are gone
            conns, self.state.conns = list(self.state.history), []
        for conn in conns:
            self._discard(conn, "fin")
        for _, sock in self.limbo:
            close(sock, "rst")
        self.limbo = []

    # -- sockets -----------------------------------------------------------------------------------------
    def _real(self, conn: Connection) -> tuple[RealSocket, bool]:
        """The real socket of ``conn``, connected now if it has none yet (and whether this call did).
        One connect per connection even when two events of the visit ask at once (under gevent a connect
        yields). Not bounded by the cut: Chromium's connect job completes after the page is gone."""
        with self.lock:
            real = conn.real
            if real is None:
                real = conn.real = RealSocket()
        assert isinstance(real, RealSocket)
        with real.connecting:
            if real.sock is not None:
                return real, False
            real.sock = connect(self.address, PING_TIMEOUT)
            return real, True

    def _discard(self, conn: Connection, mode: str) -> None:
        real = conn.real
        if isinstance(real, RealSocket) and real.sock is not None:
            close(real.sock, mode)
            real.sock = None

    def _ping_state(self, at: float) -> Found:
        found = self.state.take(at, self.state.rtt)
        self.state.release(found.conn, at + found.wait + self.state.rtt, found.token)
        if found.discarded is not None:
            self._discard(found.discarded, "fin")
        return found

    def _ping_on(self, conn: Connection, tech: str) -> None:
        real, _ = self._real(conn)
        with real.lock:
            assert real.sock is not None
            send_all(real.sock, ping_request(tech), PING_TIMEOUT)
            self.pings_sent += 1
            read_response(real.sock, None, "ping")

    def _advance(self, at: float) -> None:
        """Keep-alive pings due before visit time ``at`` (compressed runs: the state's, not sent)."""
        if not self.real_time:
            for tech in self.techniques:
                for t in pings_due(tech, self.last_at, at):
                    ping(self.state, t)
                    self.virtual_pings += 1
        self.last_at = max(self.last_at, at)

    # -- events ------------------------------------------------------------------------------------------
    def fire(
        self,
        tech: str,
        event_id: str,
        *,
        event_type: str = "click",
        exit_after: float | None = None,
        visit_time: float = 0.0,
    ) -> EventResult:
        """Send one event with ``tech``; the page goes away ``exit_after`` seconds after it fires."""
        result = EventResult(id=event_id, tech=tech)
        survives = tech in SURVIVES_UNLOAD and self.abort == "unload"
        net = self.network
        timeline = Timeline(
            result,
            None if survives else exit_after,
            abort=self.abort,
            rtt=net.rtt,
            clock=self.clock,
            sleep=self.sleep,
        )
        preflighted = tech in PREFLIGHTED
        body_seconds = 0.0 if not preflighted or not net.uplink_bps else AJAX_BODY_BYTES * 8 / net.uplink_bps
        with self.lock:
            self._advance(visit_time)
            if tech in SURVIVES_UNLOAD and not self.state.keepalive_fits(visit_time, AJAX_BODY_BYTES):
                result.stage = Stage.UNSENT  # sendBeacon returned false: nothing goes out
                return result
            cached = (
                preflighted and tech != Technique.AJAX_CACHEBUST and self.state.preflight_cached(visit_time)
            )
            preflight = net.rtt if preflighted and not cached else 0.0
            found = self.state.take(visit_time, preflight + body_seconds + net.rtt)
            if preflighted and not cached and tech != Technique.AJAX_CACHEBUST:
                self.state.store_preflight(
                    visit_time + found.wait + preflight, self.state.server.cors_max_age
                )
            if tech in SURVIVES_UNLOAD:
                self.state.hold_keepalive(
                    AJAX_BODY_BYTES, visit_time + found.wait + preflight + body_seconds + net.rtt
                )
        result.conn = found.kind
        result.preflight = "none" if not preflighted else "cached" if cached else "sent"
        body = event_body(event_id, tech, event_type)
        holding: RealSocket | None = None
        try:
            if found.discarded is not None:
                self._discard(found.discarded, "fin")
                result.retried = True
            for conn in (found.opened, found.conn):
                if conn is not None:
                    result.connections += self._real(conn)[1]
            # In the stages' order (lossbench.model.chromium): a lookup, then a usable connection, the round
            # trip lost on a stale one included.
            timeline.wait(Stage.DNS, found.dns)
            timeline.wait(Stage.CONNECT, found.stale + found.connect)
            real, _ = self._real(found.conn)
            if not real.lock.acquire(timeout=max(0.0, min(timeline.remaining(), 30.0))):
                raise Cut(Stage.CONNECT)
            holding = real
            if real.looks_closed():
                # Really closed by the collector (a real-time run: visit time had it alive). The browser
                # sees it closed and opens a new one: a handshake (the name is cached by now).
                result.conn, result.retried = "cold", True
                self._discard(found.conn, "rst")
                result.connections += self._real(found.conn)[1]
                timeline.wait(Stage.CONNECT, net.rtt)
            needs_preflight = preflighted and not cached
            for attempt in (0, 1):
                assert real.sock is not None
                try:
                    self._send(tech, timeline, real.sock, body, event_id, needs_preflight, body_seconds)
                    result.acked = 200 <= read_response(real.sock, timeline, Stage.DONE) < 300
                    break
                except Stale:
                    if attempt:
                        raise
                    # Closed by the collector under the request, no answer byte back: the browser learns it
                    # a round trip later and resends once on a new connection (real time only).
                    result.written, result.t_written = False, None
                    result.conn, result.retried = "stale", True
                    # a preflight answered before the close is cached by now: the resend goes without it
                    needs_preflight = needs_preflight and Stage.PREFLIGHT not in result.plan
                    self._discard(found.conn, "rst")
                    result.connections += self._real(found.conn)[1]
                    timeline.wait(Stage.CONNECT, 2 * net.rtt)
            with self.lock:
                self.state.release(found.conn, visit_time + (result.t_written or 0.0) + net.rtt, found.token)
        except Cut as cut:
            if not result.written:
                result.stage = cut.stage
            if holding is not None:
                with self.lock:
                    self.state.drop(found.conn)
                self._cut_close(holding)
        except (OSError, Stale, ValueError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            if not result.written:
                result.stage = "error"
            if holding is not None:
                with self.lock:
                    self.state.drop(found.conn)
                self._discard(found.conn, "rst")
        finally:
            if holding is not None:
                holding.lock.release()
        return result

    def _send(
        self,
        tech: str,
        tl: Timeline,
        sock: _socket.socket,
        body: bytes,
        event_id: str,
        preflight: bool,
        body_seconds: float,
    ) -> None:
        """The event's requests on its connection: a preflight if needed, then the data."""
        result, net = tl.result, self.network
        target = _target(tech, event_id)
        if preflight:
            started = tl.now()
            send_before_cut(sock, preflight_request(target), tl, Stage.PREFLIGHT)
            result.requests += 1
            status, arrived = read_response_stamped(sock, tl, Stage.PREFLIGHT)
            if not 200 <= status < 300:
                raise ValueError(f"preflight refused with HTTP {status}")
            tl.acted(Stage.PREFLIGHT, started, arrived)
            tl.wait(Stage.PREFLIGHT, net.rtt)
        result.requests += 1
        if tech in PREFLIGHTED:
            head = post_head(target, "application/json", len(body))
            if not body_seconds:
                send_before_cut(sock, head + body, tl, Stage.BODY)
                tl.mark(Stage.HEADERS)
            else:
                send_before_cut(sock, head, tl, Stage.HEADERS)
                tl.mark(Stage.HEADERS)
                # paced so that the whole body takes the model's time (AJAX_BODY_BYTES at the uplink rate)
                pieces = max(1, round(body_seconds / BODY_CHUNK_SECONDS))
                chunk = -(-len(body) // pieces)
                for offset in range(0, len(body), chunk):
                    piece = body[offset : offset + chunk]
                    tl.wait(Stage.BODY, body_seconds * len(piece) / len(body))
                    send_before_cut(sock, piece, tl, Stage.BODY)
            _written(tl, Stage.BODY)
        elif tech == Technique.BEACON:
            send_before_cut(
                sock, post_head(target, "text/plain;charset=UTF-8", len(body)) + body, tl, Stage.REQUEST
            )
            _written(tl, Stage.REQUEST)
        else:
            send_before_cut(sock, pixel_request(body), tl, Stage.REQUEST)
            _written(tl, Stage.REQUEST)

    def _cut_close(self, real: RealSocket) -> None:
        """The page went away with a request in flight on ``real``: close it as the browser does."""
        if real.sock is None:
            return
        if self.close_mode == "fin":
            self.sleep(random.uniform(*FIN_DELAY))
        close(real.sock, self.close_mode, self.limbo)
        real.sock = None


def _written(tl: Timeline, stage: str) -> None:
    tl.mark(stage)
    tl.result.written = True
    tl.result.t_written = tl.intended
