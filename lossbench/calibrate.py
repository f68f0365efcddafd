"""``lossbench calibrate`` and ``lossbench run --client chromium``: the same visit draws played by real
Chromium and by the socket client, each into a run directory of the usual shape, compared and reported.

Both clients get the same list of visits, drawn once from the profile, exit model and seed. The socket
half plays them without Locust (``lossbench.loadgen.player.play_visit`` in threads, idle time compressed
as under Locust); the browser half in Chromium (``lossbench.loadgen.browser``). Each half has its own
collector process, started and stopped as ``lossbench run`` does, so that neither sees the other's
connections. The calibration figures themselves are ``lossbench.analysis.calibration``'s.

``--browser-from`` re-uses a stored Chromium half (its ledgers, its collector's stats, its run.json) and
plays only the socket client: the same visits, since they are drawn again from the stored run's options,
and the same subset of them, from the visits the stored run played to the end. A calibration's Chromium
half takes minutes to hours, its socket half seconds, and a change to the socket client needs only that.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import platform
import shutil
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from lossbench import __version__
from lossbench.contract.ledger import LedgerWriter, default_ledger_name, micro
from lossbench.contract.server import REFERENCE_CORS_MAX_AGE, ServerHints
from lossbench.contract.summary import Summary
from lossbench.contract.techniques import ALL_TECHNIQUES, SEED_TECHNIQUES, TECHNIQUES
from lossbench.loadgen.browser import chromium
from lossbench.loadgen.browser.player import EXIT_HOWS, BrowserOptions, BrowserPlayer
from lossbench.loadgen.player import EventIds, PlayedEvent, play_visit
from lossbench.model.browser import DEFAULT_BROWSER, get_browser
from lossbench.model.exits import DEFAULT_EXIT_MODEL, get_exit_model
from lossbench.model.profiles import DEFAULT_PROFILE, get_profile
from lossbench.model.visits import Visit
from lossbench.runner import RunError, Say, finish_run, start_collector, stop_process

MAX_VISITS = 100_000
SOCKET_THREADS = 64


@dataclass(frozen=True)
class BrowserRunOptions:
    """A bounded run: N visits, at most ``duration`` seconds per client, in Chromium or in both clients."""

    out: Path = Path("results")
    run_id: str = ""
    visits: int = 200
    profile: str = DEFAULT_PROFILE
    exit_model: str = DEFAULT_EXIT_MODEL
    abort: str = "unload"
    seed: int = 1
    techniques: tuple[str, ...] = TECHNIQUES  # the variants on request
    workers: int = 8
    duration: float = 1800.0
    exit_how: str = "auto"
    exits: str = "chromium"  # the socket half's exits: as Chromium's pages went away, or as "planned"
    browser: str = DEFAULT_BROWSER  # the socket client's preset (lossbench.model.browser)
    max_gap: float | None = None
    cors_max_age: int = REFERENCE_CORS_MAX_AGE  # both collectors' Access-Control-Max-Age (0: never cached)
    extra: dict[str, Any] = field(default_factory=dict)  # more run.json keys


def validate(options: BrowserRunOptions) -> None:
    try:
        get_profile(options.profile)
        get_exit_model(options.exit_model)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    unknown = [t for t in options.techniques if t not in ALL_TECHNIQUES]
    if unknown:
        raise RunError(f"unknown technique(s) {', '.join(unknown)}; choose from {', '.join(ALL_TECHNIQUES)}")
    if not 0 < options.visits <= MAX_VISITS:
        raise RunError(f"--visits must be between 1 and {MAX_VISITS}")
    if options.workers <= 0 or options.duration <= 0:
        raise RunError("--workers and --duration must be positive")
    if options.exit_how not in EXIT_HOWS:
        raise RunError(f"--exit-how must be one of {', '.join(EXIT_HOWS)}")
    if options.cors_max_age < 0:
        raise RunError("--cors-max-age must be 0 or more seconds")


def draw_visits(options: BrowserRunOptions) -> list[Visit]:
    """The run's visits: the same draws for every client, from the seed."""
    rng = np.random.default_rng(options.seed)
    profile, model = get_profile(options.profile), get_exit_model(options.exit_model)
    return model.draw_batch(rng, profile.draw_batch(rng, options.visits), options.abort).visits()


def new_run_dir(options: BrowserRunOptions) -> Path:
    run_id = options.run_id or datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = options.out / run_id
    if (run_dir / "sent").exists():
        raise RunError(f"{run_dir} already holds a run; choose another --run-id or remove it")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def server_hints(options: BrowserRunOptions) -> ServerHints:
    """What both halves' collectors tell browsers: the reference collector with ``cors_max_age``."""
    return ServerHints(cors_max_age=None if options.cors_max_age < 0 else options.cors_max_age)


def write_run_json(run_dir: Path, options: BrowserRunOptions, client: str, **extra: Any) -> None:
    """run.json as docs/FORMATS.md describes it, with the browser client's keys."""
    versions = {"lossbench": __version__, "python": platform.python_version()}
    if client == "chromium":
        versions["chromium"] = chromium.version()
        versions["playwright"] = _playwright_version()
    document = {
        "run_id": run_dir.name,
        "scenario": f"{client} client",
        "client": client,
        "browser": "chromium" if client == "chromium" else options.browser,
        "server": server_hints(options).as_json(),
        "techniques": list(options.techniques),
        "profile": options.profile,
        "exit_model": options.exit_model,
        "abort": options.abort,
        "seed": options.seed,
        "visits": options.visits,
        "users": options.workers if client == "chromium" else SOCKET_THREADS,
        "exit_how": options.exit_how,
        "cors_max_age": options.cors_max_age,
        "socket_exits": options.exits,
        "host": platform.node(),
        "versions": versions,
        **options.extra,
        **extra,
    }
    (run_dir / "run.json").write_text(json.dumps(document, indent=1) + "\n")


def _playwright_version() -> str:
    try:
        return version("playwright")
    except PackageNotFoundError:
        return "unknown"


def play_chromium(run_dir: Path, visits: Sequence[Visit], options: BrowserRunOptions, say: Say) -> list[int]:
    """Play ``visits`` in Chromium against a fresh collector and write run.json; returns the indices of the
    visits played to the end (all of them unless ``duration`` ran out or a visit failed)."""
    chromium.chromium_path()
    chromium.require_playwright()
    started = time.time()
    collector, url = start_collector(run_dir, 1, cors_max_age=options.cors_max_age)
    try:
        player = BrowserPlayer(
            int(url.rsplit(":", 1)[1]),
            run_dir / "sent",
            options.techniques,
            BrowserOptions(
                workers=options.workers,
                max_gap=options.max_gap,
                exit_how=options.exit_how,
                duration=options.duration,
            ),
            say=say,
        )
        say(f"chromium: {len(visits)} visits, {options.workers} tabs, collector {url}")
        stats = asyncio.run(player.play(visits))
    finally:
        stop_process(collector)
    ended = time.time()
    seconds = max(ended - started, 1e-9)
    counts = {
        "visits": stats.visits,
        "events": stats.events,
        "records_missing": stats.records_missing,
        "records_from_console": stats.records_from_console,
        "late_starts": stats.late_starts,
        "errors": stats.errors[:20],
        "seconds": round(seconds, 3),
        "visits_per_second": round(stats.visits / seconds, 3),
        "played": spans(sorted(player.played)),
    }
    write_run_json(run_dir, options, "chromium", started=started, ended=ended, player=counts)
    say(
        f"chromium: {stats.visits} visits, {stats.events} events in {seconds:.0f} s "
        f"({counts['visits_per_second']:.2f} visits/s); {len(stats.errors)} visit errors"
    )
    return sorted(player.played)


def spans(indices: Sequence[int]) -> list[list[int]]:
    """Sorted visit indices as half-open ``[start, end)`` ranges (run.json's ``player.played``: all of
    2,000 visits is ``[[0, 2000]]``)."""
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


STORED_KEYS: tuple[str, ...] = (
    "profile",
    "exit_model",
    "abort",
    "seed",
    "visits",
    "techniques",
    "exit_how",
    "cors_max_age",
)
"""What a stored Chromium half was played with, as its run.json says: the visits' draws (profile, exit
model, abort, seed, how many), the techniques, how pages went away, and the collector's
Access-Control-Max-Age (0 in runs made before it was an option). ``--browser-from`` takes each from there."""

_STORED_DEFAULTS: dict[str, Any] = {"cors_max_age": 0}


def stored_options(stored: Path, options: BrowserRunOptions, given: Mapping[str, Any]) -> BrowserRunOptions:
    """``options`` with ``STORED_KEYS`` from the stored calibration's run.json. ``given``: the ones the
    command line set; a given value that differs from the stored one is refused (RunError naming it)."""
    document = read_stored_run(stored)
    values: dict[str, Any] = {}
    for key in STORED_KEYS:
        if key not in document and key not in _STORED_DEFAULTS:
            raise RunError(f"{stored / 'run.json'} does not say its {key}: it cannot be played again")
        value: Any = document[key] if key in document else _STORED_DEFAULTS[key]
        if key == "techniques":
            value = tuple(value)
        if key in given and given[key] != value:
            shown = ",".join(value) if key == "techniques" else value
            asked = ",".join(given[key]) if key == "techniques" else given[key]
            raise RunError(
                f"--{key.replace('_', '-')} {asked} differs from the stored Chromium run's {key} {shown} "
                f"({stored / 'run.json'}); leave it out to take the stored one"
            )
        values[key] = value
    return replace(options, **values)


def read_stored_run(stored: Path) -> dict[str, Any]:
    """The run.json of a calibration's Chromium half, or RunError saying why ``stored`` is not one."""
    try:
        document = json.loads((stored / "run.json").read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"--browser-from {stored}: no readable run.json ({exc})") from None
    if not isinstance(document, dict) or document.get("client") != "chromium":
        raise RunError(f"--browser-from {stored}: not a Chromium run (run.json's client is not chromium)")
    if not (stored / "sent").is_dir() or not (stored / "received").is_dir():
        raise RunError(f"--browser-from {stored}: no sent/ and received/ ledgers beside its run.json")
    return document


def reuse_chromium(stored: Path, run_dir: Path, visits: Sequence[Visit], say: Say) -> list[int]:
    """Copy the stored Chromium half into ``run_dir`` (ledgers, the collector's stats and log, run.json
    saying where it came from); returns the indices of the visits it played to the end."""
    if stored.resolve() == run_dir.resolve():
        raise RunError(f"--browser-from {stored} is the run directory itself; choose another --run-id")
    document = read_stored_run(stored)
    for name in ("sent", "received"):
        shutil.copytree(stored / name, run_dir / name)
    if (stored / "collector.log").is_file():
        shutil.copy2(stored / "collector.log", run_dir / "collector.log")
    played = stored_played(stored, document, visits)
    document = {
        **document,
        "run_id": run_dir.name,
        "browser_from": {"run_dir": str(stored.resolve()), "run_id": document.get("run_id")},
    }
    (run_dir / "run.json").write_text(json.dumps(document, indent=1) + "\n")
    say(f"chromium: {len(played)} visits played by {stored} (not played again)")
    return played


def stored_played(stored: Path, document: Mapping[str, Any], visits: Sequence[Visit]) -> list[int]:
    """The visits a stored Chromium half played to the end: its run.json's ``player.played``; in a run
    made before that was recorded, all of them when it played as many as were drawn, else those whose
    network draw (rtt, dns) its sent ledger holds."""
    player = document.get("player")
    player = player if isinstance(player, Mapping) else {}
    if "played" in player:
        return [i for start, end in player["played"] for i in range(start, end) if i < len(visits)]
    if player.get("visits") == len(visits):
        return list(range(len(visits)))
    seen: set[tuple[float, float]] = set()
    for path in sorted((stored / "sent").glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "id" in record and "rtt" in record and "dns" in record:
                seen.add((record["rtt"], record["dns"]))
    return [i for i, v in enumerate(visits) if (micro(v.net.rtt), micro(v.net.dns)) in seen]


class _ExitLine(msgspec.Struct):
    tech: str | None = None
    rtt: float = 0.0
    dns: float = 0.0
    A: float | None = None
    plan: dict[str, float] = {}
    real: dict[str, float] = {}


def chromium_exit_lags(sent_dir: Path, visits: Sequence[Visit]) -> dict[int, float]:
    """How late each visit's page went away in Chromium (index into ``visits``: seconds, the median over
    its events of the actual minus the planned exit), from the Chromium half's sent ledger.

    Chromium's pages go away after the planned exit (the tab is closed from outside: tens of ms on an idle
    machine, more on a busy one), which gives their requests that much more time. The socket half then
    plays each visit with its page leaving when Chromium's did, so that the two differ only in what the
    calibration is about, the network. Lines are matched to visits by their draw (RTT, DNS cost, A)."""
    by_draw = {
        (micro(v.net.rtt), micro(v.net.dns), micro(v.exit_time(e))): i
        for i, v in enumerate(visits)
        for e in v.events
        if math.isfinite(v.leave_at)
    }
    lags: dict[int, list[float]] = {}
    decoder = msgspec.json.Decoder(_ExitLine)
    for path in sorted(sent_dir.glob("*.jsonl")):
        with path.open("rb") as file:
            for raw in file:
                try:
                    line = decoder.decode(raw)
                except msgspec.DecodeError:
                    continue
                if line.tech is None or line.A is None or "exit" not in line.plan or "exit" not in line.real:
                    continue
                index = by_draw.get((line.rtt, line.dns, line.A))
                if index is not None:
                    lags.setdefault(index, []).append(line.real["exit"] - line.plan["exit"])
    return {i: max(0.0, statistics.median(found)) for i, found in lags.items()}


def play_socket(run_dir: Path, visits: Sequence[Visit], options: BrowserRunOptions, say: Say) -> None:
    """Play ``visits`` with the socket client (the techniques its ``--browser`` preset plays) against a
    fresh collector, with what each page cost by itself as ``SentPing`` lines, as under Locust."""
    playable = ALL_TECHNIQUES if get_browser(options.browser).pool else SEED_TECHNIQUES
    techniques = [t for t in options.techniques if t in playable]
    started = time.time()
    collector, url = start_collector(run_dir, 1, cors_max_age=options.cors_max_age)
    ids = EventIds()
    ledger = LedgerWriter(
        run_dir / "sent", "sent", name=f"socket-{default_ledger_name()}", salt=f"{ids.salt:06x}"
    )
    lock = threading.Lock()
    address = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
    deadline = time.monotonic() + options.duration

    def record(played: PlayedEvent) -> None:
        line = played.record_line()
        with lock:
            ledger.append_raw(line, 1)

    def one(visit: Visit) -> None:
        if time.monotonic() < deadline:
            page_costs = play_visit(
                visit, address, techniques, ids, record, browser=options.browser, server=server_hints(options)
            )
            with lock:
                for cost in page_costs:
                    ledger.append(cost)

    try:
        say(f"socket client: {len(visits)} visits, {SOCKET_THREADS} threads, collector {url}")
        with concurrent.futures.ThreadPoolExecutor(SOCKET_THREADS) as pool:
            list(pool.map(one, visits))
    finally:
        ledger.close()
        stop_process(collector)
    ended = time.time()
    write_run_json(
        run_dir, replace(options, techniques=tuple(techniques)), "socket", started=started, ended=ended
    )
    say(f"socket client: {ledger.lines_total} ledger lines in {ended - started:.0f} s")


def run_chromium(options: BrowserRunOptions, say: Say = print) -> tuple[Path, Summary]:
    """``lossbench run --client chromium``: N visits in Chromium, then compare and report as any run."""
    validate(options)
    run_dir = new_run_dir(options)
    say(
        f"lossbench run {run_dir.name} (chromium): {', '.join(options.techniques)} on {options.profile}, "
        f"exit model {options.exit_model}, {options.visits} visits"
    )
    play_chromium(run_dir, draw_visits(options), options, say)
    return run_dir, finish_run(run_dir, say)


def calibrate(
    options: BrowserRunOptions, say: Say = print, *, browser_from: Path | None = None
) -> tuple[Path, Summary]:
    """``lossbench calibrate``: the same visits in Chromium (``<run>``) and in the socket client
    (``<run>/socket``), each compared; ``<run>/summary.json`` gets the ``calibration`` object and the
    report shows it. ``browser_from``: a stored calibration whose Chromium half is copied instead of
    played (``options`` must hold its ``STORED_KEYS``: ``stored_options``). Raises RunError, LedgerError
    or ChromiumMissing, each with a message that says why."""
    from lossbench.analysis.calibration import SOCKET_RUN, attach, calibration_table
    from lossbench.analysis.compare import compare, write_summary
    from lossbench.report.html import render_report

    validate(options)
    if browser_from is not None:
        read_stored_run(browser_from)  # before making the new run directory
        playable = ALL_TECHNIQUES if get_browser(options.browser).pool else SEED_TECHNIQUES
        if not any(t in playable for t in options.techniques):
            raise RunError(f"--browser-from {browser_from}: none of its techniques is the socket client's")
    run_dir = new_run_dir(options)
    visits = draw_visits(options)
    say(
        f"lossbench calibrate {run_dir.name}: {len(visits)} visits on {options.profile}, exit model "
        f"{options.exit_model}, abort {options.abort}, seed {options.seed}"
    )
    socket_dir = run_dir / SOCKET_RUN
    socket_dir.mkdir(parents=True, exist_ok=True)
    if browser_from is None:
        played = play_chromium(run_dir, visits, options, say)
    else:
        played = reuse_chromium(browser_from, run_dir, visits, say)
    if len(played) < len(visits):
        say(f"chromium played {len(played)} of {len(visits)} visits to the end; the socket client too")
    socket_visits = [visits[i] for i in played]
    if options.exits == "chromium":
        lags = chromium_exit_lags(run_dir / "sent", socket_visits)
        socket_visits = [
            replace(v, leave_at=v.leave_at + lags.get(i, 0.0)) for i, v in enumerate(socket_visits)
        ]
        known = sorted(lags.values())
        if known:
            p50, p90 = 1000 * known[len(known) // 2], 1000 * known[int(0.9 * len(known))]
            say(
                f"socket client: each page leaves when Chromium's did ({len(known)} visits; late by "
                f"{p50:.0f} ms at the median, {p90:.0f} ms at p90)"
            )
    play_socket(socket_dir, socket_visits, options, say)
    say("comparing ledgers ...")
    summary = attach(run_dir, compare(run_dir))
    write_summary(summary, run_dir)
    paths = render_report(run_dir, summary)
    assert summary.calibration is not None
    say("")
    for line in calibration_table(summary.calibration):
        say(line)
    say("")
    for entry in summary.calibration.values():
        say(entry.text)
    say("")
    say(f"report: {paths.html}")
    return run_dir, summary
