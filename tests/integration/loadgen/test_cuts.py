"""Cut every technique in every stage, on real sockets against the real collector.

The rule under test: the collector counts an event if and only if the client wrote its complete data
before the cut. Network time is emulated with 50 ms steps, so each cut lands 25 ms inside its stage.

The tabs run on client time that moves only when they wait out emulated network time (``new_tab``): the real
socket operations take none of it, so a loaded machine (a late thread, a slow connect) cannot move a cut
into another stage. Only the collector's answer must come within the time left before the cut.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest

from lossbench.collector.server import CollectorThread
from lossbench.loadgen.techniques import Tab, event_body, pixel_request
from lossbench.model.profiles import NetworkDraw
from support import ClientTime, received_ids, wait_until

NET = NetworkDraw(rtt=0.05, dns=0.05)
SLOW_UPLINK = NetworkDraw(rtt=0.05, dns=0.05, uplink_bps=16_000)  # a ~190-byte body takes ~95 ms


def new_tab(collector: CollectorThread, net: NetworkDraw, **options: str) -> Tab:
    """A tab on its own client time (``ClientTime``)."""
    client = ClientTime()
    return Tab(("127.0.0.1", collector.port), net, clock=client.clock, sleep=client.sleep, **options)


def _check(collector: CollectorThread, tmp_path: Path, result, expected_stage: str) -> None:
    assert result.error is None, result.error
    assert result.stage == expected_stage
    if result.written:
        assert wait_until(lambda: received_ids(tmp_path)[result.id] == 1)
    else:
        time.sleep(0.15)  # give a wrongly counted event time to show up
        assert received_ids(tmp_path)[result.id] == 0


CASES = [
    # technique, network, visit time of the event, exit time A, expected stage, written
    ("ajax", NET, 0.0, 0.025, "dns", False),
    ("ajax", NET, 0.0, 0.075, "connect", False),
    ("ajax", NET, 0.0, 0.125, "preflight", False),
    ("ajax", SLOW_UPLINK, 0.0, 0.200, "body", False),
    ("ajax", NET, 0.0, 0.400, "done", True),
    ("ajax", SLOW_UPLINK, 0.0, 0.400, "done", True),
    ("pixel", NET, 0.0, 0.025, "dns", False),
    ("pixel", NET, 0.0, 0.075, "connect", False),
    ("pixel", NET, 0.0, 0.200, "done", True),
    ("pixel-prewarm", NET, 0.0, 0.025, "dns", False),  # fired while the warm-up lookup is in flight
    ("pixel-prewarm", NET, 1.0, 0.025, "connect", False),  # DNS cached: straight to connect
    ("pixel-prewarm", NET, 1.0, 0.100, "done", True),
    ("pixel-keepalive", NET, 0.0, 0.050, "connect", False),  # the kept connection is not up yet
    ("pixel-keepalive", NET, 1.0, 0.001, "done", True),  # one GET on the open connection
]


@pytest.mark.parametrize(("tech", "net", "visit_time", "exit_after", "stage", "written"), CASES)
def test_counted_iff_written(collector, tmp_path, tech, net, visit_time, exit_after, stage, written):
    tab = new_tab(collector, net)
    try:
        tab.page_load([tech], visit_time=0.0)
        result = tab.fire(tech, f"{tech}-{stage}-{exit_after}", exit_after=exit_after, visit_time=visit_time)
    finally:
        tab.close()
    assert result.written is written
    _check(collector, tmp_path, result, stage)


def test_drop_cuts_half_an_rtt_earlier(collector, tmp_path):
    """A 'drop' abort loses bytes written in the last one-way delay: GET due at 100 ms, cut at 120 - 25."""
    tab = new_tab(collector, NET, abort="drop")
    unload = new_tab(collector, NET, abort="unload")
    try:
        dropped = tab.fire("pixel", "dropped", exit_after=0.120)
        delivered = unload.fire("pixel", "unloaded", exit_after=0.120)
    finally:
        tab.close()
        unload.close()
    _check(collector, tmp_path, dropped, "connect")
    _check(collector, tmp_path, delivered, "done")


def test_cut_during_preflight_counts_the_preflight_only(collector, tmp_path):
    tab = new_tab(collector, NET)
    result = tab.fire("ajax", "cut-in-preflight", exit_after=0.125)
    tab.close()
    _check(collector, tmp_path, result, "preflight")
    stats = collector.stats()
    assert stats["preflights"] == 1
    assert stats["events"] == {}


def test_body_cut_silently_is_closed_by_the_body_timeout(collector_factory, tmp_path):
    """Headers sent, body cut with the network gone (no FIN, no RST): not counted, and the collector's
    body timeout closes the connection instead of holding it forever."""
    collector = collector_factory(body_timeout=0.4)
    tab = new_tab(collector, SLOW_UPLINK, close_mode="silent")
    result = tab.fire("ajax", "body-never-completes", exit_after=0.200)
    assert result.stage == "body" and not result.written
    assert len(tab.limbo) == 1
    _, sock = tab.limbo[0]
    sock.settimeout(10.0)  # a bound on a hang, not a measurement: how soon the cut comes is load's business
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    tab.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    stats = collector.stats()
    assert stats["body_timeouts"] == 1
    assert stats["bodies_incomplete"] == 1
    assert stats["connections_open"] == 0
    assert received_ids(tmp_path)["body-never-completes"] == 0


@pytest.mark.parametrize("close_mode", ["rst", "fin"])
def test_body_cut_with_close_is_incomplete(collector, tmp_path, close_mode):
    tab = new_tab(collector, SLOW_UPLINK, close_mode=close_mode)
    result = tab.fire("ajax", f"body-cut-{close_mode}", exit_after=0.200)
    tab.close()
    _check(collector, tmp_path, result, "body")
    assert wait_until(lambda: collector.stats()["bodies_incomplete"] == 1)


def test_get_written_then_rst_at_once_is_counted(collector, tmp_path):
    """The GET's bytes reached the collector before the RST: it must count every one of them."""
    address = ("127.0.0.1", collector.port)
    ids = [f"rst-{i}" for i in range(300)]
    for event_id in ids:
        sock = socket.create_connection(address)
        sock.sendall(pixel_request(event_body(event_id, "pixel", "click")))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert wait_until(lambda: sum(received_ids(tmp_path)[i] for i in ids) == len(ids))
    assert all(received_ids(tmp_path)[i] == 1 for i in ids)
