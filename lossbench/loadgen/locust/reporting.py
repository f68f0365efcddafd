"""What a run shows: each event in Locust's statistics, and the outcome at the end of the run.

Comparing the ledgers and rendering the report belong to the layers above the load generator, which it
must not import: the orchestration hands the plugin a ``Finish`` (see ``lossbench.runner``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import gevent
from locust.env import Environment

from lossbench.loadgen.locust.hooks import hook
from lossbench.loadgen.player import PlayedEvent

Finish = Callable[[Path], bool]
"""Compare a run directory's ledgers, write the summary and the report, print the loss table; False
(having said why) when the ledgers cannot be read."""


class EventLost(Exception):
    """Shown in Locust's failures: the page went away before the event's data was out."""


def report_event(environment: Environment, played: PlayedEvent) -> None:
    """One event in Locust's statistics, by technique and event type; a lost event is a failure."""
    result = played.result
    exception: EventLost | None
    if result.written:
        elapsed, exception = (result.t_written or 0.0), None
    else:
        elapsed = played.exit_after if played.exit_after != float("inf") else 0.0
        exception = EventLost(result.error or f"cut in {result.stage}")
    hook(environment.events.request).fire(
        request_type=result.tech,
        name=played.event_type,
        response_time=elapsed * 1000,
        response_length=0,
        exception=exception,
        context={},
    )


def end_of_run(
    environment: Environment, run_dir: Path, ledger_error: str | None, finish: Finish | None
) -> None:
    """The end of a run on the master (or the single process): the loss table, or why there is none.

    Lost events are what is measured, not errors: Locust would exit 1 on its "failures", so the exit code
    is 0 once the table is out, 1 when a sent ledger failed and 2 when the ledgers cannot be read.
    """
    if ledger_error is not None:
        # compare would only say that a sent ledger is incomplete: say why, last, and fail the run.
        print(f"\nlossbench: no loss table: {ledger_error}", flush=True)
        environment.process_exit_code = 1
        return
    if finish is None:
        print(
            f"\nlossbench: this locustfile compares nothing at the end: run lossbench compare {run_dir}",
            flush=True,
        )
        environment.process_exit_code = 0
        return
    wait_for_closed_ledgers(run_dir / "sent", timeout=15.0)
    environment.process_exit_code = 0 if finish(run_dir) else 2


def wait_for_closed_ledgers(directory: Path, timeout: float) -> None:
    """Workers close their ledgers when they stop; give them a moment before reading."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_has_footer(p) for p in directory.glob("*.jsonl")):
            return
        gevent.sleep(0.1)


def _has_footer(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 200))
        return b'"ledger_end"' in f.read()
