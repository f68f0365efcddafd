"""The collector's deadlines on a fake clock: every timeout, and the shutdown's grace, is stepped through
exactly, with no socket and no wall-clock window. The connection is a real ``CollectorProtocol`` fed bytes by
hand; its transport only records what the collector does to it. What real sockets must show (the 408 reaches
the client) is in tests/integration/collector/test_held_connections.py.
"""

from __future__ import annotations

import asyncio
import heapq
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from lossbench.collector.config import CLOSE_LINGER, CollectorConfig
from lossbench.collector.connection import BODY, CLOSING, HEADERS, IDLE
from lossbench.collector.protocol import JOBS_PER_CONNECTION, CollectorProtocol
from lossbench.collector.server import DRAIN_POLL, FLUSH_TIME, SHUTDOWN_GRACE, drain
from lossbench.collector.state import Collector
from lossbench.contract.latency import bucket_of

STEP = 0.125  # a power of two: the fake times add up exactly


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingTransport(asyncio.Transport):
    """Records what the collector writes and how it lets the connection go."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.eof = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted or self.eof

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_write_buffer_size(self) -> int:
        return 0


class Bench:
    """A collector on a fake clock, and connections to it."""

    def __init__(self, config: CollectorConfig) -> None:
        self.clock = FakeClock()
        self.timers: list[tuple[float, int, FakeTimer]] = []  # the service queue's, on the fake clock
        self.collector = Collector(config, clock=self.clock, call_later=self.call_later)

    def call_later(self, delay: float, fn: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(fn)
        heapq.heappush(self.timers, (self.clock.now + delay, len(self.timers) + id(timer), timer))
        return timer

    def connect(self) -> tuple[CollectorProtocol, RecordingTransport]:
        conn = CollectorProtocol(self.collector)
        transport = RecordingTransport()
        conn.connection_made(transport)
        return conn, transport

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass, sweeping as the sweeper would at every step."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.advance(STEP)
            while self.timers and self.timers[0][0] <= self.clock.now:
                heapq.heappop(self.timers)[2].fire()
            self.collector.sweep()


class FakeTimer:
    """A timer of the service queue (``loop.call_later``'s handle), fired by ``Bench.wait`` when due."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        if not self.cancelled:
            self.fn()


def on_loop(test: Callable[[Bench], Awaitable[None] | None], config: CollectorConfig) -> None:
    """Run ``test`` inside an event loop: the collector schedules its group commit on the running loop."""

    async def main() -> None:
        bench = Bench(config)
        try:
            done = test(bench)
            if done is not None:
                await done
        finally:
            bench.collector.close()

    asyncio.run(main())


@pytest.fixture
def config(tmp_path: Path) -> CollectorConfig:
    return CollectorConfig(port=0, out=tmp_path, header_timeout=1.0, body_timeout=1.0, idle_timeout=2.0)


HEAD = b"GET /p.gif?d=eyJpZCI6InNsb3ciLCJ0ZWNoIjoicGl4ZWwifQ HTTP/1.1\r\nHost: t\r\nX-Slow: "
BODY_BYTES = b'{"id":"slow-body","tech":"ajax"}'
POST_HEAD = b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
    len(BODY_BYTES) + 1000
)


def test_the_header_timeout_runs_from_the_first_byte_however_steady_the_trickle(
    config: CollectorConfig,
) -> None:
    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        bench.wait(0.5)  # idle before the request: the header timeout starts with its first byte
        started = bench.clock.now
        for byte in HEAD:  # one byte a step, for as long as the collector reads
            conn.data_received(bytes([byte]))
            bench.wait(STEP)
            if transport.written:
                break
        assert bench.clock.now == started + config.header_timeout
        assert transport.written.startswith(b"HTTP/1.1 408"), bytes(transport.written)
        assert transport.closed and conn.state == CLOSING
        stats = bench.collector.stats
        assert stats.header_timeouts == 1 and stats.events == {} and stats.idle_timeouts == 0

    on_loop(test, config)


def test_no_header_timeout_a_step_before_it_is_due(config: CollectorConfig) -> None:
    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.data_received(HEAD)
        bench.wait(1.0 - STEP)
        assert conn.state == HEADERS and not transport.closed and bench.collector.stats.header_timeouts == 0
        bench.wait(STEP)
        assert transport.written.startswith(b"HTTP/1.1 408") and bench.collector.stats.header_timeouts == 1

    on_loop(test, config)


def test_the_body_timeout_runs_from_the_end_of_the_headers_however_slow_the_body(
    config: CollectorConfig,
) -> None:
    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.data_received(POST_HEAD[:10])
        bench.wait(0.75)  # the head takes its time, within the header timeout
        conn.data_received(POST_HEAD[10:])
        assert conn.state == BODY
        for i in range(7):  # a byte of body every step: still cut 1.0 s after the headers
            conn.data_received(BODY_BYTES[i : i + 1])
            bench.wait(STEP)
        assert transport.written == b"" and bench.collector.stats.body_timeouts == 0
        bench.wait(STEP)
        assert transport.written.startswith(b"HTTP/1.1 408"), bytes(transport.written)
        stats = bench.collector.stats
        assert stats.body_timeouts == 1 and stats.bodies_incomplete == 1 and stats.header_timeouts == 0
        conn.connection_lost(None)
        assert stats.bodies_incomplete == 1, "counted once, at the timeout, not again when the client goes"
        assert stats.events == {} and bench.collector.ledger.lines_total == 0

    on_loop(test, config)


def test_an_idle_keep_alive_connection_is_closed_without_an_answer(config: CollectorConfig) -> None:
    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        bench.wait(1.0)
        conn.data_received(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        bench.wait(STEP)  # the sweep commits: the answer is sent, the connection idles again
        assert transport.written.startswith(b"HTTP/1.1 200") and conn.state == IDLE
        answered = len(transport.written)
        bench.wait(2.0 - 2 * STEP)  # the idle timeout restarts at the end of the request
        assert not transport.closed
        bench.wait(STEP)
        assert transport.closed and len(transport.written) == answered
        assert bench.collector.stats.idle_timeouts == 1

    on_loop(test, config)


def test_a_closed_connection_that_never_drains_is_aborted_after_the_linger(config: CollectorConfig) -> None:
    """A refused request lingers (FIN after the answer); a client that never goes is aborted CLOSE_LINGER
    seconds later, and only then."""

    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.data_received(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")
        bench.wait(STEP)
        assert transport.written.startswith(b"HTTP/1.1 404") and transport.eof and conn.state == CLOSING
        bench.wait(CLOSE_LINGER - STEP)
        assert not transport.aborted
        bench.wait(STEP)
        assert transport.aborted and bench.collector.stats.connections_aborted == 1

    on_loop(test, config)


def test_a_connection_over_the_cap_gets_its_503_then_is_aborted_after_the_linger(
    config: CollectorConfig,
) -> None:
    def test(bench: Bench) -> None:
        bench.connect()
        _, transport = bench.connect()
        assert transport.written.startswith(b"HTTP/1.1 503") and transport.eof
        bench.wait(CLOSE_LINGER - STEP)
        assert not transport.aborted
        bench.wait(STEP)
        assert transport.aborted and bench.collector.stats.connections_refused == 1

    on_loop(test, replace(config, max_connections=1))


def test_connection_seconds_are_measured_on_the_collector_clock(config: CollectorConfig) -> None:
    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.data_received(b"GET /ping.gif?t=pixel-keepalive HTTP/1.1\r\nHost: t\r\n\r\n")
        bench.wait(1.5)
        conn.connection_lost(None)
        assert transport.written.startswith(b"HTTP/1.1 200")
        assert bench.collector.stats.conn_seconds == {"pixel-keepalive": 1.5}

    on_loop(test, config)


@pytest.mark.parametrize(
    ("timeouts", "every"),
    [
        ((10.0, 10.0, 30.0), 0.2),  # the defaults: a second at most, five sweeps in it
        ((0.5, 10.0, 30.0), 0.1),  # a fifth of the shortest timeout
        ((10.0, 10.0, 0.05), 0.02),  # never more often than every 20 ms
    ],
)
def test_the_sweeper_checks_a_few_times_per_shortest_timeout(
    timeouts: tuple[float, float, float], every: float
) -> None:
    header, body, idle = timeouts
    config = CollectorConfig(header_timeout=header, body_timeout=body, idle_timeout=idle)
    assert config.sweep_every == pytest.approx(every)


# -- shutdown: the grace for requests in flight -----------------------------------------------------------


class StoppedServer:
    """The listening server ``drain`` stops: nothing to wait for."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        pass


EXACT_POST = (
    b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    % len(BODY_BYTES)
)
LOOKS = 5 * DRAIN_POLL
"""Real seconds in which drain looks again, however loaded the machine: its sleep is due before ours."""
HANG = 30.0  # real seconds: only a drain that waits on the frozen clock gets near it


async def turns(until: Callable[[], bool], most: int = 100) -> None:
    """Let the event loop run until ``until()`` (the collector's commit is one turn away)."""
    for _ in range(most):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not so after {most} turns of the event loop")


def test_shutdown_ends_when_the_last_request_in_flight_is_answered(config: CollectorConfig) -> None:
    """The clock never moves: drain can only end because the work is done, never because the grace ran out.
    Idle connections are closed at once; the request in flight finishes, with Connection: close."""

    async def test(bench: Bench) -> None:
        idle, idle_transport = bench.connect()
        busy, busy_transport = bench.connect()
        busy.data_received(EXACT_POST + BODY_BYTES[:10])
        server = StoppedServer()
        draining = asyncio.create_task(drain(bench.collector, server))
        await asyncio.sleep(LOOKS)
        assert server.closed and not bench.collector.accepting and not draining.done()
        assert idle_transport.closed and busy.state == BODY and not busy_transport.closed
        idle.connection_lost(None)
        busy.data_received(BODY_BYTES[10:])
        await turns(lambda: busy_transport.eof)  # answered, FIN sent: the client goes
        assert (
            busy_transport.written.startswith(b"HTTP/1.1 204")
            and b"Connection: close" in busy_transport.written
        )
        busy.connection_lost(None)
        await asyncio.wait_for(draining, HANG)
        assert bench.collector.stats.events == {"ajax": 1}

    on_loop(test, config)


def test_a_request_that_never_finishes_gets_the_grace_and_no_more(config: CollectorConfig) -> None:
    async def test(bench: Bench) -> None:
        busy, busy_transport = bench.connect()
        busy.data_received(HEAD)
        draining = asyncio.create_task(drain(bench.collector, StoppedServer()))
        await asyncio.sleep(LOOKS)  # drain starts: the grace runs from now
        bench.clock.advance(SHUTDOWN_GRACE - STEP)
        await asyncio.sleep(LOOKS)
        assert not draining.done()
        bench.clock.advance(STEP)
        await asyncio.wait_for(draining, HANG)  # no flush time after the grace: it is spent
        assert busy.state == HEADERS and not busy_transport.aborted  # Collector.close aborts it next

    on_loop(test, config)


def test_answers_get_the_flush_time_then_shutdown_goes_on(config: CollectorConfig) -> None:
    """A client that neither reads its last answer nor closes holds the shutdown FLUSH_TIME at most."""

    async def test(bench: Bench) -> None:
        busy, busy_transport = bench.connect()
        busy.data_received(EXACT_POST + BODY_BYTES[:10])
        draining = asyncio.create_task(drain(bench.collector, StoppedServer()))
        await asyncio.sleep(LOOKS)
        busy.data_received(BODY_BYTES[10:])
        await turns(lambda: busy_transport.eof)  # answered with Connection: close; the client stays
        await asyncio.sleep(LOOKS)  # drain sees nothing in flight: the flush time runs from now
        bench.clock.advance(FLUSH_TIME - STEP)
        await asyncio.sleep(LOOKS)
        assert not draining.done()
        bench.clock.advance(STEP)
        await asyncio.wait_for(draining, HANG)

    on_loop(test, config)


# -- --service-time: answers wait for their jobs, on the same fake clock ------------------------------------

PIXEL = b"GET /p.gif?d=eyJpZCI6InNsb3ciLCJ0ZWNoIjoicGl4ZWwifQ HTTP/1.1\r\nHost: t\r\n\r\n"  # id "slow"


def test_the_ledger_line_is_written_at_once_and_the_answer_when_its_service_ends(
    config: CollectorConfig,
) -> None:
    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.data_received(PIXEL)
        bench.wait(STEP)  # the sweep commits: the line is written, the job queued
        assert bench.collector.ledger.lines_total == 1 and bench.collector.stats.events == {"pixel": 1}
        bench.wait(0.5 - 2 * STEP)
        assert transport.written == b""
        bench.wait(STEP)
        assert transport.written.startswith(b"HTTP/1.1 200") and conn.state == IDLE
        stats = bench.collector.stats
        assert stats.answer_times["event"] == [0.5]
        stats.fold()
        assert stats.answers["event"].quantile(0.5) == pytest.approx(0.5, rel=0.06)
        assert stats.answers["event"].total == 1 and stats.served_seconds == 0.5
        figures = bench.collector.service_figures()
        assert figures["busy_seconds"] == 0.5 and figures["utilisation"] == 1.0 and figures["queued"] == 0

    on_loop(test, replace(config, service_time="0.5s"))


def test_a_connection_waiting_for_its_answer_is_not_idle(config: CollectorConfig) -> None:
    """The answer takes longer than the idle timeout (2 s): the idle time starts when it is written."""

    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.data_received(PIXEL)
        bench.wait(3.0)
        assert transport.written.startswith(b"HTTP/1.1 200") and not transport.closed
        bench.wait(2.0 - STEP)
        assert not transport.closed and bench.collector.stats.idle_timeouts == 0
        bench.wait(STEP)
        assert transport.closed and bench.collector.stats.idle_timeouts == 1

    on_loop(test, replace(config, service_time="3"))


def test_the_idle_time_starts_when_the_answer_is_written_after_a_wait_shorter_than_it(
    config: CollectorConfig,
) -> None:
    """The answer takes 1.5 s, less than the idle timeout (2 s): the connection still gets its whole idle
    timeout after the answer, not what is left of one started when the request was complete."""

    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.data_received(PIXEL)
        bench.wait(1.5)
        assert transport.written.startswith(b"HTTP/1.1 200") and conn.state == IDLE
        bench.wait(2.0 - STEP)
        assert not transport.closed and bench.collector.stats.idle_timeouts == 0
        bench.wait(STEP)
        assert transport.closed and bench.collector.stats.idle_timeouts == 1

    on_loop(test, replace(config, service_time="1.5"))


def test_a_pipelined_request_behind_queued_answers_restarts_the_idle_time_at_the_last_answer(
    config: CollectorConfig,
) -> None:
    """A second request completes while the first waits: the idle time starts at the second's answer."""

    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.data_received(PIXEL)
        bench.wait(0.5)
        conn.data_received(PIXEL)
        bench.wait(1.5)  # the first answer at 1 s, the second at 2 s
        assert transport.written.count(b"HTTP/1.1 200") == 2 and conn.state == IDLE
        bench.wait(2.0 - STEP)
        assert not transport.closed and bench.collector.stats.idle_timeouts == 0
        bench.wait(STEP)
        assert transport.closed and bench.collector.stats.idle_timeouts == 1

    on_loop(test, replace(config, service_time="1"))


def test_a_request_that_times_out_behind_queued_answers_gets_its_408_after_them(
    config: CollectorConfig,
) -> None:
    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.data_received(PIXEL + HEAD)  # the next request's head never ends
        bench.wait(1.0)
        assert bench.collector.stats.header_timeouts == 1 and transport.written == b""
        bench.wait(1.0)
        assert transport.written.startswith(b"HTTP/1.1 200")
        assert transport.written.index(b"HTTP/1.1 408") > 0 and transport.eof and conn.state == CLOSING

    on_loop(test, replace(config, service_time="2"))


def test_shutdown_waits_for_queued_answers_and_counts_those_left_after_the_grace(
    config: CollectorConfig, tmp_path: Path
) -> None:
    async def test(bench: Bench) -> None:
        first, first_transport = bench.connect()
        second, second_transport = bench.connect()
        first.data_received(PIXEL)
        second.data_received(
            PIXEL.replace(b"eyJpZCI6InNsb3ciLCJ0ZWNoIjoicGl4ZWwifQ", b"eyJpZCI6InMyIiwidGVjaCI6InBpeGVsIn0")
        )
        await turns(lambda: bench.collector.service is not None and bench.collector.service.jobs == 2)
        draining = asyncio.create_task(drain(bench.collector, StoppedServer()))
        await asyncio.sleep(LOOKS)
        assert not first_transport.closed, "an idle connection waiting for its answer is not closed"
        bench.wait(4.0)  # one worker: the first answer at 4 s, the second would be at 8 s
        assert first_transport.written.startswith(b"HTTP/1.1 200") and second_transport.written == b""
        await asyncio.sleep(LOOKS)
        assert not draining.done()
        bench.wait(SHUTDOWN_GRACE - 4.0)
        await asyncio.wait_for(draining, HANG)
        assert bench.collector.service.jobs == 1

    on_loop(test, replace(config, service_time="4", idle_timeout=30.0))
    stats = json.loads(next((tmp_path / "received").glob("*.stats.json")).read_text())
    assert stats["service"]["unanswered"] == 1 and stats["events"] == {"pixel": 2}
    assert stats["answers"]["event"]["counts"] == {str(bucket_of(4.0)): 1}
    assert stats["answers"]["layout"] == {"lowest": 1e-05, "per_decade": 40}


def test_a_client_pipelining_faster_than_it_is_served_is_not_read_until_its_queue_shrinks(
    config: CollectorConfig,
) -> None:
    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.data_received(PIXEL * JOBS_PER_CONNECTION)  # committed at once (COMMIT_AT_ONCE)
        assert transport.paused and transport.written == b""
        bench.wait(STEP)  # one answer every STEP: the queue is below the bound again
        assert not transport.paused and transport.written.count(b"HTTP/1.1 200") == 1
        bench.wait(JOBS_PER_CONNECTION * STEP)
        assert transport.written.count(b"HTTP/1.1 200") == JOBS_PER_CONNECTION

    on_loop(test, replace(config, service_time=str(STEP), idle_timeout=30.0))


def test_a_full_write_buffer_keeps_reading_paused_when_the_job_queue_shrinks(config: CollectorConfig) -> None:
    """Two reasons to pause reading, each lifted on its own: a job ending does not resume reading while the
    client still does not read its answers, and the buffer draining does once fewer jobs wait."""

    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.data_received(PIXEL * JOBS_PER_CONNECTION)
        assert transport.paused
        conn.pause_writing()  # the client does not read its answers either
        bench.wait(STEP)  # one job ends: the queue is below the bound, the write buffer still full
        assert transport.written.count(b"HTTP/1.1 200") == 1
        assert transport.paused, "a job ending resumed reading over a full write buffer"
        conn.resume_writing()
        assert not transport.paused

    on_loop(test, replace(config, service_time=str(STEP), idle_timeout=30.0))


def test_a_drained_write_buffer_does_not_resume_reading_while_the_job_queue_is_full(
    config: CollectorConfig,
) -> None:
    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.data_received(PIXEL * JOBS_PER_CONNECTION)
        conn.pause_writing()
        conn.resume_writing()  # the write buffer drained: 64 jobs still wait
        assert transport.paused, "the write buffer draining resumed reading while the job queue is full"
        bench.wait(1.0)  # the first job ends
        assert transport.written.count(b"HTTP/1.1 200") == 1 and not transport.paused

    on_loop(test, replace(config, service_time="1", idle_timeout=30.0))


def test_without_a_service_time_the_write_buffer_alone_pauses_and_resumes_reading(
    config: CollectorConfig,
) -> None:
    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.pause_writing()
        assert transport.paused
        conn.resume_writing()
        assert not transport.paused

    on_loop(test, config)


BAD_JSON_POST = (
    b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{nope"
)


@pytest.mark.parametrize(
    ("refused", "reason", "status"),
    [
        (b"BAD REQUEST\r\n\r\n", "bad_http", b"400"),  # refused while reading the head
        (b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n", "not_found", b"404"),  # refused once complete
        (BAD_JSON_POST, "bad_json", b"400"),  # refused after its body
    ],
)
def test_a_request_refused_behind_queued_answers_is_no_longer_in_flight_and_never_times_out(
    config: CollectorConfig, refused: bytes, reason: str, status: bytes
) -> None:
    """Its refusal waits for the answers before it (3 s, past the header and body timeouts of 1 s): it is
    counted once, as refused, never as a timeout or as incomplete, and it is not a request in flight."""

    def test(bench: Bench) -> None:
        conn, transport = bench.connect()
        conn.data_received(PIXEL + refused)
        bench.wait(1.5)
        stats = bench.collector.stats
        assert transport.written == b"" and stats.refused == {reason: 1}
        assert stats.header_timeouts == stats.body_timeouts == 0
        assert bench.collector.stats_document()["requests_in_flight"] == 0
        bench.wait(1.5)
        assert transport.written.startswith(b"HTTP/1.1 200")
        assert transport.written.index(b"HTTP/1.1 " + status) > 0 and transport.eof and conn.state == CLOSING
        conn.connection_lost(None)
        assert stats.header_timeouts == stats.body_timeouts == 0
        assert stats.headers_incomplete == stats.bodies_incomplete == 0 and stats.refused == {reason: 1}

    on_loop(test, replace(config, service_time="3"))


def test_the_seconds_served_start_at_the_earliest_request_complete_not_the_first_answer(
    config: CollectorConfig,
) -> None:
    """Two workers: an event complete at 0 s is answered at 1 s; a ping complete at 0.5 s is answered at
    once, first. The seconds served run from 0 s (the earliest request complete), so the utilisation is
    1 s busy over 2 workers × 1 s."""

    def test(bench: Bench) -> None:
        event, event_transport = bench.connect()
        ping, ping_transport = bench.connect()
        event.data_received(PIXEL)
        bench.wait(0.5)
        ping.data_received(b"GET /ping.gif?t=pixel-keepalive HTTP/1.1\r\nHost: t\r\n\r\n")
        bench.wait(STEP)
        assert ping_transport.written.startswith(b"HTTP/1.1 200") and event_transport.written == b""
        bench.wait(0.5 - STEP)
        assert event_transport.written.startswith(b"HTTP/1.1 200")
        assert bench.collector.stats.served_seconds == 1.0
        figures = bench.collector.service_figures()
        assert figures["elapsed_seconds"] == 1.0 and figures["utilisation"] == 0.5

    on_loop(test, replace(config, service_time="1", service_workers=2))


def test_shutdown_closes_a_connection_once_its_queued_answers_are_written(config: CollectorConfig) -> None:
    """Draining, an idle connection waits for its answer, then goes (it takes no more requests), while
    another connection's answer is still queued: it does not wait for the end of the grace."""

    async def test(bench: Bench) -> None:
        first, first_transport = bench.connect()
        second, second_transport = bench.connect()
        first.data_received(PIXEL)
        second.data_received(PIXEL)
        await turns(lambda: bench.collector.service is not None and bench.collector.service.jobs == 2)
        draining = asyncio.create_task(drain(bench.collector, StoppedServer()))
        await asyncio.sleep(LOOKS)
        bench.wait(1.0)  # one worker: the first answer at 1 s, the second at 2 s
        assert first_transport.written.startswith(b"HTTP/1.1 200") and second_transport.written == b""
        assert first.state == CLOSING and first_transport.eof, "answered: it goes, its FIN after the answer"
        first.data_received(PIXEL)  # too late: not read
        await asyncio.sleep(LOOKS)
        assert bench.collector.stats.requests == {"pixel": 2} and not draining.done()
        first.connection_lost(None)
        bench.wait(1.0)
        assert second.state == CLOSING and second_transport.eof
        second.connection_lost(None)
        await asyncio.wait_for(draining, HANG)

    on_loop(test, replace(config, service_time="1", idle_timeout=30.0))
