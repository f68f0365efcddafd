"""The reference collector: counts exactly the events whose complete data it parsed.

Why not aiohttp's web server: its request handler drops a request whose bytes arrived in the same
read as the client's RST (``connection_lost`` sets ``force_close`` before the queued message is handled),
and it has no header or body read timeout. Both decide what counts as lost, so the collector is an asyncio
``Protocol`` on llhttp (``httptools``): an event is counted, and written to the ledger, in the very
``data_received`` call that completes it, before the response is queued. Everything written to the
ledger reached the kernel (``write(2)``) before the response: an acknowledged event survives ``kill -9``.

Timeouts are its own: idle keep-alive, headers (slowloris) and body (a POST whose body never comes). A
sweeper checks deadlines a few times per shortest timeout instead of arming a timer per request.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools

from lossbench.events import BadEvent, decode_event_json, decode_pixel_param
from lossbench.ledger import LedgerWriter, dumps_line

GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


@dataclass
class CollectorConfig:
    """Everything that shapes the collector's behaviour; the CLI fills it from flags."""

    host: str = "127.0.0.1"
    port: int = 8787
    out: Path = Path("results/collector")
    processes: int = 1
    idle_timeout: float = 30.0
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_url: int = 8192
    max_header_bytes: int = 16384
    max_body: int = 65536
    max_connections: int = 10000
    cors_max_age: int = 0
    allow_origins: tuple[str, ...] = ("*",)
    ledger_max_bytes: int = 256 * 1024 * 1024
    uvloop: bool = True


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
            "ledger_errors": self.ledger_errors,
            "cpu_seconds": round(time.process_time(), 3),
            "started": self.started,
            "pid": os.getpid(),
        }


def _response(status: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers), f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


_CLOSE = [("Connection", "close")]
_LEDGER_FAILED = _response(
    "503 Service Unavailable",
    [("Content-Type", "text/plain"), ("Retry-After", "1"), *_CLOSE],
    b"ledger write failed\n",
)


def _conn(keep_alive: bool) -> list[tuple[str, str]]:
    return [] if keep_alive else _CLOSE


class Collector:
    """Shared state of one collector process: config, ledger, counters and live connections."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.ledger = LedgerWriter(
            Path(config.out) / "received", "received", max_bytes=config.ledger_max_bytes
        )
        self.connections: set[CollectorProtocol] = set()
        self.next_connection = 0
        self.accepting = True
        self._responses: dict[tuple[str, bool, str], bytes] = {}

    # -- canned responses, cached by (kind, keep-alive, origin) ------------------------------------------
    def cors_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin to send, or None. A request's Origin is echoed only if listed."""
        allowed = self.config.allow_origins
        if "*" in allowed:
            return "*"
        if origin is not None and origin in allowed:
            return origin
        return None

    def response(self, kind: str, keep_alive: bool, origin: str | None = None) -> bytes:
        key = (kind, keep_alive, origin or "")
        cached = self._responses.get(key)
        if cached is not None:
            return cached
        conn = [] if keep_alive else _CLOSE
        cors = [("Access-Control-Allow-Origin", origin)] if origin else []
        if origin and origin != "*":
            cors.append(("Vary", "Origin"))
        if kind == "gif":
            data = _response(
                "200 OK",
                [("Content-Type", "image/gif"), ("Cache-Control", "no-store"), *cors, *conn],
                GIF,
            )
        elif kind == "preflight":
            data = _response(
                "204 No Content",
                [
                    *cors,
                    ("Access-Control-Allow-Methods", "POST, OPTIONS"),
                    ("Access-Control-Allow-Headers", "Content-Type"),
                    ("Access-Control-Max-Age", str(self.config.cors_max_age)),
                    *conn,
                ],
            )
        elif kind == "accepted":
            data = _response("204 No Content", [*cors, ("Cache-Control", "no-store"), *conn])
        else:
            raise KeyError(kind)
        if len(self._responses) < 1024:
            self._responses[key] = data
        return data

    def refuse(
        self, reason: str, status: str, message: str, extra: list[tuple[str, str]] | None = None
    ) -> bytes:
        """A 4xx/5xx with a plain-text reason; always closes the connection."""
        self.stats.refused[reason] += 1
        body = (message + "\n").encode()
        return _response(
            status, [("Content-Type", "text/plain; charset=utf-8"), *(extra or []), *_CLOSE], body
        )

    def stats_document(self) -> dict[str, Any]:
        self.stats.connections_open = len(self.connections)
        return self.stats.as_dict()

    def write_events(self, lines: list[bytes]) -> bool:
        """Group commit: one write(2) for every event completed by one read. False if the disk refused."""
        try:
            self.ledger.append_raw(b"".join(lines), len(lines))
        except OSError:
            self.stats.ledger_errors += len(lines)
            return False
        return True

    def sweep(self) -> None:
        """Close connections past their deadline (idle keep-alive, slow headers, slow body)."""
        now = time.monotonic()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.on_deadline()

    def close(self) -> None:
        for conn in list(self.connections):
            conn.abort()
        self.ledger.close()
        stats_path = Path(self.config.out) / "received" / f"{self.ledger.name}.stats.json"
        stats_path.write_text(json.dumps(self.stats_document(), indent=1) + "\n")


_IDLE, _HEADERS, _BODY, _CLOSING = range(4)


class CollectorProtocol(asyncio.Protocol):
    """One TCP connection: parse requests with llhttp, count events, answer, enforce deadlines."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.config = collector.config
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.number = 0
        self.opened = 0.0
        self.tech = ""  # technique of the first request, to attribute connection-seconds
        self.state = _IDLE
        self.deadline = float("inf")
        self._reset_request()
        self._pending: list[tuple[bytes | None, str, bytes]] = []  # (ledger line or None, tech, reply)
        self._refusal: bytes | None = None

    def _reset_request(self) -> None:
        self.url = bytearray()
        self.header_bytes = 0
        self.origin: str | None = None
        self.content_type = b""
        self.content_length: int | None = None
        self.chunked = False
        self.body = bytearray()

    # -- connection lifecycle ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        c = self.collector
        c.stats.connections_total += 1
        if len(c.connections) >= self.config.max_connections or not c.accepting:
            c.stats.connections_refused += 1
            transport.write(
                c.refuse("too_many_connections", "503 Service Unavailable", "too many connections")
            )
            transport.close()
            self.state = _CLOSING
            return
        c.next_connection += 1
        self.number = c.next_connection
        self.opened = time.monotonic()
        self.deadline = self.opened + self.config.idle_timeout
        c.connections.add(self)
        try:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def connection_lost(self, exc: Exception | None) -> None:
        c = self.collector
        if self in c.connections:
            c.connections.discard(self)
            c.stats.conn_seconds[self.tech] += time.monotonic() - self.opened
            if self.state == _BODY:
                c.stats.bodies_incomplete += 1
            elif self.state == _HEADERS:
                c.stats.headers_incomplete += 1
        self.state = _CLOSING
        self.transport = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def on_deadline(self) -> None:
        stats = self.collector.stats
        if self.state == _IDLE:
            stats.idle_timeouts += 1
            if self.transport is not None:
                self.transport.close()
            return
        if self.state == _HEADERS:
            stats.header_timeouts += 1
            self.state = _CLOSING
        elif self.state == _BODY:
            stats.body_timeouts += 1
            stats.bodies_incomplete += 1
            self.state = _CLOSING  # counted here, not again in connection_lost
        self.deadline = float("inf")
        if self.transport is not None:
            self.transport.write(_response("408 Request Timeout", _CLOSE))
            self.transport.close()

    # -- parsing --------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.state == _CLOSING or self.transport is None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refusal = self._refusal or self.collector.refuse(
                "upgrade", "400 Bad Request", "no upgrades"
            )
        except httptools.HttpParserError as exc:
            if self._refusal is None:
                self._refusal = self.collector.refuse("bad_http", "400 Bad Request", f"malformed HTTP: {exc}")
        self._flush()

    def _flush(self) -> None:
        """Write the ledger lines of every request completed in this read, then their answers, in order.

        Nothing is acknowledged unless its line reached the kernel: if the ledger write fails, the events
        of this read get a 503 and the connection closes.
        """
        transport = self.transport
        if transport is None:
            return
        if self._pending:
            lines = [line for line, _, _ in self._pending if line is not None]
            ok = not lines or self.collector.write_events(lines)
            out = []
            for line, tech, reply in self._pending:
                if line is None:
                    out.append(reply)
                elif ok:
                    self.collector.stats.events[tech] += 1
                    out.append(reply)
                else:
                    out.append(_LEDGER_FAILED)
                    self._refusal = None
                    self.state = _CLOSING
                    break
            self._pending = []
            transport.write(b"".join(out))
        if self._refusal is not None:
            transport.write(self._refusal)
            self._refusal = None
            self.state = _CLOSING
        if self.state == _CLOSING:
            transport.close()

    def on_message_begin(self) -> None:
        self._reset_request()
        self.state = _HEADERS
        self.deadline = time.monotonic() + self.config.header_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.config.max_url:
            self._stop(self.collector.refuse("uri_too_long", "414 URI Too Long", "request URI too long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.config.max_header_bytes:
            self._stop(
                self.collector.refuse(
                    "headers_too_large", "431 Request Header Fields Too Large", "headers too large"
                )
            )
            return
        lname = name.lower()
        if lname == b"origin":
            self.origin = value.decode("latin-1")
        elif lname == b"content-type":
            self.content_type = value
        elif lname == b"content-length":
            try:
                self.content_length = int(value)
            except ValueError:
                self.content_length = -1
        elif lname == b"transfer-encoding":
            self.chunked = True

    def on_headers_complete(self) -> None:
        method = self.parser.get_method()
        if method == b"POST":
            if self.chunked:
                self._stop(self.collector.refuse("chunked", "411 Length Required", "send Content-Length"))
                return
            if self.content_length is not None and self.content_length > self.config.max_body:
                self._stop(self.collector.refuse("body_too_large", "413 Content Too Large", "body too large"))
                return
            self.state = _BODY
            self.deadline = time.monotonic() + self.config.body_timeout
        else:
            self.deadline = time.monotonic() + self.config.body_timeout

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > self.config.max_body:
            self._stop(self.collector.refuse("body_too_large", "413 Content Too Large", "body too large"))

    def _stop(self, refusal: bytes) -> None:
        """Refuse the current request and stop parsing this connection."""
        if self._refusal is None:
            self._refusal = refusal
        raise httptools.HttpParserCallbackError("refused")

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive() and self.collector.accepting
        method = self.parser.get_method()
        self.state = _IDLE if keep_alive else _CLOSING
        self.deadline = time.monotonic() + self.config.idle_timeout
        try:
            line, tech, reply = self._handle(method, bytes(self.url), keep_alive)
        except _Refused as refused:
            self._refusal = refused.reply
            raise httptools.HttpParserCallbackError("refused") from None
        self._pending.append((line, tech, reply))

    # -- routing --------------------------------------------------------------------------------------
    def _handle(self, method: bytes, url: bytes, keep_alive: bool) -> tuple[bytes | None, str, bytes]:
        """Answer one complete request: (ledger line or None, technique, response bytes)."""
        c = self.collector
        path, _, query = url.partition(b"?")
        if path == b"/p.gif":
            self._require(method, b"GET")
            event_id, tech = self._decode(lambda: decode_pixel_param(_query_param(query, b"d")))
            reply = c.response("gif", keep_alive, c.cors_origin(self.origin))
            return self._event(event_id, tech, "GET"), tech, reply
        if path == b"/e":
            return self._ajax(method, keep_alive)
        if path == b"/ping.gif":
            self._require(method, b"GET")
            c.stats.pings += 1
            tech = _query_param_or_empty(query, b"t")
            tech = tech if tech in ("pixel-prewarm", "pixel-keepalive") else "ping"
            c.stats.requests[tech] += 1
            self.tech = self.tech or tech
            return None, tech, c.response("gif", keep_alive, c.cors_origin(self.origin))
        if path == b"/healthz":
            self._require(method, b"GET")
            return (
                None,
                "",
                _response("200 OK", [("Content-Type", "text/plain"), *_conn(keep_alive)], b"ok\n"),
            )
        if path == b"/stats":
            self._require(method, b"GET")
            body = json.dumps(c.stats_document()).encode()
            headers = [
                ("Content-Type", "application/json"),
                ("Cache-Control", "no-store"),
                *_conn(keep_alive),
            ]
            return None, "", _response("200 OK", headers, body)
        raise _Refused(c.refuse("not_found", "404 Not Found", "unknown path"))

    def _ajax(self, method: bytes, keep_alive: bool) -> tuple[bytes | None, str, bytes]:
        c = self.collector
        origin = c.cors_origin(self.origin)
        if method == b"OPTIONS":
            c.stats.preflights += 1
            c.stats.requests["ajax"] += 1
            self.tech = self.tech or "ajax"
            return None, "ajax", c.response("preflight", keep_alive, origin)
        self._require(method, b"POST", b"POST, OPTIONS")
        if self.origin is not None and origin is None:
            raise _Refused(c.refuse("origin", "403 Forbidden", "origin not allowed"))
        if not self.body:
            raise _Refused(c.refuse("empty_body", "400 Bad Request", "POST without a body"))
        if not self.content_type.lower().startswith((b"application/json", b"text/plain")):
            raise _Refused(c.refuse("content_type", "415 Unsupported Media Type", "send application/json"))
        event_id, tech = self._decode(lambda: decode_event_json(bytes(self.body)))
        return self._event(event_id, tech, "POST"), tech, c.response("accepted", keep_alive, origin)

    def _require(self, method: bytes, allowed: bytes, allow_header: bytes | None = None) -> None:
        if method != allowed:
            allow = (allow_header or allowed).decode()
            raise _Refused(
                self.collector.refuse("method", "405 Method Not Allowed", f"use {allow}", [("Allow", allow)])
            )

    def _decode(self, decode: Callable[[], tuple[str, str]]) -> tuple[str, str]:
        try:
            return decode()
        except BadEvent as bad:
            raise _Refused(
                self.collector.refuse(bad.reason, "400 Bad Request", f"invalid event: {bad}")
            ) from None

    def _event(self, event_id: str, tech: str, method: str) -> bytes:
        self.collector.stats.requests[tech] += 1
        self.tech = self.tech or tech
        line = {"id": event_id, "tech": tech, "m": method, "t": round(time.time(), 6), "c": self.number}
        return dumps_line(line)


class _Refused(Exception):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply


def _query_param(query: bytes, name: bytes) -> bytes:
    value = _query_param_or_none(query, name)
    if value is None:
        raise BadEvent("missing_d", f"no {name.decode()}= parameter")
    return value


def _query_param_or_none(query: bytes, name: bytes) -> bytes | None:
    prefix = name + b"="
    for part in query.split(b"&"):
        if part.startswith(prefix):
            value = part[len(prefix) :]
            return unquote_to_bytes(value) if b"%" in value else value
    return None


def _query_param_or_empty(query: bytes, name: bytes) -> str:
    value = _query_param_or_none(query, name)
    return value.decode("latin-1") if value is not None else ""
