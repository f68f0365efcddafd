"""The abortable client: real sockets, emulated network time, and a cut at any instant.

Each technique is a sequence of stages. A stage *acts* at once on a real socket (connect, write a request,
read the collector's real answer) and then *waits* the emulated network time before the next stage may
start (see DESIGN.md, "act, then wait"). The timeline is deadline-based: every stage has an intended end in
client time (seconds since the event fired) and sleeps until that deadline, so an oversleep in one stage
is absorbed by the next instead of piling up; the actual end is recorded beside the intended one.

The cut comes at client time A (the page goes away). The decision of whether a stage finished before
the cut is taken on the intended timeline, then the socket is closed — RST by default (SO_LINGER 0: no
FIN, no TIME_WAIT, the way a closing tab tears down its sockets), FIN or nothing at all ("silent": the
network vanished; the collector sees no close and must time the connection out) as options.

Only ``socket`` and ``time`` are used, so the same code is cooperative under gevent (Locust monkey-patches
both) and works from plain threads in tests.
"""

from __future__ import annotations

import math
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CLOSE_MODES = ("rst", "fin", "silent")
ABORT_KINDS = ("unload", "drop")
RESPONSE_TIMEOUT = 10.0  # reading an answer when no cut bounds the wait


def micro(seconds: float) -> float:
    """Seconds to the microsecond, as the ledgers record times (2x faster than ``round(x, 6)``, which
    rounds through decimal strings; it may differ from it in the last digit, never by more)."""
    return round(seconds * 1e6) / 1e6


class Cut(Exception):
    """The page went away during ``stage``."""

    def __init__(self, stage: str) -> None:
        super().__init__(stage)
        self.stage = stage


class Stale(Exception):
    """A kept-alive connection turned out to be closed by the collector."""


@dataclass
class EventResult:
    """What happened to one event, as the sent ledger records it (docs/FORMATS.md)."""

    id: str
    tech: str
    stage: str = "done"
    written: bool = False
    t_written: float | None = None
    acked: bool = False
    retried: bool = False
    requests: int = 0
    connections: int = 0
    plan: dict[str, float] = field(default_factory=dict)
    real: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "tech": self.tech,
            "stage": self.stage,
            "written": self.written,
            "t_written": None if self.t_written is None else micro(self.t_written),
            "acked": self.acked,
            "retried": self.retried,
            "requests": self.requests,
            "connections": self.connections,
            "plan": {k: micro(v) for k, v in self.plan.items()},
            "real": {k: micro(v) for k, v in self.real.items()},
        }
        if self.error:
            record["error"] = self.error
        return record


class Timeline:
    """Client time of one event: intended stage deadlines, actual times, and the cut.

    ``exit_after`` is A (seconds from firing until the page goes away; None or inf: never). With the
    ``drop`` abort the network vanished, so bytes written in the last one-way delay never arrive: the
    effective cut is A − rtt/2.
    """

    def __init__(
        self,
        result: EventResult,
        exit_after: float | None,
        *,
        abort: str = "unload",
        rtt: float = 0.0,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if abort not in ABORT_KINDS:
            raise ValueError(f"abort must be one of {ABORT_KINDS}, not {abort!r}")
        self.result = result
        self.clock = clock or time.monotonic  # looked up now, after any gevent monkey-patching
        self.sleep = sleep or time.sleep
        self.t0 = self.clock()
        self.intended = 0.0
        if exit_after is None or math.isinf(exit_after):
            self.cut_after = math.inf
        else:
            self.cut_after = exit_after - (rtt / 2 if abort == "drop" else 0.0)

    def now(self) -> float:
        return self.clock() - self.t0

    def remaining(self) -> float:
        """Real seconds until the cut (inf without one); the timeout of a real socket operation."""
        return self.cut_after - self.now()

    def acted(self, stage: str, started: float, finished: float | None = None) -> None:
        """A real operation ran from client time ``started`` to ``finished`` (default: now): the
        collector's real response time joins the intended timeline (a saturated collector lengthens the
        stage)."""
        self.intended += max(0.0, (self.now() if finished is None else finished) - started)
        if self.intended >= self.cut_after:
            self._sleep_until(self.cut_after)
            raise Cut(stage)

    def wait(self, stage: str, seconds: float) -> None:
        """Emulated network time: sleep until the stage's intended end, or be cut first."""
        end = self.intended + max(0.0, seconds)
        if end >= self.cut_after:
            self._sleep_until(self.cut_after)
            raise Cut(stage)
        self._sleep_until(end)
        self.intended = end
        self.mark(stage)

    def mark(self, stage: str) -> None:
        self.result.plan[stage] = self.intended
        self.result.real[stage] = self.now()

    def check(self, stage: str) -> None:
        """Raise Cut if the page is already gone (before acting on the wire)."""
        if self.intended >= self.cut_after or self.now() >= self.cut_after:
            raise Cut(stage)

    def _sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            self.sleep(delay)


def open_connection(
    address: tuple[str, int], timeline: Timeline, stage: str = "connect", *, nodelay: bool = True
) -> socket.socket:
    """A real TCP connect, bounded by the time left before the cut. ``nodelay=False`` saves a system call
    where the client writes once and then only reads (Nagle's algorithm never holds a first write)."""
    timeline.check(stage)
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Without a cut, connect and the writes after it are bounded by the kernel (SYN retries; a request
        # of a few hundred bytes never fills an empty send buffer): no timer per operation, which under
        # gevent costs more than the loopback connect itself. Reads set their own timeout.
        sock.settimeout(None if timeline.cut_after == math.inf else max(timeline.remaining(), 0.001))
        sock.connect(address)
    except TimeoutError:
        close(sock, "rst")
        raise Cut(stage) from None
    except OSError:
        close(sock, "rst")
        raise
    timeline.result.connections += 1
    return sock


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not export it


def read_response_stamped(sock: socket.socket, timeline: Timeline, stage: str) -> tuple[int, float]:
    """Read one response; also return the client time its first bytes reached the kernel.

    The kernel's receive timestamp (SO_TIMESTAMPNS) excludes the time this thread or greenlet waited to
    be scheduled, so a busy load generator does not lengthen the stage: only the collector's real
    response time does.
    """
    timeout = min(timeline.remaining(), RESPONSE_TIMEOUT)
    if timeout <= 0:
        raise Cut(stage)
    sock.settimeout(timeout)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        first, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(16))
    except TimeoutError:
        raise Cut(stage) from None
    except ConnectionResetError as exc:
        raise Stale(str(exc)) from None
    arrived = timeline.now()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack("qq", data[:16])
            arrived -= max(0.0, time.time() - (seconds + nanoseconds / 1e9))
            break
    if not first:
        raise Stale("connection closed before the response")
    return read_response(sock, timeline, stage, first), arrived


def read_response(sock: socket.socket, timeline: Timeline | None, stage: str, initial: bytes = b"") -> int:
    """Read one HTTP response; returns its status. Raises Stale on EOF before any byte, Cut on timeout."""
    timeout = RESPONSE_TIMEOUT if timeline is None else min(timeline.remaining(), RESPONSE_TIMEOUT)
    if timeout <= 0:
        raise Cut(stage)
    sock.settimeout(timeout)
    buf = initial
    try:
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                head = buf[:head_end]
                status = int(head.split(b" ", 2)[1])
                field = head.lower().find(b"\r\ncontent-length:")
                length = 0 if field < 0 else int(head[field + 17 :].split(b"\r\n", 1)[0])
                while len(buf) < head_end + 4 + length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionResetError("EOF in response body")
                    buf += chunk
                return status
            chunk = sock.recv(65536)
            if not chunk:
                if not buf:
                    raise Stale("connection closed before the response")
                raise ConnectionResetError("EOF in response headers")
            buf += chunk
    except TimeoutError:
        raise Cut(stage) from None
    except ConnectionResetError as exc:
        if not buf:
            raise Stale(str(exc)) from None
        raise


_LINGER_ZERO = struct.pack("ii", 1, 0)


def close(
    sock: socket.socket, mode: str = "rst", limbo: list[tuple[float, socket.socket]] | None = None
) -> None:
    """Close as a tab does. ``rst``: SO_LINGER 0 (no TIME_WAIT); ``fin``: orderly; ``silent``: keep the
    socket open and hand it to ``limbo`` so the collector sees nothing until its own timeout."""
    if mode == "silent" and limbo is not None:
        limbo.append((time.monotonic(), sock))
        return
    try:
        if mode == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        sock.close()
    except OSError:
        pass
