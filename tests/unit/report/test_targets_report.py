"""The targets comparison, data first: the document built from runs' summaries, its sentences, and the
table, chart and pages rendered from the document alone."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from lossbench.analysis.stats import collector_loss_text
from lossbench.compare_targets import targets_document
from lossbench.contract.summary import Summary
from lossbench.contract.targets import TargetsError, load_targets, targets_json
from lossbench.report.targets import render_targets_report, targets_text
from lossbench.runner import RunResult
from lossbench.stats import wilson_interval


def losing(summary: Summary, tech: str, written_lost: int) -> Summary:
    """The summary as if the target had not logged ``written_lost`` of the technique's written events."""
    t = summary.techniques[tech]
    changed = msgspec.structs.replace(
        t, received=t.received - written_lost, lost=t.lost + written_lost, written_lost=written_lost
    )
    return msgspec.structs.replace(summary, techniques={**summary.techniques, tech: changed})


def test_document_table_and_sentences(stored: Summary, tmp_path: Path) -> None:
    written = stored.techniques["pixel"].cut_by_stage["done"]
    results = {
        "reference": RunResult(tmp_path / "reference", stored, 10.0, 2.0),
        "aiohttp": RunResult(tmp_path / "aiohttp", losing(stored, "pixel", 3), 10.0, 4.0),
    }
    document = targets_document(results, tmp_path)
    reference, aiohttp = document.targets
    assert document.reference == "reference" and reference.written_lost == 0
    assert aiohttp.techniques["pixel"].written_lost == 3
    assert aiohttp.techniques["pixel"].collector_ci95 == wilson_interval(3, written)
    assert aiohttp.run_dir == "aiohttp" and aiohttp.throughput == aiohttp.sent / stored.run["duration"]
    assert aiohttp.cpu_per_event_us == pytest.approx(1e6 * 4.0 / aiohttp.received)
    overall = document.comparisons[0]
    assert overall.technique is None and overall.direction == "more"
    assert overall.text.startswith("the aiohttp target lost 0.")
    assert "of the events it fully received" in overall.text
    text = targets_text(document)
    assert overall.text in text and "collector-side loss" in text and f"3 of {aiohttp.written:,}" in text
    path = tmp_path / "targets.json"
    path.write_text(targets_json(document))
    assert load_targets(path) == document


def test_pages_and_chart_render_from_the_document(stored: Summary, tmp_path: Path) -> None:
    results = {kind: RunResult(tmp_path / kind, stored, 5.0, 1.0) for kind in ("reference", "nginx")}
    document = targets_document(results, tmp_path)
    paths = render_targets_report(tmp_path, document)
    html, markdown = paths.html.read_text(), paths.markdown.read_text()
    assert paths.chart.read_bytes().startswith(b"\x89PNG")
    assert "data:image/png;base64," in html and "charts/targets.png" in markdown
    for page in (html, markdown):
        assert "the nginx target lost 0.0% of the events it fully received" in page


def test_collector_loss_sentence_claims_a_difference_only_when_significant() -> None:
    assert collector_loss_text("aiohttp", "reference", None, 0.0004, 0.0, 0.02) == (
        "the aiohttp target lost 0.04% of the events it fully received (p = 0.02: more than the reference "
        "target's 0.0%)"
    )
    assert collector_loss_text("nginx", "reference", "ajax", 0.0, 0.0, 1.0) == (
        "the nginx target lost 0.0% of the ajax events it fully received (p = 1.00: the same as the "
        "reference target's 0.0% within noise)"
    )


def test_a_foreign_targets_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    path.write_text('{"schema": "lossbench.summary/3"}')
    with pytest.raises(TargetsError, match=r"targets\.json: not a targets document"):
        load_targets(path)
