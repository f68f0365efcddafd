"""The wire: non-blocking C sockets that a stage acts on, cut-aware sends and reads, and the close."""

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
from typing import Any, NamedTuple

from lossbench.loadgen.timeline import RESPONSE_TIMEOUT, Cut, Stale, Timeline

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


def wait_ready(sock: _socket.socket, for_write: bool, timeout: float | None) -> None:
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


def connect(address: tuple[str, int], timeout: float | None, *, nodelay: bool = True) -> _socket.socket:
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


def send_all(sock: _socket.socket, data: bytes, timeout: float | None = None) -> None:
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


def receive(sock: _socket.socket, deadline: float | None, ancillary: int = 0) -> tuple[bytes, list[Any]]:
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
) -> _socket.socket:
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


def send_before_cut(sock: _socket.socket, data: bytes, timeline: Timeline, stage: str) -> None:
    """Write ``data`` for an event; a send buffer that stays full until the cut is the cut."""
    try:
        send_all(sock, data, None if timeline.cut_after == math.inf else max(timeline.remaining(), 0.0))
    except TimeoutError:
        raise Cut(stage) from None


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not export it


def read_response_stamped(sock: _socket.socket, timeline: Timeline, stage: str) -> tuple[int, float]:
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


def read_response(sock: _socket.socket, timeline: Timeline | None, stage: str, initial: bytes = b"") -> int:
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
    sock: _socket.socket, mode: str = "rst", limbo: list[tuple[float, _socket.socket]] | None = None
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
