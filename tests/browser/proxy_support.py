"""A SOCKS5 proxy running in a thread of its own, and a plain-socket SOCKS5 client, for tests."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

from lossbench.loadgen.browser.proxy import Socks5Proxy, Visitor


class ProxyThread:
    """The proxy in its own event loop thread; ``call`` runs a function in that loop and returns its
    result (visitors are registered there, as the player does)."""

    def __init__(self, collector_port: int, page_port: int | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.proxy = Socks5Proxy(collector_port, page_port)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ProxyThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    @property
    def port(self) -> int:
        return self.proxy.port

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def add(self, visitor: Visitor) -> Visitor:
        return self.call(lambda: self.proxy.add_visitor(visitor))


def socks_connect(
    proxy_port: int, name: str, port: int = 80, timeout: float = 10.0
) -> tuple[socket.socket, int]:
    """Open a SOCKS5 CONNECT to ``name`` through the proxy; returns the socket and the reply code."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"\x05\x01\x00")
    assert sock.recv(2) == b"\x05\x00"
    encoded = name.encode()
    sock.sendall(b"\x05\x01\x00\x03" + bytes([len(encoded)]) + encoded + struct.pack("!H", port))
    reply = b""
    while len(reply) < 10:
        chunk = sock.recv(10 - len(reply))
        if not chunk:
            break
        reply += chunk
    return sock, reply[1] if len(reply) > 1 else -1
