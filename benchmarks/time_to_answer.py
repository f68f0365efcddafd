"""Time to answer: `lossbench run` with its defaults must measure the default techniques with 95% intervals
no wider than +/-0.25 percentage points in at most 60 s of wall time on this machine, sizing included.

    python benchmarks/time_to_answer.py [--out DIR] [--precision POINTS] [--duration SECONDS]

Runs the real command once, with ``--precision 0.25`` (it stops as soon as every interval is that narrow;
its defaults otherwise: the load sized to the machine as it is, --duration as the limit), then prints the
load it chose and why, each technique's interval half-width, whether neighbours in the ranking are
significantly apart, the summary's warnings, and the wall time last. Exits 1 on a miss (a warning is
one: a figure the run itself distrusts does not answer).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WALL_GOAL = 60.0
HALF_WIDTH_GOAL = 0.0025


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="", help="parent of the run directory (default: a temporary one)")
    parser.add_argument("--duration", default="", help="lossbench run's --duration (default: its own)")
    parser.add_argument(
        "--precision", type=float, default=100 * HALF_WIDTH_GOAL, help="the goal, in points (default: 0.25)"
    )
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="lossbench-tta-"))
    duration = ["--duration", args.duration] if args.duration else []
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "run", "--out", str(out), "--run-id", "time-to-answer",
         "--precision", f"{args.precision:g}", *duration],
        capture_output=True,
        text=True,
    )  # fmt: skip
    wall = time.monotonic() - started
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-3000:], sep="\n")
        print(f"lossbench run failed with exit code {result.returncode} after {wall:.0f} s")
        return 1
    summary = json.loads((out / "time-to-answer" / "summary.json").read_text())
    sizing = summary["run"].get("sizing") or {}
    cost = (
        "judged in the run's first seconds"
        if sizing.get("in_run")
        else f"sizing took {sizing.get('seconds')} s"
    )
    print(f"load: {sizing.get('reason') or sizing.get('skipped')} ({cost})")
    rows = sorted(summary["techniques"].items(), key=lambda item: -item[1]["loss"])
    widest = 0.0
    for name, row in rows:
        lo, hi = row["ci95"]
        half = (hi - lo) / 2
        widest = max(widest, half)
        print(f"{name:<16} loss {100 * row['loss']:6.2f}%  95% interval [{100 * lo:.2f}, {100 * hi:.2f}]  "
              f"+/-{100 * half:.2f} points  (n = {row['sent']:,})")  # fmt: skip
    for comparison in summary.get("comparisons", []):
        print(comparison["text"])
    ranked = all(
        a["ci95"][0] > b["ci95"][1] or a["lost"] == b["lost"] == 0
        for (_, a), (_, b) in itertools.pairwise(rows)
    )
    for warning in summary["warnings"]:
        print(f"warning: {warning}")
    goal = args.precision / 100
    ok = wall <= WALL_GOAL and widest <= goal + 1e-12 and not summary["warnings"]
    print(f"ranking separated by non-overlapping intervals: {'yes' if ranked else 'no'}")
    print(f"time to answer: {wall:.0f} s wall (goal <= {WALL_GOAL:.0f} s), widest interval "
          f"+/-{100 * widest:.2f} points (goal <= {100 * goal:.2f}), "
          f"{len(summary['warnings'])} warning(s) (goal: none): "
          f"{'meets' if ok else 'MISSES'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
