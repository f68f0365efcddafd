"""The SOCKS5 network emulator with plain sockets against the real collector: DNS, connect, one-way
delays, pacing, and what a close does to bytes in flight under ``unload`` and ``drop``."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from lossbench.loadgen.browser.proxy import Draw, Visitor, collector_host, stage_at
from lossbench.loadgen.techniques import event_body, pixel_request
from proxy_support import ProxyThread, socks_connect
from support import received_ids, wait_until


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_dns_then_connect_delay_and_cache(collector) -> None:
    with ProxyThread(collector.port) as proxy:
        proxy.add(Visitor("v1", Draw(rtt=0.2, dns=0.3)))
        host = collector_host("pixel", "v1")
        started = time.monotonic()
        sock, code = socks_connect(proxy.port, host)
        first = time.monotonic() - started
        sock.close()
        started = time.monotonic()
        sock, code2 = socks_connect(proxy.port, host)
        second = time.monotonic() - started
        sock.close()
    assert code == code2 == 0
    assert 0.48 <= first < 0.7  # lookup + handshake
    assert 0.18 <= second < 0.35  # the name is cached: the handshake only


def test_round_trip_is_one_rtt_and_uplink_paces(collector) -> None:
    with ProxyThread(collector.port) as proxy:
        proxy.add(Visitor("v2", Draw(rtt=0.2, dns=0.0, uplink_bps=8000.0)))
        sock, code = socks_connect(proxy.port, collector_host("pixel", "v2"))
        assert code == 0
        request = pixel_request(event_body("00000000000000a1", "pixel", "click"))
        started = time.monotonic()
        sock.sendall(request)
        answer = _read_answer(sock)
        took = time.monotonic() - started
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200")
    pacing = len(request) * 8 / 8000.0
    assert pacing + 0.19 <= took < pacing + 0.35


def test_unknown_names_are_refused_and_remembered(collector) -> None:
    with ProxyThread(collector.port) as proxy:
        sock, code = socks_connect(proxy.port, "update.example.com")
        sock.close()
        sock, code2 = socks_connect(proxy.port, collector_host("pixel", "nobody"))
        sock.close()
        assert proxy.proxy.refused == ["update.example.com", collector_host("pixel", "nobody")]
    assert code == code2 == 4


@pytest.mark.parametrize(("abort", "arrives"), [("unload", True), ("drop", False)])
def test_close_with_bytes_in_flight(collector, tmp_path: Path, abort: str, arrives: bool) -> None:
    """The browser writes a pixel and closes at once: in flight for RTT/2, it arrives under ``unload``
    and is lost under ``drop``."""
    event_id = "00000000000000b" + ("1" if arrives else "2")
    with ProxyThread(collector.port) as proxy:
        visitor = proxy.add(Visitor("v3", Draw(rtt=0.4, dns=0.0, abort=abort)))
        sock, code = socks_connect(proxy.port, collector_host("pixel", "v3"))
        assert code == 0
        sock.sendall(pixel_request(event_body(event_id, "pixel", "click")))
        sock.close()
        wait_until(lambda: event_id in received_ids(tmp_path), timeout=1.0)
        logs = proxy.call(lambda: list(visitor.logs))
    assert (event_id in received_ids(tmp_path)) is arrives
    assert stage_at(logs, 0.0, time.time(), event_id) == "done"  # it left the browser either way


def test_vanish_drops_what_is_in_flight_and_refuses_more(collector, tmp_path: Path) -> None:
    event_id = "00000000000000c1"
    with ProxyThread(collector.port) as proxy:
        visitor = proxy.add(Visitor("v4", Draw(rtt=0.4, dns=0.0, abort="drop")))
        sock, _ = socks_connect(proxy.port, collector_host("pixel", "v4"))
        sock.sendall(pixel_request(event_body(event_id, "pixel", "click")))
        time.sleep(0.05)
        proxy.call(visitor.vanish)
        time.sleep(0.4)
        sock.close()
        _, code = socks_connect(proxy.port, collector_host("ajax", "v4"))
    assert event_id not in received_ids(tmp_path)
    assert code == 4


def test_stage_while_connecting(collector) -> None:
    with ProxyThread(collector.port) as proxy:
        visitor = proxy.add(Visitor("v5", Draw(rtt=0.3, dns=0.3)))
        fired = time.time()
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        sock.sendall(b"\x05\x01\x00")
        sock.recv(2)
        host = collector_host("ajax", "v5").encode()
        sock.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host + b"\x00\x50")
        time.sleep(0.15)
        in_dns = stage_at(proxy.call(lambda: list(visitor.logs)), fired, time.time(), "x")
        time.sleep(0.3)
        in_connect = stage_at(proxy.call(lambda: list(visitor.logs)), fired, time.time(), "x")
        sock.close()
    assert in_dns == "dns"
    assert in_connect == "connect"


def test_idle_connection_closed_across_a_compressed_gap(collector) -> None:
    """Visit time jumps 40 s at real second 0.3: the collector would have closed the idle connection."""
    with ProxyThread(collector.port) as proxy:
        started = time.time()
        proxy.add(
            Visitor(
                "v6",
                Draw(rtt=0.0, dns=0.0),
                started=started,
                breakpoints=[(0.0, 0.0), (0.3, 40.3)],
                idle_timeout=30.0,
            )
        )
        sock, _ = socks_connect(proxy.port, collector_host("pixel", "v6"))
        sock.sendall(pixel_request(event_body("00000000000000d1", "pixel", "click")))
        assert _read_answer(sock).startswith(b"HTTP/1.1 200")
        sock.settimeout(2.0)
        closed_at = None
        if sock.recv(1) == b"":
            closed_at = time.time() - started
        sock.close()
    assert closed_at is not None and 0.2 <= closed_at < 0.5
