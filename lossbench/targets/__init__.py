"""Targets lossbench starts and loads: the reference collector, nginx and a thin aiohttp app.

``start_target(kind, run_dir)`` starts one on a free loopback port and returns a ``Target`` once it
answers: its ``url``, its raw log file(s) under the run's ``received/``, the adapter spec compare reads
them with (``received_from``, paths relative to the run directory; None for the reference collector,
whose received ledger compare reads as always), ``cpu_seconds()`` and ``stop()``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lossbench.targets.nginx import start_nginx
from lossbench.targets.process import Target, TargetError
from lossbench.targets.reference import start_reference
from lossbench.targets.thin_python import start_aiohttp

__all__ = ["KINDS", "STARTERS", "Target", "TargetError", "start_target"]

STARTERS: dict[str, Callable[[Path, float], Target]] = {
    "reference": start_reference,
    "nginx": start_nginx,
    "aiohttp": start_aiohttp,
}
KINDS: tuple[str, ...] = tuple(STARTERS)


def start_target(kind: str, run_dir: str | Path, timeout: float = 10.0) -> Target:
    """Start the target ``kind`` for a run in ``run_dir``; it answers when this returns."""
    if kind not in STARTERS:
        raise TargetError(f"unknown target {kind!r}; known targets: {', '.join(KINDS)}, or a URL")
    return STARTERS[kind](Path(run_dir), timeout)
