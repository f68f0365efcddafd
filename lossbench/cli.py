"""The ``lossbench`` command: parses arguments and dispatches to the library, nothing more."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench import __version__
from lossbench.contract.server import REFERENCE_CORS_MAX_AGE, REFERENCE_IDLE_TIMEOUT

if TYPE_CHECKING:
    from lossbench.calibrate import BrowserRunOptions
    from lossbench.contract.summary import Summary
    from lossbench.runner import RunOptions


def cmd_collector(args: argparse.Namespace) -> int:
    from lossbench.collector.config import CollectorConfig
    from lossbench.collector.server import run_collector

    if args.host not in ("127.0.0.1", "::1", "[::1]", "localhost") and not args.allow_remote:
        print(
            f"lossbench collector: refusing to bind {args.host} without --allow-remote "
            "(the reference collector is meant for loopback benchmarks)",
            file=sys.stderr,
        )
        return 2
    config = CollectorConfig(
        host=args.host,
        port=args.port,
        out=Path(args.out),
        processes=args.processes,
        idle_timeout=args.idle_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
        cors_max_age=args.cors_max_age,
        allow_origins=tuple(args.allow_origin) or ("*",),
        ledger_max_bytes=int(args.ledger_max_mb * 1024 * 1024),
        uvloop=not args.no_uvloop,
        service_time=args.service_time,
        service_workers=args.service_workers,
    )
    return run_collector(config, announce=lambda line: print(line, flush=True))


def _add_service_arguments(p: argparse.ArgumentParser, *, what: str) -> None:
    """--service-time and --service-workers, for ``collector`` and (passed on to it) ``run``."""
    p.add_argument(
        "--service-time",
        metavar="DIST",
        default=None,
        help=f"make {what} slow, honestly: each event takes DIST of work before its answer (2ms, 0.5s, a "
        "bare number of seconds, exp:MEAN, lognormal:MEDIAN,SIGMA), served by --service-workers workers "
        "with a FIFO queue in front; preflights and pings wait for a free worker too (default: answer at "
        "once)",
    )
    p.add_argument(
        "--service-workers",
        type=int,
        default=1,
        metavar="N",
        help="workers serving --service-time in parallel, per collector process (default: %(default)s)",
    )


def _add_collector(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "collector",
        help="run the reference collector",
        description=(
            "Run the reference collector. It counts an event once its complete data is parsed and writes "
            "it to DIR/received/ before answering, so an acknowledged event survives kill -9. "
            "Endpoints: GET /p.gif?d=<base64url JSON>, GET /ping.gif, OPTIONS and POST /e, GET /stats, "
            "GET /healthz. SIGTERM or Ctrl-C drains in-flight requests, closes the ledger and exits 0."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8787, help="port; 0 picks a free one (default: %(default)s)")
    p.add_argument(
        "--out", default="results/collector", help="run directory for received/ (default: %(default)s)"
    )
    p.add_argument(
        "--processes", type=int, default=1, help="processes sharing the port with SO_REUSEPORT (default: 1)"
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=REFERENCE_IDLE_TIMEOUT,
        help="close idle keep-alive connections after S seconds (default: %(default)s; browsers' pooled "
        "connections older than this are gone)",
    )
    p.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds allowed for a request's headers"
    )
    p.add_argument(
        "--body-timeout", type=float, default=10.0, help="seconds allowed for a body once its headers arrived"
    )
    p.add_argument("--max-connections", type=int, default=10000, help="refuse connections past this many")
    p.add_argument(
        "--cors-max-age",
        type=int,
        default=REFERENCE_CORS_MAX_AGE,
        help="Access-Control-Max-Age in preflight answers: browsers reuse the answer that long (default: "
        "%(default)s, Chromium's cap, as a collector whose CORS policy never changes should; 0: every "
        "ajax event pays a preflight; -1: no header, which Chromium reads as 5 s)",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allowed CORS origin (repeatable); default '*' without credentials",
    )
    p.add_argument("--ledger-max-mb", type=float, default=256.0, help="rotate ledger files past this size")
    p.add_argument("--no-uvloop", action="store_true", help="use asyncio's own event loop")
    p.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    _add_service_arguments(p, what="the collector")
    p.set_defaults(func=cmd_collector)


def cmd_compare(args: argparse.Namespace) -> int:
    from lossbench.analysis.adapters import AdapterError
    from lossbench.analysis.calibration import attach
    from lossbench.analysis.compare import compare, write_summary
    from lossbench.analysis.read import LedgerError
    from lossbench.contract.summary import summary_json
    from lossbench.report.fail_if import evaluate_fail_if
    from lossbench.report.text import summary_to_text

    try:
        summary = compare(
            Path(args.run_dir), reference=args.reference, strict=args.strict, received_from=args.received_from
        )
        summary = attach(args.run_dir, summary)  # a calibration keeps its calibration
    except (LedgerError, AdapterError) as exc:
        print(f"lossbench compare: {exc}", file=sys.stderr)
        return 2
    path = write_summary(summary, args.run_dir)
    if args.json:
        print(summary_json(summary), end="")
    else:
        print(summary_to_text(summary).rstrip())
        print(f"summary: {path}")
    return _fail_if(summary, args.fail_if, evaluate_fail_if)


def _fail_if(summary: Summary, conditions: list[str], evaluate: Callable[[Summary, str], bool]) -> int:
    """Exit 1 when any --fail-if condition holds (a CI gate); 2 when a condition cannot be read."""
    status = 0
    for condition in conditions:
        try:
            holds = evaluate(summary, condition)
        except ValueError as exc:
            print(f"lossbench: {exc}", file=sys.stderr)  # the message quotes the condition
            return 2
        if holds:
            print(f"lossbench: failing: {condition}", file=sys.stderr)
            status = 1
    return status


def cmd_report(args: argparse.Namespace) -> int:
    from lossbench.analysis.adapters import AdapterError
    from lossbench.analysis.calibration import attach
    from lossbench.analysis.compare import compare, write_summary
    from lossbench.analysis.read import LedgerError
    from lossbench.contract.summary import SummaryError, load_summary
    from lossbench.report.html import render_report

    run_dir = Path(args.run_dir)
    if (run_dir / "sweep.json").exists():
        return _report_sweep(run_dir, recompare=args.recompare)
    summary_path = run_dir / "summary.json"
    try:
        if summary_path.exists() and not args.recompare:
            summary = load_summary(summary_path)
        else:
            summary = attach(run_dir, compare(run_dir))
            write_summary(summary, run_dir)
    except (LedgerError, SummaryError, AdapterError) as exc:
        print(f"lossbench report: {exc}", file=sys.stderr)
        return 2
    paths = render_report(run_dir, summary)
    print(f"report: {paths.html}")
    print(f"markdown: {paths.markdown}")
    for chart in paths.charts.values():
        print(f"chart: {chart}")
    return 0


def _report_sweep(folder: Path, *, recompare: bool) -> int:
    """``lossbench report SWEEP_DIR``: the sweep's page from its sweep.json (each point's run directory has
    its own report: ``lossbench report SWEEP_DIR/<point>``)."""
    from lossbench.contract.sweep import SweepError, load_sweep
    from lossbench.report.sweep import render_sweep_report

    if recompare:
        print(
            f"lossbench report: {folder} is a sweep: --recompare works on each point's run directory",
            file=sys.stderr,
        )
        return 2
    try:
        document = load_sweep(folder / "sweep.json")
    except SweepError as exc:
        print(f"lossbench report: {exc}", file=sys.stderr)
        return 2
    paths = render_sweep_report(folder, document)
    print(f"report: {paths.html}")
    print(f"markdown: {paths.markdown}")
    for chart in paths.charts.values():
        print(f"chart: {chart}")
    return 0


def _browser_options(
    args: argparse.Namespace,
    *,
    profile: str,
    exit_model: str,
    abort: str,
    seed: int,
    techniques: tuple[str, ...],
) -> BrowserRunOptions:
    """The options of a Chromium run (``calibrate``, ``run --client chromium``): the browser flags from the
    arguments, the model's (profile, exit model, abort, seed, techniques) as the command read them."""
    from lossbench.calibrate import BrowserRunOptions

    return BrowserRunOptions(
        out=Path(args.out),
        run_id=args.run_id,
        visits=args.visits,
        workers=args.workers,
        duration=args.duration,
        exit_how=args.exit_how,
        profile=profile,
        exit_model=exit_model,
        abort=abort,
        seed=seed,
        techniques=techniques,
        browser=getattr(args, "browser", "chromium"),
    )


def _chromium_dispatch(
    command: str, options: BrowserRunOptions, fail_if: list[str], browser_from: Path | None = None
) -> int:
    """Run ``calibrate`` or ``run --client chromium``; exit 2 with the reason when it cannot go on."""
    from lossbench.analysis.read import LedgerError
    from lossbench.calibrate import calibrate, run_chromium
    from lossbench.loadgen.browser.chromium import ChromiumMissing
    from lossbench.report.fail_if import evaluate_fail_if
    from lossbench.runner import RunError, say_now

    try:
        if command == "calibrate":
            calibrate(options, say=say_now, browser_from=browser_from)
            return 0
        _, summary = run_chromium(options, say=say_now)
    except (RunError, LedgerError, ChromiumMissing) as exc:
        print(f"lossbench {command}: {exc}", file=sys.stderr)
        return 2
    return _fail_if(summary, fail_if, evaluate_fail_if)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """The options the command line gave (the rest: BrowserRunOptions' defaults, or with --browser-from the
    stored run's, which a given option must agree with)."""
    from lossbench.calibrate import BrowserRunOptions, stored_options
    from lossbench.contract.techniques import TECHNIQUES
    from lossbench.runner import RunError

    techniques = None
    if args.techniques is not None:
        techniques = tuple(t.strip() for t in args.techniques.split(",") if t.strip()) or TECHNIQUES
    given: dict[str, Any] = {
        key: value
        for key, value in (
            ("profile", args.profile),
            ("exit_model", args.exit_model),
            ("abort", args.abort),
            ("seed", args.seed),
            ("visits", args.visits),
            ("techniques", techniques),
            ("exit_how", args.exit_how),
            ("cors_max_age", args.cors_max_age),
            ("browser", args.browser),
        )
        if value is not None
    }
    options = dataclasses.replace(
        BrowserRunOptions(
            out=Path(args.out),
            run_id=args.run_id,
            workers=args.workers,
            duration=args.duration,
            exits=args.socket_exits,
        ),
        **given,
    )
    browser_from = None
    if args.browser_from is not None:
        browser_from = Path(args.browser_from)
        try:
            options = stored_options(browser_from, options, given)
        except RunError as exc:
            print(f"lossbench calibrate: {exc}", file=sys.stderr)
            return 2
    return _chromium_dispatch("calibrate", options, [], browser_from)


def _run_options(args: argparse.Namespace, command: str) -> RunOptions | None:
    """The options of ``run`` and ``targets``; None (after saying why) when an environment variable is bad."""
    from lossbench.loadgen.locust.options import OPTIONS, run_options
    from lossbench.runner import LAG_STOP, PRECISION, RunOptions

    try:
        plugin = run_options(args)
    except ValueError as exc:  # a LOSSBENCH_* variable that cannot be read
        print(f"lossbench {command}: {exc}", file=sys.stderr)
        return None
    lag_stop = next(o for o in OPTIONS if o.name == "lag_stop")
    if command == "run" and args.lag_stop is None and lag_stop.env not in os.environ:
        plugin = dataclasses.replace(plugin, lag_stop=LAG_STOP)  # sweep and targets hold their load
    precision = next(o for o in OPTIONS if o.name == "precision")
    if command == "run" and args.precision is None and precision.env not in os.environ:
        plugin = dataclasses.replace(plugin, precision=PRECISION)
    defaults = RunOptions()
    users = defaults.users if args.users is None else args.users
    given = args.users is not None or args.processes is not None
    return RunOptions(
        out=Path(args.out),
        run_id=args.run_id,
        duration=args.duration,
        users=users,
        spawn_rate=args.spawn_rate or float(users),
        processes=defaults.processes if args.processes is None else args.processes,
        collector_processes=getattr(args, "collector_processes", RunOptions.collector_processes),
        service_time=getattr(args, "service_time", RunOptions.service_time),
        service_workers=getattr(args, "service_workers", RunOptions.service_workers),
        target=getattr(args, "target", RunOptions.target),
        received_from=getattr(args, "received_from", None),
        scenario=Path(args.scenario) if args.scenario else None,
        plugin=plugin,
        live=sys.stdout.isatty(),
        size=not given if command == "run" else None,  # sweep and targets: the same load at every point
    )


def _cmd_run_chromium(args: argparse.Namespace) -> int:
    """``run --client chromium``: the plugin's model options (profile, exit model, abort, seed, techniques),
    environment included, played in Chromium."""
    from lossbench.contract.techniques import TECHNIQUES
    from lossbench.loadgen.locust.options import run_options

    try:
        plugin = run_options(args)
    except ValueError as exc:  # a LOSSBENCH_* variable that cannot be read
        print(f"lossbench run: {exc}", file=sys.stderr)
        return 2
    if plugin.precision:  # a Chromium run plays --visits; it has no running loss to stop on
        print(
            "lossbench run: --precision is for the socket client; --client chromium plays --visits",
            file=sys.stderr,
        )
        return 2
    browser = _browser_options(
        args,
        profile=plugin.network_profile,
        exit_model=plugin.exit_model,
        abort=plugin.abort,
        seed=plugin.seed,
        techniques=plugin.chosen_techniques() or TECHNIQUES,
    )
    return _chromium_dispatch("run", browser, args.fail_if)


def cmd_run(args: argparse.Namespace) -> int:
    from lossbench.analysis.adapters import AdapterError
    from lossbench.analysis.read import LedgerError
    from lossbench.report.fail_if import evaluate_fail_if
    from lossbench.runner import RunError, run, say_now

    if args.client == "chromium":
        return _cmd_run_chromium(args)
    options = _run_options(args, "run")
    if options is None:
        return 2
    try:
        _, summary = run(options, say=say_now)
    except (RunError, LedgerError, AdapterError) as exc:
        print(f"lossbench run: {exc}", file=sys.stderr)
        return 2
    return _fail_if(summary, args.fail_if, evaluate_fail_if)


def cmd_targets(args: argparse.Namespace) -> int:
    from lossbench.analysis.adapters import AdapterError
    from lossbench.analysis.read import LedgerError
    from lossbench.compare_targets import run_targets
    from lossbench.runner import RunError, say_now

    options = _run_options(args, "targets")
    if options is None:
        return 2
    if options.plugin.precision:  # each target would stop after its own number of events
        print(
            "lossbench targets: --precision is for lossbench run; targets get the same --duration",
            file=sys.stderr,
        )
        return 2
    try:
        run_targets(options, [t.strip() for t in args.targets.split(",") if t.strip()], say=say_now)
    except (RunError, LedgerError, AdapterError) as exc:
        print(f"lossbench targets: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from lossbench.analysis.adapters import AdapterError
    from lossbench.analysis.read import LedgerError
    from lossbench.report.fail_if import evaluate_fail_if
    from lossbench.runner import RunError, say_now
    from lossbench.sweep import plan_sweep, run_sweep

    options = _run_options(args, "sweep")
    if options is None:
        return 2
    try:
        plan = plan_sweep(args.vary, options, spawn_all=not args.spawn_rate)
        result = run_sweep(plan, say=say_now)
    except (RunError, LedgerError, AdapterError) as exc:
        print(f"lossbench sweep: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nlossbench sweep: sweep.json lists the points missing", file=sys.stderr)
        raise  # main says it was interrupted and exits with the signal's status
    return max((_fail_if(s, args.fail_if, evaluate_fail_if) for s in result.summaries), default=0)


def cmd_models(args: argparse.Namespace) -> int:
    from lossbench.model.exits import EXIT_MODELS
    from lossbench.model.profiles import PROFILES

    print("network profiles (--profile):")
    for profile in PROFILES.values():
        uplink = f", uplink {profile.uplink_bps / 1000:g} kbps" if profile.uplink_bps else ""
        print(f"  {profile.name:<16} RTT {profile.rtt * 1000:g} ms{uplink} — {profile.source}")
    print("exit models (--exit-model):")
    for model in EXIT_MODELS.values():
        print(f"  {model.name:<10} {model.description}")
        if model.source:
            print(f"  {'':<10} source: {model.source}")
    print("  fixed:S[@AT] one event at visit time AT (default 5 s), page gone S seconds after it fires")
    return 0


def _add_compare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compare",
        help="join a run's ledgers: loss per technique with 95%% intervals",
        description=(
            "Join the sent and received ledgers of RUN_DIR by event id. Per technique: sent, received, lost, "
            "loss with a 95%% Wilson interval, loss by the stage at the cut, duplicates, the model's "
            "prediction; phantoms; comparisons against the reference technique with significance. "
            "Writes RUN_DIR/summary.json."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    p.add_argument(
        "--reference", default="ajax", help="technique the others are compared with (default: ajax)"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop (exit 2) on a damaged ledger line instead of skipping it with a warning",
    )
    p.add_argument(
        "--received-from",
        metavar="KIND:PATH",
        help="read the received side from another target's log through an adapter, e.g. "
        "nginx:access.log:lossbench or jsonl:events.jsonl:event (default: run.json's, for a run made with "
        "run --target; else the received ledger)",
    )
    p.add_argument(
        "--fail-if",
        action="append",
        default=[],
        metavar="EXPR",
        help="exit 1 when EXPR holds, e.g. 'pixel.loss > 0.02' or 'phantoms > 0' (repeatable)",
    )
    p.set_defaults(func=cmd_compare)


def _add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="charts, report.html and report.md for a run (sweep.html and sweep.md for a sweep)",
        description="Render RUN_DIR/charts/*.png, report.html (self-contained) and report.md from "
        "summary.json (compared first when it is missing). For a sweep directory (it holds sweep.json), "
        "render sweep.html, sweep.md and charts/sweep.png from sweep.json.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--recompare", action="store_true", help="compare again even if summary.json exists")
    p.set_defaults(func=cmd_report)


def _add_load_arguments(p: argparse.ArgumentParser) -> None:
    """The load's options, shared by ``run`` and ``targets``."""
    from lossbench.loadgen.locust.options import add_run_arguments
    from lossbench.runner import RunOptions

    defaults = RunOptions()
    p.add_argument(
        "--out", default=str(defaults.out), help="parent of run directories (default: %(default)s)"
    )
    p.add_argument("--run-id", default="", help="name of the run directory (default: a timestamp)")
    p.add_argument(
        "--duration", type=float, default=defaults.duration, help="seconds of load (default: %(default)s)"
    )
    p.add_argument(
        "--users",
        type=int,
        help=f"browser tabs (default: {defaults.users}; lossbench run without --users and --processes sizes "
        f"tabs and processes to the machine first, at most {defaults.users} in {defaults.processes})",
    )
    p.add_argument(
        "--spawn-rate", type=float, default=0.0, help="users started per second (default: all at once)"
    )
    p.add_argument(
        "--processes",
        type=int,
        help=f"Locust worker processes; 1 runs a single local process (default: {defaults.processes}; see "
        "--users for sizing)",
    )
    p.add_argument(
        "--scenario",
        default="",
        help="locustfile: a path, or a scenario shipped in the package (default: all.py)",
    )
    add_run_arguments(p)


def _add_target_arguments(p: argparse.ArgumentParser) -> None:
    """The target and its collector's options, shared by ``run`` and ``sweep``."""
    from lossbench.runner import RunOptions

    p.add_argument(
        "--collector-processes",
        type=int,
        default=RunOptions().collector_processes,
        help="reference collector processes sharing the port",
    )
    _add_service_arguments(p, what="the reference collector")
    p.add_argument(
        "--target",
        default=RunOptions().target,
        help="the collector to load: reference, nginx or aiohttp (started here on a free loopback port; "
        "its raw log is kept under the run's received/), or the URL of a running one, which needs "
        "--received-from (default: %(default)s)",
    )
    p.add_argument(
        "--received-from",
        metavar="KIND:PATH",
        help="the running target's log, as in compare (a started target's is known)",
    )


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: collector + Locust + compare + report",
        description=(
            "Start the reference collector (or another --target), run Locust headless with "
            "scenarios/all.py (the seven techniques side by side under the same draws; --browser seed: "
            "the four of the first model), then compare and report. Without --users and --processes it "
            "sizes the load to the machine as it is: it starts with 400 tabs in 2 processes (1 when the "
            "load average leaves one CPU free) and keeps them if the load generator's p90 timing error "
            "over its first seconds stays well within the limit compare warns at; else it starts again, "
            "after short probes halving the tabs (it prints what it chose and why; run.json's sizing has "
            "the probes). Prints progress, the loss table and the path of the "
            "report. See 'lossbench models' "
            "for profiles and exit models. The options from --network-profile on are the Locust plugin's, "
            "passed on as they are (environment variables LOSSBENCH_* set their defaults)."
        ),
    )
    _add_target_arguments(p)
    p.add_argument("--fail-if", action="append", default=[], metavar="EXPR", help="as in compare")
    _add_load_arguments(p)
    p.add_argument(
        "--client",
        default="socket",
        choices=("socket", "chromium"),
        help="socket: Locust and lossbench's socket client (default); chromium: real headless Chromium "
        "playing --visits visits (needs apt-get install chromium and pip install '.[browser]')",
    )
    _add_browser_flags(p, techniques=False, duration=False)
    p.set_defaults(func=cmd_run)


def _add_targets(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from lossbench.compare_targets import DEFAULT_TARGETS

    p = sub.add_parser(
        "targets",
        help="the same load against several collectors, side by side",
        description=(
            "Run the same load with the same draws (seed, techniques, profile, exit model, users, duration) "
            "against each target in turn, each started on a free loopback port, into OUT/RUN_ID/<target>/; "
            "then write OUT/RUN_ID/targets.json, targets.html, targets.md and charts/targets.png: loss per "
            "technique, collector-side loss (events fully written but not logged), throughput and the "
            "target's CPU per event, compared with the first target in words."
        ),
    )
    p.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma-separated targets, the first the reference (default: %(default)s)",
    )
    _add_load_arguments(p)
    p.set_defaults(func=cmd_targets)


def _add_sweep(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    import textwrap

    from lossbench.sweep import PARAMETERS

    width = max(len(name) for name in PARAMETERS) + 4
    table = "\n".join(
        textwrap.fill(p.help, 79, initial_indent=f"  {p.name:<{width}}", subsequent_indent=" " * (width + 2))
        + f"\n{'':<{width + 2}}e.g. --vary {p.example}"
        for p in PARAMETERS.values()
    )
    p = sub.add_parser(
        "sweep",
        help="one run per value of a parameter (load, profile, exit model, collector): loss against it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Run lossbench run once per value of --vary PARAM=V1,V2,... into OUT/RUN_ID/ (a run directory "
            "per point, which compare and report read as any run's), with the same seed, techniques and "
            "every other option; then write OUT/RUN_ID/sweep.json, sweep.html, sweep.md and "
            "charts/sweep.png: loss per technique against the parameter beside the model's prediction, "
            "the collector's answer times where the runs' summaries have them, and the findings in words. "
            "Every value is checked before the first point runs. Ctrl-C keeps the finished points; "
            "sweep.json says which are missing. OUT/RUN_ID must not exist, or be empty.",
            79,
        ),
        epilog=(
            "PARAM (values separated by commas, or by ';' when a value holds a comma):\n"
            f"{table}\n\n"
            + textwrap.fill(
                "dwell-scale and outbound-share tune the --exit-model given (default mix): with "
                "--exit-model mix, --vary dwell-scale=10,30 runs mix:scale=10 and mix:scale=30. "
                "Varying users starts each point's users at once unless --spawn-rate is given. "
                "Example: lossbench sweep --vary users=100,200,400 --duration 30",
                79,
            )
        ),
    )
    p.add_argument(
        "--vary",
        required=True,
        metavar="PARAM=V1,V2,...",
        help="the parameter to vary and its values, one point each (see PARAM below)",
    )
    _add_target_arguments(p)
    p.add_argument(
        "--fail-if", action="append", default=[], metavar="EXPR", help="as in compare, at any point"
    )
    _add_load_arguments(p)
    p.set_defaults(func=cmd_sweep)


def _add_browser_flags(p: argparse.ArgumentParser, *, techniques: bool = True, duration: bool = True) -> None:
    from lossbench.contract.techniques import TECHNIQUES, VARIANTS

    p.add_argument("--visits", type=int, default=200, help="visits to play in Chromium (default: 200)")
    p.add_argument("--workers", type=int, default=8, help="Chromium tabs in parallel (default: 8)")
    p.add_argument(
        "--exit-how",
        default="auto",
        choices=("auto", "close", "navigate"),
        help="how the page goes away: auto (navigation after an outbound click, else tab close)",
    )
    if techniques:
        p.add_argument(
            "--techniques",
            default=",".join(TECHNIQUES),
            help=f"comma-separated techniques (default: the seven; also: {', '.join(VARIANTS)})",
        )
    if duration:
        p.add_argument("--duration", type=float, default=1800.0, help="at most this many seconds per client")


def _add_calibrate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from lossbench.model.exits import DEFAULT_EXIT_MODEL
    from lossbench.model.profiles import DEFAULT_PROFILE

    p = sub.add_parser(
        "calibrate",
        help="the same visits in real Chromium and in the socket client, side by side",
        description=(
            "Draw --visits visits from the profile, exit model and seed; play them with the socket client "
            "(RUN/socket) and in headless Chromium through lossbench's network emulator (RUN), each against "
            "its own collector; compare both and write RUN/summary.json with a 'calibration' object (loss "
            "per technique for both clients, the difference and its test, lost events by stage) and the "
            "report. The socket client plays every technique with --browser chromium (the default), the "
            "seed's four with --browser seed; the others are then reported for Chromium alone. Needs "
            "apt-get install chromium and pip install '.[browser]'."
        ),
        epilog=(
            "--browser-from RUN_DIR re-uses the Chromium half of a stored calibration (a calibrate output "
            "directory) and plays only the socket client, which takes seconds where Chromium takes minutes "
            "to hours: for a change to the socket client. The new run directory gets the stored sent/ and "
            "received/ ledgers and run.json (its 'browser_from' says where they came from); the socket "
            "client plays the same visits (drawn again from the stored profile, exit model, abort, seed and "
            "visit count, and only those the stored run played to the end) with the stored run's techniques "
            "it can play; then both are compared and reported as in any calibration. --profile, "
            "--exit-model, --abort, --seed, --visits, --techniques, --exit-how and --cors-max-age are taken "
            "from the stored run.json; given, each must agree with it or the command stops naming the one "
            "that differs. --workers does not apply (no Chromium runs); --duration bounds the socket client."
        ),
    )
    p.add_argument("--out", default="results", help="parent of run directories (default: %(default)s)")
    p.add_argument("--run-id", default="", help="name of the run directory (default: a timestamp)")
    p.add_argument("--profile", default=None, help=f"network profile (default: {DEFAULT_PROFILE})")
    p.add_argument("--exit-model", default=None, help=f"exit model (default: {DEFAULT_EXIT_MODEL})")
    p.add_argument("--abort", default=None, choices=("unload", "drop"), help="abort kind (default: unload)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: 1)")
    p.add_argument(
        "--cors-max-age",
        type=int,
        default=None,
        metavar="SECONDS",
        help="both collectors' Access-Control-Max-Age: browsers then reuse an ajax preflight's answer for "
        f"that long, per visit (default: {REFERENCE_CORS_MAX_AGE}, the reference collector's; 0: every ajax "
        "event preflights); recorded in run.json",
    )
    p.add_argument(
        "--socket-exits",
        default="chromium",
        choices=("chromium", "planned"),
        help="when the socket half's pages go away: when Chromium's did (default: each visit's page as late "
        "as Chromium's, measured, so that the halves differ only in the network), or as planned",
    )
    p.add_argument(
        "--browser",
        default=None,
        choices=("chromium", "seed"),
        help="the socket client's preset: chromium (default: pool, preflight cache, FIN) or seed (the first "
        "model); the Chromium half is Chromium",
    )
    p.add_argument(
        "--browser-from",
        metavar="RUN_DIR",
        default=None,
        help="re-use the Chromium half of the calibration in RUN_DIR and play only the socket client "
        "(see below)",
    )
    _add_browser_flags(p)
    p.set_defaults(func=cmd_calibrate, visits=None, exit_how=None, techniques=None)


def _add_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list network profiles and exit models, with their sources")
    p.set_defaults(func=cmd_models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lossbench",
        description="Measure how many tracking events each technique loses when users leave the page.",
    )
    parser.add_argument("--version", action="version", version=f"lossbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in ADDERS:
        add(sub)
    return parser


ADDERS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_run,
    _add_targets,
    _add_sweep,
    _add_calibrate,
    _add_compare,
    _add_report,
    _add_collector,
    _add_models,
]


LONG_COMMANDS = ("run", "targets", "calibrate", "sweep")
"""Commands that start children (collector, Locust, Chromium): SIGTERM stops them as Ctrl-C does."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so that the same cleanup runs."""


def _interrupt(signum: int, frame: object) -> None:
    # A second signal (CI runners send SIGINT then SIGTERM) must not interrupt the cleanup of the first.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.command in LONG_COMMANDS:
        # `timeout`, a CI runner or `kill` send SIGTERM, whose default ends Python without running any
        # `finally`: the collector, Locust and Chromium would outlive the command. As Ctrl-C, they are
        # stopped and the ledgers written so far stay readable.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as stop:
        print(f"lossbench {args.command}: interrupted; its children are stopped", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
