"""The report renders a realistic summary into valid PNGs, a self-contained escaped HTML page and Markdown."""

from __future__ import annotations

import copy
import html
import math
import re
import struct
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest

from lossbench.report.html import ReportPaths, render_report, summary_markdown

MALICIOUS = '<script>alert("x")</script><img src=https://evil.example/x.png>'


def _time_to_written(median_s: float, spread: float) -> dict[str, Any]:
    """Log-normal quantile function on a grid, as compare would write it."""
    qs = [0.01, 0.05, *[i / 20 for i in range(2, 19)], 0.95, 0.99]
    ts = [round(median_s * math.exp(spread * NormalDist().inv_cdf(q)), 6) for q in qs]
    return {"p50": ts[qs.index(0.5)], "p90": ts[qs.index(0.9)], "quantiles": {"q": qs, "t": ts}}


def _tech(sent: int, lost: int, ci: list[float], pred: float | None, by_stage: dict[str, int], **kw: Any):
    received = sent - lost
    return {
        "sent": sent,
        "received": received,
        "lost": lost,
        "loss": lost / sent if sent else None,
        "ci95": ci if sent else None,
        "predicted_loss": pred,
        "predicted_ci95": None if pred is None else [pred * 0.93, pred * 1.07],
        "duplicates": kw.get("duplicates", 0),
        "by_stage": by_stage,
        "cut_by_stage": {**by_stage, "done": received},
        "written_lost": by_stage.get("done", 0),
        "unwritten_received": 0,
        "time_to_written": kw.get("ttw"),
        "cost": kw.get("cost"),
    }


def make_summary() -> dict[str, Any]:
    """Four techniques on a slow mobile profile; prewarm has no prediction, keepalive sent nothing."""
    return {
        "schema": "lossbench.summary/1",
        "run": {
            "run_id": "20251127-154500-demo",
            "scenario": "all",
            "techniques": ["ajax", "pixel", "pixel-prewarm", "pixel-keepalive"],
            "profile": "mobileSlow4G",
            "exit_model": "visit-mix",
            "abort": "unload",
            "seed": 42,
            "users": 200,
            "duration": 120,
            "started": 1764258300.0,
            "ended": 1764258420.5,
            "host": "bench-1",
            "versions": {"lossbench": "0.1.0", "python": "3.11.2", "locust": "2.31.0"},
            "collector": {"processes": 2, "port": 8089},
        },
        "reference": "ajax",
        "techniques": {
            "ajax": _tech(
                12000,
                2172,
                [0.1742, 0.1880],
                0.175,
                {"dns": 610, "connect": 540, "preflight": 820, "headers": 130, "body": 60, "done": 12},
                ttw=_time_to_written(0.62, 0.55),
                cost={
                    "requests_per_delivered": 2.0,
                    "connections_per_delivered": 1.0,
                    "conn_seconds_per_delivered": 0.81,
                },
            ),
            "pixel": _tech(
                12000,
                1101,
                [0.0867, 0.0970],
                0.088,
                {"dns": 600, "connect": 480, "request": 21},
                ttw=_time_to_written(0.31, 0.6),
                duplicates=3,
                cost={
                    "requests_per_delivered": 1.0,
                    "connections_per_delivered": 1.0,
                    "conn_seconds_per_delivered": 0.35,
                },
            ),
            "pixel-prewarm": _tech(
                12000,
                701,
                [0.0543, 0.0625],
                None,
                {"connect": 690, "request": 11},
                ttw={"p50": 0.16, "p90": 0.41, "p99": 0.9},
                cost={"requests_per_delivered": 1.42, "connections_per_delivered": 1.0},
            ),
            "pixel-keepalive": _tech(0, 0, [0.0, 1.0], 0.031, {}, ttw=None, cost=None),
        },
        "phantoms": 0,
        "comparisons": [
            {
                "technique": "pixel",
                "reference": "ajax",
                "ratio": 1.97,
                "p_value": 1e-40,
                "significant": True,
                "text": "pixel loses 1.97× less than ajax (p < 0.001)",
            },
            {
                "technique": "pixel-prewarm",
                "reference": "ajax",
                "ratio": 3.1,
                "p_value": 0.21,
                "significant": False,
                "text": "pixel-prewarm vs ajax: no significant difference (p = 0.21)",
            },
        ],
        "timing": {"p50": 0.0008, "p90": 0.003, "p99": 0.019, "max_loss_shift": 0.0012, "flagged": False},
        "ledgers": [
            {
                "path": "sent/bench-1-101.jsonl",
                "kind": "sent",
                "lines": 36002,
                "complete": True,
                "truncated_last_line": False,
            },
            {
                "path": "received/bench-1-201.0.jsonl",
                "kind": "received",
                "lines": 34028,
                "complete": False,
                "truncated_last_line": True,
            },
        ],
        "warnings": [
            "received/bench-1-201.0.jsonl has no footer: the collector was not closed cleanly",
            "pixel-keepalive: no events sent",
            MALICIOUS,
        ],
    }


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportPaths, dict[str, Any]]:
    summary = make_summary()
    return render_report(tmp_path_factory.mktemp("run"), summary), summary


def test_charts_are_valid_pngs_of_sensible_size(rendered: tuple[ReportPaths, dict[str, Any]]) -> None:
    paths, _ = rendered
    assert set(paths.charts) == {"loss", "stages", "time_to_written", "cost"}
    for name, path in paths.charts.items():
        assert path == paths.html.parent / "charts" / f"{name}.png"
        width, height = png_size(path)
        assert 900 <= width <= 2000 and 400 <= height <= 1500, (name, width, height)
        assert path.stat().st_size > 10_000


def test_html_is_self_contained_and_complete(rendered: tuple[ReportPaths, dict[str, Any]]) -> None:
    paths, summary = rendered
    page = paths.html.read_text(encoding="utf-8")
    assert "20251127-154500-demo" in page
    for tech in summary["techniques"]:
        assert f"<tr><td>{tech}</td>" in page
    assert "<td>12,000</td><td>9,828</td><td>2,172</td><td>18.1% [17.4%, 18.8%]</td>" in page
    assert "no events sent" in page
    for comparison in summary["comparisons"]:
        assert html.escape(comparison["text"]) in page
    assert "<span class=sig>(not significant)</span>" in page
    assert "has no footer" in page and "INCOMPLETE" in page
    assert "mobileSlow4G" in page and "visit-mix" in page and "locust 2.31.0" in page
    assert page.count("data:image/png;base64,") == 4
    own = page.replace(html.escape(MALICIOUS), "")  # the escaped warning text names a URL, harmlessly
    assert "http://" not in own and "https://" not in own
    assert not re.search(r"""(src|href)=(?!["']?data:)""", own), "only data: URIs may be referenced"


def test_strings_from_the_summary_are_escaped(rendered: tuple[ReportPaths, dict[str, Any]]) -> None:
    paths, _ = rendered
    page = paths.html.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert html.escape(MALICIOUS) in page
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "<script" not in markdown and "&lt;script&gt;" in markdown


def test_markdown_has_table_sentences_warnings_and_chart_links(
    rendered: tuple[ReportPaths, dict[str, Any]],
) -> None:
    paths, summary = rendered
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert markdown == summary_markdown({**summary}, charts=paths.charts)
    assert "| pixel | 12,000 | 10,899 | 1,101 | 9.18% [8.67%, 9.70%] | 8.80% [8.18%, 9.42%] | 3 |" in markdown
    assert "- pixel loses 1.97× less than ajax (p &lt; 0.001) (significant)" in markdown
    assert "](charts/loss.png)" in markdown and "](charts/cost.png)" in markdown
    assert "has no footer" in markdown and "mobileSlow4G" in markdown


def test_rendering_is_deterministic(tmp_path: Path, rendered: tuple[ReportPaths, dict[str, Any]]) -> None:
    first, summary = rendered
    again = render_report(tmp_path, copy.deepcopy(summary))
    for name, path in first.charts.items():
        assert again.charts[name].read_bytes() == path.read_bytes(), name
    assert again.html.read_bytes() == first.html.read_bytes()


def test_sparse_summary_renders_what_it_can(tmp_path: Path) -> None:
    summary = make_summary()
    for data in summary["techniques"].values():
        data.pop("cost", None)
        data["time_to_written"] = None
    summary["techniques"]["pixel"].update(loss=None, ci95="bad", predicted_loss=float("nan"), by_stage=None)
    for key in ("comparisons", "ledgers", "warnings", "timing", "phantoms"):
        del summary[key]
    del summary["run"]["run_id"]
    paths = render_report(tmp_path / "sparse-run", summary)
    assert set(paths.charts) == {"loss", "stages"}
    assert not (tmp_path / "sparse-run" / "charts" / "cost.png").exists()
    page = paths.html.read_text(encoding="utf-8")
    assert "run sparse-run" in page and page.count("data:image/png;base64,") == 2
    assert "charts/cost.png" not in paths.markdown.read_text(encoding="utf-8")


def test_empty_summary_does_not_crash(tmp_path: Path) -> None:
    paths = render_report(tmp_path, {})
    assert paths.charts == {}
    assert "schema is None" in paths.html.read_text(encoding="utf-8")
    assert summary_markdown({}).startswith("# lossbench report — run unknown")
