"""The running loss while the load runs: Locust's statistics as a ``Progress`` snapshot
(``lossbench.contract.progress``), the goal of ``--precision``, and the rows of the web UI's Loss tab.

Locust's master already adds up every worker's counts per technique (request type): events sent, and
failures, which are events cut before their data was written. That is the client's count of the loss; the
final table joins the sent and received ledgers at the collector. The lifecycle (``lifecycle.py``) takes a
snapshot about once a second on the master (or the single process), writes it to ``progress.json``, stops
the run when the goal is reached and serves the snapshot to the web UI.

No Locust import here: the plugin hands Locust's statistics in, and this module is tested without gevent.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from lossbench.contract.progress import Progress, TechniqueProgress, goal_words
from lossbench.contract.summary import format_pct, format_pct_interval
from lossbench.loadgen.locust.options import PluginOptions
from lossbench.loadgen.locust.timing import LagGuard, TimingWindow
from lossbench.stats import events_for_half_width, wilson_interval

MIN_EVENTS = 2_000
"""Events each technique needs before the goal can stop a run. A goal that is coarse against the loss
(±1 point on a 0.1% loss) is otherwise met after a few hundred events, and then mostly when few losses
happened to come first: the stopped runs' estimates are low and their intervals cover less often. With
this minimum the simulation in benchmarks/precision_stopping.py finds no such bias (docs/MODEL.md)."""

EVERY = 1.0
"""Seconds between snapshots."""

RATE_WINDOW = 6.0
"""Seconds over which events per second are counted (the workers report to the master every 3 s)."""

PREDICTION_EVENTS = 50_000
"""Monte Carlo events of the prediction shown while the load runs (compare computes its own)."""


class StatsEntry(Protocol):
    """What is read of one row of Locust's statistics (``locust.stats.StatsEntry``)."""

    @property
    def method(self) -> str | None: ...
    @property
    def num_requests(self) -> int: ...
    @property
    def num_failures(self) -> int: ...


class RequestStats(Protocol):
    """What is read of Locust's statistics (``locust.stats.RequestStats``)."""

    @property
    def entries(self) -> Mapping[Any, StatsEntry]: ...


def goal_of(precision_points: float) -> float | None:
    """``--precision`` in percentage points as a half-width goal (a fraction); None when it is off (0)."""
    return precision_points / 100 if precision_points > 0 else None


def counts(stats: RequestStats, techniques: Iterable[str] = ()) -> dict[str, tuple[int, int]]:
    """(sent, lost) per technique: every event type of a technique (request type) added up. The
    ``techniques`` come first, in their order, even before their first event; others follow."""
    totals: dict[str, tuple[int, int]] = {t: (0, 0) for t in techniques}
    for entry in list(stats.entries.values()):  # a copy: the master adds rows as reports arrive
        if not entry.method:
            continue
        sent, lost = totals.get(entry.method, (0, 0))
        totals[entry.method] = (sent + entry.num_requests, lost + entry.num_failures)
    return totals


def technique_progress(
    sent: int, lost: int, predicted: float | None, goal: float | None
) -> TechniqueProgress:
    lo, hi = wilson_interval(lost, sent)
    loss = lost / sent if sent else 0.0
    needed = None if goal is None or not sent else max(MIN_EVENTS, events_for_half_width(loss, goal))
    return TechniqueProgress(
        sent=sent,
        lost=lost,
        loss=loss,
        ci95=(lo, hi),
        half_width=(hi - lo) / 2,
        predicted=predicted,
        events_to_goal=needed,
    )


def goal_reached(techniques: Mapping[str, TechniqueProgress], goal: float | None) -> bool:
    """Every technique has at least MIN_EVENTS events and an interval within the goal."""
    return (
        goal is not None
        and bool(techniques)
        and all(t.sent >= MIN_EVENTS and t.half_width <= goal for t in techniques.values())
    )


def eta(techniques: Mapping[str, TechniqueProgress], elapsed: float) -> float | None:
    """Seconds until every technique has the events the goal needs, if its loss stays where it is and its
    events keep coming at its average rate so far; the slowest technique decides. None when not known."""
    if not techniques or elapsed <= 0:
        return None
    seconds = 0.0
    for t in techniques.values():
        if t.events_to_goal is None or t.sent == 0:
            return None
        seconds = max(seconds, max(0, t.events_to_goal - t.sent) / (t.sent / elapsed))
    return seconds


def predictions(options: PluginOptions, techniques: Iterable[str]) -> dict[str, float]:
    """The model's loss per technique for the run (the same draws as the run's seed, the same browser)."""
    return options.predict(techniques, PREDICTION_EVENTS)


class LiveLoss:
    """One test's running loss on the master (or the single process)."""

    def __init__(
        self,
        techniques: Iterable[str],
        predicted: Mapping[str, float],
        goal: float | None,
        duration: float | None,
        clock: Callable[[], float] = time.monotonic,
        median_rtt: float = 0.0,
    ) -> None:
        self.techniques = tuple(techniques)
        self.predicted = dict(predicted)
        self.goal = goal
        self.duration = duration
        self.clock = clock
        self.started = clock()
        self.recent: deque[tuple[float, int]] = deque()  # (time, events) over the last RATE_WINDOW
        self.timing = TimingWindow(clock)  # the timing errors reported over the last seconds
        self.guard = LagGuard(median_rtt)
        self.stopped: str | None = None  # why the run was stopped before its time
        self.last: Progress | None = None

    def start(self, duration: float | None, goal: float | None) -> None:
        """A new test begins (the web UI can run several, each with its own run time and goal)."""
        self.started, self.duration, self.goal, self.last = self.clock(), duration, goal, None
        self.recent.clear()
        self.timing.clear()
        self.guard.reset()
        self.stopped = None

    def snapshot(self, stats: RequestStats, *, state: str, users: int) -> Progress:
        now = self.clock()
        elapsed = now - self.started
        techniques = {
            name: technique_progress(sent, lost, self.predicted.get(name), self.goal)
            for name, (sent, lost) in counts(stats, self.techniques).items()
        }
        events = sum(t.sent for t in techniques.values())
        self.recent.append((now, events))
        while len(self.recent) > 2 and now - self.recent[1][0] >= RATE_WINDOW:
            self.recent.popleft()
        then, events_then = self.recent[0]
        rate = (events - events_then) / (now - then) if now > then else 0.0
        self.last = Progress(
            state=state,
            elapsed=elapsed,
            duration=self.duration,
            users=users,
            events=events,
            events_per_second=rate,
            precision=self.goal,
            eta=eta(techniques, elapsed) if self.goal is not None else None,
            reached=goal_reached(techniques, self.goal),
            min_events=MIN_EVENTS,
            techniques=techniques,
            timing=self.guard.figures(self.timing.recent(), elapsed),
            stopped=self.stopped,
            updated=time.time(),
        )
        return self.last


# ------------------------------------------------------------------------------------- the Loss tab

LOSS_TAB = {"title": "Loss", "key": "loss"}
"""The tab, as Locust's web UI takes extra tabs (``template_args["extended_tabs"]``)."""

LOSS_TABLE = {
    "key": "loss",
    "structure": [
        {"key": "technique", "title": "Technique"},
        {"key": "sent", "title": "Events"},
        {"key": "lost", "title": "Cut before written"},
        {"key": "loss", "title": "Loss (client's count)"},
        {"key": "interval", "title": "95% interval"},
        {"key": "width", "title": "± points"},
        {"key": "predicted", "title": "Predicted"},
    ],
}
"""The tab's columns (``template_args["extended_tables"]``); one-word keys: the web UI renames keys."""


def loss_rows(progress: Progress | None) -> list[dict[str, str]]:
    """The Loss tab's rows (``extended_stats`` of ``/stats/requests``): one per technique, then the goal."""
    if progress is None:
        return []
    rows = [
        {
            "technique": name,
            "sent": f"{t.sent:,}",
            "lost": f"{t.lost:,}",
            "loss": format_pct(t.loss),
            "interval": format_pct_interval(t.ci95),
            "width": f"±{100 * t.half_width:.2f}",
            "predicted": "" if t.predicted is None else format_pct(t.predicted),
        }
        for name, t in progress.techniques.items()
    ]
    if progress.precision is not None:
        rows.append(
            {"technique": "goal", "width": f"±{100 * progress.precision:g}", "loss": goal_words(progress)}
        )
    return rows
