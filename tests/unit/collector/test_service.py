"""--service-time: the parser, the draws, and the virtual workers on a fake clock with fake timers (every
answer time exact, no socket, no wall-clock window). What real sockets show is in
tests/integration/collector/test_service_time.py."""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np
import pytest

from lossbench.collector.service import FORMS, Job, ServiceQueue, ServiceTime, parse_service_time, parse_time

# -- the spec --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2ms", 0.002), ("0.5s", 0.5), ("0.25", 0.25), ("3", 3.0), ("300us", 0.0003), ("1.5e-3", 0.0015)],
)
def test_times(text: str, seconds: float) -> None:
    assert parse_time(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("20ms", ServiceTime("20ms", "fixed", 0.02)),
        ("0", ServiceTime("0", "fixed", 0.0)),
        ("exp:2ms", ServiceTime("exp:2ms", "exp", 0.002)),
        ("lognormal:2ms,0.5", ServiceTime("lognormal:2ms,0.5", "lognormal", 0.002, 0.5)),
    ],
)
def test_specs(spec: str, expected: ServiceTime) -> None:
    got = parse_service_time(spec)
    assert got.kind == expected.kind and got.spec == spec
    assert got.scale == pytest.approx(expected.scale) and got.sigma == expected.sigma


@pytest.mark.parametrize(
    "spec",
    ["", "fast", "-2ms", "2 parsecs", "2h", "exp:", "exp:0", "lognormal:2ms", "lognormal:2ms,x",
     "lognormal:0,0.5", "lognormal:2ms,-1", "lognormal:2ms,nan", "gamma:2ms", "inf", "1e999"],
)  # fmt: skip
def test_a_bad_spec_is_named_with_the_forms_accepted(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_service_time(spec)
    message = str(info.value)
    assert message.startswith(f"--service-time {spec!r}: ") and message.endswith(FORMS)
    assert "\n" not in message


def test_draws_have_the_distribution_asked_for_and_a_seed_repeats_them() -> None:
    fixed = parse_service_time("20ms").sampler()
    assert {fixed() for _ in range(5)} == {0.02}
    exp = parse_service_time("exp:2ms")
    sampler = exp.sampler(np.random.default_rng(1))
    draws = np.array([sampler() for _ in range(20_000)])  # several blocks
    assert draws.mean() == pytest.approx(0.002, rel=0.03) and exp.mean == 0.002
    again = exp.sampler(np.random.default_rng(1))
    assert [again() for _ in range(3000)] == draws[:3000].tolist()
    logn = parse_service_time("lognormal:2ms,0.5")
    sampler = logn.sampler(np.random.default_rng(2))
    draws = np.array([sampler() for _ in range(20_000)])
    assert float(np.median(draws)) == pytest.approx(0.002, rel=0.03)
    assert draws.mean() == pytest.approx(logn.mean, rel=0.03)


# -- the virtual workers ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTimers:
    """``loop.call_later`` on the fake clock: timers fire when told, in order of when they are due."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.heap: list[tuple[float, int, Handle]] = []
        self.armed = 0

    def call_later(self, delay: float, fn: Callable[[], None]) -> Handle:
        handle = Handle(fn)
        self.armed += 1
        heapq.heappush(self.heap, (self.clock.now + delay, self.armed, handle))
        return handle

    def run_until(self, t: float, *, late: float = 0.0) -> None:
        """Fire every timer due by ``t``, each ``late`` seconds after it was due (the loop was busy)."""
        while self.heap and self.heap[0][0] <= t:
            due, _, handle = heapq.heappop(self.heap)
            self.clock.now = max(self.clock.now, due + late)
            if not handle.cancelled:
                handle.fn()
        self.clock.now = max(self.clock.now, t)


class Handle:
    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Conn:
    """An owner: records when each of its answers is written."""

    def __init__(self, name: str, log: list[tuple[str, str, float]]) -> None:
        self.name = name
        self.log = log

    def job_done(self, job: Job, now: float) -> None:
        self.log.append((self.name, job.reply.decode(), round(now - 100.0, 9)))


class Bench:
    def __init__(self, workers: int) -> None:
        self.clock = FakeClock()
        self.timers = FakeTimers(self.clock)
        self.queue = ServiceQueue(workers, self.clock, self.timers.call_later)
        self.log: list[tuple[str, str, float]] = []
        self.conns: dict[str, Conn] = {}

    def submit(self, conn: str, reply: str, service: float, kind: str | None = "event") -> None:
        owner = self.conns.setdefault(conn, Conn(conn, self.log))
        done_at = self.clock.now
        self.queue.submit(Job(owner, reply.encode(), kind, done_at, service), self.clock.now)

    def at(self, t: float) -> None:
        self.timers.run_until(100.0 + t)


def test_one_worker_serves_concurrent_events_one_after_the_other() -> None:
    bench = Bench(workers=1)
    for name in "abc":
        bench.submit(name, f"e-{name}", 0.02)
    assert bench.log == [] and bench.queue.jobs == 3 and bench.queue.waiting == 2
    bench.at(1.0)
    assert bench.log == [("a", "e-a", 0.02), ("b", "e-b", 0.04), ("c", "e-c", 0.06)]
    assert bench.queue.busy_seconds == pytest.approx(0.06) and bench.queue.jobs == 0


def test_two_workers_halve_the_wait() -> None:
    bench = Bench(workers=2)
    for name in "abcd":
        bench.submit(name, f"e-{name}", 0.02)
    bench.at(1.0)
    assert [t for _, _, t in bench.log] == [0.02, 0.02, 0.04, 0.04]


def test_a_preflight_takes_no_time_but_waits_for_a_free_worker() -> None:
    bench = Bench(workers=1)
    bench.submit("a", "event", 0.02)
    bench.submit("b", "preflight", 0.0, kind="preflight")
    bench.at(1.0)
    assert bench.log == [("a", "event", 0.02), ("b", "preflight", 0.02)]
    idle = Bench(workers=1)
    idle.submit("b", "preflight", 0.0, kind="preflight")
    assert idle.log == [("b", "preflight", 0.0)], "a free worker answers it at once, without a timer"
    assert idle.timers.armed == 0


def test_a_connections_answers_stay_in_order_even_with_a_free_worker() -> None:
    bench = Bench(workers=2)
    bench.submit("a", "event-1", 0.03)
    bench.submit("a", "ping", 0.0, kind="ping")  # pipelined behind it: the second worker may not take it
    bench.submit("b", "event-2", 0.01)
    assert bench.queue.jobs_of(bench.conns["a"]) == 2
    bench.at(1.0)
    assert bench.log == [("b", "event-2", 0.01), ("a", "event-1", 0.03), ("a", "ping", 0.03)]
    assert not bench.queue.has_jobs(bench.conns["a"])


def test_a_late_timer_delays_the_answer_not_the_workers() -> None:
    """The loop fires the first timer 25 ms late: that answer is late, and so is the next one's, whose
    service (from 20 ms, when the worker was free) ended meanwhile; the third one is on time."""
    bench = Bench(workers=1)
    for name in "abc":
        bench.submit(name, name, 0.02)
    bench.timers.run_until(100.02, late=0.025)
    assert bench.log == [("a", "a", 0.045), ("b", "b", 0.045)]
    bench.at(1.0)
    assert bench.log[-1] == ("c", "c", 0.06)
    assert bench.queue.busy_seconds == pytest.approx(0.06)


def test_a_timer_that_fires_early_is_armed_again() -> None:
    bench = Bench(workers=1)
    bench.submit("a", "a", 0.02)
    (due, _, handle) = bench.timers.heap.pop()
    bench.clock.now = due - 0.002  # uvloop's cached loop time was stale
    handle.fn()
    assert bench.log == [] and bench.timers.heap, "not answered before its service ended"
    bench.at(1.0)
    assert bench.log == [("a", "a", 0.02)]
    bench.submit("b", "b", 0.02)
    (due, _, handle) = bench.timers.heap.pop()
    bench.clock.now = due - 0.0003  # less than uvloop's step: armed again a step later, not at once
    handle.fn()
    assert bench.timers.heap[0][0] == pytest.approx(due + 0.0007)
    bench.at(2.0)
    assert bench.log[-1] == ("b", "b", pytest.approx(1.0207))
    bench.submit("c", "c", 0.02)
    (due, _, handle) = bench.timers.heap.pop()
    bench.clock.now = due - 1e-9  # asyncio's clock resolution: done
    handle.fn()
    assert bench.log[-1][0] == "c" and not bench.timers.heap


def test_a_request_joins_the_queue_when_it_was_complete() -> None:
    """The commit hands a job over a little after the request was complete: its service runs from then."""
    bench = Bench(workers=1)
    owner = Conn("a", bench.log)
    bench.queue.submit(Job(owner, b"a", "event", 100.0, 0.02), now=100.005)
    bench.at(1.0)
    assert bench.log == [("a", "a", 0.02)]


def test_cancel_counts_what_was_never_answered() -> None:
    bench = Bench(workers=1)
    bench.submit("a", "a", 0.02)
    bench.submit("a", "a2", 0.02)
    bench.submit("b", "b", 0.02)
    assert bench.queue.cancel() == 3
    bench.at(1.0)
    assert bench.log == [] and bench.queue.jobs == 0
    bench.submit("c", "c", 0.0)  # all workers free again
    assert bench.log == [("c", "c", 1.0)]
