"""The targets document (``targets.json``): one load against several collectors, side by side, typed and
versioned, defined once.

``lossbench targets`` (``lossbench.targets_run``) runs the same load and the same draws against each
target, compares each run as ``lossbench compare`` does, and builds a ``TargetsDocument`` from the runs'
summaries and the targets' CPU time; the text table, the chart and the page (``lossbench.report.targets``)
render from it alone. docs/FORMATS.md describes its fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from lossbench.contract.summary import Direction, document_json, load_versioned

SCHEMA = "lossbench.targets/1"
"""Version of the targets document; bump it when the JSON shape changes."""


class TargetsError(Exception):
    """A stored targets.json that cannot be read; the message names the file."""


class TargetTechnique(msgspec.Struct, frozen=True, kw_only=True):
    """One technique against one target: its loss, and the collector-side part of it."""

    sent: int
    lost: int
    loss: float
    ci95: tuple[float, float]
    written: int  # events whose data the client wrote in full before the cut
    written_lost: int  # of them, not logged by the target: collector-side loss
    collector_loss: float  # written_lost / written (0 when nothing was written)
    collector_ci95: tuple[float, float]


class TargetResult(msgspec.Struct, frozen=True, kw_only=True):
    """One target's run: where it is, what it lost, what it cost."""

    target: str
    run_dir: str  # relative to the targets directory
    received_from: str | None  # the adapter spec its log was read with; None: the received ledger
    sent: int
    received: int
    written: int
    written_lost: int
    collector_loss: float
    collector_ci95: tuple[float, float]
    load_seconds: float  # wall time of Locust running (its start and stop included)
    throughput: float  # events sent per second of the load's duration (run.json's)
    cpu_seconds: float  # the target's CPU time (user + system, its processes) during the run
    cpu_per_event_us: float | None  # cpu_seconds per received event, in microseconds
    skipped_lines: dict[str, int]  # lines of its log without an event, by category
    techniques: dict[str, TargetTechnique]
    warnings: list[str]  # the run's summary warnings


class TargetComparison(msgspec.Struct, frozen=True, kw_only=True):
    """A target's collector-side loss against the reference target's (all techniques, or one)."""

    target: str
    reference: str
    technique: str | None  # None: all techniques together
    collector_loss: float
    reference_collector_loss: float
    direction: Direction
    p_value: float
    significant: bool
    text: str


class TargetsDocument(msgspec.Struct, frozen=True, kw_only=True):
    """The whole document ``lossbench targets`` writes as ``targets.json``."""

    schema: str = SCHEMA
    load: dict[str, Any]  # what every target got: seed, techniques, profile, exit model, users, duration
    reference: str  # the target the others are compared with
    targets: list[TargetResult]
    comparisons: list[TargetComparison]
    warnings: list[str]


def targets_json(document: TargetsDocument) -> str:
    """The document as ``targets.json`` holds it (``document_json``)."""
    return document_json(document)


def load_targets(path: str | Path) -> TargetsDocument:
    """Read a stored ``targets.json``; TargetsError naming the file when it is not one of this version."""
    return load_versioned(
        path,
        TargetsDocument,
        what="a targets document",
        schemas=(SCHEMA,),
        redo="rerun `lossbench targets`",
        error=TargetsError,
    )
