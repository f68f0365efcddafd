"""The seed's four tracking techniques, stage by stage, as lossbench's first model of a tab performs them.

This is the ``--browser seed`` preset: no connection pool and no preflight cache (``lossbench.loadgen.pooled``
is the ``chromium`` one, the default). Its request builders are shared by both.

| technique         | stages before the event's data has left the client                    |
|-------------------|-------------------------------------------------------------------------|
| ``ajax``          | DNS → connect → CORS preflight (OPTIONS round trip) → POST headers+body |
| ``pixel``         | DNS → connect → GET with the data in the query string                   |
| ``pixel-prewarm`` | (DNS cached by an empty ping at page load) → connect → GET               |
| ``pixel-keepalive``| (connection kept open by pings) → GET on the open connection            |

A ``Tab`` holds what a browser tab keeps between events: one DNS cache per technique (the model's own,
``lossbench.model.dns``), and the kept-alive connection. Visit time (seconds since page load) is passed in
by the caller, so idle gaps can be compressed without changing how cache ages are decided.
"""

from __future__ import annotations

import _socket
import base64
import functools
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from lossbench.contract.events import encode_event
from lossbench.contract.techniques import CLOSE_MODES, SEED_TECHNIQUES
from lossbench.loadgen.timeline import Cut, EventResult, Stale, Timeline
from lossbench.loadgen.wire import (
    close,
    connect,
    open_connection,
    read_response,
    read_response_stamped,
    send_all,
    send_before_cut,
)
from lossbench.model.dns import DnsCache
from lossbench.model.profiles import NetworkDraw

HOST_HEADER = "collector.lossbench.test"
ORIGIN = "https://shop.lossbench.test"
PAGE_URL = "https://shop.lossbench.test/catalog/item-4711?utm_source=news"
REFERRER = "https://www.lossbench.test/"
BODY_CHUNK_SECONDS = 0.01  # pacing granularity of an uplink-limited POST body
PING_TIMEOUT = 10.0  # connecting and writing a ping, which no event's cut bounds


def event_payload(event_id: str, tech: str, event_type: str) -> dict[str, Any]:
    """A realistic event object (~180 bytes of JSON): what a tracker sends for a page view or click."""
    return {
        "id": event_id,
        "tech": tech,
        "type": event_type,
        "url": PAGE_URL,
        "ref": REFERRER,
        "ts": round(time.time() * 1000),
        "vw": 1280,
        "vh": 720,
    }


_SAFE_ID = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.:")


def event_body(event_id: str, tech: str, event_type: str, now_ms: int | None = None) -> bytes:
    """``encode_event(event_payload(...))``, byte for byte, formatted directly (hot path: every event)."""
    ts = round(time.time() * 1000) if now_ms is None else now_ms
    if not _SAFE_ID.issuperset(event_id):
        payload = event_payload(event_id, tech, event_type)
        payload["ts"] = ts
        return encode_event(payload)
    return (
        f'{{"id":"{event_id}","tech":"{tech}","type":"{event_type}","url":"{PAGE_URL}","ref":"{REFERRER}",'
        f'"ts":{ts},"vw":1280,"vh":720}}'
    ).encode()


def _request(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: {HOST_HEADER}",
        *(f"{k}: {v}" for k, v in headers),
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1")


_PIXEL_HEAD = b"GET /p.gif?d="
_PIXEL_TAIL = f" HTTP/1.1\r\nHost: {HOST_HEADER}\r\nAccept: image/*\r\n\r\n".encode()


def pixel_request(body: bytes) -> bytes:
    """The pixel GET carrying ``body`` (an event's JSON) base64url-encoded in its ``d`` parameter."""
    return _PIXEL_HEAD + base64.urlsafe_b64encode(body).rstrip(b"=") + _PIXEL_TAIL


PING_HEADERS = [("Accept", "image/*")]


def ping_request(tech: str) -> bytes:
    return _request("GET", f"/ping.gif?t={tech}", PING_HEADERS)


class KeepAliveChannel:
    """The connection a ``pixel-keepalive`` tab keeps open with pings; one request at a time on it."""

    def __init__(self) -> None:
        self.sock: _socket.socket | None = None
        self.ready_at = math.inf  # visit time at which the connection opened at page load is usable
        self.lock = threading.Lock()
        self.last_used = 0.0
        self.pings = 0

    def looks_closed(self) -> bool:
        """True if the collector already closed it (readable with EOF), as a browser checks before reuse."""
        if self.sock is None:
            return True
        try:
            return self.sock.recv(1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False  # nothing to read: open and idle
        except OSError:
            return True

    def discard(self) -> None:
        if self.sock is not None:
            close(self.sock, "rst")
            self.sock = None


class TabBase:
    """What every tab holds, whichever browser it plays: where the collector is, the visit's network draw,
    how the page goes and how a cut connection is closed, its clocks, and its own traffic's counts."""

    def __init__(
        self,
        address: tuple[str, int],
        network: NetworkDraw,
        *,
        abort: str,
        close_mode: str,
        clock: Callable[[], float] | None,
        sleep: Callable[[float], None] | None,
    ) -> None:
        if close_mode not in CLOSE_MODES:
            raise ValueError(f"close_mode must be one of {CLOSE_MODES}, not {close_mode!r}")
        self.address = address
        self.network = network
        self.abort = abort
        self.close_mode = close_mode
        self.clock = clock or time.monotonic  # looked up now, after any gevent monkey-patching
        self.sleep = sleep or time.sleep
        self.limbo: list[tuple[float, _socket.socket]] = []  # silently abandoned sockets
        self.pings_sent = 0  # the page's own pings, really sent
        self.connections_opened = 0  # by the page itself (pings, preconnect); events count their own


class Tab(TabBase):
    """A browser tab sending events to one collector, under one visit's network draw."""

    def __init__(
        self,
        address: tuple[str, int],
        network: NetworkDraw,
        *,
        abort: str = "unload",
        close_mode: str = "rst",
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        super().__init__(address, network, abort=abort, close_mode=close_mode, clock=clock, sleep=sleep)
        self.dns: defaultdict[str, DnsCache] = defaultdict(DnsCache)  # one per technique, made when used

    @functools.cached_property
    def keepalive(self) -> KeepAliveChannel:
        """The connection kept open by a ``pixel-keepalive`` tab (made when first used: a lock is not free
        under gevent, and most tabs never need it)."""
        return KeepAliveChannel()

    # -- page lifecycle ----------------------------------------------------------------------------------
    def page_load(self, techniques: tuple[str, ...] | list[str], visit_time: float = 0.0) -> None:
        """What the page does when it loads: the pre-warm ping and the kept-alive connection.

        Their real sockets act at once; their emulated timing lives in the caches (the DNS entry is
        filled, the kept connection usable, at the visit time the model says).
        """
        if "pixel-prewarm" in techniques:
            # Fills the cache entry, which carries the ping's timing; the ping itself matters to no event.
            self.dns["pixel-prewarm"].wait(visit_time, self.network.dns)
            self._ping_new_connection("pixel-prewarm")
        if "pixel-keepalive" in techniques:
            wait = self.dns["pixel-keepalive"].wait(visit_time, self.network.dns)
            channel = self.keepalive
            with channel.lock:
                channel.discard()
                channel.sock = self._connect_plain()
                self._ping_on(channel, "pixel-keepalive")
                channel.ready_at = visit_time + wait + self.network.rtt

    def keepalive_tick(self) -> None:
        """Ping the kept connection, as the page's keep-alive timer does; reopen it if it was closed."""
        channel = self.keepalive
        if not channel.lock.acquire(blocking=False):
            return  # an event is using it: that keeps it alive too
        try:
            if channel.looks_closed():
                channel.discard()
                channel.sock = self._connect_plain()
            self._ping_on(channel, "pixel-keepalive")
        except (OSError, Stale):
            channel.discard()
        finally:
            channel.lock.release()

    def close(self) -> None:
        """The page is gone for good: tear down the kept connection and any abandoned sockets."""
        if "keepalive" in self.__dict__:
            self.keepalive.discard()
        self.release_limbo(0.0)

    def release_limbo(self, older_than: float) -> None:
        """RST silently abandoned sockets held longer than ``older_than`` seconds."""
        now = time.monotonic()
        keep = []
        for since, sock in self.limbo:
            if now - since >= older_than:
                close(sock, "rst")
            else:
                keep.append((since, sock))
        self.limbo = keep

    def _connect_plain(self) -> _socket.socket:
        """A connection for the page's own requests (pings), outside any event's timeline."""
        sock = connect(self.address, PING_TIMEOUT)
        self.connections_opened += 1
        return sock

    def _ping_on(self, channel: KeepAliveChannel, tech: str) -> None:
        assert channel.sock is not None
        send_all(channel.sock, ping_request(tech), PING_TIMEOUT)
        self.pings_sent += 1
        read_response(channel.sock, None, "ping")
        channel.last_used = time.monotonic()

    def _ping_new_connection(self, tech: str) -> None:
        sock = self._connect_plain()
        try:
            send_all(sock, ping_request(tech), PING_TIMEOUT)
            self.pings_sent += 1
            read_response(sock, None, "ping")
        finally:
            close(sock, "rst")

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
        perform = _PERFORM.get(tech)
        if perform is None:
            raise ValueError(
                f"technique {tech!r} needs --browser chromium; "
                f"the seed browser plays {', '.join(SEED_TECHNIQUES)}"
            )
        result = EventResult(id=event_id, tech=tech)
        timeline = Timeline(
            result, exit_after, abort=self.abort, rtt=self.network.rtt, clock=self.clock, sleep=self.sleep
        )
        wire = _Wire()
        try:
            perform(self, timeline, wire, event_body(event_id, tech, event_type), visit_time)
        except Cut as cut:
            if not result.written:
                result.stage = cut.stage
            if wire.sock is not None:
                close(wire.sock, self.close_mode, self.limbo)
                if wire.kept:
                    self.keepalive.sock = None
                wire.sock = None
        except (OSError, Stale, ValueError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            if not result.written:
                result.stage = "error"
        finally:
            if wire.sock is not None and not wire.kept:
                close(wire.sock, "rst")
        return result


class _Wire:
    """The socket an event is using, so the cut can close it wherever it comes."""

    sock: _socket.socket | None = None
    kept = False  # the kept-alive channel's socket: not closed by the event unless cut


def _written(result: EventResult, timeline: Timeline, stage: str) -> None:
    timeline.mark(stage)
    result.written = True
    result.t_written = timeline.intended


def _ajax(tab: Tab, tl: Timeline, wire: _Wire, body: bytes, visit_time: float) -> None:
    net, result = tab.network, tl.result
    result.preflight = "sent"  # every event preflights: the seed's browser caches no answer
    tl.wait("dns", tab.dns["ajax"].wait(visit_time, net.dns))
    wire.sock = open_connection(tab.address, tl)
    tl.wait("connect", net.rtt)
    started = tl.now()
    send_before_cut(
        wire.sock,
        _request(
            "OPTIONS",
            "/e",
            [
                ("Origin", ORIGIN),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
        ),
        tl,
        "preflight",
    )
    result.requests += 1
    status, arrived = read_response_stamped(wire.sock, tl, "preflight")
    if not 200 <= status < 300:
        raise ValueError(f"preflight refused with HTTP {status}")
    tl.acted("preflight", started, arrived)
    tl.wait("preflight", net.rtt)
    headers = _request(
        "POST",
        "/e",
        [("Origin", ORIGIN), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    result.requests += 1
    if not net.uplink_bps:
        send_before_cut(wire.sock, headers + body, tl, "body")
        tl.mark("headers")
        _written(result, tl, "body")
    else:
        send_before_cut(wire.sock, headers, tl, "headers")
        tl.mark("headers")
        chunk = max(1, int(net.uplink_bps * BODY_CHUNK_SECONDS / 8))
        for offset in range(0, len(body), chunk):
            piece = body[offset : offset + chunk]
            tl.wait("body", len(piece) * 8 / net.uplink_bps)  # on the wire once its transmission time is over
            send_before_cut(wire.sock, piece, tl, "body")
        _written(result, tl, "body")
    _read_ack(tl, wire)


def _pixel(tab: Tab, tl: Timeline, wire: _Wire, body: bytes, visit_time: float) -> None:
    tech = tl.result.tech
    tl.wait("dns", tab.dns[tech].wait(visit_time, tab.network.dns))
    wire.sock = open_connection(tab.address, tl, nodelay=False)  # one write, then only reads
    tl.wait("connect", tab.network.rtt)
    send_before_cut(wire.sock, pixel_request(body), tl, "request")
    tl.result.requests += 1
    _written(tl.result, tl, "request")
    _read_ack(tl, wire)


def _keepalive(tab: Tab, tl: Timeline, wire: _Wire, body: bytes, visit_time: float) -> None:
    channel, result = tab.keepalive, tl.result
    if channel.sock is None and math.isinf(channel.ready_at):
        # No page_load opened it: the first event opens the connection the page will keep.
        tl.wait("dns", tab.dns["pixel-keepalive"].wait(visit_time, tab.network.dns))
        channel.sock = open_connection(tab.address, tl)
        wire.sock, wire.kept = channel.sock, True
        channel.ready_at = visit_time + tl.intended + tab.network.rtt
    tl.wait("connect", channel.ready_at - visit_time)  # the connection opened at page load may not be up yet
    if not channel.lock.acquire(timeout=max(0.0, min(tl.remaining(), 30.0))):
        raise Cut("request")
    try:
        for attempt in (0, 1):
            if attempt or channel.looks_closed():
                # Found closed (or closed under our request): a new connection, as browsers retry once.
                result.retried = True
                channel.discard()
                tl.wait("dns", tab.dns["pixel-keepalive"].wait(visit_time + tl.now(), tab.network.dns))
                channel.sock = open_connection(tab.address, tl)
                wire.sock, wire.kept = channel.sock, True
                tl.wait("connect", tab.network.rtt)
            wire.sock, wire.kept = channel.sock, True
            assert wire.sock is not None
            send_before_cut(wire.sock, pixel_request(body), tl, "request")
            result.requests += 1
            _written(result, tl, "request")
            try:
                _read_ack(tl, wire)
            except Stale:
                if attempt:
                    raise
                # The collector had closed it: the GET went nowhere. The browser learns it one RTT later.
                result.written, result.t_written = False, None
                tl.wait("request", tab.network.rtt)
                continue
            channel.last_used = time.monotonic()
            return
    finally:
        if wire.sock is not None and result.stage == "done" and not result.acked:
            channel.discard()  # an unanswered request leaves the connection in an unknown state
            wire.sock = None
        channel.lock.release()


def _read_ack(tl: Timeline, wire: _Wire) -> None:
    """After the data is out: read the collector's answer until the cut, to know it was acknowledged."""
    assert wire.sock is not None
    tl.result.acked = 200 <= read_response(wire.sock, tl, "done") < 300


_PERFORM: dict[str, Callable[[Tab, Timeline, _Wire, bytes, float], None]] = {
    "ajax": _ajax,
    "pixel": _pixel,
    "pixel-prewarm": _pixel,
    "pixel-keepalive": _keepalive,
}
