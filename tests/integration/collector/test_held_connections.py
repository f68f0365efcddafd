"""Held connections: slowloris headers, slow bodies, endless header lines, clients that never read, more
connections than the cap, and 2,000 held connections at once against a collector process whose memory is
measured. Each is bounded by a timeout or a limit, and valid events from other clients still get through.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import pytest

from lossbench.collector.config import HEAD_SLICE, CollectorConfig
from lossbench.contract.events import encode_event, encode_pixel_param
from lossbench.contract.techniques import SEED_TECHNIQUES
from lossbench.loadgen.techniques import Tab
from lossbench.model.profiles import NetworkDraw
from lossbench.system import raise_fd_limit
from support import connect, read_until_closed, received_ids, wait_until

ADDRESS = "127.0.0.1"


def trickle(sock: socket.socket, data: bytes, every: float) -> bytes:
    """Send ``data`` one byte per ``every`` seconds, as a slow client does, until the collector answers;
    returns the answer. How long that took has a floor (the collector cannot cut before its timeout) but no
    ceiling a test may rely on: load delays the cut. The exact deadlines are tested on a fake clock in
    tests/unit/collector."""
    sock.settimeout(every)
    answer = b""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break  # a byte sent after the collector closed drew an RST; its answer was read before
        answer += chunk
        if not chunk:
            break
    sock.settimeout(5.0)
    answer += read_until_closed(sock)
    return answer


def test_slowloris_headers_are_cut_by_the_header_timeout(collector_factory, tmp_path):
    """Headers trickling in forever: the header timeout cuts them, however steady the trickle, and the
    client gets a 408."""
    collector = collector_factory(header_timeout=0.5)
    head = b"GET /p.gif?d=" + encode_pixel_param({"id": "slow", "tech": "pixel"}).encode() + b" HTTP/1.1\r\n"
    with closing(connect(collector.port)) as sock:
        started = time.monotonic()
        answer = trickle(sock, head + b"X-Slow: " + b"a" * 10_000, every=0.03)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert waited >= 0.5, f"cut {waited:.3f} s after the first byte, before the header timeout"
    stats = collector.stats()
    assert stats["header_timeouts"] == 1 and stats["events"] == {}
    assert wait_until(lambda: collector.stats()["connections_open"] == 0)


def test_slow_body_is_cut_by_the_body_timeout(collector_factory, tmp_path):
    collector = collector_factory(body_timeout=0.5)
    body = encode_event({"id": "slow-body", "tech": "ajax"})
    head = b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
        len(body) + 1000
    )
    with closing(connect(collector.port)) as sock:
        started = time.monotonic()
        sock.sendall(head)
        answer = trickle(sock, body + b" " * 1000, every=0.03)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert waited >= 0.5, f"cut {waited:.3f} s after the headers, before the body timeout"
    stats = collector.stats()
    assert stats["body_timeouts"] == 1 and stats["bodies_incomplete"] == 1 and stats["events"] == {}
    assert received_ids(tmp_path) == {}


def test_an_endless_header_line_is_refused_before_it_is_buffered(collector):
    """httptools keeps a header line in memory until it ends; the collector counts the bytes of an
    unfinished head as they come and refuses it with a 431 after max_url + max_header_bytes (+ one slice),
    long before the header timeout."""
    config = CollectorConfig()
    limit = config.max_url + config.max_header_bytes + 2 * HEAD_SLICE
    sent = 0
    with closing(connect(collector.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        try:
            while sent < 10 * limit:
                sock.sendall(b"a" * 4096)
                sent += 4096
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert collector.stats()["refused"] == {"headers_too_large": 1}


@pytest.mark.parametrize("piece", [None, 1000, HEAD_SLICE + 1])
def test_a_head_at_the_limits_is_served_however_it_arrives(collector, piece):
    """No false refusal from the head accounting: a URL of max_url and max_header_bytes of headers pass,
    whole, in small pieces and in pieces just over a slice."""
    config = CollectorConfig()
    url = b"/healthz?" + b"q" * (config.max_url - len(b"/healthz?"))
    headers = b"".join(b"X-%04d: %s\r\n" % (i, b"v" * 90) for i in range(config.max_header_bytes // 104))
    request = b"GET " + url + b" HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n"
    with closing(connect(collector.port)) as sock:
        for start in range(0, len(request), piece or len(request)):
            sock.sendall(request[start : start + (piece or len(request))])
        sock.shutdown(socket.SHUT_WR)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_past_the_connection_cap_a_clear_503_and_others_are_served_again(collector_factory, tmp_path):
    collector = collector_factory(max_connections=20)
    with ExitStack() as stack:
        held = [stack.enter_context(closing(connect(collector.port))) for _ in range(20)]
        assert wait_until(lambda: collector.stats()["connections_open"] == 20)
        with closing(connect(collector.port)) as extra:
            extra.sendall(
                b"GET /p.gif?d="
                + encode_pixel_param({"id": "over-cap", "tech": "pixel"}).encode()
                + b" HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            answer = read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"too many connections" in answer
        stats = collector.stats()
        assert stats["connections_refused"] == 1 and stats["refused"] == {"too_many_connections": 1}
        held.pop().close()
        assert wait_until(lambda: collector.stats()["connections_open"] == 19)
        tab = Tab((ADDRESS, collector.port), NetworkDraw())
        assert tab.fire("pixel", "under-cap").acked
        tab.close()
    assert received_ids(tmp_path) == {"under-cap": 1}


def test_a_client_that_never_reads_is_paused_not_buffered(collector, tmp_path):
    """Pipelined requests whose answers are never read: the collector stops reading once its write buffer
    is full, so the client blocks instead of the collector's memory growing; nothing is lost once the
    client reads."""
    ping = b"GET /ping.gif?t=pixel-keepalive HTTP/1.1\r\nHost: t\r\n\r\n"
    batch = ping * 2000
    sent = 0
    with closing(connect(collector.port)) as sock:
        sock.setblocking(False)
        blocked_since = None
        started = time.monotonic()
        while time.monotonic() - started < 20:
            try:
                sent += sock.send(batch[sent % len(batch) :] if sent % len(batch) else batch)
                blocked_since = None
            except BlockingIOError:
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > 0.3:
                    break
                time.sleep(0.005)  # the client's own pace while blocked, not a synchronisation
        assert blocked_since is not None, "the collector kept reading: no back-pressure"
        buffered = collector.stats()["write_buffered"]
        assert buffered < 1 << 20, buffered
        requests = -(-sent // len(ping))
        sock.setblocking(True)
        answers = {"n": 0}

        def reader() -> None:
            marker = b"GIF89a"  # one in each answer
            tail = b""  # a marker cut by a read's boundary is counted with the next read
            while chunk := sock.recv(1 << 20):
                window = tail + chunk
                answers["n"] += window.count(marker)
                tail = window[-(len(marker) - 1) :]  # too short to hold a whole marker: none counted twice

        thread = threading.Thread(target=reader)
        thread.start()
        sock.sendall(ping[sent % len(ping) :] if sent % len(ping) else b"")
        everything = wait_until(lambda: answers["n"] == requests, timeout=20)
        assert everything, f"{answers['n']} answers of {requests}"
        sock.shutdown(socket.SHUT_WR)
        thread.join(10)
    assert collector.stats()["pings"] == requests


# -- 2,000 held connections against a collector process --------------------------------------------------

HELD = 2000


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


def http_stats(port: int) -> dict:
    with closing(connect(port)) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return json.loads(read_until_closed(sock).partition(b"\r\n\r\n")[2])


@pytest.fixture
def collector_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``lossbench collector`` as its own process (its memory is measured alone); stopped with SIGTERM."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lossbench.cli",
            "collector",
            "--port",
            "0",
            "--out",
            str(tmp_path),
            "--header-timeout",
            "3",
            "--body-timeout",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
        assert match, proc.stderr.read() if proc.poll() is not None else "no announce line"
        yield proc, int(match.group(1))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_2000_held_connections_bounded_memory_and_others_still_served(collector_process, tmp_path, capsys):
    """1,000 slowloris heads and 1,000 slow bodies held at once: valid events of every technique from
    other clients are all received, the collector's memory grows by a bounded amount, and the header and
    body timeouts then close every held connection."""
    raise_fd_limit()
    proc, port = collector_process
    tab = Tab((ADDRESS, port), NetworkDraw())
    tab.page_load(list(SEED_TECHNIQUES))
    for n, tech in enumerate(SEED_TECHNIQUES * 25):  # warm up: allocations every later request reuses
        assert tab.fire(tech, f"warm-{n}").acked
    tab.close()
    before = rss_kib(proc.pid)
    slow_head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"h" * 2048
    slow_body = (
        b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
        + b"b" * 8192
    )
    # Kept connections are opened before the held ones: Tab checks them with select(), which cannot
    # watch a file descriptor above 1023 (a limit of lossbench.loadgen.techniques, not of the collector).
    tabs = [Tab((ADDRESS, port), NetworkDraw()) for _ in range(10)]
    for tab in tabs:
        tab.page_load(list(SEED_TECHNIQUES))
    with ExitStack() as stack:
        for n in range(HELD):
            sock = stack.enter_context(closing(connect(port, timeout=10)))
            sock.sendall(slow_head if n % 2 else slow_body)
        assert wait_until(lambda: http_stats(port)["connections_open"] >= HELD + 1, timeout=10)
        held_rss = rss_kib(proc.pid)
        sent = []
        for n, tab in enumerate(tabs):
            for tech in SEED_TECHNIQUES:
                for k in range(5):
                    event_id = f"{tech}-{n}-{k}"
                    assert tab.fire(tech, event_id).acked, event_id
                    sent.append(event_id)
            tab.close()
        stats = http_stats(port)
        assert stats["connections_open"] >= HELD + 1, "the held connections timed out before the check"
        assert wait_until(
            lambda: (
                (s := http_stats(port))["header_timeouts"] == HELD // 2 and s["body_timeouts"] == HELD // 2
            ),
            timeout=15,
        )
        assert http_stats(port)["connections_open"] == 1  # just the one asking
    ids = received_ids(tmp_path)
    assert all(ids[event_id] == 1 for event_id in sent)
    growth_mib = (held_rss - before) / 1024
    per_connection_kib = (held_rss - before) / HELD
    with capsys.disabled():
        print(
            f"\n[held connections] collector RSS {before / 1024:.1f} MiB idle -> {held_rss / 1024:.1f} MiB "
            f"with {HELD} held ({growth_mib:.1f} MiB, {per_connection_kib:.1f} KiB per connection, "
            f"of which ~{(1024 * 8 + 2048) / 2 / 1024:.0f} KiB is the client's own bytes)"
        )
    assert growth_mib < 96, f"{growth_mib:.1f} MiB for {HELD} held connections"
    assert os.path.exists(tmp_path / "received")
