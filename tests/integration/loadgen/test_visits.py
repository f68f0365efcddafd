"""Playing visits: the sent-ledger line, ids, and a whole visit on real sockets."""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lossbench.contract.ledger import LedgerWriter
from lossbench.contract.lines import SentEvent, encode_line, written_keys
from lossbench.contract.techniques import TECHNIQUES
from lossbench.loadgen.player import EventIds, PlayedEvent, VisitSource, play_visit
from lossbench.loadgen.timeline import EventResult
from lossbench.model.exits import get_exit_model
from lossbench.model.profiles import NetworkDraw, get_profile
from lossbench.model.visits import PlannedEvent, Visit
from support import received_ids, wait_until

times = st.floats(min_value=0, max_value=1e4, allow_nan=False)


@given(
    written=st.booleans(),
    t_written=st.none() | times,
    exit_after=times | st.just(math.inf),
    plan=st.dictionaries(st.sampled_from(["dns", "connect", "request"]), times),
    error=st.none() | st.text(),
    event_id=st.sampled_from(["0123456789abcdef", 'odd "id"\\', "x"]),
)
def test_fast_ledger_line_is_the_json_line(written, t_written, exit_after, plan, error, event_id):
    result = EventResult(
        id=event_id, tech="pixel", stage="done" if written else "dns", written=written, t_written=t_written,
        requests=1, connections=1, plan=plan, real=plan, error=error,
    )  # fmt: skip
    visit = Visit(NetworkDraw(0.3, 0.4, None), (PlannedEvent("click", 1.0),), 2.0, "drop")
    played = PlayedEvent(result, "click", visit, exit_after, 1795797837.123456)
    keys = tuple(k for k in json.loads(played.record_line()) if k != "error")  # "error": when there is one
    assert keys == written_keys(SentEvent)  # every key, in the order the fast reader walks
    assert json.loads(played.record_line())["id"] == event_id


def test_event_ids_are_16_hex_and_unique():
    ids = EventIds(salt=0xABCDEF)
    drawn = [ids.next() for _ in range(1000)]
    assert len(set(drawn)) == 1000
    assert all(len(i) == 16 and int(i, 16) >> 40 == 0xABCDEF for i in drawn)


def test_buffered_ledger_loses_nothing_on_close(tmp_path):
    writer = LedgerWriter(tmp_path, "sent", buffer_bytes=1000, max_bytes=2000)
    for i in range(100):
        writer.append_raw(encode_line({"id": f"{i:016x}", "tech": "pixel"}), 1)
    writer.close()
    lines = [
        json.loads(line) for p in sorted(tmp_path.glob("*.jsonl")) for line in p.read_text().splitlines()
    ]
    assert sum("id" in line for line in lines) == 100
    footers = [line for line in lines if line.get("ledger_end")]
    assert sum(f["events"] for f in footers) == 100 and len(footers) > 1


def test_buffered_ledger_keeps_its_lines_through_a_failed_flush(tmp_path):
    """A flush that fails (here: the descriptor pointed at /dev/full, ENOSPC) writes nothing and keeps
    every buffered line; once writes succeed again the next flush writes them all, in order."""
    writer = LedgerWriter(tmp_path, "sent", buffer_bytes=1 << 20)
    for i in range(10):
        writer.append_raw(encode_line({"id": f"{i:016x}", "tech": "pixel"}), 1)
    saved, full = os.dup(writer.fd), os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, writer.fd)
        with pytest.raises(OSError):
            writer.flush()
        assert writer.unwritten_lines == 10
    finally:
        os.dup2(saved, writer.fd)
        os.close(saved)
        os.close(full)
    writer.flush()
    assert writer.unwritten_lines == 0
    writer.close()
    lines = [json.loads(line) for line in writer.path.read_text().splitlines()]
    assert [line["id"] for line in lines if "id" in line] == [f"{i:016x}" for i in range(10)]
    assert lines[-1]["ledger_end"] and lines[-1]["events"] == 10


def test_visit_source_is_seeded():
    def first(seed):
        source = iter(VisitSource(get_profile("3G"), get_exit_model("mix"), "unload", seed=seed))
        return [next(source) for _ in range(5)]

    assert first(3) == first(3)
    assert first(3) != first(4)


@pytest.mark.parametrize("exit_model", ["none", "fixed:0.15"])
def test_play_visit_on_real_sockets(collector, tmp_path, exit_model):
    visit = next(iter(VisitSource(get_profile("DSL"), get_exit_model(exit_model), "unload", seed=1)))
    played: list[PlayedEvent] = []
    play_visit(visit, ("127.0.0.1", collector.port), TECHNIQUES, EventIds(), played.append)
    assert len(played) == len(visit.events) * len(TECHNIQUES)
    written = {p.result.id for p in played if p.result.written}
    assert wait_until(lambda: set(received_ids(tmp_path)) == written)
    if exit_model == "none":
        assert len(written) == len(played)


def test_events_overlap_when_the_next_comes_due_in_flight(collector, tmp_path):
    """The player fires the last technique of each event itself; when the next event comes due while it
    is still busy, the rest of the visit goes on without waiting (a hand-off), as in the visit."""
    slow = NetworkDraw(0.4, 0.0, None)  # a pixel takes at least one 0.4 s RTT to connect
    visit = Visit(slow, (PlannedEvent("pageview", 0.0), PlannedEvent("click", 0.1)), math.inf)
    played: list[PlayedEvent] = []
    play_visit(visit, ("127.0.0.1", collector.port), ["pixel"], EventIds(), played.append)
    assert len(played) == 2 and all(p.result.acked for p in played)
    first, second = sorted(played, key=lambda p: p.fired_wall)
    assert first.event_type == "pageview" and second.event_type == "click"
    assert second.fired_wall - first.fired_wall < 0.3  # fired at its visit time, not after the first
    assert wait_until(lambda: len(received_ids(tmp_path)) == 2)


def test_events_in_sequence_need_no_hand_off(collector, tmp_path):
    """Idle time is compressed: the next event fires as soon as nothing is in flight."""
    visit = Visit(
        NetworkDraw(0.0, 0.0, None), tuple(PlannedEvent("click", 5.0 * i) for i in range(4)), math.inf
    )
    played: list[PlayedEvent] = []
    play_visit(visit, ("127.0.0.1", collector.port), ["pixel", "ajax"], EventIds(), played.append)
    assert len(played) == 8 and all(p.result.acked for p in played)
    spread = max(p.fired_wall for p in played) - min(p.fired_wall for p in played)
    assert spread < 5.0  # 15 s of visit time, compressed


def test_a_visit_stops_firing_when_the_run_ends(collector, tmp_path):
    """Events 5 s apart in visit time (compressed: nothing waits) fire one after the other, so each asks
    ``keep_going`` after the one before is recorded. 10 ms apart, a loaded machine handed the rest of the
    visit off while an event was in flight, and the overlapping events all asked before any was recorded."""
    visit = Visit(
        NetworkDraw(0.0, 0.0, None), tuple(PlannedEvent("click", 5.0 * i) for i in range(5)), math.inf
    )
    played: list[PlayedEvent] = []
    play_visit(
        visit,
        ("127.0.0.1", collector.port),
        ["pixel"],
        EventIds(),
        played.append,
        keep_going=lambda: len(played) < 2,  # the run ends once two events are in the ledger
    )
    assert len(played) == 2


def test_event_body_is_the_encoded_payload():
    from lossbench.contract.events import encode_event
    from lossbench.loadgen.techniques import event_body, event_payload

    for event_id in ["0123456789abcdef", 'we"ird', "sp ace", "x-y_z.1:2", "é"]:
        payload = event_payload(event_id, "pixel", "click")
        payload["ts"] = 1795797837123
        assert event_body(event_id, "pixel", "click", now_ms=1795797837123) == encode_event(payload)
