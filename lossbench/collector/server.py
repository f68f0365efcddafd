"""Running the collector: sockets, event loop, graceful shutdown, several processes on one port.

One process serves one event loop with its own ledger file. ``--processes N`` starts N such processes that
each bind the same port with SO_REUSEPORT, so the kernel spreads connections over them; the parent only
holds the port while they start, then supervises. ``CollectorThread`` runs one in a thread, for tests and
for Locust scenarios that bring their own collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from lossbench.collector.config import CollectorConfig, validate_config
from lossbench.collector.protocol import CollectorProtocol
from lossbench.collector.state import Collector
from lossbench.system import raise_fd_limit

SHUTDOWN_GRACE = 5.0
"""Seconds a request in flight at shutdown may take to finish."""
FLUSH_TIME = 1.0
"""Seconds, within the grace, the last answers are given to flush before what is left is aborted."""
DRAIN_POLL = 0.01
"""Seconds between two looks at what is left while draining."""
BACKLOG = 4096  # the kernel caps it at net.core.somaxconn


class Listener(Protocol):
    """What shutdown needs of the listening server (``asyncio.Server``): stop it, wait until it has."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


def listen_socket(host: str, port: int, *, reuse_port: bool, backlog: int = BACKLOG) -> socket.socket:
    """A listening TCP socket; ``reuse_port`` lets sibling processes bind the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def new_event_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def serve(
    config: CollectorConfig,
    sock: socket.socket,
    stop: asyncio.Event,
    on_ready: Callable[[Collector], None] | None = None,
) -> Collector:
    """Serve on ``sock`` until ``stop`` is set, then shut down gracefully (see ``drain``)."""
    loop = asyncio.get_running_loop()
    collector = Collector(config)
    # create_server listens again with its own backlog (100 by default): keep the socket's, or bursts of
    # connections overflow the accept queue and their SYNs are retried a second later.
    server = await loop.create_server(lambda: CollectorProtocol(collector), sock=sock, backlog=BACKLOG)
    sweep_every = config.sweep_every

    async def sweeper() -> None:
        while True:
            await asyncio.sleep(sweep_every)
            collector.sweep()

    sweep_task = asyncio.create_task(sweeper())
    if on_ready is not None:
        on_ready(collector)
    try:
        await stop.wait()
    finally:
        try:
            await drain(collector, server)
        finally:
            sweep_task.cancel()
            collector.problems = collector.close()
            for problem in collector.problems:
                print(f"lossbench collector: {problem}", file=sys.stderr, flush=True)
    return collector


async def drain(collector: Collector, server: Listener) -> None:
    """Stop accepting, finish what is in flight, then let every connection go.

    The listening socket closes first (new connections are refused by the kernel). Idle keep-alive
    connections are closed at once: nothing is in flight on them (with --service-time, one whose answers
    are still queued closes when the last is written, and takes no request meanwhile). A request already
    begun (headers or body arriving) may finish within SHUTDOWN_GRACE — its answer says ``Connection:
    close`` — and the header and body timeouts still apply meanwhile. Answers are given a moment to
    flush; whatever is left after the grace is aborted by ``Collector.close``, which then writes the
    ledger's footer. The grace is measured on the collector's clock, like every other deadline.
    """
    clock = collector.clock
    collector.accepting = False
    server.close()
    collector.close_idle()
    deadline = clock() + SHUTDOWN_GRACE
    while clock() < deadline and collector.in_flight():
        await asyncio.sleep(DRAIN_POLL)
    collector.close_idle()
    flushed = min(deadline, clock() + FLUSH_TIME)
    while collector.connections and clock() < flushed:
        await asyncio.sleep(DRAIN_POLL)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 1.0)


def run_process(
    config: CollectorConfig, sock: socket.socket, announce: Callable[[Collector], None] | None
) -> int:
    """Serve in this process until SIGTERM or SIGINT; returns 0 after a clean shutdown, 1 when the
    ledger could not be closed cleanly (its events are safe, but it has no footer)."""
    raise_fd_limit()
    loop = new_event_loop(config.uvloop)
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        collector = loop.run_until_complete(serve(config, sock, stop, announce))
    finally:
        loop.close()
    return 1 if collector.problems else 0


def _child(config: CollectorConfig, port: int, ready: multiprocessing.synchronize.Event) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards Ctrl-C as SIGTERM
    sock = listen_socket(config.host, port, reuse_port=True)
    sys.exit(run_process(config, sock, lambda _c: ready.set()))


def run_collector(config: CollectorConfig, announce: Callable[[str], None] = print) -> int:
    """The ``lossbench collector`` command: one or several processes; returns the exit status."""
    try:
        validate_config(config)
    except ValueError as exc:
        print(f"lossbench collector: {exc}", file=sys.stderr)
        return 2
    raise_fd_limit()
    if config.processes <= 1:
        sock = listen_socket(config.host, config.port, reuse_port=False)
        port = sock.getsockname()[1]
        return run_process(
            config,
            sock,
            lambda c: announce(
                f"lossbench collector listening on {url_for(config.host, port)} "
                f"(pid {os.getpid()}, ledger {c.ledger.path})"
            ),
        )
    holder = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((config.host.strip("[]"), config.port))  # bound, never listening: holds the port
    port = holder.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    children = []
    for _ in range(config.processes):
        ready = ctx.Event()
        proc = ctx.Process(target=_child, args=(replace(config, port=port), port, ready), daemon=False)
        proc.start()
        children.append((proc, ready))
    for proc, ready in children:
        if not ready.wait(10.0):
            print(f"collector process {proc.pid} did not start within 10 s", file=sys.stderr)
    holder.close()
    announce(
        f"lossbench collector listening on {url_for(config.host, port)} "
        f"({config.processes} processes, ledgers in {config.out}/received)"
    )

    def forward(signum: int, _frame: object) -> None:
        for proc, _ in children:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for proc, _ in children:
        proc.join()
        if proc.exitcode != 0:  # died, or could not close its ledger cleanly: say so
            print(f"collector process {proc.pid} exited with {proc.exitcode}", file=sys.stderr)
            status = 1
    return status


def url_for(host: str, port: int) -> str:
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{port}"


class CollectorThread:
    """A collector on its own event loop in a background thread: ``start()`` returns the bound port."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.collector: Collector | None = None
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return url_for(self.config.host, self.port)

    def start(self, timeout: float = 10.0) -> int:
        sock = listen_socket(self.config.host, self.config.port, reuse_port=False)
        self.port = sock.getsockname()[1]

        def main() -> None:
            loop = new_event_loop(self.config.uvloop)
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._stop = asyncio.Event()

            def ready(collector: Collector) -> None:
                self.collector = collector
                self._ready.set()

            try:
                loop.run_until_complete(serve(self.config, sock, self._stop, ready))
            except BaseException as exc:  # reported to the thread that waits in start()
                self._error = exc
                self._ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="lossbench-collector", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"collector did not start: {self._error!r}")
        return self.port

    def stats(self) -> dict[str, Any]:
        """A consistent snapshot of the counters, taken on the collector's own loop."""
        assert self._loop is not None and self.collector is not None
        collector = self.collector
        future = asyncio.run_coroutine_threadsafe(_snapshot(collector), self._loop)
        return future.result(5.0)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def __enter__(self) -> CollectorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _snapshot(collector: Collector) -> dict[str, Any]:
    return collector.stats_document()
