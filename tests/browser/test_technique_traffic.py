"""Real Chromium against the real collector, counted at the collector: the keep-alive page's pings, the
preconnected pixel's connection, and the preflights of ajax with and without a cache-busting URL.

Each test's visits are played with a collector and Chromium profiles of their own, so that the collector's
counters (``pings``, ``preflights``) and the browser's pools and caches are that test's alone. A play mostly
waits in real time (for an event, an exit, the late requests after it), so the module fixture plays the
tests' sets side by side, each in a thread of its own, and each test reads its own set's result.

Launching Chromium is what keeps a small machine busy: the sets of a round start their visits only once
every browser of the round is up (while browsers were still starting beside them, preflights went out that
a cached answer should have served). The preconnect's set plays in a round of its own, before the others:
its ``dns`` and ``connect`` visits fire 0.2 s after the page starts, and the preconnect must have been asked
for by then, which Chromium does within 0.1 s when it is alone but once took 0.4 s while ten other pages
were loading.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from browser_support import Played, needs_chromium, play, visit
from lossbench.model.profiles import NetworkDraw
from lossbench.model.visits import PlannedEvent, Visit

pytestmark = [needs_chromium, pytest.mark.browser]

PING_INTERVAL, PING_AT, PING_EXIT_AFTER = 1.0, 5.5, 1.0  # the keep-alive page's visit
GAP_VISIT = Visit(
    NetworkDraw(0.6, 0.6, None), (PlannedEvent("click", 3.0), PlannedEvent("click", 60.0)), 60.4, "unload"
)
PRECONNECT_VISITS = {
    # up at dns + rtt = 1 s; the event fires at 3 s
    "warm": visit(3.0, 2.0, rtt=0.5, dns=0.5),
    # the lookup ends at 1.5 s; the event fires at 0.2 s, the page goes at 0.7 s
    "dns": visit(0.2, 0.5, rtt=1.0, dns=1.5),
    # looked up at 0.3 s, connected at 2.8 s; the event fires at 0.2 s, the page goes at 1.6 s
    "connect": visit(0.2, 1.4, rtt=2.5, dns=0.3),
}


def _ajax_visit(events: int) -> Visit:
    """``events`` clicks a second apart on a fast network: each preflight is answered long before the
    next event, so a cached answer can serve it."""
    clicks = tuple(PlannedEvent("click", 1.0 + i) for i in range(events))
    return Visit(NetworkDraw(0.1, 0.1, None), clicks, 1.0 + events + 1.0, "unload")


PLAYS: dict[str, tuple[list[Visit], list[str], dict[str, Any]]] = {
    # name -> (visits, techniques, play's keyword arguments): one set per test
    "keepalive": (
        [visit(PING_AT, PING_EXIT_AFTER, rtt=0.1, dns=0.1)],
        ["pixel-keepalive"],
        {"workers": 1, "ping_interval": PING_INTERVAL},
    ),
    "gap": ([GAP_VISIT], ["pixel-prewarm", "pixel-keepalive"], {"workers": 1}),
    "preconnect": (list(PRECONNECT_VISITS.values()), ["pixel-preconnect"], {"workers": 3}),
    "ajax-cachebust": (
        [_ajax_visit(4), _ajax_visit(4)],
        ["ajax-cachebust"],
        {"workers": 2, "collector_options": {"cors_max_age": 600}},
    ),
    **{
        f"ajax-max-age-{max_age}": (
            [_ajax_visit(4), _ajax_visit(4)],
            ["ajax"],
            {"workers": 2, "collector_options": {"cors_max_age": max_age}},
        )
        for max_age in (0, 600)
    },
}


ROUNDS = (("preconnect",), ("keepalive", "gap", "ajax-cachebust", "ajax-max-age-0", "ajax-max-age-600"))
"""The sets of ``PLAYS`` played side by side, one round after the other."""


@pytest.fixture(scope="module")
def plays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Future[Played]]:
    """Every set of ``PLAYS`` (``play``: its own collector, proxy and Chromium profiles), round by round, by
    name; a test takes its set's ``result()``, which raises what its play raised."""
    assert sorted(name for names in ROUNDS for name in names) == sorted(PLAYS)
    done: dict[str, Future[Played]] = {}
    for names in ROUNDS:
        launched = threading.Barrier(sum(PLAYS[name][2]["workers"] for name in names))
        with ThreadPoolExecutor(len(names)) as pool:
            for name in names:
                visits, techniques, options = PLAYS[name]
                out = tmp_path_factory.mktemp(name)
                done[name] = pool.submit(play, out, visits, techniques, launched=launched, **options)
    return done


def test_keepalive_page_pings_reach_the_collector(plays: dict[str, Future[Played]]) -> None:
    """Every tick of the page's keep-alive timer is a request on the network: a ping URL the page has
    used before would be served from Blink's memory cache and never leave the browser."""
    interval, at, exit_after = PING_INTERVAL, PING_AT, PING_EXIT_AFTER
    played = plays["keepalive"].result()
    (record,) = played.records
    expected = 1 + int((at + exit_after) // interval)  # one at page load, one per tick until the close
    print(f"\n[chromium] keep-alive page: {record['pings']} pings, collector {played.stats['pings']}")
    assert expected - 1 <= record["pings"] <= expected, record["pings"]
    assert played.stats["pings"] == record["pings"]
    assert played.stats["requests"]["pixel-keepalive"] == record["pings"] + 1  # and the one event


def test_kept_connection_outlives_a_compressed_gap(plays: dict[str, Future[Played]]) -> None:
    """A 57 s idle gap is played in a few real seconds, and the proxy closes what the collector would have
    closed for idleness (30 s) by its end: the pre-warmed pixel's connection, not the kept one, which the
    page's timer would have pinged every 20 s of it. So the keep-alive pixel after the gap goes out at once;
    the pre-warmed one needs a lookup and a handshake, and the page is gone first."""
    played = plays["gap"].result()
    (record,) = played.records
    after = {f["tech"]: f["id"] for f in record["fired"][2:]}
    keepalive, prewarm = played.sent[after["pixel-keepalive"]], played.sent[after["pixel-prewarm"]]
    assert after["pixel-keepalive"] in played.received
    assert keepalive["stage"] == "done" and keepalive["connections"] == 0, keepalive
    assert after["pixel-prewarm"] not in played.received
    assert prewarm["stage"] in ("dns", "connect") and not prewarm["written"], prewarm
    assert played.pings == [{"ping": "pixel-keepalive", "requests": 3, "connections": 0, "virtual": True}]


def _first(played_record: dict, tech: str) -> tuple[str, float]:
    """The id and fire time (wall seconds) of the visit's first event of ``tech``."""
    fired = next(f for f in played_record["fired"] if f["tech"] == tech)
    return fired["id"], fired["t"] / 1000.0


def test_preconnected_pixel(plays: dict[str, Future[Played]]) -> None:
    """``<link rel=preconnect>`` at page load opens the technique host's connection before any event: an
    event after it is up goes out at once on it; one fired while it is still being opened waits for it, in
    the stage it is in. The connection is the technique's cost on a ping line of its own, not an event's."""
    visits = PRECONNECT_VISITS
    played = plays["preconnect"].result()
    by_name = {list(visits)[int(r["key"].split("n", 1)[1])]: r for r in played.records}
    assert set(by_name) == set(visits)
    for name, record in by_name.items():
        event_id, fired = _first(record, "pixel-preconnect")
        line = played.sent[event_id]
        opened = [c for c in record["connections"] if c["host"].startswith("pixel-preconnect.")]
        asked = [round(c["asked"] - fired, 3) for c in opened]
        print(f"\n[chromium] pixel-preconnect {name}: {line['stage']}, connections asked at {asked} s")
        assert opened and opened[0]["asked"] < fired, opened  # opened at page load, before the event
        assert line["connections"] == 0, line  # the preconnect's connection is not the event's cost
        if name == "warm":
            assert line["stage"] == "done" and event_id in played.received
            assert [r.split("?", 1)[0] for r in opened[0]["requests"]] == ["GET /p.gif"], opened
            assert line["t_written"] < 0.1, line  # no lookup, no handshake: written at once
        else:
            assert line["stage"] == name and event_id not in played.received, line
    preconnect_lines = [p for p in played.pings if p["ping"] == "pixel-preconnect"]
    assert len(preconnect_lines) == 3
    assert all(p["requests"] == 0 and p["connections"] >= 1 and not p["virtual"] for p in preconnect_lines)


def test_cachebusting_ajax_preflights_every_event(plays: dict[str, Future[Played]]) -> None:
    """A URL of its own per event (``/e?n=<id>``): Chromium's preflight cache, keyed by URL, never hits,
    even with the collector allowing 600 s of caching."""
    played = plays["ajax-cachebust"].result()  # the collector allows 600 s of caching
    assert len(played.received) == 8
    assert played.stats["preflights"] == 8
    assert all(line["requests"] == 2 for line in played.sent.values())


@pytest.mark.parametrize(("max_age", "preflights"), [(0, 8), (600, 2)])
def test_ajax_preflights_are_cached_for_max_age(
    plays: dict[str, Future[Played]], max_age: int, preflights: int
) -> None:
    """ajax to one URL: with ``Access-Control-Max-Age: 600`` only each visit's first event preflights (its
    host is its own, and so is its cache); with 0, every event does."""
    played = plays[f"ajax-max-age-{max_age}"].result()
    assert len(played.received) == 8
    assert played.stats["preflights"] == preflights
