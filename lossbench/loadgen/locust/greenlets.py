"""Greenlet helpers for the visit player under Locust: counted greenlets, and timers on gevent's loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gevent


class InFlight:
    """Visits and event greenlets still running in this process. The end of a test waits for them: an
    event cut short by the stop would be on the wire but in no sent ledger."""

    def __init__(self) -> None:
        self.count = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        """Count what runs inside (a visit being played) as in flight."""
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1

    def spawn(self, job: Callable[[], None]) -> gevent.Greenlet:
        """Run a visit, or events of one, in a greenlet counted until it returns (counted from now)."""
        self.count += 1

        def counted() -> None:
            try:
                job()
            finally:
                self.count -= 1

        return gevent.spawn(counted)

    def wait(self, timeout: float) -> bool:
        """Wait until nothing is in flight, at most ``timeout`` seconds; False if something still is."""
        deadline = time.monotonic() + timeout
        while self.count > 0 and time.monotonic() < deadline:
            gevent.sleep(0.05)
        return self.count <= 0


def call_later(delay: float, fn: Callable[[], None]) -> Timer:
    """A timer on gevent's loop (no greenlet until it fires): the visit player's hand-off."""
    timer = gevent.get_hub().loop.timer(delay)
    timer.start(fn)
    return Timer(timer)


class Timer:
    """A gevent loop timer with the ``cancel()`` the visit player expects (threading.Timer's)."""

    def __init__(self, timer: Any) -> None:  # gevent's loop watchers have no type stubs
        self.timer = timer

    def cancel(self) -> None:
        self.timer.stop()
        self.timer.close()
