"""A visitor's network state (lossbench.model.browser): each of Chromium's rules, on hand-worked times.

Times are visit times in seconds; the network has a round trip of 0.1 s and an uncached lookup of 0.2 s,
so that a wait for the lookup and one for the handshake are told apart. Boundaries are probed just inside
and just outside (float sums such as 0.4 + 30 - 0.1 are not exact).
"""

from __future__ import annotations

import pytest

from lossbench.contract.server import ServerHints
from lossbench.model.browser import (
    BROWSERS,
    DEFAULT_BROWSER,
    KEEPALIVE_QUOTA_BYTES,
    MAX_SOCKETS_PER_HOST,
    PREFLIGHT_MAX_AGE_ABSENT,
    PREFLIGHT_MAX_AGE_CAP,
    UNUSED_IDLE_SECONDS,
    USED_IDLE_SECONDS,
    NetworkState,
    get_browser,
    preflight_lifetime,
    run_browser,
    run_server_hints,
)

RTT = 0.1
LOOKUP = 0.2
HINTS = ServerHints(idle_timeout=30.0, cors_max_age=0.0)
"""The collector closes a connection idle 30 s (shorter than Chromium's 300 s for a used one)."""
PATIENT = ServerHints(idle_timeout=600.0, cors_max_age=0.0)
"""A collector that keeps idle connections longer than Chromium does."""


def state(server: ServerHints = HINTS) -> NetworkState:
    return NetworkState(rtt=RTT, lookup=LOOKUP, server=server)


def used_once(server: ServerHints = HINTS) -> NetworkState:
    """One request at 0: a lookup (until 0.2), a handshake (until 0.3), its answer at 0.4; idle since."""
    s = state(server)
    found = s.take(0.0, RTT)
    s.release(found.conn, 0.4)
    return s


# -- presets and run.json -------------------------------------------------------------------------------


def test_the_presets() -> None:
    """chromium (the default) pools and caches and closes a cut request with a FIN; seed does neither and
    sends an RST."""
    assert DEFAULT_BROWSER == "chromium" and set(BROWSERS) == {"chromium", "seed"}
    chromium, seed = get_browser("chromium"), get_browser("seed")
    assert (chromium.pool, chromium.preflight_cache, chromium.close_mode) == (True, True, "fin")
    assert (seed.pool, seed.preflight_cache, seed.close_mode) == (False, False, "rst")
    with pytest.raises(ValueError, match="unknown browser preset 'lynx'; choose from chromium, seed"):
        get_browser("lynx")


def test_a_run_from_before_the_presets_is_the_seed_with_the_reference_hints() -> None:
    assert run_browser({}) == "seed"
    assert run_browser({"browser": "chromium"}) == "chromium"
    assert run_server_hints({}) == ServerHints()
    assert run_server_hints({"server": None}) == ServerHints()
    told = {"server": {"idle_timeout": 75, "cors_max_age": None}}
    assert run_server_hints(told) == ServerHints(idle_timeout=75.0, cors_max_age=None)
    assert run_server_hints({"server": {"cors_max_age": 0}}).idle_timeout == ServerHints().idle_timeout


# -- the pool -------------------------------------------------------------------------------------------


def test_a_first_request_is_cold_a_lookup_then_a_handshake() -> None:
    s = state()
    found = s.take(1.0, hold=0.5)
    assert found.kind == "cold"
    assert (found.stale, found.dns, found.connect) == pytest.approx((0.0, LOOKUP, RTT))
    assert found.opened is found.conn and found.discarded is None
    assert found.conn.used and found.conn.ready_at == pytest.approx(1.3)
    assert found.conn.free_at == pytest.approx(1.8)  # busy until its answer
    assert s.conns == [found.conn]


def test_cold_without_a_lookup_while_the_host_entry_is_fresh() -> None:
    """The connection is gone (the collector closed it at 0.4 + 5), the host entry filled at 0.2 is not
    (60 s): only a handshake. At 70 s the entry is stale: a lookup again."""
    s = used_once(ServerHints(idle_timeout=5.0, cors_max_age=0.0))
    found = s.take(10.0, RTT)
    assert found.kind == "cold" and (found.dns, found.connect) == pytest.approx((0.0, RTT))
    s.release(found.conn, 10.2)
    found = s.take(70.0, RTT)
    assert found.kind == "cold" and (found.dns, found.connect) == pytest.approx((LOOKUP, RTT))


def test_a_second_cold_request_waits_only_for_the_rest_of_the_lookup() -> None:
    """The first connection is busy until 1.3; a second request at 0.05 opens its own after the 0.15 s left
    of the lookup under way (its handshake ends at 0.3, before 1.3)."""
    s = state()
    first = s.take(0.0, hold=1.0)
    found = s.take(0.05, hold=1.0)
    assert found.kind == "cold" and found.conn is not first.conn
    assert (found.dns, found.connect) == pytest.approx((0.15, RTT))
    assert len(s.conns) == 2


def test_warm_reuse_of_the_most_recently_used_idle_connection() -> None:
    """Two connections, freed at 0.8 and 1.3: a request at 2 takes the one freed last, at once; one at
    2.05, while that one is busy again, takes the other."""
    s = state()
    first = s.take(0.0, hold=0.5)
    second = s.take(0.0, hold=1.0)
    assert second.kind == "cold" and second.conn is not first.conn
    s.release(first.conn, 0.8)
    s.release(second.conn, 1.3)
    found = s.take(2.0, RTT)
    assert found.kind == "warm" and found.conn is second.conn
    assert found.wait == 0.0 and found.opened is None
    assert found.conn.free_at == pytest.approx(2.1)
    other = s.take(2.05, RTT)
    assert other.kind == "warm" and other.conn is first.conn
    assert len(s.conns) == 2


@pytest.mark.parametrize(
    ("at", "kind", "wait"),
    [
        (30.25, "warm", 0.0),  # before the last round trip ahead of the collector's close (30.3 .. 30.4)
        (30.35, "stale", 2 * RTT),  # the request meets a closed socket: a round trip lost, a new handshake
        (30.45, "cold", RTT),  # the browser has seen the close: a new connection, the lookup still cached
    ],
)
def test_the_collectors_idle_timeout_closes_an_idle_connection(at: float, kind: str, wait: float) -> None:
    """Idle since 0.4, the collector closes it after its 30 s; a request sent in the last round trip
    before the browser sees the close (from 30.3) is lost on it and retried on a new connection."""
    s = used_once()
    (old,) = s.conns
    found = s.take(at, RTT)
    assert found.kind == kind and found.wait == pytest.approx(wait)
    assert found.dns == 0.0  # the entry filled at 0.2 is fresh until 60.2
    if kind == "warm":
        assert found.conn is old
    else:
        assert found.conn is not old and old not in s.conns and s.conns == [found.conn]
    if kind == "stale":
        assert found.stale == pytest.approx(RTT) and found.discarded is old and found.opened is found.conn


def test_chromium_drops_a_used_connection_idle_300_s_when_the_collector_keeps_it_longer() -> None:
    """The collector would keep it 600 s: Chromium drops it after 300 s idle, before any close, so no
    request ever meets a closed socket."""
    assert USED_IDLE_SECONDS == 300.0
    for at, kind in ((300.35, "warm"), (300.45, "cold")):  # idle since 0.4
        found = used_once(PATIENT).take(at, RTT)
        assert found.kind == kind, at
        assert found.stale == 0.0
    found = used_once(PATIENT).take(300.45, RTT)
    assert (found.dns, found.connect) == pytest.approx((LOOKUP, RTT))  # the host entry is stale too


@pytest.mark.parametrize(("at", "kind"), [(10.25, "warm"), (10.35, "cold")])
def test_chromium_drops_a_preconnected_connection_unused_10_s(at: float, kind: str) -> None:
    """A preconnect at 0 is ready at 0.3; nothing uses it: gone at 10.3, although the collector keeps it
    longer. The request that takes it is warm, as on any idle connection."""
    assert UNUSED_IDLE_SECONDS == 10.0
    for server in (HINTS, PATIENT):
        s = state(server)
        pre = s.preconnect(0.0)
        assert pre.ready_at == pytest.approx(0.3) and not pre.used
        found = s.take(at, RTT)
        assert found.kind == kind and found.stale == 0.0
        assert (found.conn is pre) == (kind == "warm")
        if kind == "cold":
            assert (found.dns, found.connect) == pytest.approx((0.0, RTT)) and pre not in s.conns


def test_a_collector_closing_before_10_s_makes_a_preconnected_connection_stale() -> None:
    """A collector that closes idle connections after 5 s: the preconnected one (ready at 0.3) is closed at
    5.3, a request from 5.2 meets the closed socket."""
    s = state(ServerHints(idle_timeout=5.0, cors_max_age=0.0))
    pre = s.preconnect(0.0)
    found = s.take(5.25, RTT)
    assert found.kind == "stale" and found.discarded is pre


def test_joining_a_preconnect_in_progress() -> None:
    """A preconnect at 0 looks up until 0.2 and is ready at 0.3. A request at 0.1 joins it: it waits for
    the rest of the lookup (dns) and of the handshake (connect), and opens nothing. A second request at
    0.15 cannot join a connection already bound to a request: it opens its own."""
    s = state()
    pre = s.preconnect(0.0)
    found = s.take(0.1, RTT)
    assert found.kind == "pending" and found.conn is pre and found.opened is None
    assert (found.dns, found.connect) == pytest.approx((0.1, 0.1))
    assert pre.used and pre.free_at == pytest.approx(0.4)
    other = s.take(0.15, RTT)
    assert other.kind == "cold" and other.conn is not pre
    assert (other.dns, other.connect) == pytest.approx((0.05, RTT))


def test_joining_a_preconnect_after_its_lookup_waits_for_the_handshake_only() -> None:
    s = state()
    s.preconnect(0.0)
    found = s.take(0.25, RTT)
    assert found.kind == "pending" and (found.dns, found.connect) == pytest.approx((0.0, 0.05))


def test_late_binding_to_a_busy_connection_that_frees_before_a_new_handshake_would_end() -> None:
    """The connection is busy until 0.8. A request at 0.75 starts a handshake (the lookup is cached) that
    would end at 0.85, but the busy one frees at 0.8: the request takes that one, 0.05 s later. The new
    connection stays in the pool, unused: the most recently freed connection is preferred while both are
    idle, and the unused one goes after 10 s (ready at 0.85: gone at 10.85)."""
    s = state()
    first = s.take(0.0, hold=0.5)
    found = s.take(0.75, RTT)
    assert found.kind == "pending" and found.conn is first.conn
    assert (found.dns, found.connect) == pytest.approx((0.0, 0.05))
    new = found.opened
    assert new is not None and new is not first.conn
    assert not new.used and new.ready_at == pytest.approx(0.85)
    assert first.conn.free_at == pytest.approx(0.9)
    assert s.conns == [first.conn, new]
    s.release(first.conn, 0.9)
    assert s.take(1.0, RTT).conn is first.conn
    s.release(first.conn, 1.1)
    s.take(10.8, RTT)
    assert new in s.conns
    s.release(first.conn, 10.9)
    s.take(10.9, RTT)
    assert new not in s.conns and s.conns == [first.conn]


def test_no_late_binding_when_the_new_handshake_ends_first() -> None:
    """Busy until 0.8, a request at 0.5 whose handshake ends at 0.6: it uses its new connection."""
    s = state()
    first = s.take(0.0, hold=0.5)
    found = s.take(0.5, RTT)
    assert found.kind == "cold" and found.conn is found.opened and found.conn is not first.conn
    assert (found.dns, found.connect) == pytest.approx((0.0, RTT))


def test_at_most_six_connections() -> None:
    """Six requests at 0, each busy a different time, open six connections (all waiting for the one
    lookup); a seventh at 0.5 opens none: it waits for the one that frees first (at 0.3 + 1)."""
    assert MAX_SOCKETS_PER_HOST == 6
    s = state()
    first = [s.take(0.0, hold=float(k)) for k in range(1, 7)]
    assert [f.kind for f in first] == ["cold"] * 6
    assert all(f.dns == pytest.approx(LOOKUP) for f in first)
    assert len({id(f.conn) for f in first}) == 6
    found = s.take(0.5, RTT)
    assert found.kind == "pending" and found.conn is first[0].conn and found.opened is None
    assert (found.dns, found.connect) == pytest.approx((0.0, 0.8))
    assert found.conn.free_at == pytest.approx(1.4)
    assert len(s.conns) == 6


# -- the preflight cache --------------------------------------------------------------------------------


def test_preflight_lifetimes() -> None:
    """Access-Control-Max-Age 0 (or less) caches nothing; without the header, 5 s; at most two hours."""
    assert (PREFLIGHT_MAX_AGE_ABSENT, PREFLIGHT_MAX_AGE_CAP) == (5.0, 7200.0)
    assert preflight_lifetime(0.0) == 0.0 and preflight_lifetime(-3.0) == 0.0
    assert preflight_lifetime(None) == 5.0
    assert preflight_lifetime(600.0) == 600.0
    assert preflight_lifetime(86400.0) == 7200.0


def test_max_age_0_never_caches() -> None:
    s = state()
    s.store_preflight(1.0, 0.0)
    assert not any(s.preflight_cached(t) for t in (1.0, 1.5, 100.0))


def test_no_max_age_header_caches_5_s_from_the_answer() -> None:
    s = state()
    s.store_preflight(1.0, None)
    assert not s.preflight_cached(0.99)  # the answer is still on its way: the request sends its own
    assert s.preflight_cached(1.0) and s.preflight_cached(5.99)
    assert not s.preflight_cached(6.01)


def test_a_long_max_age_is_capped_at_two_hours() -> None:
    s = state()
    s.store_preflight(1.0, 86400.0)
    assert s.preflight_cached(7200.9) and not s.preflight_cached(7201.1)


def test_a_shorter_later_answer_does_not_cut_the_cached_one_short() -> None:
    s = state()
    s.store_preflight(1.0, 600.0)
    s.store_preflight(2.0, None)  # cached until 7, the first until 601
    assert s.preflight_cached(100.0)


def test_a_later_answer_still_on_its_way_does_not_uncache_the_one_that_arrived() -> None:
    """Two preflights in flight (the second sent before the first's answer came back): the first answer
    is cached from 1.4, the second refreshes the entry when it arrives at 1.55. A request at 1.45 finds
    the first one."""
    s = state()
    s.store_preflight(1.4, 600.0)
    s.store_preflight(1.55, 600.0)
    assert s.preflight_cached(1.45)
    assert s.preflight_cached(601.5)  # refreshed by the second


# -- the keepalive quota --------------------------------------------------------------------------------


def test_the_keepalive_quota_is_64_kib_in_flight() -> None:
    """Keepalive requests hold their bytes until their answers arrive; one that would take the page past
    64 KiB in flight is refused."""
    assert KEEPALIVE_QUOTA_BYTES == 65536
    s = state()
    assert s.keepalive_fits(0.0, 65536) and not s.keepalive_fits(0.0, 65537)
    s.hold_keepalive(65436, until=1.0)
    assert s.keepalive_fits(0.5, 100)
    assert not s.keepalive_fits(0.5, 101)
    assert s.keepalive_fits(1.0, 101)  # its answer has arrived: the bytes are free again
    s.hold_keepalive(40000, until=3.0)
    s.hold_keepalive(20000, until=2.0)
    assert not s.keepalive_fits(1.5, 6000) and s.keepalive_fits(2.0, 6000)
