"""``lossbench run``: the main job in one command — collector, Locust, compare, report; and the same
collector start and finish for Locust run on its own, through the plugin's ``RunHooks``.

The collector and Locust run as child processes (each gets its own core on a 2-core machine). Progress
comes from the collector's ``/stats`` while Locust runs; Locust's own output goes to ``locust.log`` in the
run directory. Every child is stopped in ``finally``: an interrupted run leaves readable ledgers.
"""

from __future__ import annotations

import functools
import json
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
from typing import Any

from lossbench.contract.summary import Summary
from lossbench.contract.techniques import TECHNIQUES
from lossbench.loadgen.locust.options import PluginOptions, locust_arguments
from lossbench.model.exits import get_exit_model
from lossbench.model.profiles import get_profile

Say = Callable[[str], None]


@dataclass
class RunOptions:
    """What ``lossbench run`` runs; the defaults rank the four techniques in about two minutes here."""

    out: Path = Path("results")
    run_id: str = ""
    duration: float = 90.0
    users: int = 400
    spawn_rate: float = 100.0
    processes: int = 2
    collector_processes: int = 1
    scenario: Path | None = None
    plugin: PluginOptions = field(default_factory=PluginOptions)  # passed on to Locust as they are


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
    unknown = [t for t in options.plugin.chosen_techniques() if t not in TECHNIQUES]
    if unknown:
        raise RunError(f"unknown technique(s) {', '.join(unknown)}; choose from {', '.join(TECHNIQUES)}")
    if options.duration <= 0 or options.users <= 0:
        raise RunError("--duration and --users must be positive")


def run(options: RunOptions, say: Say = print) -> tuple[Path, Summary]:
    """Run the benchmark; returns the run directory and its summary."""
    validate(options)
    scenario = options.scenario or find_scenario()
    run_id = options.run_id or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = options.out / run_id
    if (run_dir / "sent").exists():
        raise RunError(f"{run_dir} already holds a run; choose another --run-id or remove it")
    run_dir.mkdir(parents=True, exist_ok=True)
    plugin = options.plugin
    techniques = ", ".join(plugin.chosen_techniques()) or f"every technique of {scenario.name}"
    say(
        f"lossbench run {run_id}: {techniques} on {plugin.network_profile}, exit model "
        f"{plugin.exit_model}, {options.users} users for {options.duration:g} s"
    )
    collector, url = start_collector(run_dir, options.collector_processes)
    try:
        say(f"collector: {url} ({options.collector_processes} process(es))")
        run_locust(options, scenario, run_dir, url, say)
    finally:
        stop_process(collector)
    return run_dir, finish_run(run_dir, say)


def start_collector(run_dir: Path, processes: int) -> tuple[subprocess.Popen[str], str]:
    """Start ``lossbench collector`` on a free loopback port; its stderr goes to ``collector.log``."""
    log_path = run_dir / "collector.log"
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lossbench.cli", "collector", "--port", "0", "--out", str(run_dir),
             "--processes", str(processes)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        proc.wait()
        said = log_path.read_text().strip()[-1500:] or line.strip() or "no output"
        raise RunError(f"the collector did not start: {said}")
    return proc, line.split("listening on ", 1)[1].split()[0]


def locust_command(options: RunOptions, scenario: Path, run_dir: Path, url: str) -> list[str]:
    """Locust, headless, told every plugin option; the run compares and reports itself (--no-summary)."""
    plugin = replace(options.plugin, run_dir=str(run_dir), no_summary=True)
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


def run_locust(options: RunOptions, scenario: Path, run_dir: Path, url: str, say: Say) -> None:
    log_path = run_dir / "locust.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            locust_command(options, scenario, run_dir, url), stdout=log, stderr=subprocess.STDOUT, text=True
        )
        try:
            watch(proc, url, options.duration, say)
        finally:
            stop_process(proc, timeout=60.0)
    stats = collector_stats(url)
    if stats is not None:
        say(f"load finished: the collector received {sum(stats.get('events', {}).values()):,} events")
    sent = list((run_dir / "sent").glob("*.jsonl"))
    # Exit 1 is Locust counting failures, i.e. lost events: what we measure. Anything else is trouble.
    if proc.returncode not in (0, 1) or not sent:
        tail = log_path.read_text()[-2000:]
        raise RunError(
            f"Locust exited with {proc.returncode} and wrote {len(sent)} ledger(s); see {log_path}:\n{tail}"
        )


def watch(proc: subprocess.Popen[str], url: str, duration: float, say: Say, every: float = 10.0) -> None:
    """Print progress from the collector's counters until Locust exits."""
    started = time.monotonic()
    last_events, last_time = 0, started
    next_report = started + every
    while proc.poll() is None:
        time.sleep(0.2)
        now = time.monotonic()
        if now < next_report:
            continue
        next_report = now + every
        stats = collector_stats(url)
        if stats is None:
            continue
        events = sum(stats.get("events", {}).values())
        rate = (events - last_events) / max(now - last_time, 1e-9)
        last_events, last_time = events, now
        say(
            f"  {now - started:5.0f}/{duration:g} s  received {events:,} events ({rate:,.0f}/s), "
            f"{stats.get('connections_open', 0)} connections open, "
            f"collector CPU {stats.get('cpu_seconds', 0):.0f} s"
        )


def collector_stats(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/stats", timeout=2.0) as response:
            stats: dict[str, Any] = json.loads(response.read())
            return stats
    except (OSError, ValueError):
        return None


def stop_process(proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
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
    say("")
    say(summary_to_text(summary).rstrip())
    say("")
    say(f"report: {paths.html}")
    return summary


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
