"""What ``lossbench run`` shows while Locust plays the load: the running loss per technique, from
``RUN_DIR/progress.json`` (which the Locust master writes about once a second:
``lossbench.contract.progress``), and the reference collector's ``/stats`` (events received, open
connections, CPU).

In a terminal it is a live view drawn with rich: a bar with the time elapsed, the time to the precision goal
and events per second; each technique's running loss with its interval narrowing and the model's
prediction; the collector's figures. Elsewhere (CI logs, a pipe) it is plain lines every 10 s. Formatters
turn a ``Sample`` into text or a renderable; the loop that prints them is thin.

Why rich rather than tqdm: the view is a table that changes in place under a bar, and rich draws both in
one live region (tqdm draws bars; a table under them would need cursor handling of our own); rich tells a
terminal from a pipe, fits the width and is widely used and maintained.

The running loss is the client's count: events cut before their data was written, as Locust's statistics
hold them. The final table joins the sent and received ledgers at the collector; the view says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from lossbench.contract.progress import Progress, goal_words, read_progress
from lossbench.contract.summary import format_pct, format_pct_interval

Say = Callable[[str], None]

NOTE = (
    "The running loss is the client's count of events cut before their data was written; the final table "
    "joins the sent and received ledgers at the collector."
)


@dataclass(frozen=True)
class Sample:
    """What is known of the run at one moment."""

    seconds: float  # since lossbench run started Locust
    duration: float  # the run's --duration: the limit
    progress: Progress | None  # None until the Locust master has written one
    collector: dict[str, Any] | None  # the reference collector's /stats; None for another target
    received_per_second: float | None  # the collector's events per second since the previous sample
    target_cpu: float | None = None  # another target's CPU seconds, when lossbench started it


class Sampler:
    """Reads the run's figures: progress.json and, for the reference collector, its /stats."""

    def __init__(
        self,
        progress_path: Path,
        duration: float,
        collector: Callable[[], dict[str, Any] | None] | None,
        target_cpu: Callable[[], float | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.progress_path = progress_path
        self.duration = duration
        self.collector = collector
        self.target_cpu = target_cpu
        self.clock = clock
        self.started = clock()
        self.last_received = (self.started, 0) if collector is not None else None  # (time, events)

    def sample(self) -> Sample:
        now = self.clock()
        stats = self.collector() if self.collector is not None else None
        rate = None
        if stats is not None:
            received = received_events(stats)
            if self.last_received is not None and now > self.last_received[0]:
                rate = (received - self.last_received[1]) / (now - self.last_received[0])
            self.last_received = (now, received)
        return Sample(
            seconds=now - self.started,
            duration=self.duration,
            progress=read_progress(self.progress_path),
            collector=stats,
            received_per_second=rate,
            target_cpu=None if self.collector is not None else self.target_cpu(),
        )


def received_events(stats: dict[str, Any]) -> int:
    return sum(stats.get("events", {}).values())


# ------------------------------------------------------------------------------------- formatters


def collector_words(sample: Sample) -> str:
    """The target's figures: the reference collector's /stats, or another target's CPU."""
    stats = sample.collector
    if stats is None:
        return "" if sample.target_cpu is None else f"target CPU {sample.target_cpu:.0f} s"
    rate = "" if sample.received_per_second is None else f" ({sample.received_per_second:,.0f}/s)"
    return (
        f"received {received_events(stats):,} events{rate}, {stats.get('connections_open', 0)} connections "
        f"open, collector CPU {stats.get('cpu_seconds', 0):.0f} s"
    )


def timing_words(progress: Progress | None) -> str:
    """The load generator's running timing error against the limit compare warns at ("" without it)."""
    timing = None if progress is None else progress.timing
    if timing is None or timing.p90 is None:
        return ""
    words = f"timing error p90 {_ms(timing.p90)}"
    if timing.limit is not None:
        words += f" (compare warns above {_ms(timing.limit)})"
    if timing.over_for > 0:
        words += f", lagging for {timing.over_for:.0f} s"
    return words


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms" if seconds >= 0.01 else f"{1000 * seconds:.1f} ms"


def elapsed(sample: Sample) -> float:
    """Seconds of load: the Locust master's count once there is one, else since Locust started."""
    return sample.progress.elapsed if sample.progress is not None else sample.seconds


def plain_lines(sample: Sample) -> list[str]:
    """Progress as lines for a log: the time and the collector's figures, then the loss so far."""
    figures = collector_words(sample)
    lines = [f"  {elapsed(sample):5.0f}/{sample.duration:g} s" + (f"  {figures}" if figures else "")]
    progress = sample.progress
    if progress is not None and progress.techniques:
        losses = ", ".join(
            f"{name} {format_pct(t.loss)} {format_pct_interval(t.ci95)}"
            for name, t in progress.techniques.items()
        )
        goal = goal_words(progress)
        rate = f"{progress.events_per_second:,.0f} events/s"
        timing = timing_words(progress)
        lines.append(
            f"         loss so far (client's count): {losses}; {rate}"
            + "".join(f"; {w}" for w in (timing, goal) if w)
        )
    return lines


def view(sample: Sample) -> RenderableType:
    """The live view: a bar, the table of running losses, the collector's figures and what they are."""
    progress = sample.progress
    seconds = elapsed(sample)
    end = sample.duration
    if progress is not None and progress.eta is not None:
        end = min(end, seconds + progress.eta)  # the bar runs to the expected end
    words = [f"{seconds:,.0f} s of at most {sample.duration:g} s"]
    if progress is not None:
        words += [goal_words(progress), f"{progress.events_per_second:,.0f} events/s"]
    header = Table.grid(padding=(0, 2))
    header.add_row(
        ProgressBar(total=max(end, 1e-9), completed=min(seconds, end), width=40),
        " · ".join(w for w in words if w),
    )
    parts: list[RenderableType] = [header]
    if progress is None:
        parts.append(Text("starting Locust ..."))
    else:
        parts.append(loss_table(progress))
    figures = collector_words(sample)
    if figures:
        parts.append(Text(figures))
    timing = timing_words(progress)
    if timing and progress is not None and progress.timing is not None:
        parts.append(Text(f"load generator: {timing}", style="red" if progress.timing.over_for else ""))
    parts.append(Text(NOTE, style="dim"))
    return Group(*parts)


def loss_table(progress: Progress) -> Table:
    table = Table(box=None, padding=(0, 2), show_edge=False)
    table.add_column("technique")
    for title in ("events", "cut", "loss", "95% interval", "± points", "predicted"):
        table.add_column(title, justify="right")
    for name, t in progress.techniques.items():
        goal_met = progress.precision is not None and t.half_width <= progress.precision
        table.add_row(
            name,
            f"{t.sent:,}",
            f"{t.lost:,}",
            format_pct(t.loss),
            format_pct_interval(t.ci95),
            Text(f"{100 * t.half_width:.2f}", style="green" if goal_met else ""),
            "" if t.predicted is None else format_pct(t.predicted),
        )
    return table


# ------------------------------------------------------------------------------------------ the loop


def follow(running: Callable[[], bool], sampler: Sampler, say: Say, live: bool, every: float = 10.0) -> None:
    """Show progress until ``running()`` is False: a live view redrawn every second in a terminal
    (``live``), else ``plain_lines`` every ``every`` seconds through ``say``."""
    if live:
        console = Console(highlight=False)
        with Live(view(sampler.sample()), console=console, auto_refresh=False) as shown:
            while running():
                time.sleep(1.0)
                shown.update(view(sampler.sample()), refresh=True)
            last = sampler.sample()
            shown.update(view(last), refresh=True)  # the last snapshot stays on the screen
        say_end(last.progress, say)
        return
    next_report = time.monotonic() + every
    while running():
        time.sleep(0.2)
        if time.monotonic() >= next_report:
            next_report = time.monotonic() + every
            for line in plain_lines(sampler.sample()):
                say(line)
    say_end(sampler.sample().progress, say)


def say_end(final: Progress | None, say: Say) -> None:
    """How the load ended, when it ended before its time: the precision goal, or the lag guard."""
    if final is not None and final.stopped:
        say(f"  stopped: {final.stopped}")
    if final is not None and final.reached:
        widest = max(t.half_width for t in final.techniques.values())
        say(
            f"  precision reached after {final.elapsed:.0f} s: every interval within "
            f"±{100 * widest:.2f} points (goal ±{100 * (final.precision or 0):g})"
        )
