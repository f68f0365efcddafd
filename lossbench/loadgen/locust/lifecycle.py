"""The plugin's life in one Locust process: options, the collector, run.json, the sent ledger, the
master's and workers' messages, and the end of the run.

Each Locust process (local, master or worker) has one ``LocustPlugin``, ``PLUGIN``, listening to Locust's
events. The master (or the single process) starts the reference collector when no ``--host`` is given
and, at the end, has the run finished: both through ``RunHooks`` that the orchestration above the load
generator installs (``lossbench.runner.attach_to_locust``), since the load generator must not import it.
Each process that runs users writes its own sent ledger.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
from locust import __version__ as locust_version
from locust import events
from locust.env import Environment
from locust.event import Events
from locust.rpc.protocol import Message
from locust.runners import (
    STATE_MISSING,
    STATE_RUNNING,
    STATE_SPAWNING,
    LocalRunner,
    MasterRunner,
    WorkerRunner,
)

from lossbench import __version__
from lossbench.contract.techniques import ALL_TECHNIQUES, SEED_TECHNIQUES, VARIANTS
from lossbench.loadgen.locust.greenlets import InFlight
from lossbench.loadgen.locust.hooks import hook
from lossbench.loadgen.locust.live import LiveLoss, goal_of, predictions
from lossbench.loadgen.locust.options import LocustParser, PluginOptions, add_locust_arguments
from lossbench.loadgen.locust.progress import LossWatch
from lossbench.loadgen.locust.reporting import Finish, end_of_run, report_event
from lossbench.loadgen.locust.sent import LATE_AFTER, SentLedger
from lossbench.loadgen.locust.timing import REPORT_KEY as TIMING_KEY
from lossbench.loadgen.locust.timing import Counts, TimingRecorder
from lossbench.loadgen.player import PlayedEvent
from lossbench.model.browser import get_browser
from lossbench.model.exits import get_exit_model
from lossbench.model.profiles import get_profile
from lossbench.system import raise_fd_limit

log = logging.getLogger("lossbench")

StartCollector = Callable[[Path], tuple[str, Callable[[], None]]]
"""Start the reference collector writing into a run directory: its URL, and how to stop it."""


@dataclass(frozen=True)
class RunHooks:
    """What a run needs from the orchestration when Locust runs on its own (no ``lossbench run``)."""

    start_collector: StartCollector
    finish: Finish


class LocustPlugin:
    """What one Locust process knows about the run, and its answers to Locust's events."""

    def __init__(self) -> None:
        self.hooks: RunHooks | None = None
        self.environment: Environment | None = None
        self.run_dir: Path | None = None  # on the master (or the single process)
        self.stop_collector: Callable[[], None] | None = None
        self.sent = SentLedger(on_failure=self._stop_run)
        self.in_flight = InFlight()
        self.timing = TimingRecorder()  # this process's timing errors, until its next report
        self.users_started = 0
        self.workers_stopped: set[str] = set()  # master: the workers that sent their final report
        self.workers_asked = False  # master: this test's workers were asked for it
        self.test_started: float | None = None  # monotonic time this test started
        self.load_seconds: float | None = None  # from its start until its last event was over
        self.loss: LossWatch | None = None  # master: the running loss (progress.json, the Loss tab)

    def listen(self, locust_events: Events) -> None:
        """Answer Locust's events (once per process: Locust's events are global)."""
        hook(locust_events.init_command_line_parser).add_listener(self.add_arguments)
        hook(locust_events.init).add_listener(self.on_init)
        hook(locust_events.test_start).add_listener(self.on_test_start)
        hook(locust_events.test_stop).add_listener(self.on_test_stop)
        hook(locust_events.quitting).add_listener(self.on_quitting)
        hook(locust_events.report_to_master).add_listener(self.on_report_to_master)
        hook(locust_events.worker_report).add_listener(self.on_worker_report)

    @staticmethod
    def add_arguments(parser: LocustParser, **_: Any) -> None:
        add_locust_arguments(parser)

    @staticmethod
    def options(environment: Environment) -> PluginOptions:
        """The run's options, as Locust parsed them (a worker's are the master's, from its spawn message)."""
        if environment.parsed_options is None:
            raise SystemExit("lossbench: run this scenario with the locust command (no parsed options found)")
        return PluginOptions.of(environment.parsed_options)

    # -- the start ------------------------------------------------------------------------------------

    def on_init(self, environment: Environment, **_: Any) -> None:
        options = self.options(environment)
        self.environment = environment
        raise_fd_limit()  # every event in flight holds a socket
        # Everything loaded so far (Locust, gevent, numpy) lives as long as the process: keep the garbage
        # collector from walking it again at every full collection (a few per cent of each event's cost).
        gc.freeze()
        get_profile(options.network_profile)  # fail early, with the list of valid names
        get_exit_model(options.exit_model)
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            runner.register_message("lossbench_stop", self._on_stop_request)
            return  # workers learn the run directory and host from the master at spawn
        if isinstance(runner, MasterRunner):
            runner.register_message("lossbench_stopped", self._on_worker_stopped)
            runner.register_message("lossbench_ledger_failed", self._on_worker_ledger_failed)
        parsed = environment.parsed_options
        assert parsed is not None  # options() checked it
        run_dir = Path(options.run_dir) if options.run_dir else default_run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        parsed.run_dir = str(run_dir)  # the master sends its options to the workers at spawn
        self.run_dir = run_dir
        if not environment.host:
            url = self._start_collector(run_dir)
            environment.host = url
            parsed.host = url
            for user_class in environment.user_classes:
                user_class.host = url
        loopback_address(environment.host)
        write_run_json(run_dir, environment, parsed)
        local = None if isinstance(runner, MasterRunner) else self.timing.take
        self.loss = watch_loss(environment, options, run_dir, local)
        # Locust sets its --run-time timer right after this, against the event loop's cached clock, which
        # has not moved since the loop last ran, before the imports: on a busy machine seconds ago, and a
        # 5 s run then stopped after 0.2 s. Bring the clock to now first.
        gevent.get_hub().loop.update_now()

    def _start_collector(self, run_dir: Path) -> str:
        """The reference collector on a free loopback port; it is stopped when Locust quits."""
        if self.hooks is None:
            raise SystemExit(
                "lossbench: no --host, and this locustfile cannot start the reference collector: pass "
                "--host http://127.0.0.1:PORT of a running collector, or a locustfile that calls "
                "lossbench.runner.attach_to_locust() (as lossbench.scenarios do)"
            )
        url, self.stop_collector = self.hooks.start_collector(run_dir)
        log.info("lossbench: started the reference collector at %s (ledgers in %s)", url, run_dir)
        return url

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        """A new test (the web UI runs several): its events go to a new sent ledger, and the master asks
        its workers for their final reports anew at its end."""
        self.workers_stopped.clear()
        self.workers_asked = False
        self.test_started, self.load_seconds = time.monotonic(), None
        self.sent.start_test(Path(self.options(environment).run_dir) / "sent")
        if self.loss is not None:
            self.loss.start(environment)

    # -- each event -----------------------------------------------------------------------------------

    def record(self, environment: Environment, played: PlayedEvent) -> None:
        """One event into the sent ledger and into Locust's statistics (failures are lost events)."""
        if self.sent.append(played):
            report_event(environment, played)
            self.timing.add(played)

    def on_report_to_master(self, data: dict[str, Any], **_: Any) -> None:
        """Worker: its timing errors since the last report go with its statistics."""
        data[TIMING_KEY] = self.timing.take()

    def on_worker_report(self, data: dict[str, Any], **_: Any) -> None:
        """Master: a worker's timing errors, into the running figure."""
        if self.loss is not None:
            self.loss.live.timing.add(data.get(TIMING_KEY, ()))

    def _stop_run(self, message: str) -> None:
        """The sent ledger failed: stop the whole run (a worker tells the master, which stops them all)."""
        runner = self.environment.runner if self.environment is not None else None
        if isinstance(runner, WorkerRunner):
            runner.send_message("lossbench_ledger_failed", {"error": message})
        if runner is not None:
            gevent.spawn(runner.quit)

    def _on_worker_ledger_failed(self, environment: Environment, msg: Message, **_: Any) -> None:
        """Master: a worker could not write its sent ledger; the run stops with its message."""
        if self.sent.error is None:
            self.sent.error = f"worker {msg.node_id}: {msg.data['error']}"
            log.error("lossbench: %s", self.sent.error)
            assert environment.runner is not None
            gevent.spawn(environment.runner.quit)

    # -- the end --------------------------------------------------------------------------------------

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        if isinstance(environment.runner, MasterRunner):
            if not self.workers_asked:  # once a test: quitting after the test's end does not ask again
                self.workers_asked = True
                self._stop_workers(environment.runner)
        else:
            self.in_flight.wait(LATE_AFTER)
            self.sent.close()
        if self.test_started is not None and self.load_seconds is None:
            # the tabs finish the visits they were playing after --run-time (user.py): the load lasted
            # until now, which is what events per second must divide by
            self.load_seconds = time.monotonic() - self.test_started
        if self.loss is not None:  # the last snapshot, with the workers' final reports
            self.loss.stop()
            self.loss.write(environment, final=True)

    def _on_stop_request(self, environment: Environment, msg: Message, **_: Any) -> None:
        """Worker: stop, wait for events in flight, then send the final statistics with the news.

        Locust's own final report (on quit) comes too late for the master, which quits 0.5 s after asking:
        this is that report, made by Locust's public ``report_to_master`` event, sent in our message."""
        runner = environment.runner
        assert isinstance(runner, WorkerRunner)
        runner.stop()  # fires test_stop: the sent ledger is closed
        stats: dict[str, Any] = {}
        hook(environment.events.report_to_master).fire(client_id=runner.client_id, data=stats)
        runner.send_message("lossbench_stopped", {"events": self.sent.recorded, "stats": stats})

    def _on_worker_stopped(self, environment: Environment, msg: Message, **_: Any) -> None:
        """Master: a worker's final statistics, handed to Locust as its own report would be."""
        self.workers_stopped.add(msg.node_id)
        hook(environment.events.worker_report).fire(client_id=msg.node_id, data=msg.data["stats"])

    def _stop_workers(self, runner: MasterRunner, timeout: float = 60.0) -> None:
        """Master: Locust's quit waits only 0.5 s for final reports; ask each worker to stop and wait."""

        def alive() -> set[str]:  # a worker that died (missed heartbeats) will never answer
            return {client.id for client in runner.clients.all if client.state != STATE_MISSING}

        for worker in alive():
            runner.send_message("lossbench_stop", None, client_id=worker)
        deadline = time.monotonic() + timeout
        while not alive() <= self.workers_stopped and time.monotonic() < deadline:
            gevent.sleep(0.05)
        missing = alive() - self.workers_stopped
        if missing:
            log.warning(
                "lossbench: %d worker(s) sent no final report; the loss table still reads every ledger",
                len(missing),
            )

    def on_quitting(self, environment: Environment, **_: Any) -> None:
        runner = environment.runner
        if isinstance(runner, LocalRunner) and runner.state in (STATE_SPAWNING, STATE_RUNNING):
            # SIGTERM: Locust fires quitting before it stops the tabs. Stop them first (test_stop then waits
            # for their events in flight and closes the sent ledger), or the wait below would last
            # LATE_AFTER while they go on playing visits, whose events would then miss the ledger.
            runner.stop()
        self.on_test_stop(environment)
        if isinstance(environment.runner, WorkerRunner) or self.run_dir is None:
            return
        if self.stop_collector is not None:
            stop, self.stop_collector = self.stop_collector, None
            stop()
        assert environment.parsed_options is not None
        reached = None if self.loss is None else self.loss.reached_after
        lagged = None if self.loss is None else self.loss.lagged
        parsed = environment.parsed_options
        write_run_json(
            self.run_dir,
            environment,
            parsed,
            ended=time.time(),
            precision_reached=reached,
            load_seconds=None if self.load_seconds is None else round(self.load_seconds, 3),
            lag_stopped=lagged,
        )
        if not self.options(environment).no_summary or self.sent.error is not None:
            finish = self.hooks.finish if self.hooks is not None else None
            end_of_run(environment, self.run_dir, self.sent.error, finish)


def default_run_dir() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"{stamp}-{os.getpid()}"


def loopback_address(host: str) -> tuple[str, int]:
    """(ip, port) of --host; refuses anything but loopback, so load never leaves this machine."""
    parts = urlsplit(host if "://" in host else f"http://{host}")
    name = parts.hostname or ""
    port = parts.port or 80
    ip = "127.0.0.1" if name == "localhost" else name
    try:
        if not ipaddress.ip_address(ip).is_loopback:
            raise ValueError
    except ValueError:
        raise SystemExit(f"lossbench: --host {host!r} is not a loopback address (127.0.0.1, [::1])") from None
    return ip, port


def scenario_techniques(available: tuple[str, ...], options: PluginOptions) -> tuple[str, ...]:
    """A scenario's techniques, narrowed by --techniques (by default all but the variants, and only the
    seed's four under --browser seed, which has no pool for the others)."""
    chosen = options.chosen_techniques()
    playable = (
        available
        if get_browser(options.browser).pool
        else tuple(t for t in available if t in SEED_TECHNIQUES)
    )
    if not chosen:
        return tuple(t for t in playable if t not in VARIANTS)
    unknown = [t for t in chosen if t not in available]
    if unknown:
        raise SystemExit(
            f"lossbench: --techniques {','.join(unknown)} not in this scenario ({', '.join(available)})"
        )
    unplayable = [t for t in chosen if t not in playable]
    if unplayable:
        raise SystemExit(
            f"lossbench: --browser {options.browser} cannot play {', '.join(unplayable)} (it has no "
            f"connection pool); it plays {', '.join(playable)}"
        )
    return tuple(t for t in available if t in chosen)


def watch_loss(
    environment: Environment,
    options: PluginOptions,
    run_dir: Path,
    local_timing: Callable[[], Counts] | None = None,
) -> LossWatch:
    """The running loss of the run's techniques, with the model's prediction beside each (computed once
    here, from the run's profile, exit model, abort and seed), the running timing error against the
    profile's median RTT (``local_timing``: the single process's own), and the Loss tab when there is a
    web UI."""
    techniques = run_techniques(environment, options)
    try:
        predicted = predictions(options, techniques)
    except ValueError as exc:  # a technique the model does not know: the loss is still shown
        log.warning("lossbench: no predicted loss while the load runs: %s", exc)
        predicted = {}
    parsed = environment.parsed_options
    median_rtt = get_profile(options.network_profile).rtt  # the median of its lognormal RTT draws
    live = LiveLoss(techniques, predicted, goal_of(options.precision), duration=None, median_rtt=median_rtt)
    headless = bool(getattr(parsed, "headless", False))
    loss = LossWatch(live, run_dir, headless, lag_stop=options.lag_stop, local_timing=local_timing)
    if environment.web_ui is not None:
        loss.add_loss_tab(environment.web_ui)
    return loss


def run_techniques(environment: Environment, options: PluginOptions) -> list[str]:
    """The techniques the run's users play, in lossbench's order."""
    techniques = {
        t
        for user_class in environment.user_classes
        for t in scenario_techniques(getattr(user_class, "techniques", ()), options)
    }
    return [t for t in ALL_TECHNIQUES if t in techniques]


def write_run_json(run_dir: Path, environment: Environment, parsed: argparse.Namespace, **extra: Any) -> None:
    """run.json: what was run, with which options and versions (its start kept when it is rewritten)."""
    path = run_dir / "run.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    options = PluginOptions.of(parsed)
    document = {
        **previous,
        "run_id": run_dir.name,
        "scenario": os.path.basename(str(getattr(parsed, "locustfile", "") or "")),
        "techniques": run_techniques(environment, options),
        "profile": options.network_profile,
        "exit_model": options.exit_model,
        "abort": options.abort,
        "browser": options.browser,
        "close_mode": options.effective_close_mode(),
        "server": {
            "idle_timeout": options.target_idle_timeout,
            "cors_max_age": options.server_hints().cors_max_age,
        },
        "seed": options.seed,
        "real_time": options.real_time,
        "precision": options.precision or None,
        "lag_stop": options.lag_stop,
        "users": getattr(parsed, "num_users", None),
        "duration": getattr(parsed, "run_time", None),
        "processes": getattr(parsed, "processes", None),
        "host": platform.node(),
        "collector_url": environment.host,
        "started": previous.get("started", time.time()),
        "versions": {
            "lossbench": __version__,
            "python": platform.python_version(),
            "locust": locust_version,
        },
        **extra,
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


PLUGIN = LocustPlugin()
"""This process's plugin: Locust's events are global, so there is one."""
PLUGIN.listen(events)
