"""The browser's network emulator: a SOCKS5 proxy (asyncio) that applies each visit's network draw.

This kernel has no netem and DevTools throttling delays only the response path, so Chromium reaches the
collector through this proxy, which plays the visit's network stage by stage:

- **DNS**: Chromium sends the host name (remote DNS, ``socks5://``); a host's first CONNECT from a visitor
  waits the visit's lookup cost, and the entry is then cached for ``DNS_TTL`` of *visit* time, as the
  socket client's cache (``lossbench.model.dns.DnsCache``, the same class).
- **connect**: the CONNECT reply is held one RTT (the TCP handshake).
- **one-way delays**: every chunk is delivered RTT/2 after it was written, the browser's chunks paced at
  the uplink rate first.
- **the end**: when the browser closes, bytes still in flight are delivered (``unload``) or dropped
  (``drop``: they were within the last one-way delay). ``Visitor.vanish`` (the page went away under
  ``drop``) drops every visitor's byte in flight at once and refuses its new connections.

Routing is by name and only to loopback: ``<tech>.<visit>.collector.lossbench.test`` goes to the collector
with visit ``<visit>``'s draw (one host per technique and visit keeps pools, preflight and DNS caches
apart, as the socket client's tabs are), the page hosts go to the page server without delay, and
anything else is refused and remembered (the safety test reads ``names``). The proxy also reads the
browser's requests as they pass (``RequestReader``) to learn when each event's data had left the
browser (its sent-ledger ``written``) and, for a lost one, which stage it was in.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field

from lossbench.contract.events import BadEvent, decode_event_json, decode_pixel_param
from lossbench.contract.techniques import Stage
from lossbench.model.dns import DnsCache

DOMAIN = "lossbench.test"
COLLECTOR_SUFFIX = f".collector.{DOMAIN}"
PAGE_HOSTS = (f"shop.{DOMAIN}", f"next.{DOMAIN}")
ALLOWED_SUFFIX = f".{DOMAIN}"
IDLE_CLOSE_LEAD = 0.05  # seconds before a compressed gap ends at which emulated idle closes happen
READ_SIZE = 65536


def collector_host(tech: str, visit_key: str) -> str:
    """The collector's name for one technique of one visit (a pool, a DNS entry, a preflight cache)."""
    return f"{tech}.{visit_key}{COLLECTOR_SUFFIX}"


@dataclass(frozen=True)
class Draw:
    """What the proxy applies to a visitor's connections: one visit's network draw and abort kind."""

    rtt: float
    dns: float
    uplink_bps: float | None = None
    abort: str = "unload"


@dataclass
class Request:
    """A request the browser wrote on a connection, as far as it got."""

    method: str
    target: str
    started: float  # wall time of its first byte from the browser
    event_id: str | None = None
    complete: float | None = None  # wall time its last byte left the browser
    answered: float | None = None  # wall time the first answer byte after it reached the browser


@dataclass
class ConnectionLog:
    """One CONNECT of a visitor's technique host: when it asked, looked up, connected; what it carried."""

    host: str
    asked: float
    looked_up: float | None = None
    connected: float | None = None
    closed: float | None = None
    ended: str | None = None  # how the browser ended it: "fin", "rst", "error"; None: not the browser
    requests: list[Request] = field(default_factory=list)


class Visitor:
    """One visit's network state in the proxy: its draw, clock mapping, DNS caches and connections."""

    def __init__(
        self,
        key: str,
        draw: Draw,
        *,
        started: float | None = None,
        breakpoints: list[tuple[float, float]] | None = None,
        idle_timeout: float | None = None,
        pinged: tuple[str, float] | None = None,
    ) -> None:
        self.key = key
        self.draw = draw
        self.started = time.time() if started is None else started  # wall time of visit time 0
        # (real offset, visit time) where idle time was compressed: visit time runs at rate 1 from each
        self.breakpoints = sorted(breakpoints or [(0.0, 0.0)])
        self.idle_timeout = idle_timeout  # the collector's, emulated across compressed gaps
        # (host, interval): the page pings that host every interval of visit time (the keep-alive timer),
        # in compressed gaps too, where no real ping is sent
        self.pinged = pinged
        self.dns: dict[str, DnsCache] = {}
        self.logs: list[ConnectionLog] = []
        self.relays: set[Relay] = set()
        self.vanished = False

    def visit_time(self, wall: float | None = None) -> float:
        """Visit time at wall time ``wall`` (now), undoing the compression of idle gaps."""
        real = (time.time() if wall is None else wall) - self.started
        offset, vt = self.breakpoints[0]
        for r, v in self.breakpoints:
            if r > real:
                break
            offset, vt = r, v
        return vt + (real - offset)

    def dns_wait(self, host: str) -> float:
        """Seconds this CONNECT waits for the host's lookup (a fresh entry costs nothing)."""
        return self.dns.setdefault(host, DnsCache()).wait(self.visit_time(), self.draw.dns)

    def vanish(self) -> None:
        """The network is gone (``drop`` at the page's exit): bytes in flight are lost, nothing more."""
        self.vanished = True
        for relay in list(self.relays):
            relay.abort(drop=True)

    def close_idle(self, visit_time: float) -> int:
        """Close connections the collector would have closed for idleness by ``visit_time``, except the one
        the page's pings would have kept busy (``pinged``)."""
        if self.idle_timeout is None:
            return 0
        self._ping_virtually(visit_time)
        closed = 0
        for relay in list(self.relays):
            if relay.idle() and relay.last_active_vt + self.idle_timeout <= visit_time:
                relay.abort(drop=False)
                closed += 1
        return closed

    def _ping_virtually(self, visit_time: float) -> None:
        """The pings of a compressed gap, on the pinged host's most recently used idle connection (the one
        a browser's pool hands out next): each moves its last activity on, as a ping on it would have."""
        if self.pinged is None or self.idle_timeout is None:
            return
        host, interval = self.pinged
        candidates = [r for r in self.relays if r.log is not None and r.log.host == host and r.idle()]
        if not candidates or interval >= self.idle_timeout:
            return
        relay = max(candidates, key=lambda r: r.last_active_vt)
        # a ping at every multiple of interval: never idle for idle_timeout, last active at the last one
        relay.last_active_vt = max(relay.last_active_vt, visit_time // interval * interval)


@dataclass(frozen=True)
class Route:
    port: int
    visitor: Visitor | None  # None: the page server, no emulated network


class RequestReader:
    """Follows the HTTP/1.1 requests in the bytes a browser writes on one connection (keeping only an
    event's body, which is small), to learn which event each request carries and when it was complete."""

    def __init__(self, log: ConnectionLog) -> None:
        self.log = log
        self.buffer = bytearray()
        self.request: Request | None = None  # begun, not complete
        self.in_body = False
        self.body_left = 0

    def feed(self, data: bytes, now: float) -> None:
        self.buffer += data
        while self.buffer:
            if self.request is None:
                method, _, rest = bytes(self.buffer.split(b"\r\n", 1)[0]).decode("latin-1").partition(" ")
                self.request = Request(method=method, target=rest.split(" ", 1)[0], started=now)
                self.log.requests.append(self.request)
            if not self.in_body:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._head(bytes(self.buffer[:end]))
                del self.buffer[: end + 4]
            if self.body_left > len(self.buffer):
                return
            body = bytes(self.buffer[: self.body_left])
            del self.buffer[: self.body_left]
            self._finish(now, body)

    def _head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        assert self.request is not None
        self.request.method, self.request.target = method, rest.rsplit(" ", 1)[0]
        self.body_left = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                with contextlib.suppress(ValueError):
                    self.body_left = int(value.strip())
        self.in_body = True

    def _finish(self, now: float, body: bytes) -> None:
        request = self.request
        assert request is not None
        request.complete = now
        request.event_id = _event_id(request, body)
        self.request, self.in_body, self.body_left = None, False, 0


def _event_id(request: Request, body: bytes) -> str | None:
    try:
        if request.method == "GET" and request.target.startswith("/p.gif?d="):
            return decode_pixel_param(request.target[len("/p.gif?d=") :].split("&", 1)[0])[0]
        if request.method == "POST" and body:
            return decode_event_json(body)[0]
    except BadEvent:
        return None
    return None


class Relay:
    """One proxied connection: two delayed one-way pipes between the browser and the target."""

    def __init__(
        self,
        visitor: Visitor | None,
        log: ConnectionLog | None,
        browser: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        target: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.visitor = visitor
        self.log = log
        self.browser_r, self.browser_w = browser
        self.target_r, self.target_w = target
        self.reader = RequestReader(log) if log is not None else None
        draw = visitor.draw if visitor is not None else None
        self.one_way = draw.rtt / 2 if draw is not None else 0.0
        self.uplink = draw.uplink_bps if draw is not None else None
        self.up: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        self.down: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        self.in_flight = 0  # chunks queued in either direction
        self.link_free = 0.0  # loop time at which the uplink is free again
        self.last_active_vt = visitor.visit_time() if visitor is not None else 0.0
        self.ended = 0  # directions whose end has been delivered
        self.done = asyncio.Event()

    def idle(self) -> bool:
        """Nothing in flight and no request waiting for its answer: the collector may close it."""
        if self.in_flight or self.log is None:
            return not self.in_flight
        return all(r.complete is not None and r.answered is not None for r in self.log.requests)

    def _touch(self) -> None:
        if self.visitor is not None:
            self.last_active_vt = self.visitor.visit_time()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(self._read_browser()),
            loop.create_task(self._deliver(self.up, self.target_w, upstream=True)),
            loop.create_task(self._read_target()),
            loop.create_task(self._deliver(self.down, self.browser_w, upstream=False)),
        ]
        try:
            await self.done.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (self.browser_w, self.target_w):
                with contextlib.suppress(Exception):
                    writer.close()

    async def _read_browser(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            ended = "fin"
            try:
                data = await self.browser_r.read(READ_SIZE)
            except (ConnectionError, OSError) as exc:
                data, ended = b"", "rst" if isinstance(exc, ConnectionResetError) else "error"
            now = loop.time()
            if not data:
                if self.log is not None and self.log.ended is None:
                    self.log.ended = ended
                break
            if self.reader is not None:
                self.reader.feed(data, time.time())
            self._touch()
            depart = now
            if self.uplink:
                depart = max(now, self.link_free) + len(data) * 8 / self.uplink
                self.link_free = depart
            self.in_flight += 1
            self.up.put_nowait((depart + self.one_way, data))
        # The browser closed (FIN or RST).
        if self.log is not None:
            self.log.closed = time.time()
        if self.visitor is not None and self.visitor.draw.abort == "drop":
            self.abort(drop=True)  # what it wrote in the last one-way delay is lost with it
            return
        self.up.put_nowait((max(loop.time(), self.link_free) + self.one_way, None))

    async def _read_target(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await self.target_r.read(READ_SIZE)
            except (ConnectionError, OSError):
                data = b""
            if data:
                self.in_flight += 1
            self.down.put_nowait((loop.time() + self.one_way, data or None))
            if not data:
                return

    async def _deliver(
        self, queue: asyncio.Queue[tuple[float, bytes | None]], writer: asyncio.StreamWriter, upstream: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            at, data = await queue.get()
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if data is None:  # that side ended: pass the FIN on
                with contextlib.suppress(Exception):
                    if writer.can_write_eof():
                        writer.write_eof()
                    await writer.drain()
                self.ended += 1
                if self.ended == 2 or not upstream:
                    self.done.set()  # the target's end ends the connection; the browser's waits for it
                return
            self.in_flight -= 1
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError):
                self.done.set()
                return
            self._touch()
            if not upstream and self.log is not None:
                wall = time.time()
                for request in self.log.requests:
                    if request.complete is not None and request.answered is None:
                        request.answered = wall
                        break

    def abort(self, *, drop: bool) -> None:
        """End the connection now. ``drop``: what is queued is lost and the target sees an RST;
        otherwise both sides see a FIN (the collector closing an idle connection)."""
        if drop:
            while not self.up.empty():
                self.up.get_nowait()
            _reset(self.target_w)
        if self.log is not None and self.log.closed is None:
            self.log.closed = time.time()
        self.done.set()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Socks5Proxy:
    """A SOCKS5 CONNECT proxy on loopback that routes test names to loopback ports, and nothing else."""

    def __init__(self, collector_port: int, page_port: int | None = None) -> None:
        self.collector_port = collector_port
        self.page_port = page_port
        self.visitors: dict[str, Visitor] = {}
        self.names: list[str] = []  # every name asked for, in order (the safety test reads it)
        self.refused: list[str] = []  # names or addresses refused
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.relays: set[Relay] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._clients: set[asyncio.Task[None]] = set()  # one per browser connection, cancelled at close

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.server = await asyncio.start_server(self._client, host, port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self.server is not None:
            self.server.close()
        for relay in list(self.relays):
            relay.abort(drop=False)
        for task in list(self._clients):  # a connection still waiting (a lookup, a connect) ends here
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)

    def add_visitor(self, visitor: Visitor, *, arm: bool = True) -> Visitor:
        """Register a visit (its names route from now on); ``arm``: its clock is set, arm its idle closes
        (else ``arm`` once ``visitor.started`` is known)."""
        self.visitors[visitor.key] = visitor
        if arm:
            self.arm(visitor)
        return visitor

    def arm(self, visitor: Visitor) -> None:
        """Arm the visit's emulated idle closes, just before each compressed gap ends."""
        loop = asyncio.get_running_loop()
        for offset, vt in visitor.breakpoints[1:]:
            delay = visitor.started + offset - IDLE_CLOSE_LEAD - time.time()
            self._timers.append(loop.call_later(max(0.0, delay), visitor.close_idle, vt))

    def remove_visitor(self, key: str) -> Visitor | None:
        return self.visitors.pop(key, None)

    def route(self, name: str) -> Route | None:
        """Where a name goes, or None: only the page hosts and collector hosts of known visits."""
        name = name.lower().rstrip(".")
        if name in PAGE_HOSTS and self.page_port is not None:
            return Route(self.page_port, None)
        if name.endswith(COLLECTOR_SUFFIX):
            labels = name[: -len(COLLECTOR_SUFFIX)].split(".")
            if len(labels) == 2 and labels[1] in self.visitors:
                return Route(self.collector_port, self.visitors[labels[1]])
        return None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            pass
        finally:
            self._clients.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, n_methods = await reader.readexactly(2)
        methods = await reader.readexactly(n_methods)
        if version != 5 or 0 not in methods:
            writer.write(b"\x05\xff")
            return
        writer.write(b"\x05\x00")
        version, command, _, atyp = await reader.readexactly(4)
        if atyp == 3:
            length = (await reader.readexactly(1))[0]
            name = (await reader.readexactly(length)).decode("ascii", "replace")
        elif atyp == 1:
            name = socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
        elif atyp == 4:
            name = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        else:
            raise ValueError("bad address type")
        await reader.readexactly(2)  # the port: the route decides where a name goes
        self.names.append(name)
        route = self.route(name) if command == 1 and atyp == 3 else None
        if route is None or (route.visitor is not None and route.visitor.vanished):
            if route is None:
                self.refused.append(name)
            writer.write(b"\x05\x04\x00\x01" + bytes(6))  # host unreachable
            await writer.drain()
            return
        visitor, log = route.visitor, None
        if visitor is not None:
            log = ConnectionLog(host=name, asked=time.time())
            visitor.logs.append(log)
            wait = visitor.dns_wait(name)
            if wait > 0:
                await asyncio.sleep(wait)
            log.looked_up = time.time()
        target = await asyncio.open_connection("127.0.0.1", route.port)
        if visitor is not None:
            await asyncio.sleep(visitor.draw.rtt)  # the TCP handshake
            if visitor.vanished:
                _reset(target[1])
                writer.write(b"\x05\x04\x00\x01" + bytes(6))
                return
            assert log is not None
            log.connected = time.time()
        writer.write(b"\x05\x00\x00\x01" + bytes(6))
        await writer.drain()
        relay = Relay(visitor, log, (reader, writer), target)
        self.relays.add(relay)
        if visitor is not None:
            visitor.relays.add(relay)
        try:
            await relay.run()
        finally:
            self.relays.discard(relay)
            if visitor is not None:
                visitor.relays.discard(relay)


def written_at(logs: list[ConnectionLog], event_id: str) -> Request | None:
    """The request that carried ``event_id`` completely out of the browser (at any time), if any."""
    for log in logs:
        for request in log.requests:
            if request.event_id == event_id and request.complete is not None:
                return request
    return None


def stage_at(logs: list[ConnectionLog], fired: float, gone: float, event_id: str) -> str:
    """Where an event fired at wall time ``fired`` was when the page went away at ``gone``, from its
    technique host's traffic: ``done`` (its data had left the browser), else the stage it was in —
    ``dns``, ``connect``, ``preflight`` (an OPTIONS unanswered), ``request`` (a request begun, not
    complete) — or ``unsent`` (nothing of it on the network: the browser had not written it).

    A connection still being opened counts whenever it was asked for: one opened before the event (a
    preconnect, a ping's) is one the event may be waiting for, as Chromium hands a request the pending
    connection of a ``<link rel=preconnect>`` rather than open another."""
    carried = written_at(logs, event_id)
    if carried is not None and carried.complete is not None and carried.complete <= gone:
        return Stage.DONE
    for log in logs:
        for request in log.requests:
            begun = fired <= request.started <= gone and request.method != "OPTIONS"
            if begun and (request.complete is None or request.complete > gone):
                return Stage.REQUEST
    pending = [
        g
        for g in logs
        if g.asked <= gone
        and (g.connected is None or g.connected > gone)
        and (g.asked >= fired or g.closed is None or g.closed > fired)  # not one given up before it
    ]
    if pending:
        log = pending[-1]
        return Stage.DNS if log.looked_up is None or log.looked_up > gone else Stage.CONNECT
    for log in logs:
        for request in log.requests:
            unanswered = request.answered is None or request.answered > gone
            if request.method == "OPTIONS" and fired <= request.started <= gone and unanswered:
                return Stage.PREFLIGHT
    return Stage.UNSENT


__all__ = [
    "ALLOWED_SUFFIX",
    "COLLECTOR_SUFFIX",
    "DOMAIN",
    "PAGE_HOSTS",
    "ConnectionLog",
    "Draw",
    "Request",
    "Socks5Proxy",
    "Visitor",
    "collector_host",
    "stage_at",
    "written_at",
]
