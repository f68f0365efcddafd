"""The sweep document: written and read back unchanged, refused with the file named when it is of another
kind or version, and the rules it states (departure from the prediction, what a load sweep is)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from lossbench.contract.summary import AnswerTimes, CollectorFigures, load_summary
from lossbench.contract.sweep import (
    SCHEMA,
    Finding,
    SweepDocument,
    SweepError,
    SweepPoint,
    SweepTechnique,
    departure,
    load_sweep,
    ordered_points,
    sweep_json,
    value_text,
    varies_load,
    where,
)

STORED = Path(__file__).parents[2] / "data" / "run-before" / "summary.before.json"


def point(value: int | float | str, rate: float, collector: CollectorFigures | None = None) -> SweepPoint:
    ajax = SweepTechnique(
        sent=100,
        lost=12,
        loss=0.12,
        ci95=(0.07, 0.2),
        predicted_loss=0.08,
        predicted_ci95=(0.078, 0.081),
        departure="within",
    )
    return SweepPoint(
        value=value,
        run_dir=f"p-{value}",
        options={"users": value},
        sent=400,
        load_seconds=4.0,
        events_per_second=rate,
        techniques={"ajax": ajax},
        collector=collector,
        warnings=[],
    )


def document(*points: SweepPoint, parameter: str = "users", **changes: object) -> SweepDocument:
    values = [p.value for p in points]
    doc = SweepDocument(
        parameter=parameter,
        option=f"--{parameter}",
        scale="numeric",
        values=values,
        fixed={"seed": 1, "techniques": [], "duration": 4.0, "service_time": None},
        points=list(points),
        missing=[],
        state="complete",
        stopped=None,
        findings=[Finding(kind="within", technique="ajax", at=None, text="ajax stays within")],
    )
    return msgspec.structs.replace(doc, **changes)


COLLECTOR = CollectorFigures(
    processes=1,
    service_time="2ms",
    service_workers=1,
    utilisation=0.97,
    answer_seconds={"event": AnswerTimes(count=1000, p50=0.004, p90=0.05, p99=0.18)},
)


def test_a_document_writes_and_reads_back_unchanged(tmp_path: Path) -> None:
    doc = document(point(10, 40.0), point(20, 80.0, COLLECTOR), point(40, 150.5))
    path = tmp_path / "sweep.json"
    path.write_text(sweep_json(doc), encoding="utf-8")
    assert json.loads(path.read_text())["schema"] == SCHEMA == "lossbench.sweep/1"
    again = load_sweep(path)
    assert again == doc
    assert sweep_json(again) == path.read_text(encoding="utf-8")


def test_values_keep_their_json_type(tmp_path: Path) -> None:
    """Whole numbers stay ints, decimals floats (60.0 too), names strings: the chart's axis depends on it."""
    doc = document(point(60.0, 1.0), point(0.5, 1.0), parameter="dwell-scale")
    path = tmp_path / "sweep.json"
    path.write_text(sweep_json(doc))
    assert [type(v) for v in load_sweep(path).values] == [float, float]
    doc = document(point("3G", 1.0), parameter="profile", scale="categorical")
    path.write_text(sweep_json(doc))
    assert load_sweep(path).values == ["3G"]
    assert [value_text(v) for v in (10, 60.0, 0.25, "3G")] == ["10", "60", "0.25", "3G"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"schema": "lossbench.summary/4"}', r"sweep\.json: not a sweep document this lossbench reads"),
        ('{"schema": "lossbench.sweep/2"}', r"schema 'lossbench\.sweep/2', expected 'lossbench\.sweep/1'"),
        ("{not json", r"sweep\.json: not valid JSON"),
        ('{"schema": "lossbench.sweep/1", "parameter": 3}', r"sweep\.json: damaged sweep document"),
    ],
)
def test_another_document_or_version_names_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "sweep.json"
    path.write_text(content)
    with pytest.raises(SweepError, match=message):
        load_sweep(path)
    with pytest.raises(SweepError, match="rerun `lossbench sweep`"):
        load_sweep(path)


def test_departure_is_beyond_both_intervals() -> None:
    figures = load_summary(STORED).techniques["ajax"]  # 10.8% [5.8, 19.3], predicted 7.9% [7.7, 8.0]
    assert departure(figures) == "within"
    replace = msgspec.structs.replace
    assert departure(replace(figures, ci95=(0.09, 0.2))) == "above"
    assert departure(replace(figures, ci95=(0.01, 0.07))) == "below"
    assert departure(replace(figures, predicted_loss=None, predicted_ci95=None)) is None
    assert departure(replace(figures, predicted_ci95=None, ci95=(0.0795, 0.2))) == "above"  # the point
    assert departure(replace(figures, sent=0)) is None


def test_a_load_sweep_and_where_its_points_are() -> None:
    users = document(point(20, 80.0), point(10, 40.0))
    assert varies_load(users)
    assert [p.value for p in ordered_points(users)] == [10, 20]  # numeric: by value, not as run
    assert where(users, users.points[0]) == "80 events/s (users=20)"
    flat = document(point(10.0, 40.0), point(60.0, 41.0), parameter="dwell-scale")
    assert not varies_load(flat) and where(flat, flat.points[1]) == "dwell-scale=60"
    moved = document(point(1, 40.0), point(4, 90.0), parameter="service-workers")
    assert varies_load(moved) and where(moved, moved.points[1]) == "service-workers=4 (90 events/s)"
