"""The chromium preset on real sockets: what an event finds in the visitor's pool and preflight cache, and
each stage of the cut, against the real collector.

The tabs run on client time that moves only when they wait out emulated network time (``ClientTime``), and
visit times are given to each event, so the pool ages in visit time while the test takes milliseconds: a
connection idle for 40 s of visit time is one the collector closed, whatever the wall clock says.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lossbench.collector.server import CollectorThread
from lossbench.contract.server import ServerHints
from lossbench.loadgen.pooled import PooledTab
from lossbench.loadgen.timeline import EventResult
from lossbench.model.browser import UNUSED_IDLE_SECONDS
from lossbench.model.profiles import NetworkDraw
from support import ClientTime, received_ids, wait_until

NET = NetworkDraw(rtt=0.05, dns=0.05)
SERVER = ServerHints(idle_timeout=30.0, cors_max_age=7200)


def new_tab(
    port: int, techniques: tuple[str, ...], *, server: ServerHints = SERVER, abort: str = "unload", **kw: str
) -> PooledTab:
    client = ClientTime()
    tab = PooledTab(
        ("127.0.0.1", port), NET, abort=abort, server=server, clock=client.clock, sleep=client.sleep, **kw
    )
    tab.page_load(techniques)
    return tab


def delivered(tmp_path: Path, result: EventResult) -> bool:
    if result.written:
        return wait_until(lambda: received_ids(tmp_path)[result.id] == 1)
    time.sleep(0.15)  # give a wrongly counted event time to show up
    return received_ids(tmp_path)[result.id] == 1


def stats(collector: CollectorThread) -> dict[str, Any]:
    return collector.stats()


# --------------------------------------------------------------------------------------- what it finds


def test_a_later_pixel_reuses_the_pooled_connection(collector, tmp_path):
    tab = new_tab(collector.port, ("pixel",))
    try:
        first = tab.fire("pixel", "00000000000000a1", visit_time=1.0)
        second = tab.fire("pixel", "00000000000000a2", visit_time=5.0)
    finally:
        tab.close()
    assert (first.conn, first.connections, first.plan["dns"]) == ("cold", 1, pytest.approx(0.05))
    assert (second.conn, second.connections, second.t_written) == ("warm", 0, 0.0)
    assert delivered(tmp_path, first) and delivered(tmp_path, second)
    assert stats(collector)["connections_total"] == 1


def test_a_connection_idle_past_the_collectors_timeout_is_gone(collector, tmp_path):
    tab = new_tab(collector.port, ("pixel",))
    try:
        tab.fire("pixel", "00000000000000b1", visit_time=1.0)
        later = tab.fire("pixel", "00000000000000b2", visit_time=1.0 + 40.0)  # DNS cached 60 s: connect only
    finally:
        tab.close()
    assert later.conn == "cold" and later.connections == 1
    assert later.plan["dns"] == 0.0 and later.t_written == pytest.approx(0.05)
    assert delivered(tmp_path, later)


def test_a_request_in_the_last_round_trip_before_the_close_is_retried_on_a_new_connection(
    collector, tmp_path
):
    tab = new_tab(collector.port, ("pixel",))
    try:
        first = tab.fire("pixel", "00000000000000c1", visit_time=1.0)
        freed = 1.0 + first.t_written + NET.rtt  # its answer arrived: idle from then on
        stale = tab.fire("pixel", "00000000000000c2", visit_time=freed + 30.0 - NET.rtt / 2)
    finally:
        tab.close()
    assert (stale.conn, stale.retried, stale.connections) == ("stale", True, 1)
    assert stale.t_written == pytest.approx(NET.rtt + NET.rtt)  # the lost round trip, then a handshake
    assert delivered(tmp_path, stale)


def test_a_pooled_socket_the_collector_really_closed_is_replaced(collector_factory, tmp_path):
    """The state thinks the connection alive (hinted timeout 30 s) but the collector closed it after
    0.2 s of real time (a real-time run's race): the browser sees it closed, opens a new one (a handshake:
    the name is cached) and the request is delivered."""
    collector = collector_factory(idle_timeout=0.2)
    tab = new_tab(collector.port, ("pixel",))
    try:
        tab.fire("pixel", "00000000000000d1", visit_time=1.0)
        assert wait_until(lambda: stats(collector)["idle_timeouts"] == 1)
        again = tab.fire("pixel", "00000000000000d2", visit_time=2.0)
    finally:
        tab.close()
    assert again.conn == "cold" and again.retried and again.connections == 1
    assert again.t_written == pytest.approx(NET.rtt)
    assert delivered(tmp_path, again)


def test_an_event_joins_the_preconnect_still_opening(collector, tmp_path):
    tab = new_tab(collector.port, ("pixel-preconnect",))  # lookup 0.05 + handshake 0.05: ready at 0.1
    assert wait_until(lambda: stats(collector)["connections_total"] == 1)  # opened at page load
    try:
        early = tab.fire("pixel-preconnect", "00000000000000e1", visit_time=0.03)
        late = tab.fire("pixel-preconnect", "00000000000000e2", visit_time=2.0)
    finally:
        tab.close()
    assert (early.conn, early.connections) == ("pending", 0)
    assert early.plan["dns"] == pytest.approx(0.02) and early.t_written == pytest.approx(0.07)
    assert late.conn == "warm"
    assert delivered(tmp_path, early) and delivered(tmp_path, late)
    assert stats(collector)["connections_total"] == 1


def test_an_unused_preconnect_is_dropped_after_ten_seconds(collector, tmp_path):
    tab = new_tab(collector.port, ("pixel-preconnect",))
    try:
        result = tab.fire("pixel-preconnect", "00000000000000e3", visit_time=0.1 + UNUSED_IDLE_SECONDS + 1)
    finally:
        tab.close()
    assert result.conn == "cold"


def test_the_prewarm_ping_holds_its_connection_so_the_first_event_opens_another(collector, tmp_path):
    tab = new_tab(collector.port, ("pixel-prewarm",))  # ping written at 0.1, answered at 0.15
    try:
        result = tab.fire("pixel-prewarm", "00000000000000f1", visit_time=0.12)
    finally:
        tab.close()
    # a new connection (name cached at 0.05) would be ready at 0.17; the ping's frees at 0.15 first
    assert result.conn == "pending" and result.t_written == pytest.approx(0.03)
    assert delivered(tmp_path, result)


# ---------------------------------------------------------------------------------------- preflights


@pytest.mark.parametrize(
    ("tech", "max_age", "second_at", "expected"),
    [
        ("ajax", 7200, 5.0, "cached"),  # the answer is reused
        ("ajax", 2, 5.0, "sent"),  # expired
        ("ajax", 0, 1.5, "sent"),  # never cached
        ("ajax", None, 4.0, "cached"),  # no header: 5 s
        ("ajax-cachebust", 7200, 5.0, "sent"),  # a new URL every time
    ],
)
def test_the_preflight_cache(collector_factory, tmp_path, tech, max_age, second_at, expected):
    collector = collector_factory(cors_max_age=-1 if max_age is None else max_age)
    tab = new_tab(collector.port, (tech,), server=ServerHints(30.0, max_age))
    try:
        first = tab.fire(tech, "0000000000000101", visit_time=1.0)
        second = tab.fire(tech, "0000000000000102", visit_time=second_at)
    finally:
        tab.close()
    assert (first.preflight, second.preflight) == ("sent", expected)
    assert second.requests == (1 if expected == "cached" else 2)
    assert delivered(tmp_path, first) and delivered(tmp_path, second)
    assert stats(collector)["preflights"] == 1 + (expected == "sent")


# ---------------------------------------------------------------------------------------------- cuts

CUTS = [
    # technique, visit time, A, abort, expected stage, delivered
    ("pixel", 1.0, 0.025, "unload", "dns", False),
    ("pixel", 1.0, 0.075, "unload", "connect", False),
    ("pixel", 1.0, 0.2, "unload", "done", True),
    ("ajax", 1.0, 0.125, "unload", "preflight", False),
    ("ajax", 1.0, 0.2, "unload", "done", True),
    ("beacon", 1.0, 0.025, "unload", "done", True),  # finished after the page is gone
    ("fetch-keepalive", 1.0, 0.125, "unload", "done", True),
    ("beacon", 1.0, 0.025, "drop", "dns", False),  # the network vanished: nothing finishes it
    ("fetch-keepalive", 1.0, 0.15, "drop", "preflight", False),  # cut at A - rtt/2 = 0.125
]


@pytest.mark.parametrize(("tech", "at", "exit_after", "abort", "stage", "expected"), CUTS)
def test_cold_cuts(collector, tmp_path, tech, at, exit_after, abort, stage, expected):
    tab = new_tab(collector.port, (tech,), abort=abort)
    try:
        result = tab.fire(tech, "0000000000000201", visit_time=at, exit_after=exit_after)
    finally:
        tab.close()
    assert result.error is None, result.error
    assert result.conn == "cold" and result.stage == stage
    assert delivered(tmp_path, result) is expected


SLOW_UPLINK = NetworkDraw(rtt=0.05, dns=0.05, uplink_bps=16_000)  # the model's 180-byte body: 90 ms


@pytest.mark.parametrize(
    ("tech", "first_at", "second_at", "exit_after", "kind", "preflight", "stage", "expected"),
    [
        # a stale connection: idle since ~1.15, the collector's close at 31.15; sent at 31.12: a lost round
        # trip (0.05) then a handshake (0.05, the name still cached)
        ("pixel", 1.0, 31.12, 0.025, "stale", "none", "connect", False),
        ("pixel", 1.0, 31.12, 0.075, "stale", "none", "connect", False),
        ("pixel", 1.0, 31.12, 0.15, "stale", "none", "done", True),
        # a cached preflight on a warm connection: straight to the POST, whose body takes 90 ms
        ("ajax", 1.0, 3.0, 0.045, "warm", "cached", "body", False),
        ("ajax", 1.0, 3.0, 0.12, "warm", "cached", "done", True),
        # cache-busting: a preflight every time, even on a warm connection
        ("ajax-cachebust", 1.0, 3.0, 0.025, "warm", "sent", "preflight", False),
        ("ajax-cachebust", 1.0, 3.0, 0.2, "warm", "sent", "done", True),
        # the preconnect, unused, dropped by Chromium after 10 s: cold again, the name's entry stale too
        ("pixel-preconnect", None, 70.0, 0.075, "cold", "none", "connect", False),
    ],
)
def test_warm_and_stale_cuts(
    collector, tmp_path, tech, first_at, second_at, exit_after, kind, preflight, stage, expected
):
    client = ClientTime()
    tab = PooledTab(
        ("127.0.0.1", collector.port), SLOW_UPLINK, server=SERVER, clock=client.clock, sleep=client.sleep
    )
    tab.page_load((tech,))
    try:
        if first_at is not None:
            assert tab.fire(tech, "0000000000000501", visit_time=first_at).stage == "done"
        result = tab.fire(tech, "0000000000000502", visit_time=second_at, exit_after=exit_after)
    finally:
        tab.close()
    assert result.error is None, result.error
    assert (result.conn, result.preflight, result.stage) == (kind, preflight, stage)
    assert delivered(tmp_path, result) is expected


def test_an_event_cut_while_it_waits_for_the_preconnect_is_lost_in_connect(collector, tmp_path):
    tab = new_tab(collector.port, ("pixel-preconnect",))  # ready at 0.1
    try:
        result = tab.fire("pixel-preconnect", "0000000000000601", visit_time=0.06, exit_after=0.02)
        later = tab.fire("pixel-preconnect", "0000000000000602", visit_time=1.0)
    finally:
        tab.close()
    assert (result.conn, result.stage) == ("pending", "connect")
    assert not delivered(tmp_path, result)
    assert later.conn == "warm" and delivered(tmp_path, later)  # the preconnect outlived the cut event


def test_a_cut_preflight_on_a_warm_connection_costs_the_preflight_only(collector_factory, tmp_path):
    collector = collector_factory(cors_max_age=0)
    tab = new_tab(collector.port, ("ajax",), server=ServerHints(30.0, 0))
    try:
        tab.fire("ajax", "0000000000000301", visit_time=1.0)
        cut = tab.fire("ajax", "0000000000000302", visit_time=3.0, exit_after=0.025)
    finally:
        tab.close()
    assert (cut.conn, cut.preflight, cut.stage) == ("warm", "sent", "preflight")
    assert not delivered(tmp_path, cut)
    assert wait_until(lambda: stats(collector)["preflights"] == 2)


def _listener() -> tuple[socket.socket, list[str]]:
    """A bare TCP server that records how each connection ended: "fin" (EOF) or "rst" (reset)."""
    server = socket.create_server(("127.0.0.1", 0))
    ends: list[str] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            try:
                while conn.recv(4096):
                    pass
                ends.append("fin")
            except ConnectionResetError:
                ends.append("rst")

    threading.Thread(target=serve, daemon=True).start()
    return server, ends


@pytest.mark.parametrize(("close_mode", "expected"), [("fin", "fin"), ("rst", "rst")])
def test_the_cut_closes_the_request_in_flight_with_a_fin_unless_told_otherwise(close_mode, expected):
    """Chromium ends a request in flight with a FIN when its tab closes (docs/CALIBRATION.md); ``rst`` is
    the browser process killed. The listener never answers the preflight: the cut finds it in flight."""
    server, ends = _listener()
    with server:
        tab = new_tab(server.getsockname()[1], ("ajax",), close_mode=close_mode)
        try:
            result = tab.fire("ajax", "0000000000000401", visit_time=1.0, exit_after=0.125)
            assert result.stage == "preflight"
            assert wait_until(lambda: bool(ends))
        finally:
            tab.close()
    assert ends == [expected]


def test_a_request_resent_after_a_stale_close_skips_the_preflight_already_answered():
    """The collector answers the preflight, then closes the connection under the POST without a byte back
    (a real-time run's race): the browser resends the POST once on a new connection, without a second
    preflight (its answer is in the cache)."""
    server = socket.create_server(("127.0.0.1", 0))
    first_lines: list[list[str]] = []

    def read_request(conn: socket.socket) -> str:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return ""
            data += chunk
        return data.split(b"\r\n", 1)[0].decode()

    def serve() -> None:
        for number in (1, 2):
            conn, _ = server.accept()
            with conn:
                lines: list[str] = []
                first_lines.append(lines)
                lines.append(read_request(conn))
                if number == 1:  # the preflight answered, then the POST met by a close
                    conn.sendall(
                        b"HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: *\r\n"
                        b"Access-Control-Max-Age: 7200\r\nContent-Length: 0\r\n\r\n"
                    )
                    lines.append(read_request(conn))
                    continue
                conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                conn.recv(4096)  # until the tab closes it

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with server:
        tab = new_tab(server.getsockname()[1], ("ajax",))
        try:
            result = tab.fire("ajax", "0000000000000701", visit_time=1.0)
        finally:
            tab.close()
        thread.join(timeout=5)
    assert result.error is None and result.acked, result
    assert (result.conn, result.retried, result.requests) == ("stale", True, 3)
    assert [[line.split()[0] for line in lines] for lines in first_lines] == [["OPTIONS", "POST"], ["POST"]]
