"""Load generator throughput: a lossbench pixel tab against a bare Locust user, side by side.

Goal: a lossbench pixel user with no emulated delay and no cuts reaches at least 0.8x the events/s of a
bare Locust user that opens a socket, writes one GET and closes, on the same collector, with the same
process count. The lossbench user plays the seed preset (``--browser seed``: a connection per event, like
the bare user); the default chromium preset reuses pooled connections and would not be like for like.
Both generators run in alternating rounds against one collector process, each pinned to a core of its own
and the collector to the other (the issue's one core for the load, one for the server); the rate is read
from the collector's own counters over the steady part of each round (after a warm-up, before the end).

    python benchmarks/loadgen.py [--rounds 3] [--seconds 20] [--users 100]

Prints each round (events/s and the generator's CPU per event), the median ratio of CPU per event, then the
median ratio of events/s last; exits 1 when it is below the goal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL = 0.8
WARMUP = 3.0


def stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/stats", timeout=5) as response:
        return json.loads(response.read())


def events(url: str) -> int:
    return sum(stats(url)["events"].values())


def pinned(cpu: int, command: list[str]) -> list[str]:
    """One core for the load, one for the collector (with fewer cores, or no taskset, they share)."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def start_collector(out: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        pinned(1, [sys.executable, "-m", "lossbench.cli", "collector", "--port", "0", "--out", str(out)]),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, line.split("listening on ", 1)[1].split()[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(command: list[str], url: str, seconds: float) -> tuple[float, float]:
    """Events per second the collector received during the steady part of one Locust run, and the load
    generator's CPU microseconds per event over the same window (taskset execs the command: same pid)."""
    proc = subprocess.Popen(
        pinned(0, command), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(WARMUP)
        first, t_first, cpu_first = events(url), time.monotonic(), cpu_seconds(proc.pid)
        time.sleep(seconds - WARMUP - 1.0)
        last, t_last, cpu_last = events(url), time.monotonic(), cpu_seconds(proc.pid)
    finally:
        proc.wait(seconds + 60)
    count = max(1, last - first)
    return count / (t_last - t_first), (cpu_last - cpu_first) * 1e6 / count


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--users",
        type=int,
        default=100,
        help="tabs in each generator (default: 100: enough to keep a core busy while tabs wait for answers)",
    )
    parser.add_argument(
        "--raw-reference",
        action="store_true",
        help="also measure a bare user on non-blocking C sockets, as lossbench's client uses (not the goal's "
        "reference: the floor, to show how much of the cost is left to win)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lossbench-loadgen-"))
    collector, url = start_collector(work / "collector")
    common = ["--headless", "-u", str(args.users), "-r", str(args.users), "-t", f"{args.seconds:g}s",
              "--host", url, "--only-summary"]  # fmt: skip
    bare_file = [sys.executable, "-m", "locust", "-f", "benchmarks/bare_locustfile.py", *common]
    bare, c_socket = [*bare_file, "BarePixelUser"], [*bare_file, "BareCSocketUser"]
    ratios: list[float] = []
    costs: list[float] = []  # bare's CPU per event / ours: steadier than rates on a noisy machine
    try:
        for n in range(args.rounds):
            lossbench = [
                sys.executable, "-m", "locust", "-f", "scenarios/pixel.py", *common, "--techniques", "pixel",
                "--network-profile", "loopback", "--exit-model", "none", "--no-summary",
                "--browser", "seed",  # a connection per event, as the bare user: like for like
                "--run-dir", str(work / f"round-{n}"),
            ]  # fmt: skip
            bare_rate, bare_cpu = measure(bare, url, args.seconds)
            ours, our_cpu = measure(lossbench, url, args.seconds)
            ratios.append(ours / bare_rate)
            costs.append(bare_cpu / our_cpu)
            print(
                f"round {n + 1}: bare Locust {bare_rate:,.0f} events/s ({bare_cpu:.0f} us CPU/event), "
                f"lossbench pixel {ours:,.0f} events/s ({our_cpu:.0f} us CPU/event), "
                f"ratio {ours / bare_rate:.2f}",
                flush=True,
            )
            if args.raw_reference:
                raw_rate, raw_cpu = measure(c_socket, url, args.seconds)
                print(
                    f"  bare Locust on C sockets {raw_rate:,.0f} events/s ({raw_cpu:.0f} us CPU/event): "
                    f"lossbench pixel reaches {ours / raw_rate:.2f}x of it",
                    flush=True,
                )
    finally:
        collector.terminate()
        collector.wait(30)
    ratio = statistics.median(ratios)
    print(f"CPU per event, bare / lossbench: {statistics.median(costs):.2f} (median; the rate follows it "
          "while the generator's core is the bottleneck)")  # fmt: skip
    verdict = "meets" if ratio >= GOAL else "MISSES"
    print(f"lossbench pixel / bare Locust events per second: {ratio:.2f} (median of {len(ratios)}; "
          f"goal >= {GOAL}: {verdict})")  # fmt: skip
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
