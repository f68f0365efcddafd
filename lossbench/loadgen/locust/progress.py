"""The running loss on the master (or the single Locust process): a snapshot a second into
``RUN_DIR/progress.json``, the stop when ``--precision`` is reached or when the load generator lags
(``--lag-stop``), and the Loss tab of Locust's web UI.

The Loss tab uses the web UI's documented extension points (Locust's ``examples/extend_web_ui.py``): a tab
and its table's columns in ``web_ui.template_args`` (``extended_tabs``, ``extended_tables``), and its rows
in the ``extended_stats`` of ``/stats/requests``, the JSON the web UI polls every two seconds. The same
snapshot is at ``/lossbench/progress`` as JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING

from lossbench.contract.progress import FILE_NAME, Progress, encode_progress, write_progress
from lossbench.loadgen.locust.live import EVERY, LOSS_TAB, LOSS_TABLE, LiveLoss, goal_of, loss_rows
from lossbench.loadgen.locust.timing import Counts, lag_message

log = logging.getLogger("lossbench")


class LossWatch:
    """The running loss of the tests of one Locust master (or single process)."""

    def __init__(
        self,
        live: LiveLoss,
        run_dir: Path,
        headless: bool,
        lag_stop: float = 0.0,
        local_timing: Callable[[], Counts] | None = None,
    ) -> None:
        self.live = live
        self.path = run_dir / FILE_NAME
        self.headless = headless
        self.lag_stop = lag_stop  # seconds of lag above the guard's limit that stop the run; 0: never
        self.local_timing = local_timing  # the single process: its own timing errors at each snapshot
        self.greenlet: gevent.Greenlet | None = None
        self.reached_after: float | None = None  # seconds into the test when the goal stopped it
        self.lagged: dict[str, Any] | None = None  # what the lag guard saw when it stopped the test

    def start(self, environment: Environment) -> None:
        """A test starts: snapshots from now on (its run time and goal as the web UI may have set them)."""
        self.stop()
        parsed = environment.parsed_options
        run_time = getattr(parsed, "run_time", None)
        precision = float(getattr(parsed, "precision", 0.0) or 0.0)
        self.live.start(float(run_time) if run_time else None, goal_of(precision))
        self.reached_after = None
        self.lagged = None
        self.greenlet = gevent.spawn(self._run, environment)

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
            self.greenlet = None

    def write(self, environment: Environment, *, final: bool = False) -> Progress:
        """A snapshot now, into progress.json; ``final``: the test has stopped (the master may still say
        it is stopping)."""
        runner = environment.runner
        assert runner is not None
        state = "stopped" if final else runner.state
        if self.local_timing is not None:
            self.live.timing.add(self.local_timing())
        progress = self.live.snapshot(runner.stats, state=state, users=runner.user_count)
        try:
            write_progress(self.path, progress)
        except OSError as exc:  # a view of the run, not the run: say so and go on
            log.warning("lossbench: cannot write %s: %s", self.path, exc)
        return progress

    def _run(self, environment: Environment) -> None:
        runner = environment.runner
        assert runner is not None
        while True:
            gevent.sleep(EVERY)
            progress = self.write(environment)
            if progress.reached and runner.state in (STATE_SPAWNING, STATE_RUNNING):
                self.reached_after = progress.elapsed
                widest = max(t.half_width for t in progress.techniques.values())
                log.info(
                    "lossbench: every technique's 95%% interval is within ±%.2f points (goal ±%g) after "
                    "%.0f s and %d events: stopping",
                    100 * widest,
                    100 * (progress.precision or 0),
                    progress.elapsed,
                    progress.events,
                )
                # As Locust ends a --run-time: a headless run quits, the web UI's run stops and stays shown.
                gevent.spawn(runner.quit if self.headless else runner.stop)
                return
            timing = progress.timing
            lagging = self.lag_stop > 0 and timing is not None and timing.over_for >= self.lag_stop
            if lagging and runner.state in (STATE_SPAWNING, STATE_RUNNING):
                assert timing is not None
                self.live.stopped = lag_message(timing, progress.elapsed, progress.users)
                self.lagged = {
                    "at": round(progress.elapsed, 1),
                    "users": progress.users,
                    "p90": timing.p90,
                    "limit": timing.limit,
                    "guard": timing.guard,
                    "over_for": round(timing.over_for, 1),
                    "message": self.live.stopped,
                }
                log.error("lossbench: %s", self.live.stopped)
                self.write(environment)  # the reason, in progress.json at once
                gevent.spawn(runner.quit if self.headless else runner.stop)
                return

    def add_loss_tab(self, web_ui: Any) -> None:
        """The Loss tab in Locust's web UI, and ``/lossbench/progress``."""
        from flask import Response, request

        args = web_ui.template_args
        args["extended_tabs"] = [*args.get("extended_tabs", []), LOSS_TAB]
        args["extended_tables"] = [*args.get("extended_tables", []), LOSS_TABLE]

        def progress_json() -> Response:
            last = self.live.last
            return Response(b"null" if last is None else encode_progress(last), mimetype="application/json")

        web_ui.app.add_url_rule(
            "/lossbench/progress", "lossbench_progress", web_ui.auth_required_if_enabled(progress_json)
        )

        @web_ui.app.after_request  # type: ignore[untyped-decorator]
        def add_loss_rows(response: Response) -> Response:
            if request.path != "/stats/requests" or not response.is_json:
                return response
            data = response.get_json()
            others = [s for s in data.get("extended_stats", []) if s.get("key") != LOSS_TAB["key"]]
            data["extended_stats"] = [*others, {"key": LOSS_TAB["key"], "data": loss_rows(self.live.last)}]
            response.set_data(json.dumps(data))
            return response
