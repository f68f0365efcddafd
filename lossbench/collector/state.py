"""The shared state of one collector process: config, counters, live connections, and the ledger.

An event's ledger line reaches the kernel (``write(2)``) before its answer is sent, so an acknowledged event
survives ``kill -9``: a group commit at the end of each turn of the event loop writes the lines of every
event completed in that turn, on any connection, with one system call, and then sends their answers
(``Collector.commit``). If the line cannot be written (disk full, file not writable) the event is answered
503, counted in ``ledger_errors``, and nothing of it stays in the file (a partial line is cut back off): the
ledger holds every event answered 2xx and no event answered otherwise, and never a damaged line in its
middle. The rules as a whole are in ``lossbench.collector``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.collector.config import HEAD_SLICE, CollectorConfig, validate_config
from lossbench.collector.connection import BODY, HEADERS, IDLE, Connection, Event
from lossbench.collector.responses import CLOSE, GIF, REFUSALS, http_response
from lossbench.collector.service import CallLater, ServiceQueue, parse_service_time
from lossbench.collector.stats import Stats
from lossbench.contract.ledger import LedgerWriter, micro
from lossbench.contract.lines import ReceivedEvent, encode_lines

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Seconds on a monotonic clock: every timeout and deadline of the collector is measured on one."""


def event_line(event: Event, now: float) -> ReceivedEvent:
    """The ledger line of a valid event (docs/FORMATS.md); ``now``, the commit's time, to the microsecond."""
    event_id, tech, method, connection, ua = event
    return ReceivedEvent(id=event_id, tech=tech, m=method, t=now, c=connection, ua=ua or None)


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
    """Shared state of one collector process: config, ledger, counters and live connections.

    ``clock`` measures every timeout and deadline and every answer time (tests pass a fake one to step
    through them, and ``call_later`` to fire the service queue's timers on it; the running loop's by
    default); the ledger's times are wall-clock times (``time.time``) whatever it is. With
    ``--service-time``, ``service`` is the queue of virtual workers every answer goes through
    (``lossbench.collector.service``) and ``draw_service`` draws an event's service time; without, None.
    """

    def __init__(
        self, config: CollectorConfig, clock: Clock = time.monotonic, call_later: CallLater | None = None
    ) -> None:
        validate_config(config)
        self.config = config
        self.clock = clock
        self.stats = Stats()
        self.service: ServiceQueue | None = None
        self.draw_service: Callable[[], float] = lambda: 0.0
        if config.service_time is not None:
            self.service = ServiceQueue(config.service_workers, clock, call_later)
            rng = np.random.default_rng(config.service_seed)
            self.draw_service = parse_service_time(config.service_time).sampler(rng)
        self.ledger = ReceivedLedger(
            Path(config.out) / "received", "received", max_bytes=config.ledger_max_bytes
        )
        self.connections: set[Connection] = set()
        self.refused: set[Connection] = set()  # refused at accept, lingering until their 503 is read
        self.next_connection = 0
        self.accepting = True
        self.ledger_failing = False
        self.problems: list[str] = []  # what went wrong at close (set by the server)
        self.head_limit = config.max_url + config.max_header_bytes + HEAD_SLICE
        self.commit_queue: list[Connection] = []  # connections with answers waiting for the commit
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
        """The fixed answer ``kind`` (gif, preflight, accepted), built once per (keep-alive, origin)."""
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
            age = self.config.cors_max_age
            max_age = [("Access-Control-Max-Age", str(age))] if age >= 0 else []
            data = http_response(
                "204 No Content",
                [
                    *cors,
                    ("Access-Control-Allow-Methods", "POST, OPTIONS"),
                    ("Access-Control-Allow-Headers", "Content-Type"),
                    *max_age,
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
        """The counters as /stats serves them, with what is live right now."""
        self.stats.connections_open = len(self.connections)
        doc = self.stats.as_dict()
        # answers waiting for slow readers (bounded: reading pauses past the transport's high-water mark)
        doc["write_buffered"] = sum(
            c.transport.get_write_buffer_size() for c in self.connections if c.transport is not None
        )
        doc["requests_in_flight"] = sum(c.state in (HEADERS, BODY) for c in self.connections)
        doc["service"] = self.service_figures()
        return doc

    def service_figures(self) -> dict[str, Any]:
        """The ``service`` object of /stats: the --service-time spec, its workers, the seconds they were
        busy (service times of the jobs served), the seconds served (``Stats.served_seconds``), busy /
        (workers × served) (null without a service time), jobs not answered yet, and jobs left unanswered
        at shutdown."""
        config, stats = self.config, self.stats
        busy = 0.0 if self.service is None else self.service.busy_seconds
        elapsed = stats.served_seconds
        served = config.service_workers * elapsed
        utilisation = busy / served if self.service is not None and served > 0 else None
        return {
            "spec": config.service_time,
            "workers": config.service_workers,
            "busy_seconds": round(busy, 6),
            "elapsed_seconds": round(elapsed, 6),
            "utilisation": None if utilisation is None else round(utilisation, 6),
            "queued": 0 if self.service is None else self.service.jobs,
            "unanswered": stats.unanswered,
        }

    def queue_commit(self, conn: Connection) -> None:
        """Queue a connection's completed requests for the commit at the end of this loop turn."""
        self.commit_queue.append(conn)
        if not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self.commit)

    def commit(self) -> None:
        """Group commit: one ``write(2)`` for every event completed in this turn of the event loop, on any
        connection, then their answers (or, with --service-time, their jobs in the service queue). Every
        line of the batch carries the commit's time."""
        self._commit_scheduled = False
        queue = self.commit_queue
        if not queue:
            return
        self.commit_queue = []
        now = micro(time.time())
        lines = [event_line(p[0], now) for conn in queue for p in conn.pending if p[0] is not None]
        written = not lines or self.write_events(encode_lines(lines), len(lines))
        answered_at = self.clock()
        for conn in queue:
            conn.answer(written, answered_at)
        self.stats.fold(at_least=self.stats.FOLD_EVERY)

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
        now = self.clock()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.on_deadline()
        for conn in [c for c in self.refused if c.deadline <= now]:
            conn.abort()

    def in_flight(self) -> bool:
        """True while some connection has a request begun but not complete, or a complete one not yet
        answered (waiting in the service queue)."""
        if self.service is not None and self.service.jobs:
            return True
        return any(c.state in (HEADERS, BODY) for c in self.connections)

    def close_idle(self) -> None:
        """Close every connection with no request in progress and no answer waiting in the service queue
        (shutdown: they would only wait); one with answers waiting closes after the last of them."""
        self.commit()
        service = self.service
        for conn in list(self.connections):
            if conn.state == IDLE and (service is None or not service.has_jobs(conn)):
                conn.close()

    def close(self) -> list[str]:
        """Abort what is left, close the ledger (footer) and write the stats file.

        Returns the problems met (a footer or stats file that could not be written) instead of raising:
        the events already in the ledger are safe either way, and the caller decides the exit status.
        """
        problems: list[str] = []
        self.commit()
        if self.service is not None:  # past the grace: requests still queued are never answered
            self.stats.unanswered += self.service.cancel()
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
