"""Helpers for tests: read what the collector recorded, wait for a condition."""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.contract.latency import LatencyHistogram
from lossbench.model.exits import get_exit_model
from lossbench.model.profiles import NetworkProfile
from lossbench.model.visits import Visit, VisitBatch

ROOT = Path(__file__).resolve().parent.parent
"""The repository's root: scenarios, benchmarks and the README live there."""


def whole_lines(path: Path) -> list[bytes]:
    """The complete lines of a ledger, which may be being written as it is read: a last line without its
    newline is still on its way (a read can see half of a ``write(2)``) and is left out, as compare does.
    Every other line must be whole JSON: a damaged one fails the test that reads it."""
    return path.read_bytes().split(b"\n")[:-1]  # after the last newline: b"" or a line still on its way


def received_events(run_dir: Path) -> list[dict[str, Any]]:
    """Event lines of every received ledger under run_dir, in file order (header and footer left out)."""
    events = []
    for path in sorted((run_dir / "received").glob("*.jsonl")):
        for line in whole_lines(path):
            record = json.loads(line)
            if "id" in record:
                events.append(record)
    return events


def received_ids(run_dir: Path) -> Counter[str]:
    """Event ids in every received ledger under run_dir, with their multiplicity."""
    return Counter(event["id"] for event in received_events(run_dir))


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def master_on_a_free_port() -> list[str]:
    """Locust's master binds *:5557 by default: keep it on loopback, away from other runs."""
    port = str(free_port())
    return ["--master-bind-host", "127.0.0.1", "--master-bind-port", port, "--master-host", "127.0.0.1",
            "--master-port", port]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    """A raw TCP connection to a collector on loopback, Nagle off (requests written in pieces stay pieces)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the collector sends until it closes (an RST ends it too)."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return answer


def exchange(port: int, raw: bytes, timeout: float = 3.0) -> bytes:
    """Send raw bytes and half-close; return everything the collector answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        return read_until_closed(sock)


class ClientTime:
    """A tab's clock that moves only when the tab sleeps: the emulated network's steps, exactly."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def wide_draws(
    spec: str, abort: str, count: int, answered: bool
) -> tuple[list[Visit], VisitBatch, np.ndarray | None, list[list[float] | None]]:
    """Visits drawn on a wide network (long lookups, round trips from a few ms to seconds) for the model's
    agreement tests: the visits, their batch, and with ``answered`` each event's preflight answer time
    (from a histogram spread from 1 ms to 2 s), whole and per visit."""
    rng = np.random.default_rng(8)
    profile = NetworkProfile("wide", rtt=0.3, rtt_spread=0.8, dns_miss_prob=0.5, dns_miss_extra=0.2)
    model = get_exit_model(spec)
    visits = [model.draw_visit(rng, profile.draw(rng), abort) for _ in range(count)]
    batch = VisitBatch.of(visits)
    if not answered:
        return visits, batch, None, [None] * len(visits)
    measured = LatencyHistogram()
    for seconds in np.geomspace(0.001, 2.0, 200):
        measured.add(float(seconds))
    answer = measured.sample(rng, batch.events)
    starts = np.cumsum([0] + [len(v.events) for v in visits]).tolist()
    return visits, batch, answer, [answer[a:b].tolist() for a, b in itertools.pairwise(starts)]
