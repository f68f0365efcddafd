"""The collector's HTTP surface, and the `lossbench collector` command as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lossbench.contract.events import encode_pixel_param
from lossbench.loadgen.techniques import Tab
from lossbench.model.profiles import NetworkDraw
from support import exchange, received_ids, wait_until


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def test_pixel_answers_a_gif_not_cached(collector):
    answer = exchange(collector.port, get("/p.gif?d=" + encode_pixel_param({"id": "g1", "tech": "pixel"})))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Type: image/gif" in head and b"Cache-Control: no-store" in head
    assert body.startswith(b"GIF89a") and len(body) == 43


def test_preflight_headers_and_max_age(collector_factory):
    collector = collector_factory(cors_max_age=0)
    answer = exchange(collector.port, b"OPTIONS /e HTTP/1.1\r\nHost: t\r\nOrigin: https://a.test\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 204")
    for header in (
        b"Access-Control-Allow-Origin: *",
        b"Access-Control-Allow-Methods: POST, OPTIONS",
        b"Access-Control-Allow-Headers: Content-Type",
        b"Access-Control-Max-Age: 0",
    ):
        assert header in answer


def test_stats_and_healthz(collector):
    assert exchange(collector.port, get("/healthz")).endswith(b"ok\n")
    answer = exchange(collector.port, get("/stats"))
    stats = json.loads(answer.partition(b"\r\n\r\n")[2])
    for key in ("events", "preflights", "pings", "refused", "bodies_incomplete", "connections_open"):
        assert key in stats
    assert stats["connections_open"] == 1  # this very connection


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (get("/p.gif?d=***"), b"400", "bad_base64"),
        (get("/p.gif?d=" + encode_pixel_param({"tech": "pixel"})), b"400", "bad_id"),
        (get("/p.gif?d=" + encode_pixel_param({"id": "x", "tech": "morse"})), b"400", "bad_tech"),
        (get("/nowhere"), b"404", "not_found"),
        (b"DELETE /e HTTP/1.1\r\nHost: t\r\n\r\n", b"405", "method"),
        (
            b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n",
            b"400",
            "empty_body",
        ),
        (b"NOT HTTP AT ALL\r\n\r\n", b"400", "bad_http"),
    ],
)
def test_bad_requests_get_4xx_and_a_counter(collector, raw, status, reason):
    answer = exchange(collector.port, raw)
    assert answer.split(b" ", 2)[1] == status, answer
    assert collector.stats()["refused"].get(reason) == 1
    # and it keeps serving
    assert exchange(collector.port, get("/healthz")).startswith(b"HTTP/1.1 200")


def test_ledger_rotates_and_every_part_is_found(collector_factory, tmp_path):
    collector = collector_factory(ledger_max_bytes=4096)
    tab = Tab(("127.0.0.1", collector.port), NetworkDraw())
    tab.page_load(["pixel-keepalive"])
    for i in range(150):
        tab.fire("pixel-keepalive", f"rot-{i}", visit_time=1.0)
    tab.close()
    collector.stop()
    parts = sorted((tmp_path / "received").glob("*.jsonl"))
    assert len(parts) >= 3  # ~12 KB of lines in 4 KB parts
    assert all(json.loads(p.read_text().splitlines()[-1]).get("ledger_end") for p in parts)
    assert sum(received_ids(tmp_path).values()) == 150


def _start_cli(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossbench.cli", "collector", "--port", "0", "--out", str(tmp_path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, int(match.group(1))


@pytest.mark.parametrize("processes", [1, 2])
def test_collector_command_serves_and_stops_cleanly_on_sigterm(tmp_path, processes):
    proc, port = _start_cli(tmp_path, "--processes", str(processes))
    try:
        tabs = [Tab(("127.0.0.1", port), NetworkDraw()) for _ in range(40)]
        for n, tab in enumerate(tabs):
            for tech in ("pixel", "ajax"):
                assert tab.fire(tech, f"cli-{tech}-{n}").acked
        assert wait_until(lambda: sum(received_ids(tmp_path).values()) == 80)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    ledgers = sorted((tmp_path / "received").glob("*.jsonl"))
    stats_files = sorted((tmp_path / "received").glob("*.stats.json"))
    assert len(ledgers) == processes and len(stats_files) == processes
    for ledger in ledgers:
        assert json.loads(ledger.read_text().splitlines()[-1])["ledger_end"] is True
    total = sum(sum(json.loads(p.read_text())["events"].values()) for p in stats_files)
    assert total == 80


def test_collector_refuses_non_loopback_without_flag(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "collector", "--host", "0.0.0.0", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--allow-remote" in result.stderr


def test_sigterm_drains_and_exits_zero_even_with_a_held_connection(tmp_path):
    proc, port = _start_cli(tmp_path, "--body-timeout", "30")
    held = socket.create_connection(("127.0.0.1", port))
    held.sendall(
        b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    try:
        assert wait_until(lambda: os.path.exists(tmp_path / "received"))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        held.close()
    assert proc.returncode == 0, err
