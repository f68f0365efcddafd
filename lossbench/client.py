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

Sockets are non-blocking and waited on through gevent when gevent has patched ``socket`` (under Locust),
through ``poll`` otherwise, so the same code is cooperative under Locust and works from plain threads in
tests.
"""

from __future__ import annotations

import _socket
import errno
import math
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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


# -- the wire ----------------------------------------------------------------------------------------------
# Sockets are the C type (``_socket.socket``), non-blocking, waited on only when the kernel says EAGAIN. Under
# gevent, ``socket.socket`` is a Python wrapper (and ``create_connection`` resolves the address again) that
# costs more per event than the loopback connect, write and read themselves (benchmarks/loadgen.py).

_NONBLOCKING = getattr(_socket, "SOCK_NONBLOCK", 0) | getattr(_socket, "SOCK_CLOEXEC", 0)
_IN_PROGRESS = (errno.EINPROGRESS, errno.EALREADY)  # for TCP, EAGAIN from connect is a failure (no port)


class _GeventWaits(NamedTuple):
    read: Callable[..., Any]
    write: Callable[..., Any]
    sleep: Callable[[float], None]


_gevent_waits: _GeventWaits | None = None


def _cooperative_wait() -> _GeventWaits | None:
    """gevent's waits once gevent has patched ``socket`` (as under Locust), else None: threads poll."""
    global _gevent_waits
    if _gevent_waits is None:
        monkey = sys.modules.get("gevent.monkey")
        if monkey is None or not monkey.is_module_patched("socket"):
            return None
        from gevent import sleep
        from gevent.socket import wait_read, wait_write

        _gevent_waits = _GeventWaits(wait_read, wait_write, sleep)  # patching is never undone
    return _gevent_waits


def wait_ready(sock: socket.socket, for_write: bool, timeout: float | None) -> None:
    """Block this thread or greenlet until ``sock`` is readable (or writable); TimeoutError after
    ``timeout`` seconds (None: no limit)."""
    cooperative = _cooperative_wait()
    if cooperative is not None:
        (cooperative.write if for_write else cooperative.read)(sock.fileno(), timeout)
        return
    poll = select.poll()  # any fd number (select() stops at 1024)
    poll.register(sock, select.POLLOUT if for_write else select.POLLIN)
    if not poll.poll(-1 if timeout is None else max(0, math.ceil(timeout * 1000))):
        raise TimeoutError("timed out")


def let_others_run() -> bool:
    """Under gevent, run the other greenlets that are ready, then come back; False (nothing done) in threads.

    A loopback handshake or the collector's answer is usually complete by then: trying again afterwards is
    cheaper than a wait (an fd watcher, a timer and a trip through the event loop) for each of them.
    """
    cooperative = _cooperative_wait()
    if cooperative is None:
        return False
    cooperative.sleep(0)
    return True


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def connect(address: tuple[str, int], timeout: float | None, *, nodelay: bool = True) -> socket.socket:
    """A connected non-blocking TCP socket. ``nodelay=False`` saves a system call where the client writes
    once and then only reads (Nagle's algorithm never holds a first write)."""
    family = _socket.AF_INET6 if ":" in address[0] else _socket.AF_INET
    sock = _socket.socket(family, _socket.SOCK_STREAM | _NONBLOCKING)
    try:
        if not _NONBLOCKING:
            sock.setblocking(False)
        if nodelay:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        deadline = _deadline(timeout)
        failed = sock.connect_ex(address)
        if failed in _IN_PROGRESS and let_others_run():
            failed = sock.connect_ex(address)  # again: 0 or EISCONN once connected, the error if it failed
            if failed == errno.EISCONN:
                failed = 0
        if failed in _IN_PROGRESS:
            wait_ready(sock, True, _left(deadline))
            failed = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if failed:
            raise OSError(failed, f"connect to {address[0]}:{address[1]}: {os.strerror(failed)}")
    except BaseException:
        close(sock, "rst")
        raise
    return sock


def send_all(sock: socket.socket, data: bytes, timeout: float | None = None) -> None:
    """Write all of ``data``, waiting for room in the send buffer at most ``timeout`` seconds in all."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return  # the usual case: a request of a few hundred bytes into an empty send buffer
    deadline = _deadline(timeout)
    view = memoryview(data)[sent:]
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            wait_ready(sock, True, _left(deadline))


def receive(sock: socket.socket, deadline: float | None, ancillary: int = 0) -> tuple[bytes, list[Any]]:
    """The next bytes the kernel holds for ``sock`` (and the ancillary data of ``recvmsg``); b"" at EOF."""
    patient = False
    while True:
        try:
            if ancillary:
                data, extra, _, _ = sock.recvmsg(65536, ancillary)
                return data, extra
            return sock.recv(65536), []
        except BlockingIOError:
            if patient or not let_others_run():
                wait_ready(sock, False, _left(deadline))
            patient = True


def open_connection(
    address: tuple[str, int], timeline: Timeline, stage: str = "connect", *, nodelay: bool = True
) -> socket.socket:
    """A real TCP connect for an event, bounded by the time left before the cut."""
    timeline.check(stage)
    # Without a cut the connect is bounded by the kernel (SYN retries): no timer, which under gevent costs
    # more than a loopback connect.
    timeout = None if timeline.cut_after == math.inf else max(timeline.remaining(), 0.0)
    try:
        sock = connect(address, timeout, nodelay=nodelay)
    except TimeoutError:
        raise Cut(stage) from None
    timeline.result.connections += 1
    return sock


def send_before_cut(sock: socket.socket, data: bytes, timeline: Timeline, stage: str) -> None:
    """Write ``data`` for an event; a send buffer that stays full until the cut is the cut."""
    try:
        send_all(sock, data, None if timeline.cut_after == math.inf else max(timeline.remaining(), 0.0))
    except TimeoutError:
        raise Cut(stage) from None


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
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        first, ancillary = receive(sock, _deadline(timeout), socket.CMSG_SPACE(16))
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
    deadline = _deadline(timeout)
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
                    chunk = receive(sock, deadline)[0]
                    if not chunk:
                        raise ConnectionResetError("EOF in response body")
                    buf += chunk
                return status
            chunk = receive(sock, deadline)[0]
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
