"""Helpers for tests: read what the collector recorded, wait for a condition."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path


def received_ids(run_dir: Path) -> Counter[str]:
    """Event ids in every received ledger under run_dir, with their multiplicity."""
    ids: Counter[str] = Counter()
    for path in sorted((run_dir / "received").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "id" in record:
                ids[record["id"]] += 1
    return ids


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
