"""One collector connection: llhttp parsing, counting, answering, deadlines (routing is ``routes``).

See ``lossbench.collector`` for the rules it keeps (what counts, what is refused, what bounds a client).
Every deadline is set on the collector's clock (``Collector.clock``) and enforced by its sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

import httptools

from lossbench.collector.config import CLOSE_LINGER, HEAD_SLICE
from lossbench.collector.connection import BODY, CLOSING, HEADERS, IDLE, Pending
from lossbench.collector.responses import LEDGER_FAILED, TIMEOUT
from lossbench.collector.routes import Refused, route, ua_family
from lossbench.collector.service import Job
from lossbench.collector.state import Collector

log = logging.getLogger(__name__)

COMMIT_AT_ONCE = 64  # requests completed on one connection that are committed without waiting for the turn
JOBS_PER_CONNECTION = 64
"""--service-time: a connection with this many requests waiting for their answers is not read until fewer
are (a client pipelining requests faster than they are served holds a bounded queue, as one that does not
read its answers holds a bounded write buffer)."""


class _Stop(httptools.HttpParserCallbackError):
    """Raised inside a parser callback to stop parsing this connection on purpose."""


class CollectorProtocol(asyncio.Protocol):
    """One TCP connection: parse requests with llhttp, count events, answer, enforce deadlines."""

    __slots__ = (
        "body",
        "chunked",
        "clock",
        "collector",
        "config",
        "content_length",
        "content_type",
        "deadline",
        "head_bytes",
        "header_bytes",
        "held",
        "number",
        "opened",
        "origin",
        "parser",
        "pending",
        "queued",
        "refusal",
        "state",
        "stopped",
        "submitting",
        "tech",
        "transport",
        "ua",
        "url",
        "write_full",
    )

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.config = collector.config
        self.clock = collector.clock
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.number = 0
        self.opened = 0.0
        self.tech = ""  # technique of the first request, to attribute connection-seconds
        self.state = IDLE
        self.deadline = float("inf")
        self.pending: list[Pending] = []
        self.queued = False  # waiting in the collector's commit queue
        self.refusal: bytes | None = None
        self.stopped = False  # parsing stopped on purpose after a Connection: close answer
        self.submitting = False  # handing a commit's requests to the service queue (``_submit``)
        # Two reasons not to read the client, each set and cleared on its own (``_pause_or_resume``):
        self.write_full = False  # its write buffer is over the high-water mark (it does not read answers)
        self.held = False  # JOBS_PER_CONNECTION of its requests wait for their answers (--service-time)
        self.head_bytes = 0
        self._reset_request()

    def _reset_request(self) -> None:
        self.url = b""
        self.body: bytes | bytearray = b""
        self.header_bytes = 0
        self.origin: str | None = None
        self.content_type = b""
        self.content_length: int | None = None
        self.chunked = False
        self.ua = ""

    # -- connection lifecycle ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        c = self.collector
        c.stats.connections_total += 1
        if len(c.connections) >= self.config.max_connections or not c.accepting:
            c.stats.connections_refused += 1
            transport.write(c.refuse("too_many_connections"))  # type: ignore[attr-defined]
            self.parser = None
            if len(c.refused) < self.config.max_connections:  # linger, so the client can read the 503
                c.refused.add(self)
                self.close(linger=True)
            else:
                self.state = CLOSING
                transport.close()
            return
        c.next_connection += 1
        self.number = c.next_connection
        self.opened = self.clock()
        self.deadline = self.opened + self.config.idle_timeout
        c.connections.add(self)  # TCP_NODELAY: both uvloop and asyncio set it on every TCP transport

    def connection_lost(self, exc: Exception | None) -> None:
        c = self.collector
        c.refused.discard(self)
        if self in c.connections:
            c.connections.discard(self)
            c.stats.conn_seconds[self.tech] += self.clock() - self.opened
            if self.state == BODY:
                c.stats.bodies_incomplete += 1
            elif self.state == HEADERS:
                c.stats.headers_incomplete += 1
        self.state = CLOSING
        self.transport = None
        self.parser = None  # breaks the parser <-> protocol cycle: freed at once, not at the next GC

    def pause_writing(self) -> None:
        """The client does not read its answers: stop reading its requests until it does."""
        self.write_full = True
        self._pause_or_resume()

    def resume_writing(self) -> None:
        self.write_full = False
        self._pause_or_resume()

    def _pause_or_resume(self) -> None:
        """The one place reading is paused and resumed: paused while the write buffer is full or too many
        jobs wait (``held``), resumed when neither holds, unless closing (``close`` with ``linger``
        resumes reading itself, to drain what the client still sends)."""
        transport = self.transport
        if transport is None:
            return
        with contextlib.suppress(RuntimeError, AttributeError):
            if self.write_full or self.held:
                transport.pause_reading()
            elif self.state != CLOSING:
                transport.resume_reading()

    def close(self, linger: bool = False) -> None:
        """Close after the answers are flushed; abort if that takes longer than CLOSE_LINGER.

        ``linger``: the client may still be sending (a body or requests behind a refused one). Closing a
        socket with unread data makes the kernel send an RST, and an RST makes the client's kernel throw
        away answers it has received but not yet read: the client would never see its 4xx, or the 2xx of
        the event before it. So the collector only half-closes (FIN after the answers), reads and drops
        whatever still comes, and closes when the client does (or after CLOSE_LINGER).
        """
        self.state = CLOSING
        self.deadline = self.clock() + CLOSE_LINGER
        transport = self.transport
        if transport is None:
            return
        if linger and transport.can_write_eof():
            transport.write_eof()
            with contextlib.suppress(RuntimeError, AttributeError):
                transport.resume_reading()  # in case a full write buffer had paused it
        else:
            transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def on_deadline(self) -> None:
        state = self.state
        service = self.collector.service
        if service is not None and service.has_jobs(self):
            self._deadline_behind_jobs(state)
            return
        if state == CLOSING:  # closed by us, but its answer never drained: the client is not reading
            self.collector.stats.connections_aborted += 1
            self.deadline = float("inf")
            self.abort()
            return
        reply = self._count_timeout(state)
        if self.transport is not None and reply is not None:
            self.transport.write(reply)
        self.close()

    def _count_timeout(self, state: int) -> bytes | None:
        """Count the timeout of an open connection in ``state``; the 408 to send, if a request was begun."""
        stats = self.collector.stats
        if state == IDLE:
            stats.idle_timeouts += 1
            return None
        if state == HEADERS:
            stats.header_timeouts += 1
        else:
            stats.body_timeouts += 1
            stats.bodies_incomplete += 1  # counted here, not again in connection_lost
        return TIMEOUT

    def _deadline_behind_jobs(self, state: int) -> None:
        """A deadline passed while answers wait in the service queue. Only a request in progress has one
        then (an idle or closing connection has none until its last answer, ``_submit``): it timed out,
        and its 408 follows the queued answers, then the connection closes. A refused request is not in
        progress (``data_received`` made it closing): its refusal follows them instead, not a 408."""
        self.deadline = math.inf
        if state in (HEADERS, BODY):
            reply = self._count_timeout(state)
            if self.refusal is None:
                self.refusal = reply
            self.state = CLOSING

    # -- parsing --------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.state == CLOSING or self.parser is None:
            return
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade:
            if self.refusal is None:
                self.refusal = self.collector.refuse("upgrade")
            self.state = CLOSING
        except httptools.HttpParserError as exc:
            if self.refusal is None and not self.stopped:
                cause = exc.__context__
                if cause is not None and not isinstance(cause, httptools.HttpParserCallbackError):
                    log.error("collector: internal error on connection %d", self.number, exc_info=cause)
                    self.refusal = self.collector.refuse("internal_error")
                else:
                    self.refusal = self.collector.refuse("bad_http")
            # Refused (or answered with Connection: close): no longer in a request, so neither timed out
            # nor in flight while its refusal waits for the answers before it; it closes after them.
            self.state = CLOSING
        self._queue_for_commit()

    def _feed(self, data: bytes) -> None:
        """Feed the parser; count the bytes of an unfinished head, which httptools buffers unseen."""
        parser = self.parser
        assert parser is not None
        size = len(data)
        if size <= HEAD_SLICE:
            parser.feed_data(data)
            if self.state == HEADERS:
                self._count_head(size)
            return
        view = memoryview(data)
        for start in range(0, size, HEAD_SLICE):
            parser.feed_data(view[start : start + HEAD_SLICE])
            if self.state == HEADERS:
                self._count_head(min(HEAD_SLICE, size - start))

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.collector.head_limit:
            self._stop(self.collector.refuse("headers_too_large"))

    def _queue_for_commit(self) -> None:
        """Hand this read's completed requests to the collector's group commit (``Collector.commit``).

        Answers wait for the commit, at the end of this turn of the event loop: one ``write(2)`` puts the
        events of every connection read in this turn in the ledger, and only then are their answers sent.
        """
        if not self.queued and (self.pending or self.refusal is not None or self.state == CLOSING):
            self.queued = True
            self.collector.queue_commit(self)
        if len(self.pending) >= COMMIT_AT_ONCE:
            # Pipelined requests: commit now, so that a full write buffer pauses reading at once (the
            # event loop may otherwise read this connection again before the end of its turn).
            self.collector.commit()

    def answer(self, written: bool, now: float) -> None:
        """Send the answers of the requests queued since the last commit, in order; ``written`` says
        whether their ledger lines reached the kernel; ``now`` is the commit's time on the collector's
        clock. Nothing is acknowledged unless it did: if the write failed, the first event gets a 503 and
        the connection closes. Each answer is timed (complete to written) by the kind ``route`` gave it.
        With --service-time the answers go to the service queue instead, as jobs (``_submit``)."""
        self.queued = False
        pending = self.pending
        self.pending = []
        stats = self.collector.stats
        if self.collector.service is not None:
            self._submit(pending, written, now)
            return
        events, times = stats.events, stats.answer_times
        out = []
        first = None
        for event, tech, reply, kind, done_at in pending:
            if kind is not None:  # a gone client's answer is timed too: the collector's time is the same
                times[kind].append(now - done_at)
                if first is None:
                    first = done_at
            if event is None:
                out.append(reply)
            elif written:
                events[tech] += 1
                out.append(reply)
            else:
                out.append(LEDGER_FAILED)
                self.refusal = None
                self.state = CLOSING
                break
        if first is not None:
            stats.served(first, now)
        transport = self.transport
        if transport is None:  # the client is gone: its events still count, nobody reads the answers
            return
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        self._after_answers()

    def _after_answers(self) -> None:
        """Every answer is written: send the refusal that stopped parsing, if any, and close if closing."""
        transport = self.transport
        if transport is None:
            return
        if self.refusal is not None:
            transport.write(self.refusal)
            self.refusal = None
            self.state = CLOSING
        if self.state == CLOSING:
            self.close(linger=True)

    def _submit(self, pending: list[Pending], written: bool, now: float) -> None:
        """--service-time: each request becomes a job in the service queue, its answer written when the
        job ends (``job_done``); an event whose line was written takes a drawn service time."""
        collector = self.collector
        service = collector.service
        assert service is not None
        events, draw = collector.stats.events, collector.draw_service
        self.submitting = True  # answers of jobs that end at once wait for the rest of the batch here
        try:
            for event, tech, reply, kind, done_at in pending:
                cost = 0.0
                if event is not None:
                    if not written:
                        service.submit(Job(self, LEDGER_FAILED, kind, done_at, 0.0), now)
                        self.refusal = None
                        self.state = CLOSING
                        break
                    events[tech] += 1
                    cost = draw()
                elif kind is None and not service.has_jobs(self) and self.transport is not None:
                    # /stats and /healthz are lossbench's own monitoring, not the emulated collector's
                    # work: answered at once, or an overloaded collector would hide its own figures
                    self.transport.write(reply)
                    continue
                service.submit(Job(self, reply, kind, done_at, cost), now)
        finally:
            self.submitting = False
        jobs = service.jobs_of(self)
        held = jobs >= JOBS_PER_CONNECTION
        if held != self.held:
            self.held = held
            self._pause_or_resume()
        if not jobs:
            self._jobs_done(now)
        elif self.state in (IDLE, CLOSING):  # not idle while its answers wait: ``_jobs_done`` starts that
            self.deadline = math.inf

    def job_done(self, job: Job, now: float) -> None:
        """A job of this connection ended (``ServiceQueue``): time it and write its answer; after its
        last job, what waited for the answers (a refusal, the close, the idle timeout)."""
        if job.kind is not None:
            stats = self.collector.stats
            stats.answer_times[job.kind].append(now - job.done_at)
            stats.served(job.done_at, now)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(job.reply)
        service = self.collector.service
        if service is None or self.submitting:
            return
        if self.held and service.jobs_of(self) < JOBS_PER_CONNECTION:
            self.held = False
            self._pause_or_resume()  # reads again, unless its write buffer is full (or it is closing)
        if not service.has_jobs(self):
            self._jobs_done(now)

    def _jobs_done(self, now: float) -> None:
        """Its last answer is written: an idle connection's idle time starts now, or, if the collector is
        shutting down, it closes (``Collector.close_idle`` left it open for these answers), with FIN after
        them, so that a request the client sends meanwhile does not make its kernel drop them."""
        if self.state == IDLE:
            if not self.collector.accepting:
                self.close(linger=True)
                return
            self.deadline = now + self.config.idle_timeout
        self._after_answers()

    def on_message_begin(self) -> None:
        self._reset_request()
        self.head_bytes = 0
        self.state = HEADERS
        self.deadline = self.clock() + self.config.header_timeout

    def on_url(self, url: bytes) -> None:
        self.url = self.url + url if self.url else url
        if len(self.url) > self.config.max_url:
            self._stop(self.collector.refuse("uri_too_long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.config.max_header_bytes:
            self._stop(self.collector.refuse("headers_too_large"))
        lname = name.lower()
        if lname == b"origin":
            self.origin = value.decode("latin-1")
        elif lname == b"content-type":
            self.content_type = value
        elif lname == b"content-length":
            try:
                self.content_length = int(value)
            except ValueError:
                self.content_length = -1
        elif lname == b"transfer-encoding":
            self.chunked = True
        elif lname == b"user-agent":
            self.ua = ua_family(value)

    def on_headers_complete(self) -> None:
        if self.chunked or self.content_length:
            if self.chunked:
                self._stop(self.collector.refuse("chunked"))
            if self.content_length is not None and self.content_length > self.config.max_body:
                self._stop(self.collector.refuse("body_too_large"))
            self.state = BODY
            self.deadline = self.clock() + self.config.body_timeout

    def on_body(self, body: bytes) -> None:
        if not self.body:
            self.body = body
        else:
            if isinstance(self.body, bytes):
                self.body = bytearray(self.body)
            self.body += body
        if len(self.body) > self.config.max_body:
            self._stop(self.collector.refuse("body_too_large"))

    def _stop(self, refusal: bytes) -> None:
        """Refuse the current request and stop parsing this connection."""
        if self.refusal is None:
            self.refusal = refusal
        raise _Stop("refused")

    def on_message_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        keep_alive = parser.should_keep_alive() and self.collector.accepting
        self.state = IDLE if keep_alive else CLOSING  # complete: no longer in flight (/stats says so)
        try:
            event, tech, reply, kind = route(self.collector, self, parser.get_method(), keep_alive)
        except Refused as refused:
            self.refusal = refused.reply
            raise _Stop("refused") from None
        self.tech = self.tech or tech
        now = self.clock()  # complete: its answer is timed from here
        self.pending.append((event, tech, reply, kind, now))
        if keep_alive:
            self.deadline = now + self.config.idle_timeout
        else:
            # Answered with Connection: close: requests pipelined behind it are not read at all.
            self.stopped = True
            raise _Stop("closing")
