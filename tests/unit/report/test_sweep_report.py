"""The sweep's chart and pages, rendered from a stored ``sweep.json`` alone.

``tests/data/sweep/sweep.json`` is a load sweep of four points (users 20 to 160) that ``lossbench.sweep``
built from the stored run's summary, its counts scaled per point, ajax's loss raised past the model at the
last two and the collector's answer times and utilisation written in (the collector of this version does
not report them yet): the shape of the knee issue 14 is about, with every part of the chart drawn.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from markupsafe import escape

from lossbench.contract.sweep import SweepDocument, load_sweep, value_text
from lossbench.report.markdown import md_escape
from lossbench.report.sweep import _positions, point_line, render_sweep_report, sweep_text

STORED = Path(__file__).parents[2] / "data" / "sweep" / "sweep.json"


@pytest.fixture(scope="module")
def stored() -> SweepDocument:
    return load_sweep(STORED)


def pages(folder: Path, document: SweepDocument) -> tuple[str, str]:
    paths = render_sweep_report(folder, document)
    assert paths.html == folder / "sweep.html" and paths.markdown == folder / "sweep.md"
    return paths.html.read_text(encoding="utf-8"), paths.markdown.read_text(encoding="utf-8")


def test_the_stored_sweep_is_a_load_sweep_with_a_knee(stored: SweepDocument) -> None:
    assert stored.values == [20, 40, 80, 160] and stored.state == "complete"
    assert stored.findings[0].text == (
        "ajax rises above the model from 266 events/s (users=80): the collector's p99 answer time is 180 ms "
        "(utilisation 91%)"
    )
    assert stored.findings[-1].text == "pixel-keepalive stays within its prediction at every point"
    from lossbench.sweep import findings

    assert findings(stored) == stored.findings, "the stored findings are what the code finds today"


def test_chart_and_pages_render_with_every_point_and_finding(stored: SweepDocument, tmp_path: Path) -> None:
    page, markdown = pages(tmp_path, stored)
    chart = tmp_path / "charts" / "sweep.png"
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert "data:image/png;base64," in page and "](charts/sweep.png)" in markdown
    for point in stored.points:
        assert f'<a href="{point.run_dir}/report.html">' in page
        assert f"]({point.run_dir}/report.md)" in markdown
        assert f"<td>{value_text(point.value)}</td>" in page and f"| {value_text(point.value)} |" in markdown
    for finding in stored.findings:
        assert str(escape(finding.text)) in page  # Jinja2 escapes as markupsafe does
        assert md_escape(finding.text) in markdown
    assert "16.0% [14.1, 18.0] · model 7.9% ▲" in page and "21 / 180 ms" in markdown
    assert "<td>--seed</td><td>11</td>" in page and "| --service-time | 2ms |" in markdown
    assert "lossbench.sweep/1" in page and "lossbench.sweep/1" in markdown
    text = sweep_text(stored)
    assert all(f.text in text for f in stored.findings)
    assert point_line(stored, stored.points[2]).startswith(
        "point 3 of 4, users=80: 266 events/s; ajax 16.0% (model 7.9%) ABOVE the model; pixel 3.1%"
    )
    assert point_line(stored, stored.points[2]).endswith(
        "collector answers p50 / p99 21 / 180 ms, utilisation 91%"
    )


def test_a_categorical_sweep_with_a_point_missing_and_no_collector_figures(
    stored: SweepDocument, tmp_path: Path
) -> None:
    first, second = (msgspec.structs.replace(p, collector=None) for p in stored.points[:2])
    document = msgspec.structs.replace(
        stored,
        parameter="abort",
        option="--abort",
        scale="categorical",
        values=["unload", "drop", "unload-again"],
        points=[
            msgspec.structs.replace(first, value="unload"),
            msgspec.structs.replace(second, value="drop"),
        ],
        missing=["unload-again"],
        state="interrupted",
        stopped="interrupted during point 3 of 3 (abort=unload-again)",
        findings=[],
    )
    assert _positions(document, document.points) == ([0.0, 1.0], False)
    page, markdown = pages(tmp_path, document)
    assert (tmp_path / "charts" / "sweep.png").read_bytes().startswith(b"\x89PNG")
    said = "The sweep is interrupted: interrupted during point 3 of 3 (abort=unload-again)."
    assert said in page and md_escape(said) in markdown
    assert '<tr class="missing"><td>unload-again</td><td>missing</td>' in page


def test_numbers_spanning_ten_times_lie_on_a_log_axis(stored: SweepDocument) -> None:
    wide = msgspec.structs.replace(
        stored,
        points=[
            msgspec.structs.replace(p, value=v)
            for p, v in zip(stored.points, (5, 50, 500, 5000), strict=True)
        ],
    )
    assert _positions(wide, wide.points) == ([5.0, 50.0, 500.0, 5000.0], True)
    assert _positions(stored, stored.points) == ([20.0, 40.0, 80.0, 160.0], False)


def test_a_sweep_without_a_finished_point_has_pages_and_no_chart(
    stored: SweepDocument, tmp_path: Path
) -> None:
    render_sweep_report(tmp_path, stored)
    empty = msgspec.structs.replace(stored, points=[], missing=stored.values, state="running", findings=[])
    page, _ = pages(tmp_path, empty)
    assert not (tmp_path / "charts" / "sweep.png").exists()  # the earlier chart is not left behind
    assert "Points missing: 20, 40, 80, 160." in page and "data:image/png" not in page


def test_a_run_directory_is_quoted_in_its_link(stored: SweepDocument, tmp_path: Path) -> None:
    odd = msgspec.structs.replace(stored.points[0], run_dir='a b/"><script>')
    page, markdown = pages(tmp_path, msgspec.structs.replace(stored, points=[odd]))
    assert '<a href="a%20b/%22%3E%3Cscript%3E/report.html">' in page and "<script>" not in page
    assert "](a%20b/%22%3E%3Cscript%3E/report.md)" in markdown
