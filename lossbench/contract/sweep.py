"""The sweep document (``sweep.json``): one measured run per value of one parameter, typed and versioned,
defined once.

``lossbench sweep`` (``lossbench.sweep``) runs one measured run per value into a run directory of its own,
and builds a ``SweepDocument`` from the runs' summaries: per point the value, where its run is, the events
per second it offered, each technique's loss beside the model's prediction, and the collector's own
figures when the summary has them; then the findings in words. The text table, the charts and the page
(``lossbench.report.sweep``) render from it alone. docs/FORMATS.md describes its fields (a test checks its
table against these structs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec

from lossbench.contract.summary import CollectorFigures, TechniqueFigures, document_json, load_versioned
from lossbench.contract.techniques import ALL_TECHNIQUES
from lossbench.stats import beside

SCHEMA = "lossbench.sweep/1"
"""Version of the sweep document; bump it when the JSON shape changes."""

Value = int | float | str
"""A value of the varied parameter: a number for a numeric parameter, else its text."""

Departure = Literal["above", "below", "within"]
"""How a measured loss stands to the model's prediction: its 95% interval wholly above the prediction's,
wholly below it, or overlapping it."""

Scale = Literal["numeric", "categorical"]
"""How the varied parameter's values are laid out: as numbers on an axis, or as categories in order."""

State = Literal["running", "complete", "interrupted", "failed"]
"""Where the sweep was when the document was written (it is rewritten after each point)."""

FindingKind = Literal["rises_above", "above", "below", "within", "no_prediction", "missing"]


class SweepError(Exception):
    """A stored sweep.json that cannot be read; the message names the file."""


class SweepTechnique(msgspec.Struct, frozen=True, kw_only=True):
    """One technique at one point: its loss beside the model's prediction."""

    sent: int
    lost: int
    loss: float
    ci95: tuple[float, float]
    predicted_loss: float | None
    predicted_ci95: tuple[float, float] | None
    departure: Departure | None  # None: no prediction to compare with, or no event sent


class SweepPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One finished point: one run of the sweep."""

    value: Value
    run_dir: str  # relative to the sweep directory
    options: dict[str, Any]  # the run options this value set, e.g. {"exit_model": "mix:scale=60"}
    sent: int  # events sent, all techniques
    load_seconds: float  # seconds the load lasted (RunResult.load_duration)
    events_per_second: float  # sent / load_seconds: the load offered
    techniques: dict[str, SweepTechnique]
    collector: CollectorFigures | None  # the summary's; None: not reported (another target, older lossbench)
    warnings: list[str]  # the run's summary warnings
    timing_p90: float | None = None  # the load generator's p90 timing error there, seconds
    timing_flagged: bool = False  # large against the stage times: the generator lagged (compare warned)


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """What the sweep shows, in one sentence; ``at`` is the point a chart marks (None: nothing to mark)."""

    kind: FindingKind
    technique: str | None  # None: about the sweep itself (missing points)
    at: Value | None
    text: str


class SweepDocument(msgspec.Struct, frozen=True, kw_only=True):
    """The whole document ``lossbench sweep`` writes as ``sweep.json``."""

    schema: str = SCHEMA
    parameter: str  # as --vary names it: users, profile, exit-model, dwell-scale, ...
    option: str  # the run option it sets, e.g. --users, --exit-model
    scale: Scale
    values: list[Value]  # every value asked for, in the order run
    fixed: dict[str, Any]  # the run options every point shares (seed, techniques, duration, ...)
    points: list[SweepPoint]  # the finished points, in the order run
    missing: list[Value]  # the values without a finished point
    state: State
    stopped: str | None  # why the sweep stopped before its last point; None: it did not
    findings: list[Finding]


def departure(figures: TechniqueFigures) -> Departure | None:
    """Whether a measured loss departs from the prediction beyond both 95% intervals (the summary warns
    on the same rule); None without a prediction or without events."""
    if figures.sent == 0 or figures.predicted_loss is None:
        return None
    predicted = figures.predicted_ci95 or (figures.predicted_loss, figures.predicted_loss)
    return beside(figures.ci95, predicted)


COLLECTOR_PARAMETERS = ("service-time", "service-workers", "collector-processes")
"""Parameters that are settings of the reference collector: no sense against another target, and their
chart shows the collector's figures whatever the events/s did."""
LOAD_PARAMETERS = ("users",)
"""Parameters that set the load itself; a sweep of another is a load sweep too when its events/s moved."""
LOAD_SPREAD = 1.5
"""Events/s that differ by this factor between points make a sweep a load sweep."""


def varies_load(document: SweepDocument) -> bool:
    """A load sweep: the users varied, or the events/s offered moved by ``LOAD_SPREAD`` across points."""
    if document.parameter in LOAD_PARAMETERS:
        return True
    rates = [p.events_per_second for p in document.points if p.events_per_second > 0]
    return len(rates) > 1 and max(rates) >= LOAD_SPREAD * min(rates)


def value_text(value: Value) -> str:
    """A value as the command line wrote it: 10, 0.5, 3G."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def ordered_points(document: SweepDocument) -> list[SweepPoint]:
    """The finished points along the parameter: by value when it is numeric, else in the order run."""
    if document.scale == "numeric":
        return sorted(document.points, key=lambda p: p.value if not isinstance(p.value, str) else 0.0)
    return list(document.points)


def technique_names(document: SweepDocument) -> list[str]:
    """Every technique of any point, in the canonical order, then unknown ones by name."""
    present = {name for p in document.points for name in p.techniques}
    return [t for t in ALL_TECHNIQUES if t in present] + sorted(present - set(ALL_TECHNIQUES))


def where(document: SweepDocument, point: SweepPoint, load: bool | None = None) -> str:
    """A point in words: ``dwell-scale=60``; in a load sweep (``load``, by default ``varies_load``) with
    its events/s: first when the users are what varied, ``400 events/s (users=40)``, else after,
    ``profile=Edge (266 events/s)``."""
    name = f"{document.parameter}={value_text(point.value)}"
    if not (varies_load(document) if load is None else load):
        return name
    rate = f"{point.events_per_second:,.0f} events/s"
    return f"{rate} ({name})" if document.parameter in LOAD_PARAMETERS else f"{name} ({rate})"


def sweep_json(document: SweepDocument) -> str:
    """The document as ``sweep.json`` holds it (``document_json``)."""
    return document_json(document)


def load_sweep(path: str | Path) -> SweepDocument:
    """Read a stored ``sweep.json``; SweepError naming the file when it is not one of this version."""
    return load_versioned(
        path,
        SweepDocument,
        what="a sweep document",
        schemas=(SCHEMA,),
        redo="rerun `lossbench sweep`",
        error=SweepError,
    )
