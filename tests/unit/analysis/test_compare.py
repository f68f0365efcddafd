"""compare on hand-made ledgers with known answers: counts, stages, duplicates, phantoms, broken files."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lossbench.analysis import join as join
from lossbench.analysis.adapters import AdapterError
from lossbench.analysis.compare import QUANTILES, compare, write_summary
from lossbench.analysis.join import match_received
from lossbench.analysis.read import LedgerError, read_ledgers
from lossbench.contract.latency import LatencyHistogram, percentiles
from lossbench.contract.ledger import LedgerWriter
from lossbench.contract.server import ServerHints
from lossbench.contract.summary import (
    SCHEMA,
    AnswerTimes,
    CollectorFigures,
    LedgerFile,
    Summary,
    load_summary,
    summary_json,
)
from lossbench.contract.techniques import TECHNIQUES
from lossbench.report.text import summary_to_text
from lossbench.stats import wilson_interval

RUN_BEFORE = Path(__file__).parents[2] / "data" / "run-before"
"""A run made by the code before issue 10 (765448f), with the summary.json it wrote."""


def event(
    i: int,
    tech: str = "pixel",
    *,
    stage: str = "done",
    t_written: float | None = 0.2,
    A: float | None = 1.0,
    requests: int = 1,
    connections: int = 1,
    error: float = 0.001,
    rtt: float = 0.05,
) -> dict[str, Any]:
    """A sent-ledger line; an event is written iff it has a t_written."""
    plan = {"dns": 0.05, "connect": 0.1, "request": t_written} if t_written is not None else {}
    return {
        "id": f"{i:016x}",
        "tech": tech,
        "type": "click",
        "rtt": rtt,
        "dns": 0.05,
        "A": A,
        "abort": "unload",
        "stage": stage,
        "written": t_written is not None,
        "t_written": t_written,
        "acked": t_written is not None,
        "retried": False,
        "requests": requests,
        "connections": connections,
        "plan": plan,
        "real": {k: v + error for k, v in plan.items()},
        "t0": 1764250000.0 + i,
    }


def received(i: int, tech: str = "pixel") -> dict[str, Any]:
    return {"id": f"{i:016x}", "tech": tech, "m": "GET", "t": 1764250000.5 + i, "c": 1}


def write(folder: Path, kind: str, lines: list[dict], *, name: str = "box-1", close: bool = True) -> Path:
    writer = LedgerWriter(folder / kind, kind, name=name)
    for line in lines:
        writer.append(line)
    if close:
        writer.close()
    assert writer.path is not None
    return writer.path


def make_run(tmp_path: Path) -> Path:
    """pixel: 10 sent, 8 received (one twice), 2 lost (dns, connect); ajax: 10 sent, 5 received; 1 phantom."""
    sent = [event(i) for i in range(8)]
    sent += [event(8, stage="dns", t_written=None), event(9, stage="connect", t_written=None)]
    sent += [event(100 + i, "ajax", requests=2) for i in range(5)]
    sent += [event(105 + i, "ajax", stage="preflight", t_written=None, requests=1) for i in range(5)]
    sent.append({"ping": "pixel", "connections": 1, "requests": 1, "t0": 1764250000.0})
    write(tmp_path, "sent", sent)
    got = [received(i) for i in range(8)] + [received(3)] + [received(100 + i, "ajax") for i in range(5)]
    got.append(received(999))
    write(tmp_path, "received", got)
    stats = {"events": {"pixel": 9, "ajax": 5}, "conn_seconds": {"pixel": 1.6, "ajax": 2.5, "": 0.1}}
    (tmp_path / "received" / "box-1.stats.json").write_text(json.dumps(stats))
    return tmp_path


def test_counts_stages_duplicates_phantoms_cost(tmp_path: Path) -> None:
    s = compare(make_run(tmp_path))
    assert s.schema == SCHEMA
    assert s.reference == "ajax"
    assert list(s.techniques) == ["ajax", "pixel"]
    pixel, ajax = s.techniques["pixel"], s.techniques["ajax"]
    assert (pixel.sent, pixel.received, pixel.lost, pixel.loss) == (10, 8, 2, 0.2)
    assert (ajax.sent, ajax.received, ajax.lost, ajax.loss) == (10, 5, 5, 0.5)
    assert ajax.ci95 == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert pixel.duplicates == 1 and ajax.duplicates == 0
    assert pixel.by_stage == {"dns": 1, "connect": 1, "request": 0, "done": 0}
    assert pixel.cut_by_stage == {"dns": 1, "connect": 1, "request": 0, "done": 8}
    assert ajax.by_stage == {"dns": 0, "connect": 0, "preflight": 5, "headers": 0, "body": 0, "done": 0}
    assert pixel.written_lost == 0 and pixel.unwritten_received == 0
    assert pixel.time_to_written.p50 == pytest.approx(0.2)
    assert pixel.time_to_written.quantiles.q[:3] == [0.0, 0.05, 0.1]
    assert len(pixel.time_to_written.quantiles.t) == 21
    # 10 event requests + 1 ping over 8 delivered; conn_seconds from the collector's stats
    assert pixel.cost.requests_per_delivered == pytest.approx(11 / 8)
    assert pixel.cost.connections_per_delivered == pytest.approx(11 / 8)
    assert pixel.cost.conn_seconds_per_delivered == pytest.approx(1.6 / 8)
    assert ajax.cost.requests_per_delivered == pytest.approx(15 / 5)
    assert s.phantoms == 1
    [c] = s.comparisons
    assert (c.technique, c.reference, c.direction) == ("pixel", "ajax", "less")
    assert c.ratio == pytest.approx(2.5)
    assert c.text.startswith("pixel and ajax lose the same within noise")  # 2/10 vs 5/10 is noise
    assert not c.significant
    assert any("never sent" in w for w in s.warnings)
    assert any(w.startswith("pixel: 1 duplicate") for w in s.warnings)
    assert s.ledgers[0] == LedgerFile(
        path="sent/box-1.0.jsonl", kind="sent", lines=20, complete=True, truncated_last_line=False
    )
    # the document survives a round trip through summary.json
    assert load_summary(write_summary(s, tmp_path)) == s


def test_written_lost_and_unwritten_received(tmp_path: Path) -> None:
    write(tmp_path, "sent", [event(1), event(2), event(3, stage="connect", t_written=None)])
    write(tmp_path, "received", [received(1), received(3)])
    pixel = compare(tmp_path).techniques["pixel"]
    assert (pixel.written_lost, pixel.unwritten_received, pixel.lost) == (1, 1, 1)
    assert pixel.by_stage["done"] == 1


def test_many_files_and_rotated_parts(tmp_path: Path) -> None:
    for p in range(3):
        write(tmp_path, "sent", [event(p * 1000 + i) for i in range(50)], name=f"gen-{p}")
    writer = LedgerWriter(tmp_path / "received", "received", name="col-1", max_bytes=2000)
    for p in range(3):
        for i in range(0, 50, 2):
            writer.append(received(p * 1000 + i))
    writer.close()
    ledgers = read_ledgers(tmp_path)
    assert sum(1 for f in ledgers.files if f.kind == "received") > 1  # rotated
    assert all(f.complete for f in ledgers.files)
    pixel = compare(tmp_path).techniques["pixel"]
    assert (pixel.sent, pixel.received, pixel.lost) == (150, 75, 75)


def test_foreign_ids_join_as_bytes(tmp_path: Path) -> None:
    ids = ["short", "a-much-longer-id-than-sixteen", "0123456789abcdef"]
    write(tmp_path, "sent", [{**event(0), "id": i} for i in ids])
    write(tmp_path, "received", [{**received(0), "id": i} for i in (*ids[1:], "ghost")])
    ledgers = read_ledgers(tmp_path)
    assert ledgers.sent["id"].dtype.itemsize >= 16
    match = match_received(ledgers)
    assert match.copies.tolist() == [0, 1, 1]
    assert (match.phantom_ids, match.phantom_lines) == (1, 1)


def test_truncated_last_line_is_tolerated_and_reported(tmp_path: Path) -> None:
    write(tmp_path, "sent", [event(i) for i in range(4)])
    path = write(tmp_path, "received", [received(i) for i in range(3)], close=False)
    with open(path, "ab") as f:
        f.write(b'{"id":"0000000000000003","te')  # killed in the middle of a line
    s = compare(tmp_path)
    assert s.techniques["pixel"].received == 3
    info = next(f for f in s.ledgers if f.kind == "received")
    assert info.truncated_last_line and not info.complete and info.lines == 3
    assert any("received/box-1.0.jsonl" in w and "cut short" in w for w in s.warnings)


def test_incomplete_ledger_is_warned(tmp_path: Path) -> None:
    write(tmp_path, "sent", [event(i) for i in range(4)], close=False)
    write(tmp_path, "received", [received(i) for i in range(4)])
    s = compare(tmp_path)
    assert s.techniques["pixel"].lost == 0
    [warning] = [w for w in s.warnings if "incomplete ledger" in w]
    assert warning.startswith("sent/box-1.0.jsonl: incomplete ledger (no footer)")


def test_footer_disagreeing_with_lines_is_warned(tmp_path: Path) -> None:
    path = write(tmp_path, "sent", [event(i) for i in range(4)])
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2] + lines[3:]))  # a line vanished
    write(tmp_path, "received", [])
    assert any("footer says 4 lines" in w for w in compare(tmp_path).warnings)


def test_invalid_line_in_the_middle_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "sent", [event(i) for i in range(4)])
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"id": "00000000000000\n'
    path.write_bytes(b"".join(lines))
    write(tmp_path, "received", [])
    with pytest.raises(LedgerError, match=r"sent/box-1\.0\.jsonl:3: invalid JSON"):
        read_ledgers(tmp_path, strict=True)


def test_event_without_technique_names_file_and_line(tmp_path: Path) -> None:
    bad = event(1)
    del bad["tech"]
    write(tmp_path, "sent", [event(0), bad, event(2)])
    write(tmp_path, "received", [])
    with pytest.raises(LedgerError, match=r"box-1\.0\.jsonl:3: event line without 'tech'"):
        read_ledgers(tmp_path, strict=True)


def test_missing_directories_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no such run directory"):
        read_ledgers(tmp_path / "nope")
    with pytest.raises(
        LedgerError, match=r"sent: no sent ledger \(\*\.jsonl\) found — was the load generator"
    ):
        read_ledgers(tmp_path)
    write(tmp_path, "sent", [event(0)])
    (tmp_path / "received").mkdir()
    with pytest.raises(LedgerError, match=r"received: no received ledger .* collector run with --run-dir"):
        read_ledgers(tmp_path)


def test_empty_file_and_non_ledger_files_are_named(tmp_path: Path) -> None:
    write(tmp_path, "sent", [event(0)])
    write(tmp_path, "received", [received(0)])
    empty = tmp_path / "received" / "zz.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(LedgerError, match=r"zz\.jsonl: empty file"):
        read_ledgers(tmp_path)
    empty.write_bytes(b'{"id": "0000000000000000"}\n')
    with pytest.raises(LedgerError, match=r"zz\.jsonl: line 1 is not a ledger header"):
        read_ledgers(tmp_path)
    empty.write_bytes(b'{"ledger": "sent", "schema": 1}\n')
    with pytest.raises(LedgerError, match=r"zz\.jsonl: a 'sent' ledger in received/"):
        read_ledgers(tmp_path)


def test_header_only_file_is_an_incomplete_empty_ledger(tmp_path: Path) -> None:
    write(tmp_path, "sent", [event(0)])
    path = write(tmp_path, "received", [], close=False)
    ledgers = read_ledgers(tmp_path)
    info = next(f for f in ledgers.files if f.kind == "received")
    assert (info.lines, info.complete, info.truncated_last_line) == (0, False, False)
    assert path.name == "box-1.0.jsonl"


def test_no_run_json_means_no_prediction(tmp_path: Path) -> None:
    s = compare(make_run(tmp_path))
    assert s.run == {}
    assert s.techniques["pixel"].predicted_loss is None
    assert any("run.json: not found" in w for w in s.warnings)


@dataclass
class FakePrediction:
    loss: float
    ci95: tuple[float, float]
    held_seconds_per_event: float | None = None


def fake_predict_loss(calls: list[tuple]) -> Any:
    """A stand-in for ``predict_loss`` that records its arguments."""

    def predict_loss(
        profile, exit_model, abort, techniques, *, seed, events=200_000, preflight_answers=None, **browser
    ):
        calls.append((profile, exit_model, abort, list(techniques), seed, events, preflight_answers, browser))
        return {"pixel": FakePrediction(0.01, (0.009, 0.011)), "ajax": FakePrediction(0.5, (0.49, 0.51))}

    return predict_loss


def test_prediction_and_disagreement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run.json of before the browser presets (no ``browser``, no ``server``): the seed model, with the
    reference collector's hints."""
    calls: list[tuple] = []
    predict_loss = fake_predict_loss(calls)

    # predict_loss first: importing lossbench.model.predict under the fakes would bind them for good
    monkeypatch.setattr("lossbench.model.predict.predict_loss", predict_loss)
    monkeypatch.setattr("lossbench.model.profiles.get_profile", lambda name: f"profile:{name}")
    monkeypatch.setattr("lossbench.model.exits.get_exit_model", lambda spec: f"exit:{spec}")
    run = {
        "profile": "3G",
        "exit_model": "mix",
        "abort": "unload",
        "seed": 7,
        "techniques": ["ajax", "pixel"],
    }
    (make_run(tmp_path) / "run.json").write_text(json.dumps(run))
    s = compare(tmp_path, predict_events=1000)
    browser = {"browser": "seed", "server": ServerHints()}
    assert calls == [("profile:3G", "exit:mix", "unload", ["ajax", "pixel"], 7, 1000, None, browser)]
    assert s.run == run
    assert s.techniques["pixel"].predicted_loss == 0.01
    assert s.techniques["ajax"].predicted_ci95 == (0.49, 0.51)
    [w] = [w for w in s.warnings if "predicted" in w]
    assert w.startswith("pixel: measured loss 20.0% [5.7, 51.0] vs predicted 1.0% [0.9, 1.1]: more than")
    text = summary_to_text(s)
    assert "1.0% [0.9, 1.1]" in text


def test_the_prediction_uses_the_runs_browser_and_what_its_target_told_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.json's ``browser`` and ``server`` (a target keeping idle connections 75 s and sending no
    Access-Control-Max-Age) reach the model as they are."""
    calls: list[tuple] = []
    monkeypatch.setattr("lossbench.model.predict.predict_loss", fake_predict_loss(calls))
    run = {
        "profile": "3G",
        "exit_model": "mix",
        "abort": "unload",
        "seed": 7,
        "techniques": ["ajax", "pixel"],
        "browser": "chromium",
        "server": {"idle_timeout": 75, "cors_max_age": None},
    }
    (make_run(tmp_path) / "run.json").write_text(json.dumps(run))
    compare(tmp_path, predict_events=1000)
    [call] = calls
    assert call[-1] == {"browser": "chromium", "server": ServerHints(idle_timeout=75.0, cors_max_age=None)}


def test_large_timing_error_is_flagged_with_what_real_time_decisions_would_cost(tmp_path: Path) -> None:
    # every event delivered 50 ms before its cut (intended), while the generator ran 100 ms late
    write(tmp_path, "sent", [event(i, t_written=0.3, A=0.35, error=0.1, rtt=0.3) for i in range(100)])
    write(tmp_path, "received", [received(i) for i in range(100)])
    s = compare(tmp_path)
    timing = s.timing
    assert timing.p90 == pytest.approx(0.1)
    assert timing.max_loss_shift == pytest.approx(1.0)
    assert timing.flagged
    [w] = [w for w in s.warnings if "lagging" in w]
    assert w.startswith("load generator lagging: p90 timing error 100 ms against stage times of ~300 ms.")
    assert "would have added up to 100.0 points" in w and w.endswith("lower --users or add --processes")
    (tmp_path / "run.json").write_text('{"client": "chromium"}')
    [w] = [w for w in compare(tmp_path).warnings if "lagging" in w]
    assert w.startswith("Chromium lagging: its pages went away 100 ms (p90) after the planned exit")
    assert w.endswith("run it on an idle machine or with fewer --workers")


def test_small_timing_error_is_not_flagged(tmp_path: Path) -> None:
    write(tmp_path, "sent", [event(i, error=0.001) for i in range(100)])
    write(tmp_path, "received", [received(i) for i in range(100)])
    timing = compare(tmp_path).timing
    assert timing.p50 == pytest.approx(0.001)
    assert (timing.max_loss_shift, timing.flagged) == (0.0, False)


def test_a_run_the_lag_guard_stopped_is_flagged_and_says_so(tmp_path: Path) -> None:
    """The whole run's p90 may be within the limit (the lag came late): run.json's lag_stopped flags it."""
    write(tmp_path, "sent", [event(i, error=0.001, rtt=0.3) for i in range(100)])
    write(tmp_path, "received", [received(i) for i in range(100)])
    message = "the load generator lagged: its p90 timing error over the last 10 s was 120 ms, ..."
    run = {"lag_stop": 20.0, "lag_stopped": {"at": 41.0, "users": 400, "p90": 0.12, "message": message}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    s = compare(tmp_path)
    assert s.timing.flagged and s.timing.p90 == pytest.approx(0.001)
    assert f"stopped early: {message}" in s.warnings
    assert not any(w.startswith("load generator lagging") for w in s.warnings)  # the ledgers' p90 is fine


def test_reference_falls_back_to_the_highest_loss(tmp_path: Path) -> None:
    sent = [event(i, "pixel") for i in range(10)] + [event(100 + i, "pixel-keepalive") for i in range(10)]
    write(tmp_path, "sent", sent)
    write(tmp_path, "received", [received(i) for i in range(2)] + [received(100, "pixel-keepalive")])
    s = compare(tmp_path)
    assert s.reference == "pixel-keepalive"
    assert [c.technique for c in s.comparisons] == ["pixel"]


def test_mislabelled_receipts_are_warned(tmp_path: Path) -> None:
    write(tmp_path, "sent", [event(0), event(1)])
    write(tmp_path, "received", [received(0), received(1, "ajax")])
    assert any("another technique" in w for w in compare(tmp_path).warnings)


def same_document(a: object, b: object, rel: float = 1e-7) -> bool:
    """Equal JSON documents, floats equal to ``rel``: the model's intervals now come from the one Wilson
    function (z = 1.959964), where the model had its own with a 16-digit z: that moves them by 2e-8 of
    their value at most (an upper bound near 0 grows as z squared)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_document(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_document(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-15)
    return a == b


def test_a_run_stored_before_the_change_gives_the_same_summary(tmp_path: Path) -> None:
    """Issue 10's acceptance: compare on a run directory of the old layout writes the summary the old code
    wrote; only the schema version differs, /2's count of damaged lines per ledger file (none here) and
    /3's fields of another target's log (none here) and collector-side loss interval (the Wilson interval
    of written_lost), and /4's collector figures (its stats file predates them: no utilisation, no answer
    times, so the prediction is the old one). Its run.json names no browser: the seed model predicts, as
    it did. pixel-keepalive's stages now start with ``dns`` (a pooled browser may look up before opening
    its connection): a row of zeros here. The run's timestamps are run.json's, so they match too."""
    shutil.copytree(RUN_BEFORE, tmp_path / "run", ignore=shutil.ignore_patterns("*.before.*"))
    path = write_summary(compare(tmp_path / "run"), tmp_path / "run")
    before = json.loads((RUN_BEFORE / "summary.before.json").read_text())
    after = json.loads(path.read_text())
    assert before.pop("schema") == "lossbench.summary/1" and after.pop("schema") == SCHEMA
    assert [f.pop("damaged_lines") for f in after["ledgers"]] == [0] * len(before["ledgers"])
    assert "received_from" not in after and "skipped_lines" not in after  # left out when no log was read
    for t in after["techniques"].values():
        written = t["cut_by_stage"]["done"]
        assert t.pop("written_lost_ci95") == list(wilson_interval(t["written_lost"], written))
    keepalive = after["techniques"]["pixel-keepalive"]
    assert keepalive["by_stage"].pop("dns") == keepalive["cut_by_stage"].pop("dns") == 0
    assert after.pop("collector") == {
        "processes": 1,
        "service_time": None,
        "service_workers": 1,
        "utilisation": None,
        "answer_seconds": {},
    }
    # /5: the preset (run.json names none: seed); what the events found, which its ledgers do not say
    assert after.pop("browser") == "seed"
    for t in after["techniques"].values():
        assert t.pop("found") == {
            "none": {"sent": t["sent"], "share": 1.0, "lost": t["lost"], "loss": t["loss"], "ci95": t["ci95"]}
        }
        assert [t.pop(k) for k in ("preflights_sent", "preflights_cached", "preflights_per_delivered")] == [
            0,
            0,
            0.0,
        ]
        assert t.pop("predicted_held_seconds") is None
    assert same_document(after, before)
    assert not same_document(after, {**before, "phantoms": before["phantoms"] + 1})
    assert isinstance(load_summary(path), Summary)


def test_columns_are_numpy(tmp_path: Path) -> None:
    ledgers = read_ledgers(make_run(tmp_path))
    sent = ledgers.sent
    assert sent["id"].dtype == np.dtype("S16") and len(sent["id"]) == 20
    assert ledgers.techniques[:2] == ["ajax", "pixel"]
    assert sent["written"].dtype == bool and int(sent["written"].sum()) == 13
    assert np.isnan(sent["t_written"][8]) and np.isnan(sent["timing_error"][8])
    assert sent["timing_error"][0] == pytest.approx(0.001)
    assert ledgers.ping_requests == {"pixel": 1} and ledgers.ping_connections == {"pixel": 1}
    assert ledgers.received["method"].tolist() == [0] * 15
    assert len(ledgers.collector_stats) == 1


def test_a_file_cut_anywhere_after_its_header_is_readable(tmp_path: Path) -> None:
    path = write(tmp_path, "received", [received(i) for i in range(5)])
    write(tmp_path, "sent", [event(0)])
    data = path.read_bytes()
    header_end = data.index(b"\n") + 1
    ends = [i for i in range(len(data)) if data[i : i + 1] == b"\n"][1:6]  # where each event line ends
    for cut in range(header_end, len(data) + 1):
        path.write_bytes(data[:cut])
        [info] = [f for f in read_ledgers(tmp_path).files if f.kind == "received"]
        assert info.lines == sum(end <= cut for end in ends), cut
        last = data[:cut].rstrip(b"\n").rsplit(b"\n", 1)[-1]
        assert info.truncated_last_line == (cut > header_end and not last.endswith(b"}")), cut
        assert info.complete == (cut >= len(data) - 1), cut


# -- the join and the counts at scale: the same answers as the plain ways -------------------------------


def ids(salt: int, counters: np.ndarray) -> np.ndarray:
    """lossbench ids (24-bit salt, 40-bit counter) as the uint64 keys the reader gives."""
    return (np.uint64(salt) << np.uint64(40)) | counters.astype(np.uint64)


def join_case(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(sent keys, received keys) of one kind of run: duplicates, and phantoms of an unknown salt, past a
    salt's counters and in a gap of them."""
    salts = [0x00AB12, 0x7F0001, 0xFFFFFF, 0x000001]
    counters = [rng.permutation(500) for _ in salts]
    counters[2] = counters[2][(counters[2] < 10) | (counters[2] >= 20)]
    if name == "sparse":
        counters = [rng.choice(10**6, 500, replace=False) for _ in salts]
    sent = [ids(salt, c) for salt, c in zip(salts, counters, strict=True)]
    if name == "many salts":
        sent = [ids(int(salt), np.arange(30)) for salt in rng.choice(1 << 24, 40, replace=False)]
    keys = np.concatenate(sent)
    if name == "repeated":
        keys[700] = keys[3]
    if name == "interleaved":
        keys = rng.permutation(keys)  # a run of one salt per line
    got = keys[rng.random(len(keys)) < 0.8]
    phantoms = [
        ids(0x123456, np.arange(3)),
        ids(salts[0], np.array([500, 10**9])),
        ids(salts[2], np.arange(10, 13)),
    ]
    received = rng.permutation(np.concatenate([got, got[::7], *phantoms]))
    return keys, received[:0] if name == "no receipts" else received


@pytest.mark.parametrize(
    ("name", "direct"),
    [
        ("plain", True),
        ("many salts", True),
        ("no receipts", True),
        ("repeated", False),
        ("sparse", False),
        ("interleaved", False),
    ],
)
def test_direct_join_equals_sorted_join(name: str, direct: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(join, "CHUNK", 77)  # runs and lookups across chunk boundaries
    monkeypatch.setattr(join, "MAX_RUNS", 64)
    sent, received = join_case(name, np.random.default_rng(5))
    fast = join._dense_match(sent, received)
    assert (fast is not None) == direct
    want = join._sorted_match(sent, received)
    if fast is not None:
        for field in dataclasses.fields(want):
            a, b = getattr(fast, field.name), getattr(want, field.name)
            assert np.array_equal(a, b) and np.asarray(a).dtype == np.asarray(b).dtype, field.name
    assert want.phantom_lines == (0 if name == "no receipts" else 8)


def timing_error(e: dict[str, Any]) -> float:
    """real − plan at the stage planned to end last, as the reader computes it."""
    last = max(e["plan"], key=e["plan"].__getitem__)
    return e["real"][last] - e["plan"][last]


def test_counts_equal_a_count_per_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compare's vectorised counts (over chunks of rows) against a plain count over the records."""
    monkeypatch.setattr(join, "CHUNK", 64)
    rng = np.random.default_rng(11)
    stages = ["dns", "connect", "tls", "preflight", "request", "done"]
    sent = []
    for i in range(1000):
        t_written = None if rng.random() < 0.3 else round(float(rng.random()), 6)
        line = event(
            i,
            TECHNIQUES[int(rng.integers(4))],
            stage=stages[int(rng.integers(6))],
            t_written=t_written,
            A=round(float(rng.random()), 3),
            requests=int(rng.integers(0, 2**31 - 1)) if i % 100 == 0 else int(rng.integers(4)),
            connections=int(rng.integers(3)),
            error=float(rng.choice([0.0, 0.3])),
        )
        sent.append(line)
    copies = rng.choice([0, 1, 1, 1, 2, 3], len(sent))
    got = [received(int(e["id"], 16), e["tech"]) for e, k in zip(sent, copies, strict=True) for _ in range(k)]
    write(tmp_path, "sent", sent)
    write(tmp_path, "received", [*got, received(5000)])
    s = compare(tmp_path)
    for tech, entry in s.techniques.items():
        mine = [(e, int(k)) for e, k in zip(sent, copies, strict=True) if e["tech"] == tech]
        lost = [e for e, k in mine if k == 0]
        assert (entry.sent, entry.lost) == (len(mine), len(lost))
        assert entry.duplicates == sum(max(k - 1, 0) for _, k in mine)
        cut = {stage: sum(e["stage"] == stage for e, _ in mine) for stage in entry.cut_by_stage}
        assert entry.cut_by_stage == cut
        assert entry.by_stage == {stage: sum(e["stage"] == stage for e in lost) for stage in entry.by_stage}
        assert entry.written_lost == sum(e["written"] for e in lost)
        assert entry.unwritten_received == sum(not e["written"] and k > 0 for e, k in mine)
        assert entry.cost.requests == sum(e["requests"] for e, _ in mine)  # exact, though large
        assert entry.cost.connections == sum(e["connections"] for e, _ in mine)
        times = [e["t_written"] for e, _ in mine if e["written"]]
        assert entry.time_to_written.p90 == float(np.quantile(times, 0.9))
        assert entry.time_to_written.quantiles.t == [float(x) for x in np.quantile(times, QUANTILES)]
        delivered = [e for e, k in mine if k > 0 and e["written"]]
        late = sum(e["t_written"] + timing_error(e) >= e["A"] for e in delivered)
        assert s.timing.loss_shift[tech] == late / len(mine)
    assert s.phantoms == 1


# Another target's log: read through an adapter instead of the received ledger, with damaged and foreign
# lines named and counted, and collector-side loss (written but not logged).


def jsonl_line(i: int, tech: str = "pixel", method: str = "GET") -> str:
    """A line as targets/aiohttp_app.py writes it."""
    return json.dumps(
        {"ts": 1.0, "method": method, "event": {"id": f"{i:016x}", "tech": tech, "type": "click"}}
    )


def make_target_run(folder: Path, received_from: str | None = None) -> Path:
    """pixel: 10 sent, 8 written; the log has 7 of the written ones, a damaged and a foreign line."""
    sent = [event(i) for i in range(8)]
    sent += [event(8, stage="dns", t_written=None), event(9, stage="connect", t_written=None)]
    write(folder, "sent", sent)
    log = folder / "received" / "aiohttp" / "events.jsonl"
    log.parent.mkdir(parents=True)
    lines = [jsonl_line(i) for i in range(7)]
    lines.insert(3, '{"ts": 1.0, "method": "GET", "ev')  # damaged: cut in the middle
    lines.insert(5, '{"status": "started"}')  # foreign: no event in it
    log.write_text("\n".join(lines) + "\n")
    run = {"received_from": received_from} if received_from else {}
    (folder / "run.json").write_text(json.dumps(run))
    return folder


def test_received_from_reads_the_log_names_skipped_lines_and_counts_written_lost(
    tmp_path: Path,
) -> None:
    run = make_target_run(tmp_path)
    summary = compare(run, received_from=f"jsonl:{run}/received/aiohttp/events.jsonl:event,method=method")
    pixel = summary.techniques["pixel"]
    assert (pixel.sent, pixel.received, pixel.lost) == (10, 7, 3)
    assert pixel.cut_by_stage["done"] == 8 and pixel.written_lost == 1
    assert pixel.written_lost_ci95 == wilson_interval(1, 8)
    assert summary.skipped_lines == {"damaged": 1, "foreign": 1, "refused": 0, "ignored": 0}
    assert summary.received_from is not None and summary.received_from.startswith("jsonl:")
    said = "\n".join(summary.warnings)
    assert "events.jsonl:4:" in said and "events.jsonl:6:" in said  # file and line of each skipped line
    assert [f.kind for f in summary.ledgers] == ["sent", "received"]
    assert summary.ledgers[1].path == "received/aiohttp/events.jsonl" and summary.ledgers[1].lines == 7
    assert summary.collector is None, "another target: no reference collector's figures"
    summary_json(summary)  # encodes


def test_run_json_says_where_the_log_is(tmp_path: Path) -> None:
    """A run made with ``run --target`` is compared from its run.json alone, paths relative to it."""
    run = make_target_run(tmp_path, "jsonl:received/aiohttp/events.jsonl:event,method=method")
    summary = compare(run)
    assert summary.techniques["pixel"].received == 7
    assert summary.received_from == "jsonl:received/aiohttp/events.jsonl:event,method=method"


def test_a_missing_log_names_the_file(tmp_path: Path) -> None:
    run = make_target_run(tmp_path)
    with pytest.raises(AdapterError, match=r"nope\.log: no such log file for the nginx adapter"):
        compare(run, received_from=f"nginx:{run}/nope.log")


# -- the reference collector's own figures (its stats files) and the queue-aware prediction ---------------


def histogram(values: list[float]) -> LatencyHistogram:
    h = LatencyHistogram()
    for v in values:
        h.add(v)
    return h


def slow_stats(busy: float, elapsed: float, events: list[float], preflights: list[float]) -> dict[str, Any]:
    """A stats file of a collector run with --service-time 20ms on 2 workers."""
    return {
        "events": {"pixel": len(events)},
        "service": {"spec": "20ms", "workers": 2, "busy_seconds": busy, "elapsed_seconds": elapsed,
                    "utilisation": busy / (2 * elapsed), "queued": 0, "unanswered": 0},
        "answers": {"event": histogram(events).as_dict(), "preflight": histogram(preflights).as_dict(),
                    "ping": LatencyHistogram().as_dict()},
    }  # fmt: skip


def test_compare_fills_the_collector_figures_from_every_process_stats_file(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    events_1, events_2 = [0.02, 0.03, 0.04] * 10, [0.05, 0.2] * 5
    (run / "received" / "box-1.stats.json").write_text(json.dumps(slow_stats(1.2, 1.0, events_1, [0.01])))
    (run / "received" / "box-2.stats.json").write_text(json.dumps(slow_stats(0.4, 3.0, events_2, [])))
    collector = compare(run).collector
    merged = histogram(events_1 + events_2)
    assert collector == CollectorFigures(
        processes=2,
        service_time="20ms",
        service_workers=2,
        utilisation=pytest.approx((1.2 + 0.4) / (2 * 1.0 + 2 * 3.0)),  # type: ignore[arg-type]
        answer_seconds={
            "event": AnswerTimes(count=40, **percentiles(merged)),
            "preflight": AnswerTimes(count=1, **percentiles(histogram([0.01]))),
        },
    )
    assert collector.answer_seconds["event"].p50 == pytest.approx(0.03, rel=0.06)


def test_a_damaged_histogram_is_a_warning_naming_its_file(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    stats = slow_stats(1.0, 1.0, [0.02], [0.01])
    stats["answers"]["event"] = {"counts": {"9999": 1}}
    path = run / "received" / "box-1.stats.json"
    path.write_text(json.dumps(stats))
    summary = compare(run)
    [said] = [w for w in summary.warnings if "answer-time histogram" in w]
    assert said.startswith(f"{path}: damaged event answer-time histogram")
    assert summary.collector is not None and list(summary.collector.answer_seconds) == ["preflight"]
    assert summary.collector.utilisation == pytest.approx(0.5)


def test_histograms_in_another_layout_are_left_out_with_a_warning_naming_their_file(tmp_path: Path) -> None:
    """A file's histograms in another bucket layout would add counts to the wrong buckets: they are left
    out; a file without a layout (written before it was recorded) is read in today's."""
    run = make_run(tmp_path)
    other = slow_stats(1.0, 1.0, [5.0], [5.0])
    other["answers"]["layout"] = {"lowest": 1e-06, "per_decade": 40}
    (run / "received" / "box-1.stats.json").write_text(json.dumps(other))
    (run / "received" / "box-2.stats.json").write_text(json.dumps(slow_stats(1.0, 1.0, [0.02], [0.01])))
    summary = compare(run)
    [said] = [w for w in summary.warnings if "layout" in w]
    path = run / "received" / "box-1.stats.json"
    assert said.startswith(f"{path}: answer times left out") and "lossbench version that wrote it" in said
    assert summary.collector is not None
    assert summary.collector.answer_seconds["event"] == AnswerTimes(count=1, **percentiles(histogram([0.02])))
    assert summary.collector.utilisation == pytest.approx(0.5)  # its service figures still count


def test_the_collector_warnings_say_what_to_do() -> None:
    """Stats files of differently started collectors, and damaged service figures: each warning names what
    is wrong and what to do about it."""
    from lossbench.analysis.compare import _collector_figures

    def service(spec: str, workers: int) -> dict[str, Any]:
        return {"spec": spec, "workers": workers, "busy_seconds": 1.0, "elapsed_seconds": 10.0}

    warnings: list[str] = []
    _collector_figures(
        {
            "received/a.stats.json": {"service": service("2ms", 1)},
            "received/b.stats.json": {"service": service("5ms", 2)},
        },
        warnings,
    )
    [mixed] = warnings
    assert "different service times or workers (['2ms', '5ms'], [1, 2])" in mixed
    assert "(received/a.stats.json: 2ms, 1 worker(s); received/b.stats.json: 5ms, 2 worker(s))" in mixed
    assert "keep one collector's stats files and ledgers in received/ and move the others out" in mixed
    warnings = []
    figures, _ = _collector_figures({"received/a.stats.json": {"service": {"spec": 2}}}, warnings)
    [damaged] = warnings
    assert figures is not None and figures.utilisation is None
    assert damaged.startswith(
        "received/a.stats.json: damaged service figures ({'spec': 2}), so no utilisation"
    )
    assert "run again" in damaged


def test_an_older_collector_has_figures_without_utilisation_or_answer_times(tmp_path: Path) -> None:
    collector = compare(make_run(tmp_path)).collector  # its stats file has neither
    assert collector == CollectorFigures(
        processes=1, service_time=None, service_workers=1, utilisation=None, answer_seconds={}
    )


def test_the_prediction_puts_the_measured_preflight_answer_times_in_ajax_preflight(tmp_path: Path) -> None:
    """The same run, its collector answering preflights in 1 ms or in 1.5 s: only ajax's prediction moves,
    and it rises; with no answer times measured it is the prediction without them."""
    run = {
        "profile": "3G",
        "exit_model": "mix",
        "abort": "unload",
        "seed": 7,
        "techniques": ["ajax", "pixel"],
    }
    predicted = predictions_by_answer_time(tmp_path, run, 20_000)
    from lossbench.model.exits import get_exit_model
    from lossbench.model.predict import predict_loss
    from lossbench.model.profiles import get_profile

    plain = predict_loss(
        get_profile("3G"),
        get_exit_model("mix"),
        "unload",
        ["ajax", "pixel"],
        seed=7,
        events=20_000,
        browser="seed",
    )
    assert predicted["none"] == {t: plain[t].loss for t in ("ajax", "pixel")}
    assert predicted["none"]["pixel"] == predicted["fast"]["pixel"] == predicted["slow"]["pixel"]
    assert predicted["none"]["ajax"] <= predicted["fast"]["ajax"] < predicted["slow"]["ajax"]
    assert predicted["slow"]["ajax"] > predicted["none"]["ajax"] + 0.02


def test_the_chromium_prediction_puts_the_measured_preflight_answer_times_in_ajax_preflight(
    tmp_path: Path,
) -> None:
    """The same with a run of the chromium preset against a target that lets no preflight answer be cached:
    every ajax event still preflights, so the answer time moves ajax's prediction, and only ajax's."""
    run = {
        "profile": "3G",
        "exit_model": "mix",
        "abort": "unload",
        "seed": 7,
        "techniques": ["ajax", "pixel"],
        "browser": "chromium",
        "server": {"idle_timeout": 30.0, "cors_max_age": 0},
    }
    predicted = predictions_by_answer_time(tmp_path, run, 8_000)
    from lossbench.model.predict import predict_loss

    hints = ServerHints(idle_timeout=30.0, cors_max_age=0.0)
    plain = predict_loss("3G", "mix", "unload", ["ajax", "pixel"], seed=7, events=8_000, server=hints)
    assert predicted["none"] == {t: plain[t].loss for t in ("ajax", "pixel")}
    assert predicted["none"]["pixel"] == predicted["fast"]["pixel"] == predicted["slow"]["pixel"]
    assert predicted["none"]["ajax"] <= predicted["fast"]["ajax"] < predicted["slow"]["ajax"]
    assert predicted["slow"]["ajax"] > predicted["none"]["ajax"] + 0.02


def predictions_by_answer_time(tmp_path: Path, run: dict[str, Any], events: int) -> dict[str, dict]:
    """compare's predicted loss of ajax and pixel for the same run, its collector having measured no
    preflight answer times, 1 ms ones or 1.5 s ones."""
    predicted = {}
    for name, preflights in (("none", None), ("fast", [0.001] * 50), ("slow", [1.5] * 50)):
        folder = make_run(tmp_path / name)
        (folder / "run.json").write_text(json.dumps(run))
        if preflights is not None:
            stats = slow_stats(1.0, 1.0, [0.02], preflights)
            (folder / "received" / "box-1.stats.json").write_text(json.dumps(stats))
        summary = compare(folder, predict_events=events)
        predicted[name] = {t: summary.techniques[t].predicted_loss for t in ("ajax", "pixel")}
    return predicted


def test_a_saturated_collector_is_a_warning_with_its_numbers() -> None:
    from lossbench.analysis.compare import _collector_figures
    from lossbench.contract.latency import LatencyHistogram

    slow = LatencyHistogram()
    for _ in range(100):
        slow.add(0.18)
    stats = {
        "received/c.stats.json": {
            "service": {"spec": "2ms", "workers": 1, "busy_seconds": 9.5, "elapsed_seconds": 10.0},
            "answers": {"preflight": slow.as_dict()},
        }
    }
    warnings: list[str] = []
    figures, _ = _collector_figures(stats, warnings)
    assert figures is not None and figures.utilisation == 0.95
    assert len(warnings) == 1 and "busy 95% of the time (--service-time 2ms" in warnings[0]
    assert "preflight p99 18" in warnings[0] and "lower --users or add --service-workers" in warnings[0]
    calm = {
        "received/c.stats.json": {
            **stats["received/c.stats.json"],
            "service": {"spec": "2ms", "workers": 1, "busy_seconds": 5.0, "elapsed_seconds": 10.0},
        }
    }
    warnings = []
    _collector_figures(calm, warnings)
    assert warnings == []


def test_a_precision_goal_the_ledgers_miss_is_a_warning() -> None:
    from lossbench.analysis.compare import _precision_warnings

    def figures(ci: tuple[float, float]):  # type: ignore[no-untyped-def]
        return types.SimpleNamespace(ci95=ci)

    techniques = {"ajax": figures((0.070, 0.082)), "pixel": figures((0.028, 0.034))}  # ±0.60, ±0.30
    assert _precision_warnings({"precision": 0.6}, techniques) == []
    assert _precision_warnings({}, techniques) == []
    missed = _precision_warnings({"precision": 0.5, "duration": 60, "precision_reached": None}, techniques)
    assert missed == [
        "--precision 0.5 points: the ledgers' intervals are wider: ajax ±0.60 points (the goal was not "
        "reached within --duration 60; lengthen --duration)"
    ]
    reached = _precision_warnings({"precision": 0.5, "precision_reached": 41.0}, techniques)
    assert "client's count of events cut before they were written" in reached[0]
