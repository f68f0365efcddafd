"""Real Chromium against the real collector, counted at the collector: the keep-alive page's pings, the
preconnected pixel's connection, and the preflights of ajax with and without a cache-busting URL.

Each test plays its own visits with its own collector, so that the collector's counters (``pings``,
``preflights``) are that test's alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from browser_support import needs_chromium, play, visit
from lossbench.model.profiles import NetworkDraw
from lossbench.model.visits import PlannedEvent, Visit

pytestmark = [needs_chromium, pytest.mark.browser]


def test_keepalive_page_pings_reach_the_collector(tmp_path: Path) -> None:
    """Every tick of the page's keep-alive timer is a request on the network: a ping URL the page has
    used before would be served from Blink's memory cache and never leave the browser."""
    interval, at, exit_after = 1.0, 5.5, 1.0
    one = visit(at, exit_after, rtt=0.1, dns=0.1)
    played = play(tmp_path, [one], ["pixel-keepalive"], workers=1, ping_interval=interval)
    (record,) = played.records
    expected = 1 + int((at + exit_after) // interval)  # one at page load, one per tick until the close
    print(f"\n[chromium] keep-alive page: {record['pings']} pings, collector {played.stats['pings']}")
    assert expected - 1 <= record["pings"] <= expected, record["pings"]
    assert played.stats["pings"] == record["pings"]
    assert played.stats["requests"]["pixel-keepalive"] == record["pings"] + 1  # and the one event


def test_kept_connection_outlives_a_compressed_gap(tmp_path: Path) -> None:
    """A 57 s idle gap is played in a few real seconds, and the proxy closes what the collector would have
    closed for idleness (30 s) by its end: the pre-warmed pixel's connection, not the kept one, which the
    page's timer would have pinged every 20 s of it. So the keep-alive pixel after the gap goes out at once;
    the pre-warmed one needs a lookup and a handshake, and the page is gone first."""
    gap_visit = Visit(
        NetworkDraw(0.6, 0.6, None), (PlannedEvent("click", 3.0), PlannedEvent("click", 60.0)), 60.4, "unload"
    )
    played = play(tmp_path, [gap_visit], ["pixel-prewarm", "pixel-keepalive"], workers=1)
    (record,) = played.records
    after = {f["tech"]: f["id"] for f in record["fired"][2:]}
    keepalive, prewarm = played.sent[after["pixel-keepalive"]], played.sent[after["pixel-prewarm"]]
    assert after["pixel-keepalive"] in played.received
    assert keepalive["stage"] == "done" and keepalive["connections"] == 0, keepalive
    assert after["pixel-prewarm"] not in played.received
    assert prewarm["stage"] in ("dns", "connect") and not prewarm["written"], prewarm
    assert played.pings == [{"ping": "pixel-keepalive", "requests": 3, "connections": 0, "virtual": True}]
