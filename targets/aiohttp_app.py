"""The typical thin Python collector: an aiohttp web app that appends one JSON line per event.

What a team writes when the seed's advice is "a thin, stateless collector that writes a disk log":

    GET /p.gif?d=<base64url JSON>   the 1x1 GIF; the decoded event logged
    OPTIONS /e                      204, the CORS preflight
    POST /e (JSON body)             204; the event logged (400 for a body that is not a JSON object)
    GET /ping.gif, GET /healthz     answered, not logged

Each event is one line, ``{"ts": <server time>, "method": "GET"|"POST", "event": {...}}`` (``--format
jsonl``, read with ``jsonl:<log>:event,method=method``) or a CSV row ``ts,method,id,tech`` under a header
(``--format csv``, read with ``csv:<log>``), appended with a single write(2) to a file opened with O_APPEND,
so a line is whole or absent and a killed app loses nothing it has answered. It validates nothing beyond
"a JSON object": the adapter applies the reference collector's rules.

Run: python targets/aiohttp_app.py --port 0 --log received/aiohttp/events.jsonl (prints the URL).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import csv
import io
import json
import os
import signal
import socket
import sys
import time
from typing import Any

try:
    from aiohttp import web
except ImportError:  # pragma: no cover - the launcher checks first; this is for running it by hand
    sys.exit("the aiohttp target needs aiohttp: pip install '.[targets]' (from the lossbench checkout)")

GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
CORS = {"Access-Control-Allow-Origin": "*"}
NO_STORE = {"Cache-Control": "no-store"}
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "7200",
}
CSV_HEADER = ("ts", "method", "id", "tech")
LOG: web.AppKey[int] = web.AppKey("log", int)
FORMAT: web.AppKey[str] = web.AppKey("format", str)


def append(app: web.Application, method: str, event: dict[str, Any]) -> None:
    if app[FORMAT] == "csv":
        os.write(app[LOG], csv_line(time.time(), method, event.get("id"), event.get("tech")))
        return
    line = json.dumps({"ts": time.time(), "method": method, "event": event}, separators=(",", ":"))
    os.write(app[LOG], line.encode() + b"\n")


def csv_line(*values: object) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue().encode()


def decode_pixel(d: str) -> object:
    try:
        return json.loads(base64.urlsafe_b64decode(d + "=" * (-len(d) % 4)))
    except (binascii.Error, ValueError):
        return None


async def pixel(request: web.Request) -> web.Response:
    event = decode_pixel(request.query.get("d", ""))
    if isinstance(event, dict):
        append(request.app, "GET", event)
    return web.Response(body=GIF, content_type="image/gif", headers={**CORS, **NO_STORE})


async def ping(request: web.Request) -> web.Response:
    return web.Response(body=GIF, content_type="image/gif", headers={**CORS, **NO_STORE})


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=PREFLIGHT)


async def post_event(request: web.Request) -> web.Response:
    try:
        event = json.loads(await request.read())
    except ValueError:
        event = None
    if not isinstance(event, dict):
        return web.Response(status=400, text="invalid event\n", headers=CORS)
    append(request.app, "POST", event)
    return web.Response(status=204, headers={**CORS, **NO_STORE})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(log_fd: int, log_format: str) -> web.Application:
    app = web.Application(client_max_size=65536)
    app[LOG] = log_fd
    app[FORMAT] = log_format
    app.router.add_get("/p.gif", pixel)
    app.router.add_get("/ping.gif", ping)
    app.router.add_route("OPTIONS", "/e", preflight)
    app.router.add_post("/e", post_event)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(host: str, port: int, log_path: str, log_format: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if log_format == "csv" and os.fstat(fd).st_size == 0:
        os.write(fd, csv_line(*CSV_HEADER))
    runner = web.AppRunner(make_app(fd, log_format), access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    print(f"aiohttp target listening on http://{host}:{sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # lets requests in flight finish
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True, help="the file events are appended to")
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="the log's format")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.log, args.format))


if __name__ == "__main__":
    main()
