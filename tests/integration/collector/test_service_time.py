"""--service-time on real sockets: a slow collector answers late, queues concurrent requests behind its
workers, keeps the ledger-before-answer promise, and reports what the client measured.

Bounds are wide enough for a shared 2-core machine (a late timer delays an answer by a few ms) and narrow
enough to fail if the service time were skipped, doubled or not queued.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lossbench.collector.server import CollectorThread
from lossbench.contract.events import encode_pixel_param
from lossbench.contract.latency import BUCKETS_PER_DECADE, LatencyHistogram, bucket_of
from lossbench.runner import collector_stats, start_collector, stop_process
from support import connect, received_ids

SERVICE = 0.020
WIDTH = 10 ** (1 / BUCKETS_PER_DECADE)  # a histogram's quantile is the upper edge of its bucket


def pixel(event_id: str) -> bytes:
    d = encode_pixel_param({"id": event_id, "tech": "pixel"})
    return f"GET /p.gif?d={d} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


PREFLIGHT = b"OPTIONS /e HTTP/1.1\r\nHost: t\r\nOrigin: https://shop.test\r\n\r\n"


def read_answer(sock) -> bytes:  # type: ignore[no-untyped-def]
    """One whole answer (the collector's answers here have no body but the GIF's 43 bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"Content-Length")), 0
    )
    while len(body) < length:
        body += sock.recv(4096)
    return head


def concurrent(port: int, requests: list[bytes]) -> list[float]:
    """Write each request on its own connection at once; the seconds until each answer arrived."""
    socks = [connect(port) for _ in requests]
    try:
        time.sleep(0.05)  # the collector accepts them first
        started = time.monotonic()
        for sock, request in zip(socks, requests, strict=True):
            sock.sendall(request)
        return [_answered(sock, started) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _answered(sock, started: float) -> float:  # type: ignore[no-untyped-def]
    assert read_answer(sock).startswith(b"HTTP/1.1 2")
    return time.monotonic() - started


def http_stats(port: int) -> dict:  # type: ignore[type-arg]
    with connect(port) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    stats: dict = json.loads(data.partition(b"\r\n\r\n")[2])  # type: ignore[type-arg]
    return stats


def test_one_request_at_a_time_is_answered_after_the_service_time(
    collector_factory: Callable[..., CollectorThread], tmp_path: Path
) -> None:
    collector = collector_factory(service_time="20ms")
    times = []
    with connect(collector.port) as sock:
        for i in range(15):
            started = time.monotonic()
            sock.sendall(pixel(f"one-{i}"))
            assert read_answer(sock).startswith(b"HTTP/1.1 200")
            times.append(time.monotonic() - started)
            assert received_ids(tmp_path)[f"one-{i}"] == 1, "its line was in the ledger before its answer"
    print(f"\n[service 20 ms] one at a time: client median {statistics.median(times) * 1000:.1f} ms, "
          f"min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}")  # fmt: skip
    assert min(times) >= SERVICE
    assert statistics.median(times) < SERVICE + 0.010
    counts = collector.stats()["answers"]["event"]["counts"]
    assert min(int(b) for b in counts) >= bucket_of(SERVICE), "no answer before its service ended"


def test_concurrent_events_queue_behind_one_worker_and_two_workers_halve_the_wait(
    collector_factory: Callable[..., CollectorThread],
) -> None:
    n = 6
    results = {}
    for workers in (1, 2):
        collector = collector_factory(service_time="20ms", service_workers=workers)
        times = sorted(concurrent(collector.port, [pixel(f"q{workers}-{i}") for i in range(n)]))
        results[workers] = times
        print(f"\n[service 20 ms, {workers} worker(s)] {n} at once answered at "
              f"{', '.join(f'{t * 1000:.0f}' for t in times)} ms")  # fmt: skip
    one, two = results[1], results[2]
    spacing = (one[-1] - one[0]) / (n - 1)
    assert 0.75 * SERVICE <= spacing <= 1.5 * SERVICE, "one worker: an answer every 20 ms"
    assert one[-1] >= n * SERVICE
    assert two[-1] >= n / 2 * SERVICE
    assert two[-1] <= 0.7 * one[-1], "two workers: about half the time"
    assert two[1] - two[0] < 0.5 * SERVICE, "two workers: answers in pairs"


def test_a_preflight_queued_behind_events_waits_for_them(
    collector_factory: Callable[..., CollectorThread],
) -> None:
    collector = collector_factory(service_time="20ms")
    events = [connect(collector.port) for _ in range(3)]
    try:
        with connect(collector.port) as preflight:
            time.sleep(0.05)  # the collector accepts the four connections first
            started = time.monotonic()
            for i, sock in enumerate(events):
                sock.sendall(pixel(f"ahead-{i}"))
            time.sleep(0.005)  # the events are complete first
            preflight.sendall(PREFLIGHT)
            assert read_answer(preflight).startswith(b"HTTP/1.1 204")
            waited = time.monotonic() - started
        for sock in events:
            read_answer(sock)
    finally:
        for sock in events:
            sock.close()
    print(f"\n[service 20 ms] a preflight behind 3 events answered after {waited * 1000:.1f} ms")
    assert waited >= 3 * SERVICE
    answered = LatencyHistogram.from_dict(collector.stats()["answers"]["preflight"])
    assert answered.total == 1 and answered.quantile(1.0) >= 3 * SERVICE - 0.005 - 0.002


def test_stats_report_the_utilisation_and_answer_times_the_client_measured(
    collector_factory: Callable[..., CollectorThread],
) -> None:
    collector = collector_factory(service_time="20ms")
    n = 11  # odd: the client's median and the histogram's p50 are the same answer
    times = concurrent(collector.port, [pixel(f"s-{i}") for i in range(n)])
    wall = max(times)
    stats = http_stats(collector.port)
    service = stats["service"]
    print(f"\n[service 20 ms] {n} at once: utilisation {service['utilisation']:.3f} over "
          f"{service['elapsed_seconds'] * 1000:.1f} ms (client: {wall * 1000:.1f} ms); event p50 "
          f"{_p50(stats):.4f} s, client median {statistics.median(times):.4f} s")  # fmt: skip
    assert service["spec"] == "20ms" and service["workers"] == 1 and service["queued"] == 0
    assert service["busy_seconds"] == pytest.approx(n * SERVICE)
    assert service["elapsed_seconds"] <= wall and service["elapsed_seconds"] >= n * SERVICE
    assert 0.8 <= service["utilisation"] <= 1.0
    assert service["utilisation"] * wall >= 0.8 * n * SERVICE
    p50 = _p50(stats)
    client = statistics.median(times)
    assert p50 / WIDTH <= client, "the collector's time is part of the client's"
    assert client <= p50 * WIDTH + 0.005, "and the client's is little more than it"


def test_stats_are_answered_at_once_while_the_workers_are_busy(
    collector_factory: Callable[..., CollectorThread],
) -> None:
    """/stats is lossbench's monitoring, not the emulated collector's work: an overloaded collector still
    reports its figures (progress lines and sweeps read them while it is saturated)."""
    collector = collector_factory(service_time="100ms")
    events = [connect(collector.port) for _ in range(5)]
    try:
        time.sleep(0.05)
        for i, sock in enumerate(events):
            sock.sendall(pixel(f"busy-{i}"))
        time.sleep(0.02)  # the events are in the queue: the last is answered 0.5 s from now
        started = time.monotonic()
        stats = http_stats(collector.port)
        took = time.monotonic() - started
        for sock in events:
            read_answer(sock)
    finally:
        for sock in events:
            sock.close()
    print(f"\n[service 100 ms] /stats with 5 events queued answered in {took * 1000:.1f} ms")
    assert stats["service"]["queued"] >= 4
    assert took < 0.1


def _p50(stats: dict) -> float:  # type: ignore[type-arg]
    p50 = LatencyHistogram.from_dict(stats["answers"]["event"]).quantile(0.5)
    assert p50 is not None
    return p50


def test_a_bad_service_time_is_a_one_line_error(tmp_path: Path) -> None:
    cases = {
        ("--service-time", "2 parsecs"): ("--service-time '2 parsecs': ", "lognormal:MEDIAN,SIGMA"),
        ("--service-time", "20ms", "--service-workers", "0"): ("--service-workers 0: ", "at least one"),
    }
    for flags, (start, said) in cases.items():
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "lossbench.cli",
                "collector",
                "--port",
                "0",
                "--out",
                str(tmp_path),
                *flags,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2 and result.stdout == ""
        [line] = result.stderr.splitlines()
        assert line.startswith(f"lossbench collector: {start}") and said in line, line


def test_run_refuses_a_bad_service_time_before_starting_anything(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "run", "--out", str(tmp_path), "--service-time", "exp:-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("lossbench run: --service-time 'exp:-1': ")
    assert not any(tmp_path.iterdir())


def test_run_starts_the_collector_with_its_service_time(tmp_path: Path) -> None:
    proc, url = start_collector(tmp_path, 1, "exp:5ms", 3)
    try:
        stats = collector_stats(url)
    finally:
        stop_process(proc)
    assert stats is not None
    assert stats["service"]["spec"] == "exp:5ms" and stats["service"]["workers"] == 3
