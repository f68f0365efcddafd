"""Locust glue: options, the tab user, the sent ledger, and the loss table at the end of a run.

Import it from a locustfile (see ``scenarios/``). Each Locust user is a browser tab that plays visits
drawn from the chosen network profile and exit model, every event with every technique of the scenario
side by side. Each process that runs users writes its own sent ledger; the master (or the local runner)
starts the reference collector when no ``--host`` is given, and at the end joins the ledgers and prints
the loss table.
"""

from __future__ import annotations

import errno
import functools
import gc
import ipaddress
import json
import logging
import os
import platform
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
from locust import User, constant, events, task
from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner
from locust.user.task import LOCUST_STATE_STOPPING

from lossbench import __version__
from lossbench.contract.ledger import LedgerWriter, default_ledger_name
from lossbench.contract.lines import SentPing
from lossbench.contract.techniques import ABORTS as ABORT_KINDS
from lossbench.contract.techniques import CLOSE_MODES, TECHNIQUES
from lossbench.loadgen.player import EventIds, PlayedEvent, VisitSource, play_visit
from lossbench.model.exits import DEFAULT_EXIT_MODEL, get_exit_model
from lossbench.model.profiles import DEFAULT_PROFILE, PROFILES, get_profile
from lossbench.model.visits import Visit
from lossbench.system import raise_fd_limit

log = logging.getLogger("lossbench")


class EventLost(Exception):
    """Shown in Locust's failures: the page went away before the event's data was out."""


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    group = parser  # Locust's own parser: its web-UI keywords work there, not on argument groups
    profiles = ", ".join(f"{p.name} ({p.rtt * 1000:g} ms)" for p in PROFILES.values())
    group.add_argument(
        "--run-dir",
        env_var="LOSSBENCH_RUN_DIR",
        default="",
        help="run directory for ledgers and results (default: results/<timestamp>)",
    )
    group.add_argument(
        "--network-profile",
        dest="network_profile",
        env_var="LOSSBENCH_PROFILE",
        default=DEFAULT_PROFILE,
        help=f"network profile (Locust owns --profile), from WebPageTest and Lighthouse presets: {profiles} "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--exit-model",
        env_var="LOSSBENCH_EXIT_MODEL",
        default=DEFAULT_EXIT_MODEL,
        help="when pages go away: mix (default), dwell (Weibull dwell, Liu et al. SIGIR 2010), outbound "
        "(click then navigate), none (zero-loss control), fixed:SECONDS[@AT]",
    )
    group.add_argument(
        "--abort",
        env_var="LOSSBENCH_ABORT",
        default="unload",
        choices=ABORT_KINDS,
        help="unload: bytes in flight arrive; drop: the network vanished, the last half RTT is lost",
    )
    group.add_argument(
        "--seed", env_var="LOSSBENCH_SEED", type=int, default=1, help="random seed (default: 1)"
    )
    group.add_argument(
        "--techniques",
        env_var="LOSSBENCH_TECHNIQUES",
        default="",
        help="comma-separated subset of the scenario's techniques (default: all of them)",
    )
    group.add_argument(
        "--close-mode",
        env_var="LOSSBENCH_CLOSE_MODE",
        default="rst",
        choices=CLOSE_MODES,
        help="how a cut closes the socket: rst (default, as a closing tab), fin, silent",
    )
    group.add_argument(
        "--real-time",
        env_var="LOSSBENCH_REAL_TIME",
        action="store_true",
        default=False,
        help="keep idle gaps real (slow; for keep-alive races with the collector's idle timeout)",
    )
    group.add_argument(
        "--no-summary",
        env_var="LOSSBENCH_NO_SUMMARY",
        action="store_true",
        default=False,
        help="do not compare and report at the end (lossbench run does it itself)",
        include_in_web_ui=False,
    )


@dataclass
class PluginState:
    """What one Locust process knows about the run."""

    run_dir: Path | None = None
    options: Any = None
    collector: subprocess.Popen[str] | None = None
    ledger: LedgerWriter | None = None
    ids: EventIds | None = None
    active_visits: int = 0
    events_in_flight: int = 0
    workers_stopped: set[str] = field(default_factory=set)
    users_started: int = 0
    events_recorded: int = 0
    late_events: int = 0
    environment: Environment | None = None
    ledger_error: str | None = None  # the sent ledger could not be written: the run was stopped
    ledger_closed: bool = False  # at the end of a test: an event finishing later is late, not recorded
    ledgers_opened: int = 0  # one per test (the web UI can run several in one process)


STATE = PluginState()


def options_of(environment: Environment) -> Any:
    if environment.parsed_options is None:
        raise SystemExit("lossbench: run this scenario with the locust command (no parsed options found)")
    return environment.parsed_options


def scenario_techniques(user_class: type[LossbenchUser], options: Any) -> tuple[str, ...]:
    """The scenario's techniques, narrowed by --techniques."""
    chosen = [t.strip() for t in (options.techniques or "").split(",") if t.strip()]
    if not chosen:
        return tuple(user_class.techniques)
    unknown = [t for t in chosen if t not in user_class.techniques]
    if unknown:
        raise SystemExit(
            f"lossbench: --techniques {','.join(unknown)} not in this scenario "
            f"({', '.join(user_class.techniques)})"
        )
    return tuple(t for t in user_class.techniques if t in chosen)


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


@events.init.add_listener
def on_init(environment: Environment, **_: Any) -> None:
    options = options_of(environment)
    STATE.options = options
    STATE.environment = environment
    raise_fd_limit()  # every event in flight holds a socket
    # Everything loaded so far (Locust, gevent, numpy) lives as long as the process: keep the garbage
    # collector from walking it again at every full collection (a few per cent of each event's cost).
    gc.freeze()
    get_profile(options.network_profile)  # fail early, with the list of valid names
    get_exit_model(options.exit_model)
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message("lossbench_stop", _on_stop_request)
        return  # workers learn the run directory and host from the master at spawn
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message("lossbench_stopped", _on_worker_stopped)
        environment.runner.register_message("lossbench_ledger_failed", _on_worker_ledger_failed)
    run_dir = Path(options.run_dir) if options.run_dir else default_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    options.run_dir = str(run_dir)
    STATE.run_dir = run_dir
    if not environment.host:
        url = start_collector(run_dir)
        environment.host = url
        options.host = url
        for user_class in environment.user_classes:
            user_class.host = url
    loopback_address(environment.host)
    write_run_json(run_dir, environment, options)


def default_run_dir() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"{stamp}-{os.getpid()}"


def start_collector(run_dir: Path) -> str:
    """Start the reference collector on a free loopback port; it is stopped when Locust quits."""
    from lossbench.runner import RunError
    from lossbench.runner import start_collector as start

    try:
        STATE.collector, url = start(run_dir, processes=1)
    except RunError as exc:
        raise SystemExit(f"lossbench: {exc}") from None
    log.info("lossbench: started the reference collector at %s (ledgers in %s)", url, run_dir)
    return url


def stop_collector() -> None:
    proc = STATE.collector
    if proc is None:
        return
    STATE.collector = None
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def write_run_json(run_dir: Path, environment: Environment, options: Any, **extra: Any) -> None:
    path = run_dir / "run.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    techniques = sorted({t for u in environment.user_classes for t in scenario_techniques(u, options)})
    document = {
        **previous,
        "run_id": run_dir.name,
        "scenario": os.path.basename(str(getattr(options, "locustfile", "") or "")),
        "techniques": [t for t in TECHNIQUES if t in techniques],
        "profile": options.network_profile,
        "exit_model": options.exit_model,
        "abort": options.abort,
        "close_mode": options.close_mode,
        "seed": options.seed,
        "real_time": options.real_time,
        "users": getattr(options, "num_users", None),
        "duration": getattr(options, "run_time", None),
        "processes": getattr(options, "processes", None),
        "host": platform.node(),
        "collector_url": environment.host,
        "started": previous.get("started", time.time()),
        "versions": {
            "lossbench": __version__,
            "python": platform.python_version(),
            "locust": _locust_version(),
        },
        **extra,
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


def _locust_version() -> str:
    from locust import __version__ as version

    return version


# -- the user ------------------------------------------------------------------------------------------


START_JITTER = 3.0  # seconds over which tabs started together spread their first visit


class LossbenchUser(User):
    """A browser tab: plays visits back to back, each with every technique side by side."""

    abstract = True
    techniques: tuple[str, ...] = TECHNIQUES
    wait_time = constant(0)
    stopping = False

    def on_start(self) -> None:
        options = options_of(self.environment)
        self.address = loopback_address(self.host or self.environment.host or "")
        self.active_techniques = scenario_techniques(type(self), options)
        STATE.users_started += 1
        process = getattr(self.environment.runner, "worker_index", 0) or 0
        user_seed = [int(options.seed), process, STATE.users_started]
        self.visits = iter(
            VisitSource(
                get_profile(options.network_profile),
                get_exit_model(options.exit_model),
                options.abort,
                seed=_seed(user_seed),
            )
        )
        self.close_mode = options.close_mode
        self.real_time = bool(options.real_time)
        # Tabs started in one spawn burst would fire their page views together: spread them out.
        gevent.sleep(START_JITTER * random.Random(_seed(user_seed)).random())

    @task
    def visit(self) -> None:
        """Play visits back to back until the tab is stopped.

        They run in a greenlet of their own, made once per tab: when the run ends Locust kills this
        user's greenlet, and an event cut short by that would be on the wire but in no sent ledger.
        """
        spawn_counted(self._play_visits).join()

    def on_stop(self) -> None:
        self.stopping = True  # the visit being played fires no further event

    def keep_going(self) -> bool:
        """False once the tab is stopped: killed (``on_stop``), or asked to finish gracefully
        (``--stop-timeout``), in which case Locust waits for this task to return."""
        return not self.stopping and self._state != LOCUST_STATE_STOPPING

    def _play_visits(self) -> None:
        while self.keep_going():
            self._play(next(self.visits))

    def _play(self, visit: Visit) -> None:
        STATE.active_visits += 1
        try:
            pings = play_visit(
                visit,
                self.address,
                self.active_techniques,
                ids(),
                functools.partial(record, self.environment),
                close_mode=self.close_mode,
                real_time=self.real_time,
                spawn=spawn_counted,
                call_later=call_later,
                keep_going=self.keep_going,
            )
            if pings and not self.real_time:
                record_pings("pixel-keepalive", pings)
        finally:
            STATE.active_visits -= 1


def spawn_counted(job: Callable[[], None]) -> gevent.Greenlet:
    """Run a visit, or events of one, in a greenlet counted so that the end of a run waits for them."""
    STATE.events_in_flight += 1

    def counted() -> None:
        try:
            job()
        finally:
            STATE.events_in_flight -= 1

    return gevent.spawn(counted)


def call_later(delay: float, fn: Callable[[], None]) -> Any:
    """A timer on gevent's loop (no greenlet until it fires): the visit player's hand-off."""
    timer = gevent.get_hub().loop.timer(delay)
    timer.start(fn)
    return _Timer(timer)


class _Timer:
    """A gevent loop timer with the ``cancel()`` the visit player expects (threading.Timer's)."""

    def __init__(self, timer: Any) -> None:
        self.timer = timer

    def cancel(self) -> None:
        self.timer.stop()
        self.timer.close()


def _seed(parts: list[int]) -> int:
    import numpy as np

    return int(np.random.SeedSequence(parts).generate_state(1)[0])


def ids() -> EventIds:
    if STATE.ids is None:
        STATE.ids = EventIds()
    return STATE.ids


def sent_ledger() -> LedgerWriter | None:
    """This process's sent ledger, opened at the test's first event; None once the test's ledger is closed,
    or when it could not be opened (the run is then stopping)."""
    if STATE.ledger is None and not STATE.ledger_closed and STATE.ledger_error is None:
        directory = Path(STATE.options.run_dir) / "sent"
        name = default_ledger_name()
        if STATE.ledgers_opened:  # a later test in the same process: never truncate an earlier one's
            name += f"-test{STATE.ledgers_opened + 1}"
        STATE.ledgers_opened += 1
        try:
            STATE.ledger = LedgerWriter(
                directory,
                "sent",
                name=name,
                salt=f"{ids().salt:06x}",
                buffer_bytes=LEDGER_BUFFER,
            )
        except OSError as exc:
            sent_ledger_failed(directory / f"{name}.0.jsonl", exc)
            return None
        gevent.spawn(_flush_ledger_periodically, STATE.ledger)
    return STATE.ledger


@events.test_start.add_listener
def on_test_start(environment: Environment, **_: Any) -> None:
    STATE.ledger_closed = False  # a new test (web UI): its events go to a new sent ledger


LEDGER_BUFFER = 256 * 1024  # sent lines held in memory at most this long or FLUSH_EVERY seconds
FLUSH_EVERY = 0.25


def _flush_ledger_periodically(ledger: LedgerWriter) -> None:
    while ledger.fd >= 0 and STATE.ledger_error is None:
        gevent.sleep(FLUSH_EVERY)
        try:
            ledger.flush()
        except OSError as exc:
            sent_ledger_failed(ledger.path, exc)


_OUT_OF_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def sent_ledger_failed(path: Path, exc: OSError) -> None:
    """The sent ledger cannot be written (disk full, file size limit, no such folder): what the run sends
    from now on could not be joined, so it is not measured. Say so once, naming the file, and stop the
    whole run."""
    if STATE.ledger_error is not None:
        return
    if exc.errno in _OUT_OF_ROOM:
        advice = "Free space on that disk (or raise the file size limit, ulimit -f) and run again"
    else:
        advice = f"Check that {path.parent} is a folder this process can write to, and run again"
    STATE.ledger_error = (
        f"cannot write the sent ledger {path}: {exc.strerror or exc}. The run was stopped: the events "
        f"it sends could not be joined with the collector's. {advice}"
    )
    log.error("lossbench: %s", STATE.ledger_error)
    runner = STATE.environment.runner if STATE.environment is not None else None
    if isinstance(runner, WorkerRunner):
        runner.send_message("lossbench_ledger_failed", STATE.ledger_error)
    if runner is not None:
        gevent.spawn(runner.quit)


def _on_worker_ledger_failed(environment: Environment, msg: Any, **_: Any) -> None:
    """Master: a worker could not write its sent ledger; the run stops with its message."""
    if STATE.ledger_error is None:
        STATE.ledger_error = f"worker {msg.node_id}: {msg.data}"
        log.error("lossbench: %s", STATE.ledger_error)
        assert environment.runner is not None
        gevent.spawn(environment.runner.quit)


def record(environment: Environment, played: PlayedEvent) -> None:
    """One event into the sent ledger and into Locust's statistics (failures are lost events)."""
    ledger = sent_ledger()
    if ledger is None:
        if STATE.ledger_error is None:
            STATE.late_events += 1  # finished after the test's ledger closed
        return
    try:
        ledger.append_raw(played.record_line(), 1)
    except OSError as exc:  # the line stays buffered: a later flush may still write it
        sent_ledger_failed(ledger.path, exc)
    STATE.events_recorded += 1
    result = played.result
    if result.written:
        elapsed, exception = (result.t_written or 0.0), None
    else:
        elapsed = played.exit_after if played.exit_after != float("inf") else 0.0
        exception = EventLost(result.error or f"cut in {result.stage}")
    environment.events.request.fire(
        request_type=result.tech,
        name=played.event_type,
        response_time=elapsed * 1000,
        response_length=0,
        exception=exception,
        context={},
    )


def record_pings(tech: str, count: int) -> None:
    """Keep-alive pings the page would have sent during compressed idle time: they count in the cost."""
    ledger = sent_ledger()
    if ledger is not None:
        try:
            ledger.append(SentPing(ping=tech, requests=count, connections=0))
        except OSError as exc:
            sent_ledger_failed(ledger.path, exc)


# -- the end of a run ----------------------------------------------------------------------------------


def _on_stop_request(environment: Environment, msg: Any, **_: Any) -> None:
    """Worker: stop, wait for events in flight, send the final statistics, then say so."""
    runner = environment.runner
    assert isinstance(runner, WorkerRunner)
    runner.stop()
    runner._send_stats()  # the final report, before the master quits
    runner.send_message("lossbench_stopped", {"events": STATE.events_recorded})


def _on_worker_stopped(environment: Environment, msg: Any, **_: Any) -> None:
    STATE.workers_stopped.add(msg.node_id)


def _stop_workers(runner: MasterRunner, timeout: float = 60.0) -> None:
    """Master: Locust's quit waits only 0.5 s for final reports; ask each worker to stop and wait for it."""

    def alive() -> set[str]:  # a worker that died (missed heartbeats) will never answer
        return {client.id for client in runner.clients.all if client.state != STATE_MISSING}

    for worker in alive():
        runner.send_message("lossbench_stop", None, client_id=worker)
    deadline = time.monotonic() + timeout
    while not alive() <= STATE.workers_stopped and time.monotonic() < deadline:
        gevent.sleep(0.05)
    missing = alive() - STATE.workers_stopped
    if missing:
        log.warning(
            "lossbench: %d worker(s) sent no final report; the loss table still reads every ledger",
            len(missing),
        )


@events.test_stop.add_listener
def on_test_stop(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        _stop_workers(environment.runner)
        return
    deadline = time.monotonic() + 35.0
    while (STATE.active_visits > 0 or STATE.events_in_flight > 0) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    STATE.ledger_closed = True
    if STATE.ledger is not None:
        ledger, STATE.ledger = STATE.ledger, None
        try:
            ledger.close()
        except OSError as exc:
            sent_ledger_failed(ledger.path, exc)
        if ledger.unwritten_lines:
            log.error(
                "lossbench: the sent ledger %s is incomplete: %d line(s) could not be written",
                ledger.path,
                ledger.unwritten_lines,
            )
    if STATE.late_events:
        log.warning(
            "lossbench: %d event(s) finished after the sent ledger closed and are not in it; compare will "
            "count them as phantoms. Events were still in flight 35 s after the stop: look at the collector",
            STATE.late_events,
        )


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:
    on_test_stop(environment)
    if isinstance(environment.runner, WorkerRunner) or STATE.run_dir is None:
        return
    stop_collector()
    run_dir = STATE.run_dir
    write_run_json(run_dir, environment, STATE.options, ended=time.time())
    if STATE.ledger_error is not None:
        # compare would only say that a sent ledger is incomplete: say why, last, and fail the run.
        sys.stdout.write(f"\nlossbench: no loss table: {STATE.ledger_error}\n")
        sys.stdout.flush()
        environment.process_exit_code = 1
        return
    if STATE.options.no_summary:
        return
    wait_for_closed_ledgers(run_dir / "sent", timeout=15.0)
    text, ok = summarize(run_dir)
    sys.stdout.write(text)
    sys.stdout.flush()
    # Lost events are what is measured, not errors: Locust would exit 1 on its "failures".
    environment.process_exit_code = 0 if ok else 2


def wait_for_closed_ledgers(directory: Path, timeout: float) -> None:
    """Workers close their ledgers when they stop; give them a moment before reading."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_has_footer(p) for p in directory.glob("*.jsonl")):
            return
        gevent.sleep(0.1)


def _has_footer(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 200))
        return b'"ledger_end"' in f.read()


def summarize(run_dir: Path) -> tuple[str, bool]:
    """Compare, write summary.json and the report; the loss table as text (or what went wrong)."""
    from lossbench.analysis.compare import compare, write_summary
    from lossbench.analysis.read import LedgerError
    from lossbench.report.html import render_report
    from lossbench.report.text import summary_to_text

    try:
        summary = compare(run_dir)
    except LedgerError as exc:
        return f"\nlossbench: no loss table: {exc}\n", False
    write_summary(summary, run_dir)
    paths = render_report(run_dir, summary)
    return f"\n{summary_to_text(summary)}\nreport: {paths.html}\n", True
