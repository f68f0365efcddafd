"""The summary document (``summary.json``): what compare measured, typed and versioned, defined once.

compare (``lossbench.analysis.compare``) builds a ``Summary``; every renderer (the text table, ``--fail-if``,
the charts, the HTML and Markdown report) reads one, so a field is named here and nowhere else.
What each field means is written in ``docs/FORMATS.md`` (a test checks its table against these structs).
The JSON is these structs' fields in order, so a change of shape is a change of ``SCHEMA``.

The percentages in the summary's own sentences (comparisons, warnings) and in the text table are written
by ``format_pct`` and ``format_pct_interval``, so the two never disagree about a number.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from lossbench.contract.techniques import CONNECTION_KINDS

SCHEMA = "lossbench.summary/5"
"""Version of the summary document; bump it when the JSON shape changes."""

READABLE_SCHEMAS = (
    SCHEMA,
    "lossbench.summary/4",
    "lossbench.summary/3",
    "lossbench.summary/2",
    "lossbench.summary/1",
)
"""Versions ``load_summary`` reads as this one: /4 lacks ``browser`` (read as its run.json's, else
``seed``: the presets came later) and the techniques' ``found``, ``preflights_sent``,
``preflights_cached``, ``preflights_per_delivered`` and ``predicted_held_seconds`` (read as {}, 0, 0,
null and null); /3 also lacks ``collector`` (read as null); /2 also ``received_from``, ``skipped_lines``,
``techniques.*.written_lost_ci95``, ``calibration`` and ``calibration_runs`` (read as null, {}, null,
null and null); /1 also ``ledgers[].damaged_lines`` (read as 0)."""

SEED_BROWSER = "seed"
"""The browser preset of a run whose run.json names none: every run before the presets played the seed
model (the rule is ``lossbench.model.browser.run_browser``'s; the contract cannot import the model)."""


Direction = Literal["less", "more", "same"]
"""How a technique's loss stands to the reference's."""


class SummaryError(Exception):
    """A stored summary that cannot be read as this lossbench's ``Summary``; the message names the file."""


class TimeQuantiles(msgspec.Struct, frozen=True, kw_only=True):
    """Points of the time-to-written CDF: ``t[i]`` seconds for the share ``q[i]`` of written events."""

    q: list[float]
    t: list[float] | None


class TimeToWritten(msgspec.Struct, frozen=True, kw_only=True):
    """Client seconds from firing until the event's data was completely written (written events only)."""

    p50: float | None
    p90: float | None
    p99: float | None
    quantiles: TimeQuantiles


class Cost(msgspec.Struct, frozen=True, kw_only=True):
    """What a technique cost the collector, in total and per delivered event (None: not known)."""

    requests: int
    connections: int
    conn_seconds: float | None
    requests_per_delivered: float | None
    connections_per_delivered: float | None
    conn_seconds_per_delivered: float | None


class FoundFigures(msgspec.Struct, frozen=True, kw_only=True):
    """A technique's events that found one kind of connection (the sent ledger's ``conn``), and their loss:
    a warm connection skips the lookup and the handshake, so this is where the pool's effect shows."""

    sent: int
    share: float  # of the technique's events
    lost: int
    loss: float
    ci95: tuple[float, float]


class TechniqueFigures(msgspec.Struct, frozen=True, kw_only=True):
    """One technique's counts, its loss with a 95% interval, the model's prediction and its costs; what its
    events found (connections, preflight answers) has defaults for summaries from before /5."""

    sent: int
    received: int
    lost: int
    loss: float
    ci95: tuple[float, float]
    predicted_loss: float | None
    predicted_ci95: tuple[float, float] | None
    duplicates: int
    by_stage: dict[str, int]
    cut_by_stage: dict[str, int]
    written_lost: int
    written_lost_ci95: tuple[float, float] | None = None  # of written_lost / cut_by_stage["done"]
    unwritten_received: int
    time_to_written: TimeToWritten
    cost: Cost
    found: dict[str, FoundFigures] = msgspec.field(default_factory=dict)  # by conn kind, kinds with events
    preflights_sent: int = 0  # events that sent a preflight
    preflights_cached: int = 0  # events that found its answer cached
    preflights_per_delivered: float | None = None  # preflights_sent / received; None: nothing received
    predicted_held_seconds: float | None = None  # the model's connection-seconds held per event (the pool)


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    """One technique against the reference: ratio of losses, two-sided p-value and the sentence."""

    technique: str
    reference: str
    ratio: float | None
    direction: Direction
    p_value: float
    significant: bool
    text: str


class Timing(msgspec.Struct, frozen=True, kw_only=True):
    """The load generator's timing error (real − intended end of the last stage reached), in seconds."""

    p50: float | None
    p90: float | None
    p99: float | None
    decided_on: str
    max_loss_shift: float
    loss_shift: dict[str, float]
    flagged: bool


class LedgerFile(msgspec.Struct, frozen=True, kw_only=True):
    """One ledger file compare read."""

    path: str
    kind: Literal["sent", "received"]
    lines: int
    complete: bool
    truncated_last_line: bool
    damaged_lines: int = 0


class ClientFigures(msgspec.Struct, frozen=True, kw_only=True):
    """One client's figures for a technique in a calibration (from that client's own summary)."""

    sent: int
    received: int
    lost: int
    loss: float
    ci95: tuple[float, float]
    lost_by_stage: dict[str, int]  # the stages that hold a lost event only


class CalibrationDifference(msgspec.Struct, frozen=True, kw_only=True):
    """Chromium's loss minus the socket client's, with its two-sided test."""

    loss: float
    p_value: float
    significant: bool
    test: str


class CalibrationEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One technique played by both clients on the same visits (``lossbench calibrate``)."""

    chromium: ClientFigures | None
    socket: ClientFigures | None  # None: a technique only the browser has
    difference: CalibrationDifference | None  # None: one side has no events
    text: str


class CalibrationRuns(msgspec.Struct, frozen=True, kw_only=True):
    """Where each client's run directory is, relative to the summary's."""

    chromium: str
    socket: str


class AnswerTimes(msgspec.Struct, frozen=True, kw_only=True):
    """Seconds from a request complete at the collector until its answer was written, for one kind."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None


class CollectorFigures(msgspec.Struct, frozen=True, kw_only=True):
    """What the reference collector reported about itself in its stats files, summed over its processes."""

    processes: int
    service_time: str | None  # the --service-time spec; None: answers at once
    service_workers: int
    utilisation: float | None  # busy worker-seconds / (workers × seconds served); None: not reported
    answer_seconds: dict[str, AnswerTimes]  # by contract.latency.ANSWER_KINDS, kinds with answers only


def collector_sentence(figures: CollectorFigures) -> str:
    """The collector's own figures in one line (the text table and the report both show it)."""
    service = (
        "answers at once"
        if figures.service_time is None
        else (f"service time {figures.service_time} on {figures.service_workers} worker(s)")
    )
    if figures.utilisation is not None:
        service += f", busy {100 * figures.utilisation:.0f}% of the time"
    answers = "; ".join(
        f"{kind} p50 {_ms(t.p50)}, p99 {_ms(t.p99)} ({t.count:,})"
        for kind, t in figures.answer_seconds.items()
    )
    processes = f"{figures.processes} process" + ("es" if figures.processes != 1 else "")
    return f"collector ({processes}): {service}" + (f"; answered in {answers}" if answers else "")


NO_POOL = "none"
"""The ``found`` kind of an event that asked no pool for a connection (the seed preset, a refused beacon)."""
_FOUND_ORDER = ("warm", *(kind for kind in CONNECTION_KINDS if kind != "warm"))
"""The order a technique's kinds are named in: the same in every line, so that they read as columns."""


def found_sentence(figures: TechniqueFigures) -> str:
    """What the technique's events found, each kind's share and loss, e.g. ``warm 64% (loss 0.1% [0.0,
    0.3]) · cold 35% (6.3% [5.5, 7.2])``; "" when no event asked a pool (``none`` is named only beside
    pooled kinds). The text table and the report both show it."""
    found = figures.found
    kinds = [k for k in _FOUND_ORDER if k in found] + [k for k in found if k not in _FOUND_ORDER]
    if all(k == NO_POOL for k in kinds):
        return ""
    parts = []
    for i, kind in enumerate(kinds):
        f = found[kind]
        loss = f"{format_pct(f.loss)} {format_pct_interval(f.ci95)}"
        parts.append(f"{kind} {_share(f.share)} ({'loss ' if i == 0 else ''}{loss})")
    return " · ".join(parts)


def preflight_sentence(figures: TechniqueFigures) -> str:
    """Preflights per delivered event and the answers found cached, e.g. ``preflights per delivered event
    0.31 (2,345 cached)``; "" for a technique whose events had none to send."""
    if not figures.preflights_sent and not figures.preflights_cached:
        return ""
    per = figures.preflights_per_delivered
    return (
        f"preflights per delivered event {'-' if per is None else f'{per:.3g}'} "
        f"({figures.preflights_cached:,} cached)"
    )


def _share(x: float) -> str:
    """A share of events: whole percents, but a small share keeps a digit instead of reading 0%."""
    return f"{100 * x:.0f}%" if x == 0 or x >= 0.01 else format_pct(x)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = 1000 * seconds
    return f"{ms:.2g} ms" if ms < 1 else f"{ms:.3g} ms"


class Summary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The whole document ``lossbench compare`` writes as ``summary.json``. Only the fields of another
    target's log and of a calibration have defaults, and they are left out of the JSON when absent: a run
    against the reference collector that is not a calibration writes the fields /2 wrote, and
    ``written_lost_ci95`` (``schema`` is required so that it is always written; ``browser`` too, filled in
    by ``load_summary`` for a summary from before /5)."""

    schema: str  # SCHEMA
    run: dict[str, Any]
    browser: str  # the browser preset the client played (run.json's "browser"; SEED_BROWSER without it)
    reference: str
    techniques: dict[str, TechniqueFigures]
    phantoms: int
    comparisons: list[Comparison]
    timing: Timing
    ledgers: list[LedgerFile]
    received_from: str | None = None  # the adapter spec of another target's log; None: the received ledger
    skipped_lines: dict[str, int] = msgspec.field(default_factory=dict)  # of that log, by category
    warnings: list[str]
    calibration: dict[str, CalibrationEntry] | None = None  # lossbench calibrate only
    calibration_runs: CalibrationRuns | None = None
    collector: CollectorFigures | None = None  # the reference collector's own figures; None: another target


def document_json(document: msgspec.Struct) -> str:
    """A stored document (summary, targets, sweep) as its file holds it: UTF-8 JSON, one space of indent,
    no NaN (a NaN is a bug in what built it, so encoding it raises ValueError)."""
    return json.dumps(msgspec.to_builtins(document), indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def summary_json(summary: Summary) -> str:
    """The document as ``summary.json`` holds it (``document_json``)."""
    return document_json(summary)


Document = TypeVar("Document")


def load_versioned(
    path: str | Path,
    kind: type[Document],
    *,
    what: str,
    schemas: tuple[str, ...],
    redo: str,
    error: type[Exception],
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Document:
    """A stored JSON document of one of ``schemas`` (an older one reads as the first, the current one), as
    ``kind``; ``error`` naming the file, what is wrong and ``redo`` when it cannot be read, is not ``what``
    of those versions, or has a field of the wrong type. ``upgrade`` fills in, for an older version, a
    required field it lacks."""
    try:
        doc = msgspec.json.decode(Path(path).read_bytes())
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None
    except msgspec.DecodeError as e:
        raise error(f"{path}: not valid JSON ({e}); {redo}") from None
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema not in schemas:
        found = "no schema" if schema is None else f"schema {schema!r}"
        raise error(f"{path}: not {what} this lossbench reads ({found}, expected {schemas[0]!r}); {redo}")
    if upgrade is not None and schema != schemas[0]:
        doc = upgrade(doc)
    try:
        return msgspec.convert({**doc, "schema": schemas[0]}, kind)
    except msgspec.ValidationError as e:
        raise error(f"{path}: damaged {what.removeprefix('a ')} ({e}); {redo}") from None


def load_summary(path: str | Path) -> Summary:
    """Read a stored ``summary.json``; SummaryError naming the file when it cannot be read, is not a
    lossbench summary of a version this one reads, or has a field of the wrong type."""
    redo = "rerun `lossbench compare` on its run directory (or `lossbench report --recompare`)"
    return load_versioned(
        path,
        Summary,
        what="a summary",
        schemas=READABLE_SCHEMAS,
        redo=redo,
        error=SummaryError,
        upgrade=_with_browser,
    )


def _with_browser(doc: dict[str, Any]) -> dict[str, Any]:
    """A summary from before /5 with its ``browser``: its run.json's, else ``seed``."""
    run = doc.get("run")
    browser = run.get("browser") if isinstance(run, dict) else None
    return {**doc, "browser": browser if isinstance(browser, str) else SEED_BROWSER}


def format_pct(x: float) -> str:
    """A loss as a percentage; small losses keep two significant digits instead of rounding to 0.0%."""
    pct = 100.0 * x
    if 0 < pct < 0.1:
        return f"{pct:.2g}%"
    return f"{pct:.1f}%"


def format_pct_interval(ci: tuple[float, float]) -> str:
    """An interval of fractions as percentage points, e.g. ``[5.7, 51.0]``."""
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
