"""Scale out: Locust master + workers, and collector processes sharing a port, measured side by side.

1. The same run (3G, exit model fixed:0.6, same seed) with one Locust process and with 1 master + 2 local
   workers: the losses must agree within their intervals (two-proportion test, p >= 0.01 for every
   technique); events per second of each are printed.
2. The collector with 1 and with 2 processes (SO_REUSEPORT) under the same loopback load: every event
   received exactly once in both, and the events per second of each.

    python benchmarks/scale_out.py [--seconds 30]

Exits 1 when the single-process and distributed losses disagree or a collector run loses an event.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from lossbench.stats import two_proportion_test

ALPHA = 0.01


def run(out: Path, run_id: str, *args: str) -> dict:
    command = [sys.executable, "-m", "lossbench.cli", "run", "--out", str(out), "--run-id", run_id, *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return json.loads((out / run_id / "summary.json").read_text())


def _loss(row: dict) -> str:
    lo, hi = row["ci95"]
    return f"{100 * row['loss']:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def rate(summary: dict, seconds: float) -> float:
    return sum(t["sent"] for t in summary["techniques"].values()) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="lossbench-scale-"))
    seconds = f"{args.seconds:g}"
    same = ["--duration", seconds, "--exit-model", "fixed:0.6", "--seed", "11", "--users", "200"]
    single = run(out, "locust-1", *same, "--processes", "1")
    distributed = run(out, "locust-2", *same, "--processes", "2")
    agree = True
    print(f"Locust, 1 process: {rate(single, args.seconds):,.0f} events/s; "
          f"1 master + 2 workers: {rate(distributed, args.seconds):,.0f} events/s")  # fmt: skip
    for name, one in single["techniques"].items():
        two = distributed["techniques"][name]
        p = two_proportion_test(one["lost"], one["sent"], two["lost"], two["sent"])
        agree &= p >= ALPHA
        print(f"  {name:<16} {_loss(one)}  vs  {_loss(two)}  p = {p:.2f}")
    load = ["--duration", seconds, "--profile", "loopback", "--exit-model", "none", "--users", "200"]
    exact = True
    for processes in (1, 2):
        summary = run(out, f"collector-{processes}", *load, "--collector-processes", str(processes))
        lost = sum(t["lost"] + t["duplicates"] for t in summary["techniques"].values()) + summary["phantoms"]
        exact &= lost == 0
        print(f"collector, {processes} process(es): {rate(summary, args.seconds):,.0f} events/s, "
              f"lost + duplicated + phantom = {lost}")  # fmt: skip
    ok = agree and exact
    print(f"scale out: single and distributed Locust agree: {'yes' if agree else 'NO'}; "
          f"collector processes exact: {'yes' if exact else 'NO'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
