"""Collector throughput against nginx's empty_gif, both driven by wrk on the same pixel URL.

Goal: on one core, the reference collector answers at least 0.30x the requests/s of nginx serving
``empty_gif`` with an access log, with keep-alive and with a connection per request, while keeping its
durability promise (every request that got a 2xx is a line in its ledger, written before the answer).

Both servers get one process pinned to one core; wrk gets one thread pinned to the other core. Rounds
alternate the servers (and their order) so that drift on a noisy machine hits both alike. The collector's
ledger is checked after each of its runs: it must hold at least as many event lines as wrk counted 2xx
answers, and exactly as many as the collector's own counters say.

    python benchmarks/collector_vs_nginx.py [--rounds 3] [--seconds 8] [--connections 50]

Needs Debian's nginx and wrk: ``apt-get update && apt-get install -y nginx wrk``. Prints each run, then
the median ratio per mode last; exits 1 when a goal is missed or the ledger lost an answered event.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lossbench.contract.events import encode_pixel_param

ROOT = Path(__file__).resolve().parent.parent

GOAL = 0.30
MODES = {"keep-alive": [], "connection-per-request": ["-H", "Connection: close"]}
PIXEL_PATH = "/p.gif?d=" + encode_pixel_param({"id": "wrk-pixel-1", "tech": "pixel", "type": "click"})

NGINX_CONF = """\
worker_processes 1;
worker_cpu_affinity {affinity};
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {work}/access.log;
  client_body_temp_path {work}/tmp;
  proxy_temp_path {work}/tmp;
  fastcgi_temp_path {work}/tmp;
  uwsgi_temp_path {work}/tmp;
  scgi_temp_path {work}/tmp;
  server {{
    listen 127.0.0.1:{port};
    location = /p.gif {{ empty_gif; }}
  }}
}}
"""


@dataclass
class WrkResult:
    requests_per_second: float
    responses: int  # completed responses, as wrk counts them
    not_2xx: int
    socket_errors: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Until the server accepts connections; fails at once if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on port {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout:g} s")


def need(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        sys.exit(f"{tool} not found: install Debian's nginx and wrk with "
                 "'apt-get update && apt-get install -y nginx wrk', then run this again")  # fmt: skip
    return path


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def run_wrk(wrk: str, cpu: int | None, url: str, mode: str, seconds: float, connections: int) -> WrkResult:
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", *MODES[mode], url]
    out = subprocess.run(pinned(cpu, command), capture_output=True, text=True, check=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    if rate is None or done is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    not_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return WrkResult(
        float(rate.group(1)),
        int(done.group(1)),
        int(not_2xx.group(1)) if not_2xx else 0,
        errors.group(1).strip() if errors else "none",
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def nginx_round(nginx: str, wrk: str, cpus: tuple[int | None, int | None], args: argparse.Namespace,
                mode: str) -> WrkResult:  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="lossbench-nginx-"))
    (work / "tmp").mkdir()
    port = free_port()
    affinity = "auto" if cpus[1] is None else format(1 << cpus[1], "b")
    (work / "nginx.conf").write_text(NGINX_CONF.format(work=work, port=port, affinity=affinity))
    proc = subprocess.Popen([nginx, "-p", str(work), "-c", str(work / "nginx.conf")], stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        return run_wrk(wrk, cpus[0], f"http://127.0.0.1:{port}{PIXEL_PATH}", mode, args.seconds,
                       args.connections)  # fmt: skip
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def collector_round(wrk: str, cpus: tuple[int | None, int | None], args: argparse.Namespace,
                    mode: str) -> WrkResult:  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="lossbench-collector-"))
    port = free_port()
    command = [sys.executable, "-m", "lossbench.cli", "collector", "--port", str(port), "--out", str(work)]
    proc = subprocess.Popen(pinned(cpus[1], command), cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        result = run_wrk(wrk, cpus[0], f"http://127.0.0.1:{port}{PIXEL_PATH}", mode, args.seconds,
                         args.connections)  # fmt: skip
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
            counted = sum(json.loads(response.read())["events"].values())
    finally:
        stop(proc)
    try:
        check_durability(work, result, counted)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def check_durability(work: Path, result: WrkResult, counted: int) -> None:
    """Every 2xx wrk saw is a line in the ledger, and the ledger holds what the collector counted."""
    lines = 0
    for part in (work / "received").glob("*.jsonl"):
        with part.open("rb") as f:
            lines += sum(1 for line in f if line.startswith(b'{"id":'))
    answered = result.responses - result.not_2xx
    if lines < answered or lines < counted:
        sys.exit(f"durability broken: wrk got {answered:,} 2xx answers and the collector counted "
                 f"{counted:,} events, but its ledger holds only {lines:,} event lines")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="wrk duration per run")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    args = parser.parse_args()
    nginx, wrk = need("nginx"), need("wrk")
    cpus: tuple[int | None, int | None] = (0, 1)  # (wrk, server)
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        cpus = (None, None)
        print("fewer than 2 cores (or no taskset): wrk and the servers share the CPU, so the ratios mean "
              "less; run this on a machine with 2 cores", file=sys.stderr)  # fmt: skip
    ratios: dict[str, list[float]] = {mode: [] for mode in MODES}
    for n in range(args.rounds):
        for mode in MODES:
            if n % 2 == 0:
                ref = nginx_round(nginx, wrk, cpus, args, mode)
                ours = collector_round(wrk, cpus, args, mode)
            else:
                ours = collector_round(wrk, cpus, args, mode)
                ref = nginx_round(nginx, wrk, cpus, args, mode)
            ratio = ours.requests_per_second / ref.requests_per_second
            ratios[mode].append(ratio)
            print(f"round {n + 1} {mode:>22}: nginx {ref.requests_per_second:>9,.0f} req/s, collector "
                  f"{ours.requests_per_second:>9,.0f} req/s (non-2xx {ours.not_2xx}, socket errors "
                  f"{ours.socket_errors}), ratio {ratio:.2f}", flush=True)  # fmt: skip
        time.sleep(0.5)
    medians = {mode: statistics.median(values) for mode, values in ratios.items()}
    ok = all(value >= GOAL for value in medians.values())
    figures = ", ".join(f"{mode} {value:.2f}x" for mode, value in medians.items())
    print(f"collector / nginx requests per second, one core each: {figures} (median of {args.rounds}; "
          f"goal >= {GOAL:.2f}x in both: {'meets' if ok else 'MISSES'})")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
