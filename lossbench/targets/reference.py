"""The reference target: ``lossbench collector`` in a subprocess on a free loopback port, as ``run`` does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lossbench.targets.process import Target, TargetError


def start_reference(run_dir: Path, timeout: float = 10.0) -> Target:
    """The reference collector writing its received ledger to ``<run>/received/``; answering when returned
    (it prints its URL once it listens)."""
    received = Path(run_dir) / "received"
    received.mkdir(parents=True, exist_ok=True)
    log_path = Path(run_dir) / "collector.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lossbench.cli", "collector", "--port", "0", "--out", str(run_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace")
    proc.stdout.close()
    if "listening on " not in line:
        proc.kill()
        proc.wait()
        said = log_path.read_text(errors="replace").strip()[-1500:] or line.strip() or "no output"
        raise TargetError(f"the reference collector did not start: {said}")
    return Target(
        kind="reference",
        url=line.split("listening on ", 1)[1].split()[0],
        process=proc,
        raw_logs=tuple(sorted(received.glob("*.jsonl"))),
        received_from=None,
    )
