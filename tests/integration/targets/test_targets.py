"""The shipped targets, started for real on free loopback ports, loaded with real requests made by the load
generator's helpers, and read back through their adapters from their own raw logs: exactly the ids sent,
with damaged and foreign lines counted, named and skipped."""

from __future__ import annotations

import http.client
import os
import socket
import struct
from pathlib import Path

import pytest

from lossbench.analysis.adapters import DAMAGED, IGNORED, REFUSED, ReceivedLog, read_received
from lossbench.loadgen.techniques import ORIGIN, event_body, pixel_request
from lossbench.targets import Target, TargetError, start_target, thin_python
from lossbench.targets import nginx as nginx_target
from support import received_ids, wait_until
from target_support import needs_nginx

Row = tuple[str, str, str]


def connection(target: Target) -> http.client.HTTPConnection:
    host, port = target.url.removeprefix("http://").rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=5.0)


def pixel_path(event_id: str, tech: str) -> str:
    """The request target of the pixel GET the load generator sends for this event."""
    return pixel_request(event_body(event_id, tech, "click")).split(b" ", 2)[1].decode()


def get(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status


def send_events(target: Target) -> list[Row]:
    """Pixels of the three pixel techniques (on new and kept-alive connections, with pings) and ajax
    events with their preflight; returns what was sent, as the adapter should read it back."""
    sent: list[Row] = []
    keepalive = connection(target)
    for i in range(20):
        for tech in ("pixel", "pixel-prewarm"):
            fresh = connection(target)
            event_id = f"{i:08x}{tech == 'pixel':08x}"
            assert get(fresh, pixel_path(event_id, tech)) == 200
            fresh.close()
            sent.append((event_id, tech, "GET"))
        assert get(keepalive, "/ping.gif?t=pixel-keepalive") == 200
        event_id = f"{i:08x}0000beef"
        assert get(keepalive, pixel_path(event_id, "pixel-keepalive")) == 200
        sent.append((event_id, "pixel-keepalive", "GET"))
        ajax = connection(target)
        ajax.request(
            "OPTIONS",
            "/e",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        preflight = ajax.getresponse()
        preflight.read()
        assert preflight.status == 204
        assert preflight.getheader("Access-Control-Allow-Methods") == "POST, OPTIONS"
        event_id = f"{i:08x}0000a1a1"
        body = event_body(event_id, "ajax", "click")
        ajax.request("POST", "/e", body, {"Origin": ORIGIN, "Content-Type": "application/json"})
        accepted = ajax.getresponse()
        accepted.read()
        assert accepted.status == 204 and accepted.getheader("Access-Control-Allow-Origin") == "*"
        ajax.close()
        sent.append((event_id, "ajax", "POST"))
    keepalive.close()
    return sent


def send_foreign(target: Target) -> None:
    """A health check, a probe of another path and a pixel without its data."""
    conn = connection(target)
    assert get(conn, "/healthz") == 200
    assert get(conn, "/favicon.ico") == 404
    assert get(conn, "/p.gif?v=1") == 200  # a pixel always answers; its event is not counted
    conn.close()


def cut_body(target: Target) -> None:
    """An ajax POST whose body is cut by an RST halfway, as a closing tab cuts it."""
    body = event_body("00000000deadbeef", "ajax", "click")
    head = (
        "POST /e HTTP/1.1\r\nHost: lossbench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    port = int(target.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head.encode() + body[: len(body) // 2])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def damage(log: Path) -> None:
    """Binary junk in the middle of the log, and a last line cut short (as a killed writer leaves it)."""
    lines = log.read_bytes().splitlines(keepends=True)
    lines.insert(len(lines) // 2, b"\x00\x9f\xff binary junk \x01\n")
    log.write_bytes(b"".join(lines) + lines[0][: len(lines[0]) // 2])


def lines_of(log: Path) -> int:
    return log.read_bytes().count(b"\n") if log.exists() else 0


def check(got: ReceivedLog, sent: list[Row], log: Path, **skipped: int) -> None:
    assert sorted(got.rows) == sorted(sent)
    assert {k: v for k, v in got.skipped.items() if k != IGNORED} == skipped
    for category in skipped:
        assert all(e.startswith(f"{log}:") for e in got.examples[category]), got.examples[category]


@needs_nginx
def test_nginx_access_log_gives_back_exactly_the_events_sent(tmp_path: Path) -> None:
    target = start_target("nginx", tmp_path)
    try:
        (log,) = target.raw_logs
        assert log.parent == tmp_path.resolve() / "received" / "nginx"
        sent = send_events(target)
        send_foreign(target)
        before = lines_of(log)
        cut_body(target)
        assert wait_until(lambda: lines_of(log) == before + 1), "nginx did not log the cut POST"
    finally:
        target.stop()
    assert target.process.returncode == 0
    assert not list(tmp_path.rglob("*.pid")), "nginx left its pid file: it did not stop cleanly"
    damage(log)
    got = read_received(target.received_from or "", base=tmp_path)
    # foreign: /favicon.ico (the health check is not logged); refused: the pixel without d, the cut body
    check(got, sent, log, damaged=2, foreign=1, refused=2)
    assert got.skipped[IGNORED] == 40  # 20 preflights and 20 pings
    assert any("POST body: bad_json" in e for e in got.examples[REFUSED])
    assert got.examples[DAMAGED][-1].endswith("(the last line, cut short)")


@needs_nginx
def test_nginx_answers_like_the_reference_collector(tmp_path: Path) -> None:
    with start_target("nginx", tmp_path) as target:
        conn = connection(target)
        conn.request("GET", pixel_path("0000000000000001", "pixel"))
        gif = conn.getresponse()
        assert (gif.status, gif.getheader("Content-Type"), gif.getheader("Cache-Control")) == (
            200,
            "image/gif",
            "no-store",
        )
        assert gif.read().startswith(b"GIF89a")
        conn.request("PUT", "/e", b"{}")
        refused = conn.getresponse()
        refused.read()
        assert (refused.status, refused.getheader("Allow")) == (405, "POST, OPTIONS")
        conn.close()
    conf = (tmp_path / "received" / "nginx" / "nginx.conf").read_text()
    assert "/var/" not in conf and "/run/" not in conf and "127.0.0.1:" in conf


@pytest.mark.parametrize("log_format", ["jsonl", "csv"])
def test_aiohttp_log_gives_back_exactly_the_events_sent(tmp_path: Path, log_format: str) -> None:
    target = thin_python.start_aiohttp(tmp_path, log_format=log_format)
    try:
        (log,) = target.raw_logs
        assert log.parent == tmp_path.resolve() / "received" / "aiohttp"
        sent = send_events(target)
        send_foreign(target)
        cut_body(target)
    finally:
        target.stop()
    assert target.process.returncode == 0
    with log.open("ab") as f:  # a line of another kind, as a collector's startup message
        f.write(b'{"started": "2026-12-01T10:00:00Z"}\n' if log_format == "jsonl" else b"0,GET\n")
    damage(log)
    got = read_received(target.received_from or "", base=tmp_path)
    # the app logs only events: the health check, the other path, the pixel without d and the cut body
    # never reach its log
    if log_format == "jsonl":
        check(got, sent, log, damaged=2, foreign=1)
    else:
        check(got, sent, log, damaged=3)  # the CSV junk line, the short row and the cut last line


def test_reference_target_writes_its_received_ledger(tmp_path: Path) -> None:
    with start_target("reference", tmp_path) as target:
        assert target.received_from is None
        assert [p.parent for p in target.raw_logs] == [tmp_path / "received"]
        sent = send_events(target)
    assert target.process.returncode == 0
    assert received_ids(tmp_path) == {event_id: 1 for event_id, _, _ in sent}


def test_missing_nginx_names_the_install_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(nginx_target, "SBIN_DIRS", ())
    with pytest.raises(
        TargetError, match=r"nginx not found .* install it with `apt-get install nginx-light`"
    ):
        start_target("nginx", tmp_path)
    assert not (tmp_path / "received").exists()


def test_missing_aiohttp_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(thin_python, "aiohttp_installed", lambda: False)
    with pytest.raises(TargetError, match=r"needs aiohttp: pip install '\.\[targets\]'"):
        start_target("aiohttp", tmp_path)


def test_unknown_target_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(
        TargetError, match="unknown target 'apache'; known targets: reference, nginx, aiohttp"
    ):
        start_target("apache", tmp_path)


def test_nginx_without_the_echo_module_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "nginx"
    fake.write_text("#!/bin/sh\necho 'nginx version: nginx/1.0 (built without modules)' >&2\n")
    os.chmod(fake, 0o755)
    monkeypatch.setattr(nginx_target, "ECHO_MODULES", (str(tmp_path / "missing.so"),))
    with pytest.raises(TargetError, match=r"no echo module .* `apt-get install nginx-light`"):
        nginx_target.echo_module_line(str(fake))
