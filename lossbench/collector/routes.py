"""Routing a complete request: which path does what, and which event (if any) it carries.

Nothing here reads the socket: the protocol (``lossbench.collector.protocol``) parses a request and hands it
over once complete; a refusal is raised as ``Refused`` and the protocol answers it and stops reading.
"""

from __future__ import annotations

import json
from typing import Protocol
from urllib.parse import unquote_to_bytes

from lossbench.collector.connection import Event, Routed
from lossbench.collector.responses import connection_header, http_response
from lossbench.collector.state import Collector
from lossbench.contract.events import BadEvent, decode_event_json, decode_pixel_param
from lossbench.contract.latency import ANSWER_EVENT, ANSWER_PING, ANSWER_PREFLIGHT


class Refused(Exception):
    """The request is refused with ``reply`` (from ``Collector.refuse``): the connection closes after it."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply


class Request(Protocol):
    """The parts of a complete request that routing reads (``CollectorProtocol`` holds them)."""

    @property
    def url(self) -> bytes: ...
    @property
    def origin(self) -> str | None: ...
    @property
    def content_type(self) -> bytes: ...
    @property
    def body(self) -> bytes | bytearray: ...
    @property
    def number(self) -> int:
        """The connection's number, recorded with each event."""

    @property
    def ua(self) -> str:
        """The User-Agent family of the request (``ua_family``), or "" without a User-Agent."""


def route(c: Collector, request: Request, method: bytes, keep_alive: bool) -> Routed:
    """Answer one complete request: (event or None, technique or "", response bytes, the kind of answer
    it is timed as: ``ANSWER_EVENT`` for a pixel GET or an ajax POST, ``ANSWER_PREFLIGHT`` for an OPTIONS,
    ``ANSWER_PING`` for a ping, None for /healthz and /stats); raises Refused."""
    url = request.url
    mark = url.find(b"?")
    path, query = (url, b"") if mark < 0 else (url[:mark], url[mark + 1 :])
    if path == b"/p.gif":
        _require(c, method, b"GET")
        try:
            event_id, tech = decode_pixel_param(_query_param(query, b"d"))
        except BadEvent as bad:
            raise Refused(c.refuse(bad.reason)) from None
        reply = c.response("gif", keep_alive, c.cors_origin(request.origin))
        return _event(c, request, event_id, tech, "GET"), tech, reply, ANSWER_EVENT
    if path == b"/e":
        return _ajax(c, request, method, keep_alive)
    if path == b"/ping.gif":
        _require(c, method, b"GET")
        c.stats.pings += 1
        tech = _query_param_or_empty(query, b"t")
        tech = tech if tech in ("pixel-prewarm", "pixel-keepalive") else "ping"
        c.stats.requests[tech] += 1
        return None, tech, c.response("gif", keep_alive, c.cors_origin(request.origin)), ANSWER_PING
    if path == b"/healthz":
        _require(c, method, b"GET")
        return (
            None,
            "",
            http_response(
                "200 OK", [("Content-Type", "text/plain"), *connection_header(keep_alive)], b"ok\n"
            ),
            None,
        )
    if path == b"/stats":
        _require(c, method, b"GET")
        body = json.dumps(c.stats_document()).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
            *connection_header(keep_alive),
        ]
        return None, "", http_response("200 OK", headers, body), None
    raise Refused(c.refuse("not_found"))


def _ajax(c: Collector, request: Request, method: bytes, keep_alive: bool) -> Routed:
    origin = c.cors_origin(request.origin)
    if method == b"OPTIONS":
        if request.origin is not None and origin is None:
            raise Refused(c.refuse("origin"))
        c.stats.preflights += 1
        c.stats.requests["ajax"] += 1
        return None, "ajax", c.response("preflight", keep_alive, origin), ANSWER_PREFLIGHT
    _require(c, method, b"POST", "POST, OPTIONS")
    if request.origin is not None and origin is None:
        raise Refused(c.refuse("origin"))
    if not request.body:
        raise Refused(c.refuse("empty_body"))
    if not request.content_type.lower().startswith((b"application/json", b"text/plain")):
        raise Refused(c.refuse("content_type"))
    try:
        event_id, tech = decode_event_json(request.body)
    except BadEvent as bad:
        raise Refused(c.refuse(bad.reason)) from None
    reply = c.response("accepted", keep_alive, origin)
    return _event(c, request, event_id, tech, "POST"), tech, reply, ANSWER_EVENT


def _require(c: Collector, method: bytes, allowed: bytes, allow_header: str = "") -> None:
    if method != allowed:
        raise Refused(c.refuse("method", allow_header or allowed.decode()))


def _event(c: Collector, request: Request, event_id: str, tech: str, method: str) -> Event:
    """A valid event, to be written by the next commit (``event_line``)."""
    c.stats.requests[tech] += 1
    return event_id, tech, method, request.number, request.ua


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


def ua_family(user_agent: bytes) -> str:
    """The browser family of a User-Agent, from a fixed list (nothing from the request is written as it
    is): ``chromium`` (Chrome, Chromium and their headless builds), ``firefox``, ``safari``, ``other``."""
    if b"Chrome/" in user_agent or b"Chromium/" in user_agent:
        return "chromium"
    if b"Firefox/" in user_agent:
        return "firefox"
    if b"Safari/" in user_agent:
        return "safari"
    return "other"
