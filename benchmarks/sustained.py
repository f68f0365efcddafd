"""Connection-per-event load sustained for minutes, without running out of ports or file descriptors.

A lossbench pixel tab with no emulated delay and no cuts opens a new connection for every event. Over a
long run that exhausts the ephemeral port range if closed sockets linger in TIME_WAIT, and file
descriptors if sockets leak. This runs such a load for ``--seconds`` (300) against the reference
collector and samples, every ``--every`` seconds: events per second, sockets in TIME_WAIT (from
``/proc/net/tcp*``), open file descriptors of the load generator and of the collector.

It fails (exit 1) when an event went wrong (an error in the sent ledger: EADDRNOTAVAIL, EMFILE, a refused
connection...), when compare finds an event lost, duplicated or phantom, when the rate of the last
sample windows falls below half of the first ones, or when file descriptors keep growing.

    python benchmarks/sustained.py [--seconds 300] [--users 100] [--every 15]

Prints a line per sample, then the figure last.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIME_WAIT = "06"


def stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/stats", timeout=5) as response:
        return json.loads(response.read())


def time_wait_sockets() -> int:
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                count += sum(1 for line in f if line.split()[3] == TIME_WAIT)
        except OSError:
            pass
    return count


def open_fds(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


def children(pid: int) -> list[int]:
    """``pid`` and its descendants (Locust's worker processes)."""
    found = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    found.extend(children(int(child)))
    except OSError:
        pass
    return found


def sent_errors(run_dir: Path) -> dict[str, int]:
    errors: dict[str, int] = {}
    for part in (run_dir / "sent").glob("*.jsonl"):
        with part.open() as f:
            for line in f:
                if '"error":' in line:
                    kind = json.loads(line)["error"].split(":", 1)[0]
                    errors[kind] = errors.get(kind, 0) + 1
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--processes", type=int, default=1, help="Locust processes (default: 1)")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lossbench-sustained-"))
    collector = subprocess.Popen(
        [sys.executable, "-m", "lossbench.cli", "collector", "--port", "0", "--out", str(work / "run")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert collector.stdout is not None
    url = collector.stdout.readline().split("listening on ", 1)[1].split()[0]
    command = [
        sys.executable, "-m", "locust", "-f", "scenarios/pixel.py", "--headless", "--only-summary",
        "-u", str(args.users), "-r", str(args.users), "-t", f"{args.seconds}s", "--host", url,
        "--processes", str(args.processes), "--techniques", "pixel", "--network-profile", "loopback",
        "--exit-model", "none", "--no-summary", "--run-dir", str(work / "run"),
    ]  # fmt: skip
    if args.processes == 1:
        command[command.index("--processes") : command.index("--processes") + 2] = []
    print(f"{args.seconds} s of connection-per-event load, {args.users} tabs, {args.processes} Locust "
          f"process(es); run directory {work / 'run'}", flush=True)  # fmt: skip
    locust = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rates: list[float] = []
    fds: list[int] = []
    peak_time_wait = 0
    try:
        time.sleep(5.0)
        last, t_last = sum(stats(url)["events"].values()), time.monotonic()
        while locust.poll() is None and time.monotonic() - t_last < args.seconds:
            time.sleep(args.every)
            if locust.poll() is not None:
                break
            now, t_now = sum(stats(url)["events"].values()), time.monotonic()
            rate = (now - last) / (t_now - t_last)
            waiting = time_wait_sockets()
            client_fds = open_fds(children(locust.pid))
            server_fds = open_fds([collector.pid])
            rates.append(rate)
            fds.append(client_fds)
            peak_time_wait = max(peak_time_wait, waiting)
            print(f"{len(rates) * args.every:5.0f} s: {rate:7,.0f} events/s, {now:>9,} events, "
                  f"TIME_WAIT {waiting}, fds load generator {client_fds}, collector {server_fds}",
                  flush=True)  # fmt: skip
            last, t_last = now, t_now
        locust.wait(args.seconds + 120)
    finally:
        if locust.poll() is None:
            locust.kill()
        collector.terminate()
        collector.wait(60)
    summary = json.loads(
        subprocess.run(
            [sys.executable, "-m", "lossbench.cli", "compare", str(work / "run"), "--json"],
            capture_output=True, text=True, check=True, cwd=ROOT,
        ).stdout
    )  # fmt: skip
    pixel = summary["techniques"]["pixel"]
    errors = sent_errors(work / "run")
    problems = []
    if errors:
        problems.append(f"events with errors: {errors}")
    if pixel["lost"] or pixel["duplicates"] or summary.get("phantoms"):
        problems.append(f"lost {pixel['lost']}, duplicated {pixel['duplicates']}, phantoms "
                        f"{len(summary.get('phantoms') or [])}")  # fmt: skip
    if len(rates) >= 4:
        head = statistics.mean(rates[: len(rates) // 4 or 1])
        tail = statistics.mean(rates[-(len(rates) // 4 or 1) :])
        if tail < head / 2:
            problems.append(f"rate fell from {head:,.0f} to {tail:,.0f} events/s")
    if len(fds) >= 4 and min(fds[len(fds) // 2 :]) > 2 * max(fds[: len(fds) // 2]) + 50:
        problems.append(f"load generator file descriptors keep growing: {fds}")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    verdict = "meets" if not problems else "MISSES"
    mean_rate = statistics.mean(rates) if rates else 0.0
    print(f"sustained connection-per-event load: {pixel['sent']:,} events in {args.seconds} s "
          f"({mean_rate:,.0f} events/s), {pixel['lost']} lost, {sum(errors.values())} errors, "
          f"peak TIME_WAIT {peak_time_wait}, load-generator fds {min(fds, default=0)}-{max(fds, default=0)}: "
          f"{verdict}")  # fmt: skip
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
