"""Does a change keep behaviour? The same seeded run, before and after, side by side.

    python benchmarks/same_behaviour.py --before 765448f --duration 30 --seed 11

Runs ``lossbench run`` twice with the same options: once on the code of ``--before`` (a git revision, checked
out into a temporary worktree and run with ``PYTHONPATH`` pointing at it) and once on this checkout. Live
runs are not bit-for-bit repeatable (the number of events sent in 30 s differs a little), so the check is
statistical: for every technique, the two losses must not differ significantly (two-proportion z-test,
two-sided p >= 0.01). Prints both tables and one verdict line per technique; exits 1 when a technique
differs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALPHA = 0.01


def two_sided_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-proportion z-test with the pooled proportion; 1.0 when there is nothing to tell apart."""
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = abs(k1 / n1 - k2 / n2) / se
    return math.erfc(z / math.sqrt(2))


def run(source: Path, out: Path, run_id: str, args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    """One ``lossbench run`` on the code under ``source``; (lost, sent) per technique from its summary."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    command = [
        sys.executable, "-m", "lossbench.cli", "run", "--out", str(out), "--run-id", run_id,
        "--duration", str(args.duration), "--seed", str(args.seed), "--users", str(args.users),
    ]  # fmt: skip
    print(f"== {run_id}: {' '.join(command[1:])} (code from {source})", flush=True)
    subprocess.run(command, cwd=source, env=env, check=True)
    summary = json.loads((out / run_id / "summary.json").read_text())
    return {name: (int(t["lost"]), int(t["sent"])) for name, t in summary["techniques"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", required=True, help="git revision of the code before the change")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "same-behaviour")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        before_tree = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before_tree), args.before],
                       check=True, capture_output=True)  # fmt: skip
        try:
            before = run(before_tree, args.out, "before", args)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before_tree)], check=False
            )
    after = run(ROOT, args.out, "after", args)
    differ = 0
    print(f"\n{'technique':<18}{'before':>22}{'after':>22}{'p':>8}  verdict")
    for name in before:
        (k1, n1), (k2, n2) = before[name], after.get(name, (0, 0))
        if not n1 or not n2:
            print(f"{name:<18} missing in one run")
            differ += 1
            continue
        p = two_sided_p(k1, n1, k2, n2)
        same = p >= ALPHA
        differ += not same
        print(
            f"{name:<18}{k1 / n1:>12.2%} of {n1:>7}{k2 / n2:>12.2%} of {n2:>7}{p:>8.3f}  "
            f"{'same within noise' if same else 'DIFFERENT'}"
        )
    print(
        f"\n{len(before) - differ} of {len(before)} techniques lose the same before and after (p >= {ALPHA})"
    )
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
