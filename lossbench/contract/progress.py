"""The running loss while the load runs (``progress.json``): typed, versioned, defined once.

The Locust master (or the single Locust process) writes a ``Progress`` about once a second into the run
directory and serves the same snapshot to its web UI's Loss tab (``lossbench.loadgen.locust.live``);
``lossbench run`` reads the file to show progress (``lossbench.watch``). Its losses are the client's count:
events cut before their data was written, as Locust's statistics hold them. The final table joins the
sent and received ledgers at the collector; docs/FORMATS.md describes the fields.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

SCHEMA = "lossbench.progress/2"
"""Version of the progress document; bump it when the JSON shape changes."""

FILE_NAME = "progress.json"


class TechniqueProgress(msgspec.Struct, frozen=True, kw_only=True):
    """One technique so far."""

    sent: int  # events reported to Locust's statistics
    lost: int  # of them, cut before their data was written (Locust's failures)
    loss: float  # lost / sent (0 before any event)
    ci95: tuple[float, float]  # the 95% Wilson interval of loss
    half_width: float  # (hi - lo) / 2 of ci95: what --precision holds to its goal
    predicted: float | None  # the model's loss for the run's profile, exit model, abort and seed
    events_to_goal: int | None  # events it needs in all for the goal, if its loss stays; None: no goal


class TimingProgress(msgspec.Struct, frozen=True, kw_only=True):
    """The load generator's timing error over the last ``window`` seconds (``lossbench.contract.timing``):
    how late the last stage of each event reported in that time really ended."""

    window: float  # seconds the figures cover: the reports that reached the master in that time
    events: int  # events timed in the window
    p50: float | None  # seconds; None: no event in the window
    p90: float | None
    limit: float | None  # the p90 compare flags a run above (10% of the median RTT); None: zero RTT
    guard: float | None  # the p90 the lag guard holds to: the limit, at least GUARD_FLOOR; None: no guard
    over_for: float  # seconds the window's p90 has been above ``guard`` without a break (0: it is not)


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of the run, from the Locust master's statistics."""

    schema: str = SCHEMA
    state: str  # Locust's runner state: spawning, running, stopping, stopped
    elapsed: float  # seconds since the test started
    duration: float | None  # the --run-time limit in seconds; None: no limit
    users: int
    events: int  # events of every technique so far
    events_per_second: float  # over the last few seconds
    precision: float | None  # the goal: every half-width at most this (a fraction: 0.005 is ±0.5 points)
    eta: float | None  # seconds until the goal at the present rate; None: no goal, or not known yet
    reached: bool  # every technique met the goal (and had at least min_events events)
    min_events: int  # events each technique needs before the goal can stop the run
    techniques: dict[str, TechniqueProgress]
    timing: TimingProgress | None = None  # None: no timing figures (a snapshot from before they existed)
    stopped: str | None = None  # why the plugin stopped the run before its time (the lag guard)
    updated: float  # wall-clock time of the snapshot (Unix seconds)


def goal_words(progress: Progress) -> str:
    """The precision goal and where the run stands against it, in words ("" without a goal); the terminal
    and the web UI say it the same way."""
    if progress.precision is None:
        return ""
    goal = f"goal ±{100 * progress.precision:g} points"
    if progress.reached:
        return f"{goal}: reached"
    if progress.eta is None:
        return f"{goal}: too early to say when"
    if progress.duration is not None and progress.elapsed + progress.eta > progress.duration:
        return (
            f"{goal}: not within the {progress.duration:g} s limit at this rate (about {progress.eta:,.0f} s)"
        )
    return f"{goal} in about {progress.eta:,.0f} s"


def encode_progress(progress: Progress) -> bytes:
    return msgspec.json.encode(progress)


def write_progress(path: Path, progress: Progress) -> None:
    """Write ``progress.json`` atomically: a reader sees the previous snapshot or this one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(encode_progress(progress))
    os.replace(tmp, path)


def read_progress(path: Path) -> Progress | None:
    """The last snapshot; None when there is none yet or it is not one this lossbench reads."""
    try:
        progress = msgspec.json.decode(path.read_bytes(), type=Progress)
    except (OSError, msgspec.DecodeError):  # ValidationError is a DecodeError
        return None
    return progress if progress.schema == SCHEMA else None
