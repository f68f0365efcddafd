"""The Summary document: encoded as summary.json always was, decoded with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from lossbench.contract.summary import (
    SCHEMA,
    Summary,
    SummaryError,
    format_pct,
    format_pct_interval,
    load_summary,
    summary_json,
)

STORED = Path(__file__).parents[2] / "data" / "run-before" / "summary.before.json"


def test_a_stored_summary_reads_and_writes_back_to_the_same_bytes(tmp_path: Path) -> None:
    """A summary of version /1 reads as the current version (its ledgers had no damaged lines, it read no
    other target's log, it had no collector-side interval); written again, it is a current document that
    reads back to the same bytes."""
    summary = load_summary(STORED)
    assert summary.schema == SCHEMA
    assert summary.techniques["pixel"].ci95 == pytest.approx((0.0189, 0.1175), abs=1e-4)
    assert [f.damaged_lines for f in summary.ledgers] == [0] * len(summary.ledgers)
    old = json.loads(STORED.read_text(encoding="utf-8"))
    new = json.loads(summary_json(summary))
    assert [f.pop("damaged_lines") for f in new["ledgers"]] == [0] * len(old["ledgers"])
    assert "received_from" not in new and "skipped_lines" not in new  # left out when no log was read
    assert [t.pop("written_lost_ci95") for t in new["techniques"].values()] == [None] * len(old["techniques"])
    assert new.pop("browser") == "seed"  # a summary from before the presets: the seed's browser
    for t in new["techniques"].values():
        assert t.pop("found") == {} and t.pop("predicted_held_seconds") is None
        preflights = [t.pop(k) for k in ("preflights_sent", "preflights_cached", "preflights_per_delivered")]
        assert preflights == [0, 0, None]
    assert {**new, "schema": old["schema"]} == old
    path = tmp_path / "summary.json"
    path.write_text(summary_json(summary), encoding="utf-8")
    assert summary_json(load_summary(path)) == path.read_text(encoding="utf-8")


def test_a_nan_is_a_bug_and_is_not_written() -> None:
    summary = load_summary(STORED)
    timing = msgspec.structs.replace(summary.timing, max_loss_shift=float("nan"))
    with pytest.raises(ValueError, match="not JSON compliant"):
        summary_json(msgspec.structs.replace(summary, timing=timing))


def _stored_with(tmp_path: Path, change: dict[str, object]) -> Path:
    doc = {**json.loads(STORED.read_text()), **change}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(doc))
    return path


def test_damaged_or_foreign_documents_name_the_file_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    with pytest.raises(SummaryError, match=r"summary\.json: cannot be read \(No such file or directory\)"):
        load_summary(path)
    path.write_text('{"schema": "lossbench.summary/1", "run": {')
    with pytest.raises(SummaryError, match=r"summary\.json: not valid JSON .*; rerun `lossbench compare`"):
        load_summary(path)
    path.write_text("[1, 2]")
    with pytest.raises(SummaryError, match=r"summary\.json: not a summary this lossbench reads \(no schema"):
        load_summary(path)
    path = _stored_with(tmp_path, {"schema": "lossbench.summary/0"})
    with pytest.raises(SummaryError, match=r"schema 'lossbench.summary/0', expected 'lossbench.summary/5'"):
        load_summary(path)
    path = _stored_with(tmp_path, {"phantoms": "none"})
    with pytest.raises(
        SummaryError,
        match=r"summary\.json: damaged summary \(Expected `int`, got `str` - at `\$\.phantoms`\)",
    ):
        load_summary(path)
    path = _stored_with(tmp_path, {"timing": {"p50": 0.1}})
    with pytest.raises(SummaryError, match=r"missing required field `p90` - at `\$\.timing`"):
        load_summary(path)


def test_the_summary_is_typed_all_the_way_down() -> None:
    summary = load_summary(STORED)
    assert isinstance(summary, Summary)
    assert summary.comparisons[1].direction == "less" and summary.ledgers[0].kind == "sent"
    assert summary.techniques["ajax"].time_to_written.quantiles.q[:2] == [0.0, 0.05]


@pytest.mark.parametrize(
    ("loss", "text"),
    [
        (0.0, "0.0%"),
        (0.0004, "0.04%"),
        (0.00099, "0.099%"),
        (0.00123, "0.1%"),
        (0.012, "1.2%"),
        (1.0, "100.0%"),
    ],
)
def test_format_pct_keeps_small_losses_visible(loss: float, text: str) -> None:
    assert format_pct(loss) == text


def test_format_pct_interval() -> None:
    assert format_pct_interval((0.057, 0.51)) == "[5.7, 51.0]"


def test_the_collector_sentence_says_service_utilisation_and_answer_times() -> None:
    from lossbench.contract.summary import AnswerTimes, CollectorFigures, collector_sentence

    figures = CollectorFigures(
        processes=2,
        service_time="2ms",
        service_workers=1,
        utilisation=0.934,
        answer_seconds={"preflight": AnswerTimes(count=1200, p50=0.00005, p90=0.1, p99=0.18)},
    )
    assert collector_sentence(figures) == (
        "collector (2 processes): service time 2ms on 1 worker(s), busy 93% of the time; answered in "
        "preflight p50 0.05 ms, p99 180 ms (1,200)"
    )
    idle = CollectorFigures(
        processes=1, service_time=None, service_workers=1, utilisation=None, answer_seconds={}
    )
    assert collector_sentence(idle) == "collector (1 process): answers at once"
