"""The reference load generator for benchmarks/loadgen.py: a bare Locust user that opens a socket, writes
one pixel GET and closes, as fast as it can. No emulation, no ledger, no statistics beyond Locust's own.

``BarePixelUser`` is the goal's reference, written as anyone would (Python's socket API, which gevent
patches under Locust). ``BareCSocketUser`` (``--raw-reference`` in loadgen.py) does the same on the C
socket type, as lossbench's client does: the floor, to show how much of the cost is left to win.
"""

import _socket
import errno
import itertools
import os
import socket
import struct
from urllib.parse import urlsplit

from gevent.socket import wait_write
from locust import User, constant, task

from lossbench.contract.events import encode_pixel_param

_LINGER_ZERO = struct.pack("ii", 1, 0)
_counter = itertools.count()
_salt = os.getpid() & 0xFFFF


def pixel_get() -> bytes:
    """A pixel GET with a fresh event id, built as simply as a bare user would."""
    event_id = f"bare-{_salt:04x}-{next(_counter)}"
    d = encode_pixel_param({"id": event_id, "tech": "pixel", "type": "click"})
    return f"GET /p.gif?d={d} HTTP/1.1\r\nHost: collector.lossbench.test\r\n\r\n".encode()


class _BareUser(User):
    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        url = urlsplit(self.host)
        self.address = (url.hostname, url.port)


class BarePixelUser(_BareUser):
    @task
    def fire(self) -> None:
        sock = socket.create_connection(self.address)
        sock.sendall(pixel_get())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)  # RST: no TIME_WAIT
        sock.close()


class BareCSocketUser(_BareUser):
    """The same bare user without gevent's socket wrapper: a non-blocking C socket, waited on only when
    the connect is still in progress."""

    @task
    def fire(self) -> None:
        request = pixel_get()
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK)
        try:
            if sock.connect_ex(self.address) == errno.EINPROGRESS:
                wait_write(sock.fileno(), 10.0)
            sock.send(request)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)  # RST: no TIME_WAIT
        finally:
            sock.close()
