"""Sizing the load of ``lossbench run`` to the machine as it is when the run starts.

pyperf calibrates its loops before it measures: it doubles them until one run lasts long enough. ``lossbench
run`` calibrates its load, from the other end: the most it wants is the default load (``CAP_USERS`` tabs in
``CAP_PROCESSES`` Locust worker processes), and the question is whether the machine, as busy as it is now,
sustains it without the load generator lagging. A lagging generator does not change which events are lost
(they are decided on the intended timeline), but the collector then sees a late schedule, and compare flags
the run (``lossbench.contract.timing``).

A probe is the timing error of the events a load fired over ``WINDOW`` seconds once its tabs have started
(``SETTLE``: their first visits spread over 3 s), read from its sent ledger as compare reads it
(``ProbeWindow``). The heaviest load of the plan is probed by the run itself (``RunSizing``): the run starts
with it and judges its own first seconds; when they hold the run goes on, and sizing cost no time. When they
lag, the run is killed, its files removed, and the lighter loads are probed by short Locust runs of their
own against a collector of their own (``Prober``, ledgers thrown away): each that misses halves the tabs,
down to ``MIN_USERS``; after the first that holds its p90 within ``TARGET_SHARE`` of the limit, one more
probe tries the middle between it and the load that missed, and the heavier of the two that held is the
run's, which starts again. A probe holds to a share of the limit because the run lasts longer than a probe
and the machine's other work comes and goes: a load at the limit in a probe would be flagged in the run.
``plan`` takes the processes from the CPUs this process may use and what the load average says is free of
them. Probes run in the caller's session, as the run's Locust does: under autogroup scheduling each session
shares the CPUs as one (``Prober``).

The choice (``choose``) is separate from the probing, so that it is tested with made-up probes; ``size_load``
(probes only) and ``RunSizing`` with ``probe_loads`` (the run first) put them together and say what was
chosen and why.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from lossbench.contract.server import TARGET_HINTS
from lossbench.contract.techniques import SEED_TECHNIQUES, TECHNIQUES
from lossbench.contract.timing import guard_limit, lag_limit, timing_error
from lossbench.model.browser import get_browser
from lossbench.model.profiles import get_profile
from lossbench.runner import Load, RunError, RunOptions, Say, find_scenario, locust_command, start_load
from lossbench.stats import wilson_half_width

CAP_USERS = 400
"""The most tabs sizing gives a run: the default load, ``RunOptions().users``."""
CAP_PROCESSES = 2
"""The most Locust worker processes sizing gives a run: ``RunOptions().processes``."""
MIN_USERS = 50
"""The fewest tabs sizing tries; when even they lag, the run gets them and is told it will be flagged."""
TARGET_SHARE = 0.5
"""A probe's p90 timing error must stay within this share of the guard's limit."""
SETTLE = 3.0
"""Seconds from a probe's first event before its window opens: tabs start their first visit over 3 s
(``START_JITTER``), so the load is whole from then on."""
WINDOW = 3.0
"""Seconds of fired events a probe measures (longer, up to ``WINDOW_MAX``, until it has MIN_EVENTS)."""
WINDOW_MAX = 9.0
MIN_EVENTS = 200
TAIL = 2.0
"""Seconds after the window before reading it: its last events finish (an event lasts a few RTTs)."""
START_TIMEOUT = 45.0
"""Seconds a probe may take to fire its first event (Locust's start on a busy machine)."""


@dataclass(frozen=True)
class Probe:
    """What one probe measured."""

    users: int
    processes: int
    seconds: float  # the window: events fired over these seconds were timed
    events: int  # events fired in the window (every technique)
    p50: float | None  # timing error, seconds; None without events
    p90: float | None
    losses: dict[str, tuple[int, int]] = field(default_factory=dict)  # (events, cut) per technique

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def within(self, target: float) -> bool:
        return self.p90 is not None and self.p90 <= target

    def words(self) -> str:
        load = f"{self.users} tabs in {_processes(self.processes)}"
        if self.p90 is None:
            return f"{load}: no event timed in {self.seconds:g} s"
        return (
            f"{load}: p90 timing error {_ms(self.p90)} (p50 {_ms(self.p50 or 0.0)}), "
            f"{self.events:,} events in {self.seconds:g} s ({self.events_per_second:,.0f}/s)"
        )


@dataclass(frozen=True)
class Machine:
    """What this process may use of the machine when the run starts."""

    cpus: int  # CPUs this process may run on (its affinity)
    load_average: float  # over the last minute

    @classmethod
    def now(cls) -> Machine:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
        return cls(cpus=cpus, load_average=load)

    @property
    def free(self) -> float:
        """CPUs the load average leaves free (it counts processes running or waiting for a CPU)."""
        return max(0.0, self.cpus - self.load_average)


@dataclass(frozen=True)
class Sizing:
    """The load a run gets, and how it was found."""

    users: int
    processes: int
    reason: str  # in words: what was chosen, from which probes, against which limit
    limit: float  # the p90 compare warns at, seconds
    target: float  # the p90 a probe had to stay within, seconds
    seconds: float  # what sizing cost, wall time
    machine: Machine
    probes: list[Probe]
    in_run: bool = False  # measured in the run's own first seconds (``RunSizing``): no extra time

    def record(self) -> dict[str, Any]:
        """run.json's ``sizing``."""
        return {
            "users": self.users,
            "processes": self.processes,
            "reason": self.reason,
            "limit": self.limit,
            "target": self.target,
            "seconds": round(self.seconds, 1),
            "in_run": self.in_run,
            "cpus": self.machine.cpus,
            "load_average": round(self.machine.load_average, 2),
            "probes": [
                {
                    **{k: v for k, v in asdict(p).items() if k not in ("losses", "p50", "p90")},
                    "p50": None if p.p50 is None else round(p.p50, 6),
                    "p90": None if p.p90 is None else round(p.p90, 6),
                    "events_per_second": round(p.events_per_second, 1),
                    "ok": p.within(self.target),
                }
                for p in self.probes
            ],
        }


# ------------------------------------------------------------------------------------------ the choice


def plan(machine: Machine) -> list[tuple[int, int]]:
    """(tabs, processes) to probe, heaviest first: ``CAP_USERS`` halved down to ``MIN_USERS``, in as
    many processes (up to ``CAP_PROCESSES``) as the load average leaves CPUs free, at least one; the
    collector and the Locust master share what is left."""
    processes = max(1, min(CAP_PROCESSES, machine.cpus, math.floor(machine.free + 0.5)))
    out, users = [], CAP_USERS
    while users >= MIN_USERS:
        out.append((users, processes))
        users //= 2
    return out


def choose(
    loads: list[tuple[int, int]], probe: Callable[[int, int], Probe], target: float
) -> tuple[tuple[int, int], list[Probe]]:
    """Probe the loads in order until one holds its p90 within ``target``; after a load that did not, try
    once the middle between the two (halving leaves a factor of two, and fewer tabs are fewer events: wider
    intervals). The heaviest load that held, and every probe made; the last load when none held."""
    probes: list[Probe] = []
    for i, (users, processes) in enumerate(loads):
        probes.append(probe(users, processes))
        if not probes[-1].within(target):
            continue
        if i > 0:
            middle = _round_tabs((users + loads[i - 1][0]) / 2)
            if users < middle < loads[i - 1][0]:
                probes.append(probe(middle, processes))
                if probes[-1].within(target):
                    return (middle, processes), probes
        return (users, processes), probes
    return loads[-1], probes


def _round_tabs(users: float) -> int:
    return int(round(users / 10) * 10)


def reason(
    users: int, processes: int, probes: list[Probe], limit: float, target: float, in_run: bool = False
) -> str:
    """What was chosen and why, in words (``in_run``: the one probe was the run's first seconds)."""
    load = f"{users} tabs in {_processes(processes)}"
    held = f"against the {_ms(limit)} limit compare warns at; probes hold to {_ms(target)}"
    chosen = next((p for p in probes if (p.users, p.processes) == (users, processes)), None)
    if chosen is not None and chosen.within(target):
        if chosen is probes[0]:
            most = ", the most it tries" if (users, processes) == (CAP_USERS, CAP_PROCESSES) else ""
            where = " in the run's first seconds" if in_run else ""
            return f"{load}{most}: its p90 timing error was {_ms(chosen.p90 or 0.0)}{where} ({held})"
        seen = ", ".join(f"{'no event timed' if p.p90 is None else _ms(p.p90)} at {p.users}" for p in probes)
        return f"{load}: the p90 timing error was {seen} tabs ({held})"
    last = probes[-1] if probes else None
    seen = "no event was timed" if last is None or last.p90 is None else f"it was {_ms(last.p90)}"
    return (
        f"{load}, the fewest tried, and still lagging: {seen} ({held}); the run will likely be flagged. "
        "Free the machine, or give --users and --processes"
    )


def expected_half_width(
    probe: Probe, duration: float, predicted: Mapping[str, float] | None = None
) -> tuple[str, float] | None:
    """The widest 95% interval (half-width) to expect after ``duration`` seconds at the probe's rate of
    each technique and its ``predicted`` loss (the model's; else the probe's own count of cut events, which
    is low: events cut late had not finished when the probe was read): (technique, half-width); None when
    the probe saw no events."""
    widest: tuple[str, float] | None = None
    for tech, (events, cut) in probe.losses.items():
        if events == 0 or probe.seconds <= 0:
            continue
        loss = (predicted or {}).get(tech, cut / events)
        half = wilson_half_width(loss, events / probe.seconds * duration)
        if widest is None or half > widest[1]:
            widest = (tech, half)
    return widest


# ------------------------------------------------------------------------------------------ the probes


class _Timed(msgspec.Struct):
    """What a probe reads of a sent ledger's line (headers, pings and footers have no ``t0``)."""

    t0: float | None = None
    tech: str | None = None
    written: bool | None = None
    plan: dict[str, float] | None = None
    real: dict[str, float] | None = None


_decode = msgspec.json.Decoder(_Timed).decode


Timed = tuple[float, float, str, bool]
"""A probe's event: (t0, timing error, technique, written)."""


class LedgerTail:
    """The events of a growing sent/ directory: (t0, timing error, technique, written), read as they come."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.offsets: dict[Path, int] = {}
        self.events: list[Timed] = []

    def read(self) -> None:
        for path in sorted(self.directory.glob("*.jsonl")):
            start = self.offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(start)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next read
            self.offsets[path] = start + end
            for line in chunk[:end].splitlines():
                with contextlib.suppress(msgspec.DecodeError):
                    timed = _decode(line)
                    if timed.t0 is not None and timed.tech is not None:
                        error = timing_error(timed.plan, timed.real)
                        self.events.append((timed.t0, error, timed.tech, bool(timed.written)))

    def first(self) -> float | None:
        return min((e[0] for e in self.events), default=None)

    def between(self, start: float, end: float) -> list[Timed]:
        return [e for e in self.events if start <= e[0] < end]


def measure(users: int, processes: int, events: list[Timed], seconds: float) -> Probe:
    """A probe's figures from the events fired in its window."""
    errors = [e[1] for e in events if not math.isnan(e[1])]
    losses: dict[str, tuple[int, int]] = {}
    for _, _, tech, written in events:
        n, cut = losses.get(tech, (0, 0))
        losses[tech] = (n + 1, cut + (not written))
    return Probe(
        users=users,
        processes=processes,
        seconds=seconds,
        events=len(events),
        p50=_quantile(errors, 0.5),
        p90=_quantile(errors, 0.9),
        losses=losses,
    )


def _quantile(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


class ProbeWindow:
    """A load's first seconds, read from its growing sent ledger as they come: a probe's, or the run's own
    (``RunSizing``). ``poll`` gives the probe once its window is over."""

    def __init__(
        self,
        sent: Path,
        users: int,
        processes: int,
        what: str,
        run_dir: Path,
        clock: Callable[[], float] = time.time,  # the ledgers' clock (t0)
    ) -> None:
        self.tail = LedgerTail(sent)
        self.clock = clock
        self.users, self.processes = users, processes
        self.what = what  # in words, for the message when no event comes
        self.run_dir = run_dir
        self.started = time.monotonic()
        self.window = WINDOW

    def poll(self, ended: bool = False) -> Probe | None:
        """The probe once ``SETTLE`` + its window + ``TAIL`` have passed since the first event (at once when
        the load has ``ended``: what it fired is all there is); None until then."""
        self.tail.read()
        first = self.tail.first()
        if first is None:
            if ended or time.monotonic() - self.started > START_TIMEOUT:
                raise RunError(
                    f"{self.what} fired no event in {time.monotonic() - self.started:.0f} s; see "
                    f"{self.run_dir / 'locust.log'}, or give --users and --processes to skip sizing"
                )
            return None
        opens = first + SETTLE
        if ended:  # a load shorter than a window: its events after the start, else all of them
            events = self.tail.between(opens, opens + self.window) or self.tail.between(first, math.inf)
            span = max(e[0] for e in events) - min(e[0] for e in events)
            return measure(self.users, self.processes, events, max(min(span, self.window), 0.001))
        while self.clock() >= opens + self.window + TAIL:
            events = self.tail.between(opens, opens + self.window)
            if len(events) >= MIN_EVENTS or self.window >= WINDOW_MAX:
                return measure(self.users, self.processes, events, self.window)
            self.window += WINDOW
        return None


class Prober:
    """Short Locust runs with the run's options against one collector, in a directory of their own."""

    def __init__(self, options: RunOptions, scenario: Path, load: Load, directory: Path) -> None:
        self.options = options
        self.scenario = scenario
        self.load = load
        self.directory = directory
        self.count = 0

    def __call__(self, users: int, processes: int) -> Probe:
        self.count += 1
        run_dir = self.directory / f"probe-{self.count}"
        run_dir.mkdir(parents=True)
        probe_options = replace(
            self.options,
            users=users,
            processes=processes,
            spawn_rate=float(users),  # all at once, as the run starts them by default
            duration=math.ceil(SETTLE + WINDOW_MAX + TAIL + START_TIMEOUT),  # a limit: killed before
            plugin=replace(self.options.plugin, precision=0.0, lag_stop=0.0),
        )
        command = locust_command(probe_options, self.scenario, run_dir, self.load.url)
        with (run_dir / "locust.log").open("w") as log:
            # A process group of its own, to kill the probe with the workers it forks; the same session as
            # the run, though: with autogroup scheduling (Linux's default on desktops and here) each session
            # shares the CPUs as one, and a probe in a session of its own would get more of them than the
            # run's Locust will, beside busy work started from the same shell.
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, process_group=0)
        try:
            return self._watch(proc, run_dir, users, processes)
        finally:
            _kill_group(proc)

    def _watch(self, proc: subprocess.Popen[bytes], run_dir: Path, users: int, processes: int) -> Probe:
        window = ProbeWindow(run_dir / "sent", users, processes, f"a sizing probe ({users} tabs)", run_dir)
        while True:
            time.sleep(0.25)
            if proc.poll() is not None:
                log = (run_dir / "locust.log").read_text(errors="replace")[-2000:]
                raise RunError(f"a sizing probe ({users} tabs) ended with {proc.returncode}:\n{log}")
            probe = window.poll()
            if probe is not None:
                return probe


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """The probe and its workers, at once: its ledgers are not needed whole."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with contextlib.suppress(ProcessLookupError):  # workers that outlived their master
        os.killpg(proc.pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------ all together


def target_of(options: RunOptions) -> tuple[float, float] | None:
    """(compare's limit, the probes' target) for the run's profile; None for a zero RTT (never flagged)."""
    median_rtt = get_profile(options.plugin.network_profile).rtt  # the median of its lognormal draws
    guard = guard_limit(median_rtt)
    if guard is None:
        return None
    return lag_limit(median_rtt), TARGET_SHARE * guard


@dataclass(frozen=True)
class Plan:
    """What sizing will try (heaviest first), against which limit: made as the run starts."""

    machine: Machine
    loads: list[tuple[int, int]]
    limit: float  # the p90 compare warns at, seconds
    target: float  # the p90 a probe must stay within, seconds
    started: float = field(default_factory=time.monotonic)


def plan_sizing(options: RunOptions, machine: Machine | None = None) -> Plan | Sizing:
    """The plan for this machine; for a profile without network delay, the default load at once."""
    machine = machine or Machine.now()
    limits = target_of(options)
    if limits is None:
        why = (
            f"{CAP_USERS} tabs in {_processes(CAP_PROCESSES)}, the default: the "
            f"{options.plugin.network_profile} profile has no network delay, so no timing error is flagged"
        )
        return Sizing(CAP_USERS, CAP_PROCESSES, why, 0.0, 0.0, 0.0, machine, [])
    return Plan(machine, plan(machine), *limits)


def size_load(
    options: RunOptions,
    directory: Path,
    say: Say,
    machine: Machine | None = None,
    probe: Callable[[int, int], Probe] | None = None,
) -> Sizing:
    """Find the load the machine sustains now by probing (``probe``: made-up probes, in tests); say what
    was chosen and why. Probes run in ``directory``, which is removed afterwards."""
    planned = plan_sizing(options, machine)
    if isinstance(planned, Sizing):
        say(f"load: {planned.reason}")
        return planned
    say(
        f"{_sizing_words(planned)}: from {_load_words(planned.loads[0])}, halving until the p90 timing "
        f"error of a {SETTLE + WINDOW + TAIL:g} s probe is within {_ms(planned.target)} "
        "(--users or --processes skip this)"
    )
    return probe_loads(planned, options, directory, say, probe)


def probe_loads(
    planned: Plan,
    options: RunOptions,
    directory: Path,
    say: Say,
    probe: Callable[[int, int], Probe] | None = None,
    first: Probe | None = None,
) -> Sizing:
    """Probe the plan's loads (``first``: the first one's probe, already made and said, by the run
    itself), choose, and say what was chosen and why."""
    with _probing(options, directory, probe) as probing:

        def probe_and_say(users: int, processes: int) -> Probe:
            if first is not None and (users, processes) == (first.users, first.processes):
                return first
            result = probing(users, processes)
            say(f"  {result.words()}: {verdict(result, planned.target)}")
            return result

        (users, processes), probes = choose(planned.loads, probe_and_say, planned.target)
    words = reason(users, processes, probes, planned.limit, planned.target)
    seconds = time.monotonic() - planned.started
    say(f"sized to {words}; sizing took {seconds:.0f} s")
    chosen = next((p for p in probes if (p.users, p.processes) == (users, processes)), None)
    widest = None if chosen is None else expected_half_width(chosen, options.duration, _predicted(options))
    if widest is not None:
        say(
            f"  at that rate, {options.duration:g} s should give intervals within about "
            f"±{100 * widest[1]:.2f} points (widest: {widest[0]}, at the model's loss)"
        )
    return Sizing(users, processes, words, planned.limit, planned.target, seconds, planned.machine, probes)


class LoadTooHeavy(Exception):
    """The run's first seconds lagged beyond the plan's target: the run starts again, sized by probes."""

    def __init__(self, probe: Probe) -> None:
        super().__init__(probe.words())
        self.probe = probe


class RunSizing:
    """Sizing in the run itself: the run starts with the plan's heaviest load, and its own first seconds
    are that load's probe. Held (the usual case on a machine with room), the run goes on and sizing cost
    nothing; missed, ``check`` raises ``LoadTooHeavy`` and the run starts again at what the probes of the
    lighter loads choose (``probe_loads``)."""

    def __init__(
        self, planned: Plan, run_dir: Path, say: Say, clock: Callable[[], float] = time.time
    ) -> None:
        self.planned = planned
        self.load = planned.loads[0]
        self.say = say
        self.window = ProbeWindow(run_dir / "sent", *self.load, "the run", run_dir, clock)
        self.sizing: Sizing | None = None  # once the first seconds held

    def announce(self) -> None:
        self.say(
            f"{_sizing_words(self.planned)}: the run starts with {_load_words(self.load)} and keeps them if "
            f"the p90 timing error of its first {SETTLE + WINDOW + TAIL:g} s is within "
            f"{_ms(self.planned.target)}; else it starts again with fewer, halving "
            "(--users or --processes skip this)"
        )

    def check(self, ended: bool = False) -> Sizing | None:
        """While the run goes on (``ended``: its load is over): the sizing once its first seconds held,
        None before; raises ``LoadTooHeavy`` when they did not."""
        if self.sizing is not None:
            return None
        probe = self.window.poll(ended)
        if probe is None:
            return None
        target = self.planned.target
        if not probe.within(target):
            self.say(f"  {probe.words()}: {verdict(probe, target)}; the run starts again with fewer tabs")
            raise LoadTooHeavy(probe)
        self.say(f"  {probe.words()}: {verdict(probe, target)}, in the run's first seconds: kept")
        words = reason(*self.load, [probe], self.planned.limit, target, in_run=True)
        self.sizing = Sizing(
            *self.load, words, self.planned.limit, target, 0.0, self.planned.machine, [probe], in_run=True
        )
        return self.sizing


def verdict(probe: Probe, target: float) -> str:
    return "ok" if probe.within(target) else f"over {_ms(target)}"


def _sizing_words(planned: Plan) -> str:
    machine = planned.machine
    return f"sizing the load to this machine ({machine.cpus} CPUs, load average {machine.load_average:.1f})"


def _load_words(load: tuple[int, int]) -> str:
    return f"{load[0]} tabs in {_processes(load[1])}"


def _predicted(options: RunOptions) -> dict[str, float]:
    """The model's loss per technique for the run (a quick Monte Carlo: for the expected interval only)."""
    plugin = options.plugin
    techniques = plugin.chosen_techniques() or (
        TECHNIQUES if get_browser(plugin.browser).pool else SEED_TECHNIQUES
    )
    try:
        return plugin.predict(techniques, 20_000, TARGET_HINTS.get(options.target))
    except ValueError:  # a technique the model does not know
        return {}


@contextlib.contextmanager
def _probing(
    options: RunOptions, directory: Path, given: Callable[[int, int], Probe] | None
) -> Iterator[Callable[[int, int], Probe]]:
    """A prober with its own collector (the run's target, started in ``directory``); both go at the end.
    ``given``: made-up probes (tests), no collector."""
    if given is not None:
        yield given
        return
    directory.mkdir(parents=True, exist_ok=True)
    load = None
    try:
        load = start_load(options, directory)
        yield Prober(options, options.scenario or find_scenario(), load, directory)
    finally:
        if load is not None:
            load.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms" if abs(seconds) >= 0.01 else f"{1000 * seconds:.1f} ms"
