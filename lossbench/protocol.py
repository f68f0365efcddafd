"""One collector connection: llhttp parsing, routing, counting, answering, deadlines.

See ``lossbench.collector`` for the rules it keeps (what counts, what is refused, what bounds a client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from urllib.parse import unquote_to_bytes

import httptools

from lossbench.collector import (
    BODY,
    CLOSE_LINGER,
    CLOSING,
    HEAD_SLICE,
    HEADERS,
    IDLE,
    Collector,
    Event,
    log,
    ua_family,
)
from lossbench.events import BadEvent, decode_event_json, decode_pixel_param
from lossbench.responses import LEDGER_FAILED, TIMEOUT, connection_header, http_response

COMMIT_AT_ONCE = 64  # requests completed on one connection that are committed without waiting for the turn


class _Refused(Exception):
    """Raised inside a parser callback to refuse the current request with ``reply``."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply


class _Stop(httptools.HttpParserCallbackError):
    """Raised inside a parser callback to stop parsing this connection on purpose."""


class CollectorProtocol(asyncio.Protocol):
    """One TCP connection: parse requests with llhttp, count events, answer, enforce deadlines."""

    __slots__ = (
        "body",
        "chunked",
        "collector",
        "config",
        "content_length",
        "content_type",
        "deadline",
        "head_bytes",
        "header_bytes",
        "number",
        "opened",
        "origin",
        "parser",
        "pending",
        "queued",
        "refusal",
        "state",
        "stopped",
        "tech",
        "transport",
        "ua",
        "url",
    )

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.config = collector.config
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.number = 0
        self.opened = 0.0
        self.tech = ""  # technique of the first request, to attribute connection-seconds
        self.state = IDLE
        self.deadline = float("inf")
        self.pending: list[tuple[Event | None, str, bytes]] = []  # (event or None, tech, reply)
        self.queued = False  # waiting in the collector's commit queue
        self.refusal: bytes | None = None
        self.stopped = False  # parsing stopped on purpose after a Connection: close answer
        self.head_bytes = 0
        self._reset_request()

    def _reset_request(self) -> None:
        self.url = b""
        self.body: bytes | bytearray = b""
        self.header_bytes = 0
        self.origin: str | None = None
        self.content_type = b""
        self.content_length: int | None = None
        self.chunked = False
        self.ua = ""

    # -- connection lifecycle ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        c = self.collector
        c.stats.connections_total += 1
        if len(c.connections) >= self.config.max_connections or not c.accepting:
            c.stats.connections_refused += 1
            transport.write(c.refuse("too_many_connections"))  # type: ignore[attr-defined]
            self.parser = None
            if len(c.refused) < self.config.max_connections:  # linger, so the client can read the 503
                c.refused.add(self)
                self.close(linger=True)
            else:
                self.state = CLOSING
                transport.close()
            return
        c.next_connection += 1
        self.number = c.next_connection
        self.opened = time.monotonic()
        self.deadline = self.opened + self.config.idle_timeout
        c.connections.add(self)  # TCP_NODELAY: both uvloop and asyncio set it on every TCP transport

    def connection_lost(self, exc: Exception | None) -> None:
        c = self.collector
        c.refused.discard(self)
        if self in c.connections:
            c.connections.discard(self)
            c.stats.conn_seconds[self.tech] += time.monotonic() - self.opened
            if self.state == BODY:
                c.stats.bodies_incomplete += 1
            elif self.state == HEADERS:
                c.stats.headers_incomplete += 1
        self.state = CLOSING
        self.transport = None
        self.parser = None  # breaks the parser <-> protocol cycle: freed at once, not at the next GC

    def pause_writing(self) -> None:
        """The client does not read its answers: stop reading its requests until it does."""
        if self.transport is not None:
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.state != CLOSING:
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.resume_reading()

    def close(self, linger: bool = False) -> None:
        """Close after the answers are flushed; abort if that takes longer than CLOSE_LINGER.

        ``linger``: the client may still be sending (a body or requests behind a refused one). Closing a
        socket with unread data makes the kernel send an RST, and an RST makes the client's kernel throw
        away answers it has received but not yet read: the client would never see its 4xx, or the 2xx of
        the event before it. So the collector only half-closes (FIN after the answers), reads and drops
        whatever still comes, and closes when the client does (or after CLOSE_LINGER).
        """
        self.state = CLOSING
        self.deadline = time.monotonic() + CLOSE_LINGER
        transport = self.transport
        if transport is None:
            return
        if linger and transport.can_write_eof():
            transport.write_eof()
            with contextlib.suppress(RuntimeError, AttributeError):
                transport.resume_reading()  # in case a full write buffer had paused it
        else:
            transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def on_deadline(self) -> None:
        stats = self.collector.stats
        state = self.state
        if state == CLOSING:  # closed by us, but its answer never drained: the client is not reading
            stats.connections_aborted += 1
            self.deadline = float("inf")
            self.abort()
            return
        reply = None
        if state == IDLE:
            stats.idle_timeouts += 1
        elif state == HEADERS:
            stats.header_timeouts += 1
            reply = TIMEOUT
        else:
            stats.body_timeouts += 1
            stats.bodies_incomplete += 1  # counted here, not again in connection_lost
            reply = TIMEOUT
        if self.transport is not None and reply is not None:
            self.transport.write(reply)
        self.close()

    # -- parsing --------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.state == CLOSING or self.parser is None:
            return
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade:
            if self.refusal is None:
                self.refusal = self.collector.refuse("upgrade")
        except httptools.HttpParserError as exc:
            if self.refusal is None and not self.stopped:
                cause = exc.__context__
                if cause is not None and not isinstance(cause, httptools.HttpParserCallbackError):
                    log.error("collector: internal error on connection %d", self.number, exc_info=cause)
                    self.refusal = self.collector.refuse("internal_error")
                else:
                    self.refusal = self.collector.refuse("bad_http")
        self._queue_for_commit()

    def _feed(self, data: bytes) -> None:
        """Feed the parser; count the bytes of an unfinished head, which httptools buffers unseen."""
        parser = self.parser
        assert parser is not None
        size = len(data)
        if size <= HEAD_SLICE:
            parser.feed_data(data)
            if self.state == HEADERS:
                self._count_head(size)
            return
        view = memoryview(data)
        for start in range(0, size, HEAD_SLICE):
            parser.feed_data(view[start : start + HEAD_SLICE])
            if self.state == HEADERS:
                self._count_head(min(HEAD_SLICE, size - start))

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.collector.head_limit:
            self._stop(self.collector.refuse("headers_too_large"))

    def _queue_for_commit(self) -> None:
        """Hand this read's completed requests to the collector's group commit (``Collector.commit``).

        Answers wait for the commit, at the end of this turn of the event loop: one ``write(2)`` puts the
        events of every connection read in this turn in the ledger, and only then are their answers sent.
        """
        if not self.queued and (self.pending or self.refusal is not None or self.state == CLOSING):
            self.queued = True
            self.collector.queue_commit(self)
        if len(self.pending) >= COMMIT_AT_ONCE:
            # Pipelined requests: commit now, so that a full write buffer pauses reading at once (the
            # event loop may otherwise read this connection again before the end of its turn).
            self.collector.commit()

    def answer(self, written: bool) -> None:
        """Send the answers of the requests queued since the last commit, in order; ``written`` says
        whether their ledger lines reached the kernel. Nothing is acknowledged unless it did: if the write
        failed, the first event gets a 503 and the connection closes."""
        self.queued = False
        pending = self.pending
        self.pending = []
        events = self.collector.stats.events
        out = []
        for event, tech, reply in pending:
            if event is None:
                out.append(reply)
            elif written:
                events[tech] += 1
                out.append(reply)
            else:
                out.append(LEDGER_FAILED)
                self.refusal = None
                self.state = CLOSING
                break
        transport = self.transport
        if transport is None:  # the client is gone: its events still count, nobody reads the answers
            return
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self.refusal is not None:
            transport.write(self.refusal)
            self.refusal = None
            self.state = CLOSING
        if self.state == CLOSING:
            self.close(linger=True)

    def on_message_begin(self) -> None:
        self._reset_request()
        self.head_bytes = 0
        self.state = HEADERS
        self.deadline = time.monotonic() + self.config.header_timeout

    def on_url(self, url: bytes) -> None:
        self.url = self.url + url if self.url else url
        if len(self.url) > self.config.max_url:
            self._stop(self.collector.refuse("uri_too_long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.config.max_header_bytes:
            self._stop(self.collector.refuse("headers_too_large"))
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
        elif lname == b"user-agent":
            self.ua = ua_family(value)

    def on_headers_complete(self) -> None:
        if self.chunked or self.content_length:
            if self.chunked:
                self._stop(self.collector.refuse("chunked"))
            if self.content_length is not None and self.content_length > self.config.max_body:
                self._stop(self.collector.refuse("body_too_large"))
            self.state = BODY
            self.deadline = time.monotonic() + self.config.body_timeout

    def on_body(self, body: bytes) -> None:
        if not self.body:
            self.body = body
        else:
            if isinstance(self.body, bytes):
                self.body = bytearray(self.body)
            self.body += body
        if len(self.body) > self.config.max_body:
            self._stop(self.collector.refuse("body_too_large"))

    def _stop(self, refusal: bytes) -> None:
        """Refuse the current request and stop parsing this connection."""
        if self.refusal is None:
            self.refusal = refusal
        raise _Stop("refused")

    def on_message_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        keep_alive = parser.should_keep_alive() and self.collector.accepting
        self.state = IDLE if keep_alive else CLOSING  # complete: no longer in flight (/stats says so)
        try:
            item = self._handle(parser.get_method(), keep_alive)
        except _Refused as refused:
            self.refusal = refused.reply
            raise _Stop("refused") from None
        self.pending.append(item)
        if keep_alive:
            self.deadline = time.monotonic() + self.config.idle_timeout
        else:
            # Answered with Connection: close: requests pipelined behind it are not read at all.
            self.stopped = True
            raise _Stop("closing")

    # -- routing --------------------------------------------------------------------------------------
    def _handle(self, method: bytes, keep_alive: bool) -> tuple[Event | None, str, bytes]:
        """Answer one complete request: (event or None, technique, response bytes)."""
        c = self.collector
        url = self.url
        mark = url.find(b"?")
        path, query = (url, b"") if mark < 0 else (url[:mark], url[mark + 1 :])
        if path == b"/p.gif":
            self._require(method, b"GET")
            try:
                event_id, tech = decode_pixel_param(_query_param(query, b"d"))
            except BadEvent as bad:
                raise _Refused(c.refuse(bad.reason)) from None
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
                http_response(
                    "200 OK", [("Content-Type", "text/plain"), *connection_header(keep_alive)], b"ok\n"
                ),
            )
        if path == b"/stats":
            self._require(method, b"GET")
            body = json.dumps(c.stats_document()).encode()
            headers = [
                ("Content-Type", "application/json"),
                ("Cache-Control", "no-store"),
                *connection_header(keep_alive),
            ]
            return None, "", http_response("200 OK", headers, body)
        raise _Refused(c.refuse("not_found"))

    def _ajax(self, method: bytes, keep_alive: bool) -> tuple[Event | None, str, bytes]:
        c = self.collector
        origin = c.cors_origin(self.origin)
        if method == b"OPTIONS":
            if self.origin is not None and origin is None:
                raise _Refused(c.refuse("origin"))
            c.stats.preflights += 1
            c.stats.requests["ajax"] += 1
            self.tech = self.tech or "ajax"
            return None, "ajax", c.response("preflight", keep_alive, origin)
        self._require(method, b"POST", "POST, OPTIONS")
        if self.origin is not None and origin is None:
            raise _Refused(c.refuse("origin"))
        if not self.body:
            raise _Refused(c.refuse("empty_body"))
        if not self.content_type.lower().startswith((b"application/json", b"text/plain")):
            raise _Refused(c.refuse("content_type"))
        try:
            event_id, tech = decode_event_json(self.body)
        except BadEvent as bad:
            raise _Refused(c.refuse(bad.reason)) from None
        return self._event(event_id, tech, "POST"), tech, c.response("accepted", keep_alive, origin)

    def _require(self, method: bytes, allowed: bytes, allow_header: str = "") -> None:
        if method != allowed:
            raise _Refused(self.collector.refuse("method", allow_header or allowed.decode()))

    def _event(self, event_id: str, tech: str, method: str) -> Event:
        """A valid event, to be written by the next commit (``event_line``)."""
        self.collector.stats.requests[tech] += 1
        self.tech = self.tech or tech
        return event_id, tech, method, self.number, self.ua


def _query_param(query: bytes, name: bytes) -> bytes:
    value = _query_param_or_none(query, name)
    if value is None:
        raise BadEvent("missing_d", f"no {name.decode()}= parameter")
    return value


def _query_param_or_none(query: bytes, name: bytes) -> bytes | None:
    prefix = name + b"="
    if query.startswith(prefix):  # the usual case: the parameter comes first
        end = query.find(b"&")
        value = query[len(prefix) :] if end < 0 else query[len(prefix) : end]
        return unquote_to_bytes(value) if b"%" in value else value
    for part in query.split(b"&"):
        if part.startswith(prefix):
            value = part[len(prefix) :]
            return unquote_to_bytes(value) if b"%" in value else value
    return None


def _query_param_or_empty(query: bytes, name: bytes) -> str:
    value = _query_param_or_none(query, name)
    return value.decode("latin-1") if value is not None else ""
