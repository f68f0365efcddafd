"""``lossbench run``: the main job in one command — collector, Locust, compare, report; and the same
collector start and finish for Locust run on its own, through the plugin's ``RunHooks``.

The collector and Locust run as child processes (each gets its own core on a 2-core machine). Progress
comes from the collector's ``/stats`` while Locust runs; Locust's own output goes to ``locust.log`` in the
run directory. Every child is stopped in ``finally``: an interrupted run leaves readable ledgers.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench.contract.server import TARGET_HINTS
from lossbench.contract.summary import Summary
from lossbench.contract.techniques import ALL_TECHNIQUES
from lossbench.loadgen.locust.options import PluginOptions, locust_arguments
from lossbench.model.exits import get_exit_model
from lossbench.model.profiles import get_profile
from lossbench.targets import KINDS, Target, TargetError, start_target

if TYPE_CHECKING:
    from lossbench.sizing import RunSizing, Sizing

Say = Callable[[str], None]

PRECISION = 0.25
"""lossbench run's --precision unless given, in points: about what a 60 s run of the default techniques
reaches on the 2-core machine it was measured on (docs/MODEL.md, "Stopping on precision"), so a default run
stops once it has its answer, --duration being the limit (locust -f, sweep and targets: never)."""

LAG_STOP = 20.0
"""lossbench run's --lag-stop unless given: seconds of a lagging load generator that stop the run (the
plugin's default, for locust -f, sweep and targets, is never)."""


@dataclass
class RunOptions:
    """What ``lossbench run`` runs; the defaults rank the techniques in about two minutes here."""

    out: Path = Path("results")
    run_id: str = ""
    duration: float = 90.0
    users: int = 400
    spawn_rate: float = 100.0
    processes: int = 2
    collector_processes: int = 1
    service_time: str | None = None  # the reference collector's --service-time (None: answers at once)
    service_workers: int = 1  # the reference collector's --service-workers
    target: str = "reference"  # a kind of lossbench.targets.KINDS, or the URL of a running target
    received_from: str | None = None  # adapter spec of a running target's log (required with a URL)
    scenario: Path | None = None
    plugin: PluginOptions = field(default_factory=PluginOptions)  # passed on to Locust as they are
    live: bool = False  # progress as a live view (a terminal), else as lines every 10 s
    size: bool | None = None  # size users and processes to the machine first (lossbench.sizing); False:
    # lossbench run was given them (said and recorded); None: not asked (sweep, targets)


class RunError(Exception):
    """The run could not go on; the message says why and what to do."""


def find_scenario(name: str = "all.py") -> Path:
    """A scenario shipped in the package (``lossbench/scenarios``), or a locustfile path."""
    from lossbench import scenarios

    for candidate in (Path(scenarios.__file__).parent / name, Path(name)):
        if candidate.is_file():
            return candidate
    raise RunError(f"scenario {name} not found in the package or as a file; pass --scenario PATH")


def validate(options: RunOptions) -> None:
    try:
        get_profile(options.plugin.network_profile)
        get_exit_model(options.plugin.exit_model)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    unknown = [t for t in options.plugin.chosen_techniques() if t not in ALL_TECHNIQUES]
    if unknown:
        raise RunError(f"unknown technique(s) {', '.join(unknown)}; choose from {', '.join(ALL_TECHNIQUES)}")
    if options.duration <= 0 or options.users <= 0:
        raise RunError("--duration and --users must be positive")
    if is_url(options.target) and not options.received_from:
        raise RunError(
            f"--target {options.target} is a running target: say where its log is with --received-from "
            "KIND:PATH[:OPTIONS], e.g. nginx:/var/log/nginx/access.log"
        )
    if not is_url(options.target) and options.target not in KINDS:
        raise RunError(f"unknown --target {options.target!r}; choose from {', '.join(KINDS)}, or a URL")
    validate_service(options)


def validate_service(options: RunOptions) -> None:
    """--service-time and --service-workers: readable, and only for the reference collector."""
    from lossbench.collector.service import parse_service_time

    if options.service_time is not None:
        try:
            parse_service_time(options.service_time)
        except ValueError as exc:
            raise RunError(str(exc)) from None
    if options.service_workers < 1:
        raise RunError(f"--service-workers {options.service_workers}: at least one worker")
    if options.target != "reference" and (options.service_time is not None or options.service_workers != 1):
        raise RunError(
            f"--service-time and --service-workers slow the reference collector; --target {options.target} "
            "is another one"
        )


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


@dataclass
class Load:
    """Where the load goes: a target lossbench started (``target``), or a running one at ``url``."""

    url: str
    received_from: str | None  # the adapter spec compare reads; None: the reference collector's ledger
    target: Target | None

    def stop(self) -> None:
        if self.target is not None:
            self.target.stop()

    def cpu_seconds(self) -> float | None:
        """The target's CPU time so far; None for a running target lossbench did not start."""
        return None if self.target is None else self.target.cpu_seconds()


def start_load(options: RunOptions, run_dir: Path) -> Load:
    """Start the chosen target for a run in ``run_dir`` (the reference collector with
    ``collector_processes``), or take the running one at its URL."""
    if is_url(options.target):
        received_from = options.received_from
        if received_from is not None and not Path(parse_path(received_from)).is_absolute():
            kind, rest = received_from.split(":", 1)  # paths in run.json are relative to the run directory
            received_from = f"{kind}:{Path.cwd() / rest}"
        return Load(options.target.rstrip("/"), received_from, None)
    try:
        if options.target == "reference":
            proc, url = start_collector(
                run_dir, options.collector_processes, options.service_time, options.service_workers
            )
            target = Target(kind="reference", url=url, process=proc, raw_logs=(), received_from=None)
        else:
            target = start_target(options.target, run_dir)
    except TargetError as exc:
        raise RunError(str(exc)) from None
    return Load(target.url, options.received_from or target.received_from, target)


def parse_path(spec: str) -> str:
    """The PATH of ``KIND:PATH[:OPTIONS]`` (the adapters' own parser checks the rest when compare reads)."""
    return spec.partition(":")[2].partition(":")[0]


def record_target(run_dir: Path, kind: str, load: Load, options: RunOptions | None = None) -> None:
    """Put the target and the spec of its log in run.json before Locust starts (the plugin keeps what it
    finds there), so that a later ``lossbench compare`` reads the same log; for the reference collector,
    also how it was started (``collector``: processes, service time and workers)."""
    path = run_dir / "run.json"
    document = json.loads(path.read_text()) if path.exists() else {}
    document.update(target=kind, target_url=load.url, received_from=load.received_from)
    if kind == "reference" and options is not None:
        document["collector"] = {
            "processes": options.collector_processes,
            "service_time": options.service_time,
            "service_workers": options.service_workers,
        }
    path.write_text(json.dumps(document, indent=1) + "\n")


@dataclass
class RunResult:
    """A finished run: its directory and summary, and what the target did during the load."""

    run_dir: Path
    summary: Summary
    load_seconds: float  # wall time of Locust running
    cpu_seconds: float | None  # the target's CPU time during the load; None for a running target at a URL

    def load_duration(self) -> float:
        """Seconds the load lasted: run.json's load_seconds (from the test's start until its last visit was
        over), else until ``--precision`` or the lag guard stopped it (precision_reached, lag_stopped), else
        run.json's duration (Locust's --run-time), else the wall time of the load (which counts Locust's
        start and stop too)."""
        seconds = self.summary.run.get("load_seconds")
        if isinstance(seconds, int | float) and seconds > 0:
            return float(seconds)
        stopped = self.summary.run.get("lag_stopped")
        if isinstance(stopped, dict) and isinstance(stopped.get("at"), int | float):
            return float(stopped["at"])
        for key in ("precision_reached", "duration"):
            value = self.summary.run.get(key)
            if isinstance(value, int | float) and value > 0:
                return float(value)
        return self.load_seconds


def run(options: RunOptions, say: Say = print) -> tuple[Path, Summary]:
    """Run the benchmark; returns the run directory and its summary."""
    result = run_measured(options, say)
    return result.run_dir, result.summary


def run_measured(options: RunOptions, say: Say = print) -> RunResult:
    """Run the benchmark, measuring the load's wall time and the target's CPU time. A run sized in its
    own first seconds that lagged there starts again, at the load the probes choose."""
    from lossbench.sizing import LoadTooHeavy, probe_loads

    validate(options)
    scenario = options.scenario or find_scenario()
    run_id = options.run_id or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = options.out / run_id
    if (run_dir / "sent").exists():
        raise RunError(f"{run_dir} already holds a run; choose another --run-id or remove it")
    run_dir.mkdir(parents=True, exist_ok=True)
    options, sizing = size_run(options, run_dir, say)
    before = set(run_dir.iterdir())
    try:
        return measure_load(options, scenario, run_id, run_dir, say, sizing)
    except LoadTooHeavy as heavy:
        assert sizing is not None
        discard(run_dir, before)  # the first attempt's ledgers and logs: no event of it is the run's
        sized = probe_loads(sizing.planned, options, run_dir / "sizing", say, first=heavy.probe)
        update_run_json(run_dir, sizing=sized.record())
        options = replace(options, users=sized.users, processes=sized.processes)
        return measure_load(options, scenario, run_id, run_dir, say)


def measure_load(
    options: RunOptions, scenario: Path, run_id: str, run_dir: Path, say: Say, sizing: RunSizing | None = None
) -> RunResult:
    """The target and Locust for one run in ``run_dir``, then compare and report."""
    plugin = options.plugin
    techniques = ", ".join(plugin.chosen_techniques()) or f"every technique of {scenario.name}"
    say(
        f"lossbench run {run_id}: {techniques} on {plugin.network_profile}, exit model "
        f"{plugin.exit_model}, {options.users} users for {options.duration:g} s"
        + (f" or until every interval is within ±{plugin.precision:g} points" if plugin.precision else "")
    )
    load = start_load(options, run_dir)
    try:
        record_target(run_dir, "url" if is_url(options.target) else options.target, load, options)
        if load.target is None or load.target.kind != "reference":
            what = "a running target" if load.target is None else load.target.kind
            say(f"target: {what} at {load.url}; received events read with {load.received_from}")
        else:
            slow = (
                f", service time {options.service_time} on {options.service_workers} worker(s)"
                if options.service_time is not None
                else ""
            )
            say(f"collector: {load.url} ({options.collector_processes} process(es){slow})")
        cpu_at_start, started = load.cpu_seconds(), time.monotonic()  # the start-up is not the load's
        run_locust(options, scenario, run_dir, load, say, sizing)
        load_seconds = time.monotonic() - started
        cpu = load.cpu_seconds()  # before stopping: a process that exited has no /proc entry
        if cpu is not None and cpu_at_start is not None:
            cpu -= cpu_at_start
    finally:
        load.stop()
    return RunResult(run_dir, finish_run(run_dir, say), load_seconds, cpu)


def discard(run_dir: Path, keep: set[Path]) -> None:
    """Remove what ``run_dir`` holds beyond ``keep``: an attempt that is not the run."""
    for path in set(run_dir.iterdir()) - keep:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def size_run(options: RunOptions, run_dir: Path, say: Say) -> tuple[RunOptions, RunSizing | None]:
    """The run's options with users and processes sized to the machine (``lossbench.sizing``) when asked;
    what was done goes into run.json's ``sizing``. Sized, the run starts with the heaviest load of the plan
    and measures it in its own first seconds: the ``RunSizing`` returned, whose verdict goes into run.json
    when it comes."""
    if options.size is None:
        return options, None
    record: dict[str, Any]
    if not options.size:
        why = "--users or --processes given"
        say(f"load: {options.users} tabs in {options.processes} process(es), as given (not sized)")
        record = {"skipped": why}
    elif is_url(options.target):
        why = "a running target: the probes' events would go into the log compare reads"
        say(f"load: {options.users} tabs in {options.processes} process(es), not sized: {why}")
        record = {"skipped": why}
    else:
        from lossbench.sizing import RunSizing, Sizing, plan_sizing

        planned = plan_sizing(options)
        if not isinstance(planned, Sizing):
            sizing = RunSizing(planned, run_dir, say)
            sizing.announce()
            return replace(options, users=sizing.load[0], processes=sizing.load[1]), sizing
        say(f"load: {planned.reason}")
        options = replace(options, users=planned.users, processes=planned.processes)
        record = planned.record()
    update_run_json(run_dir, sizing=record)
    return options, None


def update_run_json(run_dir: Path, **values: Any) -> None:
    """Set keys of run.json (the plugin keeps what it finds there when it writes its own)."""
    path = run_dir / "run.json"
    document = json.loads(path.read_text()) if path.exists() else {}
    document.update(values)
    path.write_text(json.dumps(document, indent=1) + "\n")


def start_collector(
    run_dir: Path,
    processes: int,
    service_time: str | None = None,
    service_workers: int = 1,
    *,
    cors_max_age: int | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``lossbench collector`` on a free loopback port (with ``--service-time`` and
    ``--service-workers`` when a service time is given, ``--cors-max-age`` when given); its stderr goes to
    ``collector.log``."""
    log_path = run_dir / "collector.log"
    command = [sys.executable, "-m", "lossbench.cli", "collector", "--port", "0", "--out", str(run_dir),
               "--processes", str(processes)]  # fmt: skip
    if service_time is not None:
        command += ["--service-time", service_time, "--service-workers", str(service_workers)]
    if cors_max_age is not None:
        command += ["--cors-max-age", str(cors_max_age)]
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
        )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace")
    if "listening on " not in line:
        proc.kill()
        proc.wait()
        said = log_path.read_text().strip()[-1500:] or line.strip() or "no output"
        raise RunError(f"the collector did not start: {said}")
    return proc, line.split("listening on ", 1)[1].split()[0]


def locust_command(options: RunOptions, scenario: Path, run_dir: Path, url: str) -> list[str]:
    """Locust, headless, told every plugin option; the run compares and reports itself (--no-summary).
    A target started here tells the plugin what it tells browsers (keep-alive timeout, preflight max-age)."""
    plugin = replace(options.plugin, run_dir=str(run_dir), no_summary=True)
    hints = TARGET_HINTS.get(options.target)
    if hints is not None:
        max_age = -1.0 if hints.cors_max_age is None else float(hints.cors_max_age)
        plugin = replace(plugin, target_idle_timeout=hints.idle_timeout, target_max_age=max_age)
    command = [
        sys.executable, "-m", "locust", "-f", str(scenario), "--headless",
        "-u", str(options.users), "-r", str(options.spawn_rate), "-t", f"{options.duration:g}s",
        "--host", url, *locust_arguments(plugin), "--only-summary", "--stop-timeout", "0",
    ]  # fmt: skip
    if options.processes > 1:
        port = str(free_port())  # the master's port on loopback, not Locust's default *:5557
        command += ["--processes", str(options.processes), "--master-bind-host", "127.0.0.1",
                    "--master-bind-port", port, "--master-host", "127.0.0.1",
                    "--master-port", port]  # fmt: skip
    return command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_locust(
    options: RunOptions, scenario: Path, run_dir: Path, load: Load, say: Say, sizing: RunSizing | None = None
) -> None:
    """Locust until it exits, with progress; ``sizing``: the run's first seconds are its sizing probe
    (``LoadTooHeavy`` when they lagged: Locust is killed, its ledgers are not the run's)."""
    from lossbench.sizing import LoadTooHeavy

    log_path = run_dir / "locust.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            locust_command(options, scenario, run_dir, load.url),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            watch(proc, load, run_dir, options, say, sizing)
        except LoadTooHeavy:
            kill_tree(proc)
            raise
        finally:
            stop_process(proc, timeout=60.0)
    stats = collector_stats(load.url) if load.received_from is None else None
    if stats is not None:
        say(f"load finished: the collector received {sum(stats.get('events', {}).values()):,} events")
    sent = list((run_dir / "sent").glob("*.jsonl"))
    # Exit 1 is Locust counting failures, i.e. lost events: what we measure. Anything else is trouble.
    if proc.returncode not in (0, 1) or not sent:
        tail = log_path.read_text()[-2000:]
        raise RunError(
            f"Locust exited with {proc.returncode} and wrote {len(sent)} ledger(s); see {log_path}:\n{tail}"
        )
    if sizing is not None:  # a load over before its first seconds were judged: judged on what it fired
        record_sizing(run_dir, sizing.check(ended=True))


def watch(
    proc: subprocess.Popen[str],
    load: Load,
    run_dir: Path,
    options: RunOptions,
    say: Say,
    sizing: RunSizing | None = None,
) -> None:
    """Show progress until Locust exits (``lossbench.watch``): the running loss from ``progress.json``, and
    the reference collector's ``/stats``; for another target (which has no ``/stats``: polling it would put
    foreign lines in its log) its CPU. ``sizing`` judges the run's first seconds meanwhile."""
    from lossbench.contract.progress import FILE_NAME
    from lossbench.watch import Sampler, follow

    def running() -> bool:
        if proc.poll() is not None:
            return False  # a Locust that failed says why in run_locust, not as a sizing timeout
        if sizing is not None:
            record_sizing(run_dir, sizing.check())
        return True

    reference = load.received_from is None
    collector = functools.partial(collector_stats, load.url) if reference else None
    sampler = Sampler(run_dir / FILE_NAME, options.duration, collector, load.cpu_seconds)
    follow(running, sampler, say, live=options.live)


def record_sizing(run_dir: Path, sizing: Sizing | None) -> None:
    if sizing is not None:
        update_run_json(run_dir, sizing=sizing.record())


def collector_stats(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/stats", timeout=2.0) as response:
            stats: dict[str, Any] = json.loads(response.read())
            return stats
    except (OSError, ValueError):
        return None


def kill_tree(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """Kill a process and its children at once (Locust's master and the workers it forked): for a run
    whose ledgers are thrown away, not worth their orderly end."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    with contextlib.suppress(OSError, ValueError):
        for child in map(int, children.read_text().split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def stop_process(proc: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def finish_run(run_dir: Path, say: Say) -> Summary:
    """Finish a run, whoever ran it: compare, write summary.json, render the report; say the loss table
    and where the report is. Raises LedgerError when the ledgers cannot be read."""
    from lossbench.analysis.compare import compare, write_summary
    from lossbench.report.html import render_report
    from lossbench.report.text import summary_to_text

    say("comparing ledgers ...")
    summary = compare(run_dir)
    write_summary(summary, run_dir)
    say("rendering the report ...")
    paths = render_report(run_dir, summary)
    say_result(say, summary_to_text(summary), paths.html)
    return summary


def say_result(say: Say, table: str, report: Path) -> None:
    """The end of a run: its table, then where its report is."""
    say("")
    say(table.rstrip())
    say("")
    say(f"report: {report}")


def say_now(line: str) -> None:
    """A line on standard output at once: progress is worth seeing while the children run."""
    print(line, flush=True)


def attach_to_locust() -> None:
    """For a locustfile run with the locust command: the plugin starts the reference collector when no
    --host is given and finishes the run at the end, as ``lossbench run`` does. (Imported here: importing
    Locust patches the process with gevent, which no other command of lossbench wants.)"""
    from lossbench.loadgen.locust.lifecycle import PLUGIN, RunHooks

    PLUGIN.hooks = RunHooks(start_collector=_collector_for_locust, finish=_finish_for_locust)


def _collector_for_locust(run_dir: Path) -> tuple[str, Callable[[], None]]:
    try:
        proc, url = start_collector(run_dir, processes=1)
    except RunError as exc:
        raise SystemExit(f"lossbench: {exc}") from None
    return url, functools.partial(stop_process, proc)


def _finish_for_locust(run_dir: Path) -> bool:
    from lossbench.analysis.read import LedgerError

    try:
        finish_run(run_dir, say_now)
    except LedgerError as exc:
        say_now(f"\nlossbench: no loss table: {exc}")
        return False
    return True
