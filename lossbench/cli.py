"""The ``lossbench`` command: parses arguments and dispatches to the library, nothing more."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lossbench import __version__


def cmd_collector(args: argparse.Namespace) -> int:
    from lossbench.collector import CollectorConfig
    from lossbench.server import run_collector

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
    )
    return run_collector(config, announce=lambda line: print(line, flush=True))


def _add_collector(sub: argparse._SubParsersAction) -> None:
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
        "--idle-timeout", type=float, default=30.0, help="close idle keep-alive connections after S seconds"
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
        default=0,
        help="Access-Control-Max-Age; 0 preflights every event (default)",
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
    p.set_defaults(func=cmd_collector)


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


ADDERS: list[Callable[[argparse._SubParsersAction], None]] = [_add_collector]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
