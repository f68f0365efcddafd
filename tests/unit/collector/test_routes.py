"""Routing by path: a query string after ``/e`` or ``/ping.gif`` (the Chromium client's cache-busting ajax
and its numbered keep-alive pings) changes nothing about how a request is routed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from lossbench.collector.config import CollectorConfig
from lossbench.collector.routes import route
from lossbench.collector.state import Collector
from lossbench.contract.events import encode_event
from lossbench.contract.latency import ANSWER_EVENT, ANSWER_PING, ANSWER_PREFLIGHT


@dataclass
class FakeRequest:
    url: bytes
    origin: str | None = "http://shop.lossbench.test"
    content_type: bytes = b"application/json"
    body: bytes = b""
    number: int = 1
    ua: str = "chromium"


@pytest.fixture
def collector(tmp_path: Path) -> Collector:
    return Collector(CollectorConfig(port=0, out=tmp_path))


@pytest.mark.parametrize("url", [b"/e", b"/e?n=00000000000000a1"])
def test_ajax_with_or_without_a_query_string(collector: Collector, url: bytes) -> None:
    body = encode_event({"id": "00000000000000a1", "tech": "ajax-cachebust", "type": "click"})
    event, tech, reply, kind = route(collector, FakeRequest(url), b"OPTIONS", True)
    assert (event, tech, kind) == (None, "ajax", ANSWER_PREFLIGHT) and reply.startswith(b"HTTP/1.1 204")
    event, tech, reply, kind = route(collector, FakeRequest(url, body=body), b"POST", True)
    assert event is not None and event[:3] == ("00000000000000a1", "ajax-cachebust", "POST")
    assert (tech, kind) == ("ajax-cachebust", ANSWER_EVENT) and reply.startswith(b"HTTP/1.1 204")
    assert collector.stats.preflights == 1


def test_numbered_keepalive_ping(collector: Collector) -> None:
    event, tech, reply, kind = route(collector, FakeRequest(b"/ping.gif?t=pixel-keepalive&n=7"), b"GET", True)
    assert (event, tech, kind) == (None, "pixel-keepalive", ANSWER_PING) and reply.startswith(b"HTTP/1.1 200")
    assert collector.stats.pings == 1 and collector.stats.requests["pixel-keepalive"] == 1
