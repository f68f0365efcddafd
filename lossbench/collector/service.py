"""A collector that can be made slow, honestly: service times, and the virtual workers that serve them.

``--service-time DIST`` emulates a collector that does real work for each event (a synchronous write to a
stream or a database) before it answers, with ``--service-workers N`` workers and one FIFO queue in front
of them, as a pool of synchronous workers would. The event loop never sleeps: the workers are virtual, a
job is a timer (``loop.call_later``), so the loop goes on reading while jobs wait, and the answer time the
collector measures includes the wait in the queue.

The rules, as ``ServiceQueue`` keeps them:

- A request joins the queue when it is complete (its completion time on the collector's clock). The
  queue is handed each job by the group commit, after the event's ledger line is written: an answer
  never goes before its line.
- An event takes a service time drawn from ``DIST``; a preflight or a ping takes none but still waits for
  a free worker: that is how a slow collector lengthens the preflight's round trip. An event whose line
  could not be written (its answer is the 503) takes none either.
- ``/stats`` and ``/healthz`` are lossbench's own monitoring, not the emulated collector's work: they skip
  the queue and are answered at once (``CollectorProtocol._submit``), so an overloaded collector still
  reports its figures; only behind earlier answers still waiting on their own connection do they join it
  (with no service time), since a connection's answers go in order.
- A connection's jobs are served one at a time, in request order: its next job joins the queue when its
  previous one ended, as on a worker that serves a connection's requests in turn.
- Workers' time is virtual: a job starts when it is at the head of the queue and a worker is free, at
  the moment that worker became free (not when the loop got round to it), and ends its service time
  later; its answer is written at the first turn of the loop at or after that end, never before (a timer
  that fires early is armed again). The loop's own lateness delays answers (the client sees it, and so
  does the answer-time histogram), never the workers' throughput.

Without ``--service-time`` there is no queue at all: answers go at the end of the loop turn, as before.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

FORMS = (
    "a time (2ms, 0.5s, 300us, or a bare number of seconds), exp:MEAN (exponential with that mean) or "
    "lognormal:MEDIAN,SIGMA (e.g. lognormal:2ms,0.5)"
)
"""The forms ``--service-time`` accepts, as its errors and its help say them."""

_TIME = re.compile(r"(?P<value>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>us|µs|ms|s)?")
_UNITS = {None: 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
EARLY = 1e-6
"""Seconds a timer may fire before its job's end and still end it (asyncio fires timers up to its clock's
resolution early); an answer is never earlier than its service by more than this."""
REARM = 0.001
"""Seconds, at least, before a timer that fired early fires again: uvloop's timers step in milliseconds and
fire early when the loop's cached time is stale, and a shorter delay would round to 0 and spin."""
DRAW_BLOCK = 1024
"""Service times drawn from the generator at a time (one numpy call per block, not per event)."""


@dataclass(frozen=True)
class ServiceTime:
    """A parsed ``--service-time``: ``fixed`` seconds, ``exp`` with mean ``scale``, or ``lognormal`` with
    median ``scale`` and ``sigma``."""

    spec: str
    kind: Literal["fixed", "exp", "lognormal"]
    scale: float
    sigma: float = 0.0

    @property
    def mean(self) -> float:
        """The mean service time, in seconds."""
        return self.scale * math.exp(self.sigma**2 / 2) if self.kind == "lognormal" else self.scale

    def sampler(self, rng: np.random.Generator | None = None) -> Callable[[], float]:
        """A function drawing one service time per call (from ``rng``, a fresh generator by default)."""
        if self.kind == "fixed":
            scale = self.scale
            return lambda: scale
        gen = rng if rng is not None else np.random.default_rng()
        block: list[float] = []

        def draw() -> float:
            if not block:
                if self.kind == "exp":
                    values = gen.exponential(self.scale, DRAW_BLOCK)
                else:
                    values = gen.lognormal(math.log(self.scale), self.sigma, DRAW_BLOCK)
                block.extend(reversed(values.tolist()))
            return block.pop()

        return draw


def parse_time(text: str) -> float:
    """Seconds from ``2ms``, ``0.5s``, ``300us`` or a bare number of seconds; ValueError otherwise."""
    match = _TIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a time")
    seconds = float(match["value"]) * _UNITS[match["unit"]]
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a finite time")
    return seconds


def parse_service_time(spec: str) -> ServiceTime:
    """Read a ``--service-time`` spec; ValueError naming the spec and the accepted forms."""
    try:
        kind, sep, rest = spec.partition(":")
        if not sep:
            return ServiceTime(spec, "fixed", parse_time(spec))
        if kind == "exp":
            mean = parse_time(rest)
            if mean <= 0:
                raise ValueError("the mean must be positive")
            return ServiceTime(spec, "exp", mean)
        if kind == "lognormal":
            median_text, comma, sigma_text = rest.partition(",")
            if not comma:
                raise ValueError("lognormal needs a median and a sigma")
            median = parse_time(median_text)
            sigma = float(sigma_text)
            if median <= 0 or not (0 <= sigma < math.inf):
                raise ValueError("the median must be positive and sigma a number ≥ 0")
            return ServiceTime(spec, "lognormal", median, sigma)
        raise ValueError(f"unknown distribution {kind!r}")
    except ValueError as exc:
        raise ValueError(f"--service-time {spec!r}: {exc}; expected {FORMS}") from None


# ------------------------------------------------------------------------------------- virtual workers


class Timer(Protocol):
    """What ``call_later`` returns (``asyncio.TimerHandle``): a job's timer can be cancelled."""

    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Timer]
"""``loop.call_later`` without its extra arguments: call a function in that many seconds."""


class Owner(Protocol):
    """Whoever waits for a job's answer (a connection): told when each of its jobs ends, in order."""

    def job_done(self, job: Job, now: float) -> None:
        """Write the job's answer; ``now`` is the collector's clock."""


class Job:
    """One complete request waiting for a worker, or being served: its answer and when it was complete."""

    __slots__ = ("done_at", "end", "kind", "owner", "ready_at", "reply", "service", "timer")

    def __init__(self, owner: Owner, reply: bytes, kind: str | None, done_at: float, service: float) -> None:
        self.owner = owner
        self.reply = reply
        self.kind = kind  # a kind of contract.latency.ANSWER_KINDS, or None: not timed
        self.done_at = done_at  # when the request was complete (the collector's clock)
        self.ready_at = done_at  # when it joined the queue: complete, or its connection's previous job ended
        self.service = service
        self.end = math.inf  # when its service ends (set when a worker takes it)
        self.timer: Timer | None = None


class ServiceQueue:
    """``workers`` virtual workers and a FIFO queue in front of them (the rules: this module's docstring).

    ``clock`` is the collector's clock; ``call_later`` arms a timer on the event loop (``loop.call_later``
    of the running loop by default; tests pass a fake one with a fake clock).
    """

    def __init__(
        self,
        workers: int,
        clock: Callable[[], float],
        call_later: CallLater | None = None,
    ) -> None:
        self.workers = workers
        self.clock = clock
        self._call_later = call_later
        self._idle: list[float] = [-math.inf] * workers  # heap: when each idle worker became free
        self._queue: deque[Job] = deque()  # ready jobs waiting for a worker, first come first served
        self._serving: set[Job] = set()
        self._chains: dict[object, deque[Job]] = {}  # owners with a job queued or served: their next jobs
        self.busy_seconds = 0.0  # service time of the jobs served so far

    # -- what the collector asks ---------------------------------------------------------------------------
    def has_jobs(self, owner: object) -> bool:
        """Whether ``owner`` has a job waiting or being served (its answers are not all written)."""
        return owner in self._chains

    def jobs_of(self, owner: object) -> int:
        """Jobs of ``owner`` not yet finished."""
        chain = self._chains.get(owner)
        return 0 if chain is None else 1 + len(chain)

    @property
    def jobs(self) -> int:
        """Jobs not yet finished: waiting for a worker, being served, or behind their connection's."""
        return len(self._queue) + len(self._serving) + sum(len(c) for c in self._chains.values())

    @property
    def waiting(self) -> int:
        """Jobs waiting for a worker (their connection's previous job is done)."""
        return len(self._queue)

    def submit(self, job: Job, now: float) -> None:
        """A complete request's job, handed over after the commit that wrote its ledger line; ``now`` is the
        collector's clock. It may end at once (no service and a free worker): then its answer is written
        before this returns."""
        chain = self._chains.get(job.owner)
        if chain is not None:  # its connection's previous job is not done: it waits behind it
            chain.append(job)
            return
        self._chains[job.owner] = deque()
        if self._idle:  # a free worker, so nothing is queued
            self._serve(job, max(job.ready_at, heapq.heappop(self._idle)), now)
        else:
            self._queue.append(job)

    def cancel(self) -> int:
        """Drop every job not finished (shutdown after the grace); returns how many, never answered."""
        left = self.jobs
        for job in self._serving:
            if job.timer is not None:
                job.timer.cancel()
        self._serving.clear()
        self._queue.clear()
        self._chains.clear()
        self._idle = [-math.inf] * self.workers
        return left

    # -- the workers ---------------------------------------------------------------------------------------
    def _serve(self, job: Job | None, start: float, now: float) -> None:
        """A worker takes ``job`` at virtual time ``start``; jobs that end by ``now`` end at once, and the
        worker goes on with the next one (a loop, not recursion), until one needs a timer."""
        while job is not None:
            job.end = start + job.service
            if job.end > now:
                self._serving.add(job)
                job.timer = self._arm(job.end - now, job)
                return
            job, start = self._finish(job, now)

    def _arm(self, delay: float, job: Job) -> Timer:
        call_later = self._call_later
        if call_later is None:
            import asyncio

            call_later = self._call_later = asyncio.get_running_loop().call_later
        return call_later(delay, lambda: self._on_timer(job))

    def _on_timer(self, job: Job) -> None:
        now = self.clock()
        if now < job.end - EARLY:  # fired early: not done yet
            job.timer = self._arm(max(job.end - now, REARM), job)
            return
        self._serving.discard(job)
        self._serve(*self._finish(job, now), now)

    def _finish(self, job: Job, now: float) -> tuple[Job | None, float]:
        """The job's service ended (at ``job.end`` ≤ ``now``): answer it, let its connection's next job join
        the queue, and return the job its worker takes next (None: the worker is idle) and when."""
        self.busy_seconds += job.service
        owner = job.owner
        chain = self._chains[owner]
        if chain:
            follower = chain.popleft()
            follower.ready_at = max(follower.ready_at, job.end)
            self._queue.append(follower)
        else:
            del self._chains[owner]
        owner.job_done(job, now)
        if self._queue:
            head = self._queue.popleft()
            return head, max(head.ready_at, job.end)
        heapq.heappush(self._idle, job.end)
        return None, 0.0
