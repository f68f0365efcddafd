"""The Locust user: a browser tab that plays visits back to back, every event with every technique of
its scenario side by side. A scenario is a subclass naming its techniques (``lossbench.scenarios``)."""

from __future__ import annotations

import functools
import random
import time

import gevent
import numpy as np
from locust import User, constant, task

from lossbench.contract.techniques import TECHNIQUES
from lossbench.loadgen.locust.greenlets import call_later
from lossbench.loadgen.locust.lifecycle import PLUGIN, loopback_address, scenario_techniques
from lossbench.loadgen.player import VisitSource, play_visit
from lossbench.model.exits import get_exit_model
from lossbench.model.profiles import get_profile
from lossbench.model.visits import Visit

START_JITTER = 3.0  # seconds over which tabs started together spread their first visit
FINISH_VISIT_SECONDS = 10.0
"""After the tab is stopped, how long the visit in progress may go on firing events (compressed time):
well within the wait for events in flight at the end of a test (``LATE_AFTER``)."""


class LossbenchUser(User):
    """A browser tab: plays visits back to back, each with every technique side by side."""

    abstract = True
    techniques: tuple[str, ...] = TECHNIQUES
    wait_time = constant(0)
    stopping = False
    stopped_at = 0.0

    def on_start(self) -> None:
        options = PLUGIN.options(self.environment)
        self.address = loopback_address(self.host or self.environment.host or "")
        self.active_techniques = scenario_techniques(type(self).techniques, options)
        PLUGIN.users_started += 1
        process = getattr(self.environment.runner, "worker_index", 0) or 0
        user_seed = [options.seed, process, PLUGIN.users_started]
        self.visits = iter(
            VisitSource(
                get_profile(options.network_profile),
                get_exit_model(options.exit_model),
                options.abort,
                seed=_seed(user_seed),
            )
        )
        self.browser = options.browser
        self.close_mode = options.effective_close_mode()
        self.server = options.server_hints()
        self.real_time = options.real_time
        # Tabs started in one spawn burst would fire their page views together: spread them out.
        gevent.sleep(START_JITTER * random.Random(_seed(user_seed)).random())

    @task
    def visit(self) -> None:
        """Play visits back to back until the tab is stopped.

        They run in a greenlet of their own, made once per tab: when the run ends Locust kills this
        user's greenlet, and an event cut short by that would be on the wire but in no sent ledger.
        """
        PLUGIN.in_flight.spawn(self._play_visits).join()

    def stop(self, force: bool = False) -> bool:
        """Locust stops the tab: killed, or asked to finish gracefully (``--stop-timeout``), in which case
        it waits for this task to return. Either way no further visit starts (see ``keep_going`` for the
        one being played)."""
        self._stopping()
        killed: bool = super().stop(force)
        return killed

    def on_stop(self) -> None:
        self._stopping()  # killed without stop(): a tab whose own greenlet quit the runner

    def _stopping(self) -> None:
        if not self.stopping:
            self.stopping, self.stopped_at = True, time.monotonic()

    def keep_going(self) -> bool:
        """Asked by the visit player before each event of the visit being played.

        Under compressed time that visit is played to its end after the tab is stopped: only its events
        in flight take real time, so it ends within seconds, and the end of the test waits for it (the
        in-flight count). Cutting it would drop its later events, which find the name cached and the
        connection warm and lose less, so a short run would measure more loss than the model predicts for
        whole visits (an 8 s run measured pixel at 5.4% against 3.1%). A visit that still fires events
        ``FINISH_VISIT_SECONDS`` after the stop is cut there (a very slow profile). In real time the rest of
        a visit may be minutes away: it stops at once, and the comparison with the model carries that bias.
        """
        if not self.stopping:
            return True
        return not self.real_time and time.monotonic() - self.stopped_at < FINISH_VISIT_SECONDS

    def _play_visits(self) -> None:
        while not self.stopping:
            self._play(next(self.visits))

    def _play(self, visit: Visit) -> None:
        with PLUGIN.in_flight.held():
            page_costs = play_visit(
                visit,
                self.address,
                self.active_techniques,
                PLUGIN.sent.ids,
                functools.partial(PLUGIN.record, self.environment),
                browser=self.browser,
                close_mode=self.close_mode,
                server=self.server,
                real_time=self.real_time,
                spawn=PLUGIN.in_flight.spawn,
                call_later=call_later,
                keep_going=self.keep_going,
            )
            for cost in page_costs:
                PLUGIN.sent.append_ping(cost)


def _seed(parts: list[int]) -> int:
    return int(np.random.SeedSequence(parts).generate_state(1)[0])
