"""What each event found for a connection (``conn``) and did about its preflight (``preflight``): read into
columns the same way by the fast and the exact path, counted per technique by compare, and the summary of
version /4 read as /5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lossbench.analysis import fast as ledger_fast
from lossbench.analysis import read as ledger
from lossbench.analysis.compare import compare, write_summary
from lossbench.analysis.read import Vocabs
from lossbench.contract.ledger import LedgerWriter
from lossbench.contract.lines import SentEvent, encode_line
from lossbench.contract.summary import SCHEMA, FoundFigures, load_summary, summary_json
from lossbench.contract.techniques import CONNECTION_KINDS, PREFLIGHT_STATES
from lossbench.stats import wilson_interval

STORED = Path(__file__).parents[2] / "data" / "run-before" / "summary.before.json"


def sent(
    i: int,
    tech: str = "ajax",
    *,
    conn: str = "warm",
    preflight: str = "none",
    written: bool = True,
    stage: str = "done",
) -> SentEvent:
    """A sent event as the load generator writes it; written events were written at 0.2 s."""
    plan = {"preflight": 0.1, "body": 0.2} if written else {"preflight": 0.1}
    return SentEvent(
        id=f"{i:016x}",
        tech=tech,
        type="click",
        visit=i // 3,
        at=0.5 * (i % 3),
        rtt=0.1,
        dns=0.05,
        A=1.5,
        abort="unload",
        stage=stage,
        written=written,
        t_written=0.2 if written else None,
        acked=written,
        retried=conn == "stale",
        requests=1 + (preflight == "sent"),
        connections=int(conn in ("cold", "stale")),
        conn=conn,
        preflight=preflight,
        plan=plan,
        real={k: v + 0.001 for k, v in plan.items()},
        t0=1764250000.0 + i,
    )


def received(i: int, tech: str = "ajax") -> dict[str, object]:
    return {"id": f"{i:016x}", "tech": tech, "m": "POST", "t": 1764250000.5 + i, "c": 1}


def old_line(i: int) -> dict[str, object]:
    """A sent line from before the pool: no visit, at, conn or preflight."""
    line = {k: v for k, v in json.loads(encode_line(sent(i))).items()}
    for key in ("visit", "at", "conn", "preflight"):
        del line[key]
    return line


def columns(block: bytes, prepare: str) -> tuple[dict[str, np.ndarray], Vocabs, ledger.Prepared]:
    vocabs = Vocabs()
    prepared = getattr(ledger, prepare)(block, "sent")
    return ledger.finish(prepared, vocabs).columns, vocabs, prepared


def test_the_fast_and_the_exact_path_read_conn_and_preflight_alike() -> None:
    """Every kind and state as the writer writes them (the fast path reads them), a line from before the
    pool (the exact path: ``none``) and a name the fast path does not know (the exact path keeps it)."""
    events = [
        sent(i, conn=conn, preflight=state)
        for i, (conn, state) in enumerate(
            (conn, state) for conn in (*CONNECTION_KINDS, "none") for state in PREFLIGHT_STATES
        )
    ]
    block = b"".join(encode_line(e) for e in events)
    block += encode_line(old_line(100)) + encode_line({**old_line(101), "conn": "h2", "preflight": "sent"})
    fast, fast_vocabs, prepared = columns(block, "prepare_fast")
    exact, exact_vocabs, _ = columns(block, "prepare_exact")
    assert prepared.scan is not None and prepared.scan.events.tolist() == list(range(len(events)))
    assert list(fast) == list(exact) == list(ledger.SENT_COLUMNS)
    for name in fast:
        assert fast[name].dtype == exact[name].dtype, name
        assert np.array_equal(fast[name], exact[name], equal_nan=fast[name].dtype.kind == "f"), name
    for name in ("tech", "type", "stage", "conn", "preflight"):
        assert getattr(fast_vocabs, name).names == getattr(exact_vocabs, name).names, name
    conn, state = fast_vocabs.conn.names, fast_vocabs.preflight.names
    assert [conn[c] for c in fast["conn"]] == [e.conn for e in events] + ["none", "h2"]
    assert [state[c] for c in fast["preflight"]] == [e.preflight for e in events] + ["none", "sent"]
    assert conn[: len(ledger_fast.CONN_NAMES)] == list(ledger_fast.CONN_NAMES)  # the same codes every run


def write(folder: Path, kind: str, lines: list[object]) -> None:
    writer = LedgerWriter(folder / kind, kind, name="box-1")
    for line in lines:
        writer.append(line)  # type: ignore[arg-type]
    writer.close()


def pooled_run(tmp_path: Path) -> Path:
    """ajax: 10 warm (1 lost), 6 cold (3 lost), 4 stale (2 lost); 8 preflights sent, 12 cached.
    pixel: 5 warm, none lost, no preflight. Played as chromium."""
    events, got = [], []
    plan = [("warm", 10, 1), ("cold", 6, 3), ("stale", 4, 2)]
    i = 0
    for conn, n, lost in plan:
        for k in range(n):
            state = "sent" if i % 5 < 2 else "cached"  # 8 of the 20 sent one
            delivered = k >= lost
            events.append(
                sent(
                    i,
                    conn=conn,
                    preflight=state,
                    written=delivered,
                    stage="done" if delivered else "preflight",
                )
            )
            if delivered:
                got.append(received(i))
            i += 1
    for k in range(5):
        events.append(sent(100 + k, "pixel"))
        got.append(received(100 + k, "pixel"))
    write(tmp_path, "sent", events)
    write(tmp_path, "received", got)
    (tmp_path / "run.json").write_text(json.dumps({"browser": "chromium"}))
    return tmp_path


def test_compare_counts_what_the_events_found_and_their_preflights(tmp_path: Path) -> None:
    s = compare(pooled_run(tmp_path))
    assert s.browser == "chromium"
    ajax, pixel = s.techniques["ajax"], s.techniques["pixel"]
    assert (ajax.sent, ajax.lost) == (20, 6)
    assert list(ajax.found) == ["cold", "warm", "stale"]  # the vocabulary's order, kinds with events only
    assert ajax.found["warm"] == FoundFigures(
        sent=10, share=0.5, lost=1, loss=0.1, ci95=wilson_interval(1, 10)
    )
    assert ajax.found["cold"] == FoundFigures(sent=6, share=0.3, lost=3, loss=0.5, ci95=wilson_interval(3, 6))
    assert (ajax.found["stale"].sent, ajax.found["stale"].lost) == (4, 2)
    assert (ajax.preflights_sent, ajax.preflights_cached) == (8, 12)
    assert ajax.preflights_per_delivered == pytest.approx(8 / 14)
    assert list(pixel.found) == ["warm"] and pixel.found["warm"].loss == 0.0
    assert (pixel.preflights_sent, pixel.preflights_cached, pixel.preflights_per_delivered) == (0, 0, 0.0)
    assert ajax.predicted_held_seconds is None  # run.json names no profile: no prediction
    assert load_summary(write_summary(s, tmp_path)) == s


def test_a_ledger_from_before_the_pool_found_none(tmp_path: Path) -> None:
    """Old ledgers lack ``conn`` and ``preflight``: every event found ``none``, no preflight is counted,
    and a run.json without ``browser`` is a seed run."""
    write(tmp_path, "sent", [old_line(i) for i in range(4)])
    write(tmp_path, "received", [received(i) for i in range(3)])
    s = compare(tmp_path)
    ajax = s.techniques["ajax"]
    assert s.browser == "seed"
    assert ajax.found == {
        "none": FoundFigures(sent=4, share=1.0, lost=1, loss=0.25, ci95=wilson_interval(1, 4))
    }
    assert (ajax.preflights_sent, ajax.preflights_cached) == (0, 0)


def test_a_summary_of_version_4_reads_as_5(tmp_path: Path) -> None:
    """/4 lacks the browser (its run.json's, else seed) and what the events found (empty, no preflight,
    no held seconds); written again it is a /5 document that reads back the same."""
    doc = {**json.loads(STORED.read_text()), "schema": "lossbench.summary/4"}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(doc))
    summary = load_summary(path)
    assert summary.schema == SCHEMA == "lossbench.summary/5"
    assert summary.browser == "seed"
    for t in summary.techniques.values():
        assert t.found == {} and (t.preflights_sent, t.preflights_cached) == (0, 0)
        assert t.preflights_per_delivered is None and t.predicted_held_seconds is None
    assert summary.techniques["pixel"].ci95 == pytest.approx((0.0189, 0.1175), abs=1e-4)
    path.write_text(json.dumps({**doc, "run": {**doc["run"], "browser": "chromium"}}))
    assert load_summary(path).browser == "chromium"
    path.write_text(summary_json(summary))
    assert load_summary(path) == summary
    assert json.loads(path.read_text())["browser"] == "seed"  # always written from /5 on


def test_a_summary_of_version_5_must_name_its_browser(tmp_path: Path) -> None:
    from lossbench.contract.summary import SummaryError

    doc = json.loads(summary_json(load_summary(STORED)))
    del doc["browser"]
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SummaryError, match="missing required field `browser`"):
        load_summary(path)
