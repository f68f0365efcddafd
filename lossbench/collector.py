"""The reference collector: counts exactly the events whose complete data it parsed.

Why not aiohttp's web server: its request handler drops a request whose bytes arrived in the same
read as the client's RST (``connection_lost`` sets ``force_close`` before the queued message is handled),
and it has no header or body read timeout. Both decide what counts as lost, so the collector is an asyncio
``Protocol`` on llhttp (``httptools``): an event is counted in the ``data_received`` call that completes
it, even if the client's RST follows in the same read. Its ledger line reaches the kernel (``write(2)``)
before its answer is sent, so an acknowledged event survives ``kill -9``: a group commit at the end of each
turn of the event loop writes the lines of every event completed in that turn, on any connection, with
one system call, and then sends their answers (``Collector.commit``).
If the line cannot be written (disk full, file not writable) the event is answered 503, counted in
``ledger_errors``, and nothing of it stays in the file (a partial line is cut back off): the ledger holds
every event answered 2xx and no event answered otherwise, and never a damaged line in its middle.

Bad input never stops the collector: every request that is not a valid one gets a 4xx (or 5xx) with a
fixed plain-text reason, is counted under ``refused`` in ``/stats`` by the names in ``REFUSALS``, and
closes its connection (requests before it on the same connection keep their answers; nothing after it
is read). Such a close lingers: the collector sends FIN after the answers and drops what still comes
until the client closes, because closing on unread bytes sends an RST that would destroy the answers
in the client's kernel. Nothing from a request is reflected in an answer except an ``Origin`` that is
on the ``allow_origins`` list.

Bounds on what one client can hold (slowloris, slow bodies, clients that never read):

- headers: ``header_timeout`` from the first byte of a request; URL ``max_url`` (414), headers
  ``max_header_bytes`` (431). httptools buffers a header line internally until it ends, so the bytes of an
  unfinished head are counted as they arrive (fed in slices of ``HEAD_SLICE``): at most
  ``max_url + max_header_bytes + 2 * HEAD_SLICE`` bytes of head are ever buffered per connection.
- bodies: ``body_timeout`` from the end of the headers, however slowly the bytes trickle; ``max_body``
  (413); chunked bodies are refused (411), so a body's size is known before it is read.
- idle keep-alive: ``idle_timeout``.
- a client that does not read its answers: reading pauses while the transport's write buffer is full,
  and a connection closed by the collector is aborted if it has not gone ``CLOSE_LINGER`` s later.
- connections: past ``max_connections`` open ones, a new connection gets a 503 (lingering too, so that
  it can be read) and is closed.

A sweeper checks deadlines a few times per shortest timeout instead of arming a timer per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench.ledger import LedgerWriter, dumps_line
from lossbench.responses import CLOSE, GIF, REFUSALS, http_response

if TYPE_CHECKING:
    from lossbench.protocol import CollectorProtocol

Event = tuple[str, str, str, int, str]
"""A valid event waiting for the commit: (id, tech, method, connection, User-Agent family or "")."""

log = logging.getLogger("lossbench.collector")

IDLE, HEADERS, BODY, CLOSING = range(4)
"""A connection's state: waiting for a request, reading its head, reading its body, going away."""

HEAD_SLICE = 16384
"""Bytes fed to the parser at a time while a head may be in progress (bounds head buffering)."""
CLOSE_LINGER = 5.0
"""Seconds a connection the collector closed may take to flush its answer before it is aborted."""


@dataclass
class CollectorConfig:
    """Everything that shapes the collector's behaviour; the CLI fills it from flags."""

    host: str = "127.0.0.1"
    port: int = 8787
    out: Path = Path("results/collector")
    processes: int = 1
    idle_timeout: float = 30.0
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_url: int = 8192
    max_header_bytes: int = 16384
    max_body: int = 65536
    max_connections: int = 10000
    cors_max_age: int = 0
    allow_origins: tuple[str, ...] = ("*",)
    ledger_max_bytes: int = 256 * 1024 * 1024
    uvloop: bool = True


@dataclass
class Stats:
    """Counters served at /stats and written next to the ledger at shutdown."""

    events: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    conn_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    preflights: int = 0
    pings: int = 0
    bodies_incomplete: int = 0
    headers_incomplete: int = 0
    header_timeouts: int = 0
    body_timeouts: int = 0
    idle_timeouts: int = 0
    connections_open: int = 0
    connections_total: int = 0
    connections_refused: int = 0
    connections_aborted: int = 0
    ledger_errors: int = 0
    started: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": dict(self.events),
            "requests": dict(self.requests),
            "refused": dict(self.refused),
            "conn_seconds": {k: round(v, 6) for k, v in self.conn_seconds.items()},
            "preflights": self.preflights,
            "pings": self.pings,
            "bodies_incomplete": self.bodies_incomplete,
            "headers_incomplete": self.headers_incomplete,
            "header_timeouts": self.header_timeouts,
            "body_timeouts": self.body_timeouts,
            "idle_timeouts": self.idle_timeouts,
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
            "connections_refused": self.connections_refused,
            "connections_aborted": self.connections_aborted,
            "ledger_errors": self.ledger_errors,
            "cpu_seconds": round(time.process_time(), 3),
            "started": self.started,
            "pid": os.getpid(),
        }


def validate_config(config: CollectorConfig) -> None:
    """Refuse a configuration that would put something unsafe in an answer (raises ValueError).

    An --allow-origin value is echoed in Access-Control-Allow-Origin: it must be one printable ASCII
    token, or a CR LF in it would let the command line inject headers into every answer.
    """
    for origin in config.allow_origins:
        if origin != "*" and not (origin and origin.isascii() and origin.isprintable() and " " not in origin):
            raise ValueError(f"--allow-origin {origin!r}: not a valid origin (scheme://host[:port] or *)")


def ua_family(user_agent: bytes) -> str:
    """The browser family of a User-Agent, from a fixed list (nothing from the request is written as it
    is): ``chromium`` (Chrome, Chromium and their headless builds), ``firefox``, ``safari``, ``other``."""
    if b"Chrome/" in user_agent or b"Chromium/" in user_agent:
        return "chromium"
    if b"Firefox/" in user_agent:
        return "firefox"
    if b"Safari/" in user_agent:
        return "safari"
    return "other"


def event_line(event: Event, now: float, stamp: str) -> bytes:
    """The ledger line of a valid event (docs/FORMATS.md): id first, at a fixed offset. ``stamp`` is
    ``now`` formatted once per commit. ``ua`` (the User-Agent family) only when the request had one: the
    socket client sends none, and its lines keep the shape compare reads fastest."""
    event_id, tech, method, connection, ua = event
    if '"' in event_id or "\\" in event_id:  # valid ids are printable ASCII: only these need escaping
        record = {"id": event_id, "tech": tech, "m": method, "t": round(now, 6), "c": connection}
        return dumps_line({**record, "ua": ua} if ua else record)
    end = f',"ua":"{ua}"}}\n' if ua else "}\n"
    return f'{{"id":"{event_id}","tech":"{tech}","m":"{method}","t":{stamp},"c":{connection}{end}'.encode()


class ReceivedLedger(LedgerWriter):
    """The collector's ledger: a failed write leaves nothing of itself behind (``LedgerWriter._write``), and
    the part goes on. If the file could not be cut back, the part ended at the failure and the next write
    starts a new part. A part that could not be opened (no room for its header) is removed and retried at
    the next write.
    """

    def append_events(self, data: bytes, lines: int) -> None:
        """Write ``lines`` encoded event lines at once; raises OSError with none of them in the file."""
        if self.fd < 0:
            self._open_next_part()
        self._write(data)
        self.lines_in_part += lines
        self.lines_total += lines
        if self.max_bytes and self.bytes_in_part >= self.max_bytes:
            with contextlib.suppress(OSError):  # the events are written; rotation is retried next time
                self._close_part()
                self._open_next_part()

    def _open_next_part(self) -> None:
        self.fd = -1
        try:
            super()._open_next_part()
        except OSError:
            # No room for the header (the writer closed the file): leave no headerless file behind.
            if self.path is not None:
                with contextlib.suppress(OSError):
                    self.path.unlink()
            raise


class Collector:
    """Shared state of one collector process: config, ledger, counters and live connections."""

    def __init__(self, config: CollectorConfig) -> None:
        validate_config(config)
        self.config = config
        self.stats = Stats()
        self.ledger = ReceivedLedger(
            Path(config.out) / "received", "received", max_bytes=config.ledger_max_bytes
        )
        self.connections: set[CollectorProtocol] = set()
        self.refused: set[CollectorProtocol] = set()  # refused at accept, lingering until their 503 is read
        self.next_connection = 0
        self.accepting = True
        self.ledger_failing = False
        self.problems: list[str] = []  # what went wrong at close (set by the server)
        self.head_limit = config.max_url + config.max_header_bytes + HEAD_SLICE
        self.commit_queue: list[CollectorProtocol] = []  # connections with answers waiting for the commit
        self._commit_scheduled = False
        self._responses: dict[tuple[str, bool, str], bytes] = {}
        self._refusals: dict[tuple[str, str], bytes] = {}

    # -- canned responses, cached by (kind, keep-alive, origin) ------------------------------------------
    def cors_origin(self, origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin to send, or None. A request's Origin is echoed only if listed."""
        allowed = self.config.allow_origins
        if "*" in allowed:
            return "*"
        if origin is not None and origin in allowed:
            return origin
        return None

    def response(self, kind: str, keep_alive: bool, origin: str | None = None) -> bytes:
        key = (kind, keep_alive, origin or "")
        cached = self._responses.get(key)
        if cached is not None:
            return cached
        conn = [] if keep_alive else CLOSE
        cors = [("Access-Control-Allow-Origin", origin)] if origin else []
        if origin and origin != "*":
            cors.append(("Vary", "Origin"))
        if kind == "gif":
            data = http_response(
                "200 OK",
                [("Content-Type", "image/gif"), ("Cache-Control", "no-store"), *cors, *conn],
                GIF,
            )
        elif kind == "preflight":
            data = http_response(
                "204 No Content",
                [
                    *cors,
                    ("Access-Control-Allow-Methods", "POST, OPTIONS"),
                    ("Access-Control-Allow-Headers", "Content-Type"),
                    ("Access-Control-Max-Age", str(self.config.cors_max_age)),
                    *conn,
                ],
            )
        elif kind == "accepted":
            data = http_response("204 No Content", [*cors, ("Cache-Control", "no-store"), *conn])
        else:
            raise KeyError(kind)
        self._responses[key] = data  # origins come from the configured list: the cache stays small
        return data

    def refuse(self, reason: str, allow: str = "") -> bytes:
        """Count a refusal and return its answer: fixed status and text from REFUSALS; closes the
        connection. ``allow`` is the Allow header of a 405."""
        self.stats.refused[reason] += 1
        key = (reason, allow)
        reply = self._refusals.get(key)
        if reply is None:
            status, text = REFUSALS[reason]
            headers = [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("X-Content-Type-Options", "nosniff"),
                ("Cache-Control", "no-store"),
            ]
            if allow:
                headers.append(("Allow", allow))
            reply = http_response(status, [*headers, *CLOSE], (text + "\n").encode())
            self._refusals[key] = reply
        return reply

    def stats_document(self) -> dict[str, Any]:
        self.stats.connections_open = len(self.connections)
        doc = self.stats.as_dict()
        # answers waiting for slow readers (bounded: reading pauses past the transport's high-water mark)
        doc["write_buffered"] = sum(
            c.transport.get_write_buffer_size() for c in self.connections if c.transport is not None
        )
        doc["requests_in_flight"] = sum(c.state in (HEADERS, BODY) for c in self.connections)
        return doc

    def queue_commit(self, conn: CollectorProtocol) -> None:
        """Queue a connection's completed requests for the commit at the end of this loop turn."""
        self.commit_queue.append(conn)
        if not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self.commit)

    def commit(self) -> None:
        """Group commit: one ``write(2)`` for every event completed in this turn of the event loop, on any
        connection, then their answers. Every line of the batch carries the commit's time."""
        self._commit_scheduled = False
        queue = self.commit_queue
        if not queue:
            return
        self.commit_queue = []
        now = time.time()
        stamp = f"{now:.6f}"
        lines = [event_line(event, now, stamp) for conn in queue for event, _, _ in conn.pending if event]
        written = not lines or self.write_events(b"".join(lines), len(lines))
        for conn in queue:
            conn.answer(written)

    def write_events(self, data: bytes, count: int) -> bool:
        """Write ``count`` event lines at once. False if the disk refused, and then none of these lines
        is in the ledger."""
        try:
            self.ledger.append_events(data, count)
        except OSError as exc:
            self.stats.ledger_errors += count
            if not self.ledger_failing:
                self.ledger_failing = True
                log.error("ledger %s not writable (%s): answering 503 until it is", self.ledger.path, exc)
            return False
        if self.ledger_failing:
            self.ledger_failing = False
            log.warning("ledger %s writable again", self.ledger.path)
        return True

    def sweep(self) -> None:
        """Close connections past their deadline (idle keep-alive, slow headers, slow body, no flush)."""
        self.commit()  # answers waiting for a commit are not late
        now = time.monotonic()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.on_deadline()
        for conn in [c for c in self.refused if c.deadline <= now]:
            conn.abort()

    def in_flight(self) -> bool:
        """True while some connection has a request begun but not complete."""
        return any(c.state in (HEADERS, BODY) for c in self.connections)

    def close_idle(self) -> None:
        """Close every connection with no request in progress (shutdown: they would only wait)."""
        self.commit()
        for conn in list(self.connections):
            if conn.state == IDLE:
                conn.close()

    def close(self) -> list[str]:
        """Abort what is left, close the ledger (footer) and write the stats file.

        Returns the problems met (a footer or stats file that could not be written) instead of raising:
        the events already in the ledger are safe either way, and the caller decides the exit status.
        """
        problems = []
        self.commit()
        for conn in [*self.connections, *self.refused]:
            conn.abort()
        try:
            self.ledger.close()
        except OSError as exc:
            problems.append(
                f"ledger {self.ledger.path} could not be closed cleanly ({exc}); its "
                f"{self.ledger.lines_total} event lines are there, but no footer: compare will report it "
                "incomplete"
            )
        stats_path = Path(self.config.out) / "received" / f"{self.ledger.name}.stats.json"
        try:
            stats_path.write_text(json.dumps(self.stats_document(), indent=1) + "\n")
        except OSError as exc:
            problems.append(f"stats file {stats_path} not written ({exc})")
            with contextlib.suppress(OSError):
                stats_path.unlink()  # half a stats file would only be a second problem for compare
        return problems
