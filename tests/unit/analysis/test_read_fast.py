"""The fast ledger reader (numpy, lossbench.analysis.fast) against the exact one (json): the same columns.

Every test reads the same bytes both ways and wants the same result: the same columns (dtype, values, the
sign of zero, nan where nan), the same vocabularies, the same pings, or the same error on the same line.
The writers' own lines must take the fast path: a change to their shape would otherwise only show as a
slower compare.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossbench.analysis import fast as ledger_fast
from lossbench.analysis import read as ledger
from lossbench.analysis.join import match_received
from lossbench.analysis.read import BadLine, LedgerError, Vocabs, read_ledgers
from lossbench.cli import main
from lossbench.collector.state import event_line
from lossbench.contract.ledger import LedgerWriter, micro
from lossbench.contract.lines import ReceivedEvent, SentEvent, SentPing, encode_line, written_keys
from lossbench.contract.server import ServerHints
from lossbench.contract.techniques import (
    ALL_TECHNIQUES,
    CONNECTION_KINDS,
    PREFLIGHT_STATES,
    PREFLIGHTED,
    SEED_TECHNIQUES,
    Technique,
)
from lossbench.loadgen.player import EventIds, PlayedEvent
from lossbench.loadgen.pooled import PooledTab
from lossbench.loadgen.techniques import Tab
from lossbench.loadgen.timeline import EventResult
from lossbench.model.profiles import NetworkDraw
from lossbench.model.visits import PlannedEvent, Visit
from support import ROOT

STAGES = ("dns", "connect", "tls", "preflight", "headers", "body", "request")
CONNS = (*CONNECTION_KINDS, "none")  # the sent ledger's ``conn``: "none" where the browser keeps no pool
FAST = {kind: functools.partial(ledger.prepare_fast, kind=kind) for kind in ("sent", "received")}
EXACT = {kind: functools.partial(ledger.prepare_exact, kind=kind) for kind in FAST}


@pytest.fixture(autouse=True)
def _fast_path_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path even for the small blocks of these tests (it leaves them to json otherwise)."""
    monkeypatch.setattr(ledger, "SMALL_BLOCK", 0)


# -- reading a block both ways -----------------------------------------------------------------------


def read(block: bytes, kind: str, prepare) -> tuple[str, Any]:
    vocabs = Vocabs()
    try:
        prepared = prepare(block)
        out = ledger.finish(prepared, vocabs)
    except BadLine as e:
        return "error", (e.index, e.reason)
    named = ("tech", "type", "stage", "method", "conn", "preflight")
    vocab = {name: getattr(vocabs, name).names for name in named}
    return "ok", (out, vocab, prepared.scan)


def same_columns(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        x, y = a[name], b[name]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), (name, x, y)
            assert np.array_equal(np.signbit(x), np.signbit(y)), name
        else:
            assert np.array_equal(x, y), (name, x, y)


def check(block: bytes, kind: str = "sent") -> Any:
    """Read ``block`` both ways; they must agree. Returns the fast path's scan (None on an error)."""
    fast, exact = read(block, kind, FAST[kind]), read(block, kind, EXACT[kind])
    assert fast[0] == exact[0], (fast, exact)
    if fast[0] == "error":
        assert fast[1] == exact[1]
        return None
    (a, va, scan), (b, vb, _) = fast[1], exact[1]
    assert va == vb
    assert (a.lines, a.pings) == (b.lines, b.pings)
    assert list(a.ping_requests.items()) == list(b.ping_requests.items())
    assert list(a.ping_connections.items()) == list(b.ping_connections.items())
    same_columns(a.columns, b.columns)
    assert (a.keys is None) == (b.keys is None) and (a.keys is None or np.array_equal(a.keys, b.keys))
    return scan


def check_each(texts: list[bytes], kind: str = "sent") -> None:
    """Many lines at once: every line the fast scan accepts reads as json reads it alone (the lines it
    leaves are read by json itself)."""
    scan = (ledger_fast.scan_sent if kind == "sent" else ledger_fast.scan_received)(b"\n".join(texts))
    for row, i in enumerate(scan.events.tolist()):
        status, result = read(texts[i], kind, EXACT[kind])
        assert status == "ok", (texts[i], result)
        out = result[0].columns
        assert len(out["id"]) == 1, texts[i]
        assert int(scan.columns["key"][row]) == int(out["id"][0], 16)
        for name, column in scan.columns.items():
            if name == "key":
                continue
            got, want = column[row], out[name][0]
            if name in ledger._FAST_NAMES:
                vocab = result[1]["method" if name == "method" else name]
                assert ledger._FAST_NAMES[name][got] == vocab[want], (texts[i], name)
            elif column.dtype.kind == "f":
                assert (got == want and math.copysign(1, got) == math.copysign(1, want)) or (
                    math.isnan(got) and math.isnan(want)
                ), (texts[i], name, got, want)
            else:
                assert got == want, (texts[i], name, got, want)
    for row, i in enumerate(scan.pings.tolist()):
        status, result = read(texts[i], kind, EXACT[kind])
        assert status == "ok", (texts[i], result)
        tech = ledger_fast.TECH_NAMES[scan.ping_columns["tech"][row]]
        assert result[0].ping_requests == {tech: scan.ping_columns["requests"][row]}, texts[i]
        assert result[0].ping_connections == {tech: scan.ping_columns["connections"][row]}, texts[i]


def lines(*records: dict[str, Any]) -> bytes:
    return b"".join(encode_line(r) for r in records)


# -- lines as the writers write them -------------------------------------------------------------------


def played(
    i: int = 1,
    tech: str = "pixel",
    *,
    stage: str = "done",
    plan: dict[str, float] | None = None,
    real: dict[str, float] | None = None,
    t_written: float | None = 0.41234567,
    exit_after: float = 4.25,
    rtt: float = 0.0512345,
    dns: float = 0.0623456,
    fired: float = 1764250000.1234567,
    error: str | None = None,
    visit: int = 12,
    at: float = 1.0,
    conn: str = "cold",
    preflight: str = "none",
    **fields: Any,
) -> dict[str, Any]:
    """A sent line exactly as ``PlayedEvent.line`` builds it, as a dict (for tests to bend)."""
    plan = {"dns": 0.05, "connect": 0.1, "request": 0.1} if plan is None else plan
    result = EventResult(
        id=f"{i:016x}",
        tech=tech,
        stage=stage,
        written=t_written is not None,
        t_written=t_written,
        acked=t_written is not None,
        requests=1,
        connections=1,
        plan=plan,
        real={k: v + 0.000321 for k, v in plan.items()} if real is None else real,
        error=error,
        conn=conn,
        preflight=preflight,
        **fields,
    )
    page = Visit(NetworkDraw(rtt, dns), (PlannedEvent("click", at),), 5.0)
    return json.loads(PlayedEvent(result, "click", page, exit_after, fired, visit, at).record_line())


def received(i: int = 1, tech: str = "pixel", method: str = "GET", t: float = 1764250000.456789) -> dict:
    """A received line as the collector's ``event_line`` builds it."""
    return json.loads(encode_line(event_line((f"{i:016x}", tech, method, 17, ""), micro(t))))


def ping(tech: str = "pixel-keepalive", requests: int = 3) -> dict:
    """A ping line as ``record_pings`` builds it."""
    return json.loads(encode_line(SentPing(ping=tech, requests=requests, connections=0)))


def test_record_line_takes_the_fast_path() -> None:
    """``PlayedEvent.record_line`` (the load generator's hot path) writes lines the fast path reads."""
    result = EventResult(id="0123456789abcdef", tech="ajax", written=True, t_written=0.4123456, requests=2)
    result.plan = {"dns": 0.05, "connect": 0.1, "preflight": 2.5e-05}
    result.real = {"dns": 0.0501, "connect": 0.1002, "preflight": 3.1e-05}
    visit = Visit(NetworkDraw(0.0512345, 0.0623456), (PlannedEvent("click", 1.0),), 5.0)
    events = [
        PlayedEvent(result, "click", visit, a, 1764250000.1234567) for a in (4.25, math.inf, 12345.6789)
    ]
    block = b"".join(e.record_line() for e in events)
    assert len(check(block).events) == 3


def test_the_writers_lines_take_the_fast_path() -> None:
    post = {s: 0.1 * k for k, s in enumerate(STAGES[:6])}
    block = lines(
        played(1, "ajax", plan=post, preflight="sent"),
        played(2, "pixel", stage="connect", plan={"dns": 0.0}, t_written=None),
        played(3, "pixel-prewarm", exit_after=math.inf, rtt=0.3, dns=0.3),
        ping(),
        played(
            4,
            "pixel-keepalive",
            plan={"request": 0.0, "connect": 0.0},
            real={"request": 3.6e-05, "connect": 0.0},
        ),
        played(5, "pixel", plan={}, real={}, t_written=None, stage="dns", exit_after=0.001),
        played(6, "pixel", exit_after=12345.678901, fired=1764250000.5),
        # the chromium preset's: what each event found in the pool and the preflight cache
        played(7, "pixel-preconnect", conn="warm", visit=0, at=0.0),
        played(8, "beacon", conn="pending", at=0.123456),
        played(9, "fetch-keepalive", plan=post, conn="stale", preflight="cached", visit=98765, at=1234.5),
        played(10, "ajax-cachebust", plan=post, conn="warm", preflight="sent"),
        played(11, "ajax", plan={"dns": 0.0}, stage="dns", t_written=None, conn="none", preflight="none"),
    )
    scan = check(block)
    assert len(scan.events) == 11 and len(scan.pings) == 1 and len(scan.others) == 0
    posts = PREFLIGHTED | {Technique.BEACON}
    methods = ["POST" if t in posts else "GET" for t in ALL_TECHNIQUES]
    scan = check(
        lines(*(received(i, t, m) for i, (t, m) in enumerate(zip(ALL_TECHNIQUES, methods, strict=True)))),
        "received",
    )
    assert len(scan.events) == len(ALL_TECHNIQUES) and len(scan.others) == 0


def test_a_refused_keepalive_request_takes_the_fast_path() -> None:
    """The socket client's line for a beacon over the page's keepalive quota (``PooledTab.fire``): stage
    ``unsent``, nothing found, nothing written."""
    refused = played(1, "beacon", stage="unsent", plan={}, real={}, t_written=None, conn="none")
    scan = check(lines(refused))
    assert len(scan.events) == 1 and len(scan.others) == 0


def test_a_real_client_and_collector(collector_factory, tmp_path: Path) -> None:
    """Events fired at a real collector by both presets' tabs (the seed's one tab, the chromium one's tab
    per technique): the collector's lines and PlayedEvent.record's all take the fast path."""
    collector = collector_factory()
    address = ("127.0.0.1", collector.port)
    tab = Tab(address, NetworkDraw(rtt=0.0, dns=0.0))
    tab.page_load(list(SEED_TECHNIQUES))
    hints = ServerHints(idle_timeout=30.0, cors_max_age=600.0)
    pooled = {t: PooledTab(address, NetworkDraw(rtt=0.0, dns=0.0), server=hints) for t in ALL_TECHNIQUES}
    for tech, own in pooled.items():
        own.page_load([tech])
    ids = EventIds()
    sent = LedgerWriter(tmp_path / "sent", "sent", name="box-1")
    visit = Visit(NetworkDraw(0.0, 0.0), (PlannedEvent("click", 1.0),), math.inf)
    found: dict[str, list[tuple[str, str]]] = {}
    for k in range(3):
        for tech in SEED_TECHNIQUES:
            result = tab.fire(tech, ids.next(), event_type="click", exit_after=math.inf, visit_time=1.0 + k)
            sent.append(PlayedEvent(result, "click", visit, math.inf, 1764250000.0 + k, 0, 1.0 + k).line())
        for tech, own in pooled.items():
            result = own.fire(tech, ids.next(), event_type="click", exit_after=math.inf, visit_time=1.0 + k)
            assert result.acked, (tech, result)
            found.setdefault(tech, []).append((result.conn, result.preflight))
            sent.append(PlayedEvent(result, "click", visit, math.inf, 1764250000.0 + k, 1, 1.0 + k).line())
    sent.append(SentPing(**ping()))
    sent.close()
    tab.close()
    for own in pooled.values():
        own.close()
    collector.stop()
    # the first pixel opens a connection that the next two reuse; ajax preflights once (10 minutes' max-age)
    assert found["pixel"] == [("cold", "none"), ("warm", "none"), ("warm", "none")]
    assert found["ajax"] == [("cold", "sent"), ("warm", "cached"), ("warm", "cached")]
    assert found["ajax-cachebust"] == [("cold", "sent"), ("warm", "sent"), ("warm", "sent")]
    for kind in ("sent", "received"):
        for path in (tmp_path / kind).glob("*.jsonl"):
            body = b"".join(path.read_bytes().splitlines(keepends=True)[1:-1])
            scan = check(body, kind)
            assert len(scan.others) == 0, body
    assert_same_ledgers(tmp_path)


# -- odd lines: the fast path leaves them to json, with the same result ----------------------------------

ODD_SENT = [
    {**played(), "id": "abc"},  # foreign ids of other lengths
    {**played(), "id": "x" * 40},
    {**played(), "id": "ABCDEF0123456789"},  # 16 characters, not lowercase hex
    {**played(), "id": 'q"uote\\back/slash'},  # escaped on the way out
    {**played(), "id": "caf\u00e9-\u2603-0001"},  # not ASCII
    {**played(), "id": "\u0000\u0001tab\t"},
    {k: v for k, v in played().items() if k != "type"},  # missing optional keys
    {k: v for k, v in played().items() if k not in ("stage", "plan", "real", "requests")},
    {k: v for k, v in played().items() if k != "real"},
    played(t_written=None),  # null t_written, A
    played(exit_after=math.inf),
    played(error="OSError: [Errno 111] Connection refused"),  # the optional "error" key
    {**played(), "extra": [1, {"a": None}]},  # extra keys, other orders
    {"x": 1, **played()},
    dict(reversed(list(played().items()))),
    {**played(), "type": "scroll", "stage": "queue", "tech": "carrier-pigeon"},  # names the fast path lacks
    {**played(), "conn": "hot", "preflight": "maybe"},
    {**played(), "conn": None, "preflight": ""},
    {**played(), "conn": 1, "visit": "3"},
    {k: v for k, v in played().items() if k not in ("visit", "at", "conn", "preflight")},  # before the pool
    {**played(), "visit": 1.5, "at": -2.0},
    {**played(), "visit": 2**40, "at": 1e-06},
    {**played(), "visit": -1, "at": 0},
    {**played(), "type": "", "stage": None},
    {**played(), "A": 4, "rtt": 1, "t_written": 0},  # numbers spelled otherwise
    {**played(), "A": -0.0, "rtt": -1.5, "t_written": 1e-07},
    {**played(), "A": 1.5e300, "rtt": 0.1234567890123, "t_written": 123456789.123456},
    {**played(), "requests": 2.0, "connections": True, "written": 1, "acked": None, "retried": "yes"},
    {**played(), "requests": 12345678901},
    {**played(), "plan": {"dns": 0.1, "connect": 0.3, "request": 0.3}},  # ties: the first max wins
    {**played(), "plan": {"dns": 0.1, "connect": 0.2}, "real": {"connect": 0.25, "dns": 0.15}},  # other order
    {**played(), "plan": {"dns": 0.1, "connect": 0.2}, "real": {"dns": 0.15}},  # fewer
    {**played(), "plan": {"dns": 0.1}, "real": {}},
    {**played(), "plan": {}, "real": {"dns": 0.1}},
    {**played(), "plan": {"dns": 0.1, "queue": 0.5}, "real": {"dns": 0.2, "queue": 0.7}},
    {
        **played(),
        "plan": dict.fromkeys((*STAGES, "queue", "x"), 0.5),
        "real": dict.fromkeys((*STAGES, "queue", "x"), 0.6),
    },
    {**played(), "plan": {"dns": 0.5}, "real": {"dns": None}},
    {**played(), "plan": [1, 2], "real": "x"},
    {**played(), "plan": {"dns": -0.5, "connect": -0.25}, "real": {"dns": 1e-06, "connect": 5e-05}},
    {**played(), "t0": 17642500001234.5},
    {**played(), "t0": 1.5},
    played(plan={"request": 0.0, "connect": 0.1}, real={"request": 1.23e-05, "connect": 9.9e-05}),
]


@pytest.mark.parametrize("record", ODD_SENT, ids=range(len(ODD_SENT)))
def test_odd_sent_lines_read_the_same(record: dict) -> None:
    check(lines(played(7), record, played(8)))


def test_odd_sent_lines_in_other_spellings() -> None:
    spellings = [json.dumps(r).encode() for r in ODD_SENT]  # json's own spacing
    spellings += [json.dumps(r, ensure_ascii=True, separators=(",", ":")).encode() for r in ODD_SENT]
    check_each(spellings + [encode_line(r).rstrip(b"\n") for r in ODD_SENT])


ODD_BLOCKS = [
    b"",
    b"\n\n",
    b"   \n\t\n",
    lines(played(1)) + b"\n" + lines(played(2)),  # a blank line between
    lines(played(1)).replace(b"\n", b"\r\n"),
    lines(played(1)).replace(b"}\n", b"} \n"),
    lines(played(1)).rstrip(b"\n"),  # no newline at the end
    lines(played(1))[:-40] + b"\n" + lines(played(2)),  # a line cut short in the middle: an error
    lines(played(1), {"ledger": "sent", "schema": 1}, played(2)),  # a header in the middle
    lines(played(1), {"ledger_end": True, "events": 1}),  # a footer in the middle
    lines(played(1), [1, 2], played(2)),  # not an object
    lines(played(1), {"tech": "pixel"}),  # no id
    lines({**played(1), "tech": None}),
    {**played(1)}.__repr__().encode() + b"\n",
    lines(played(1)) + b"\xff\xfe\n" + lines(played(2)),  # not UTF-8
    lines(played(1)) + "é\n".encode() + lines(played(2)),
    lines(ping("pixel-prewarm", 2), played(1), ping("beacon", 1), ping(), played(2)),
    lines({"ping": "pixel", "connections": 1, "requests": 1, "t0": 1764250000.0}),  # the documented shape
    lines({"ping": None, **played(1)}, {"ping": 0, "id": "x"}),
    lines(
        {**played(1), "tech": "pixel-keepalive"},
        {**played(2), "tech": "beacon"},
        {**played(3), "tech": "ajax"},
    ),
    lines({**played(1), "stage": "queue"}, played(2, stage="dns"), {**played(3), "type": "scroll"}),
]


@pytest.mark.parametrize("block", ODD_BLOCKS, ids=range(len(ODD_BLOCKS)))
def test_odd_sent_blocks_read_the_same(block: bytes) -> None:
    check(block)


ODD_RECEIVED = [
    received(),
    {**received(), "id": 'a"b\\c/d'},  # the collector escapes what the client sent
    {**received(), "id": "x" * 128},
    {**received(), "id": "0123456789abcdef0"},
    {**received(), "m": "PUT"},
    {k: v for k, v in received().items() if k != "m"},
    {k: v for k, v in received().items() if k != "tech"},
    {**received(), "tech": "beacon"},
    {**received(), "c": 10**12},
    {**received(), "t": 5},
    {"ping": "x"},
    {**received(), "extra": 1},
]


@pytest.mark.parametrize("record", ODD_RECEIVED, ids=range(len(ODD_RECEIVED)))
def test_odd_received_lines_read_the_same(record: dict) -> None:
    check(lines(received(3), record, received(4, "ajax", "POST")), "received")


# -- properties -------------------------------------------------------------------------------------------

seconds = st.one_of(
    st.floats(0, 10),
    st.floats(0, 1e-4),
    st.floats(0, 1e7),
    st.sampled_from([0.0, 1e-06, 5e-05, 9.9e-05, 0.0001, 0.1, 1.0, 10.0, 99999.999999]),
)
_stage_lists = st.lists(st.sampled_from(STAGES), unique=True, max_size=7)
_record_fields = st.fixed_dictionaries(
    {
        "i": st.integers(0, 2**64 - 1),
        "tech": st.sampled_from(ALL_TECHNIQUES),
        "stage": st.sampled_from((*STAGES, "done", "error", "unsent")),
        "t_written": st.none() | seconds,
        "exit_after": st.just(math.inf) | seconds | st.floats(-10, 0),
        "rtt": seconds,
        "dns": seconds,
        "fired": st.floats(1e9, 9.9e9) | st.floats(0, 1e12),
        "error": st.none() | st.just("OSError: boom"),
        "retried": st.booleans(),
        "real_apart": st.booleans(),
        "visit": st.integers(0, 2**31),
        "at": seconds,
        "conn": st.sampled_from(CONNS),
        "preflight": st.sampled_from(PREFLIGHT_STATES),
    }
)


@st.composite
def sent_records(draw: st.DrawFn) -> dict[str, Any]:
    f = draw(_record_fields)
    stages = draw(_stage_lists)
    plan = {s: draw(seconds) for s in stages}
    real = (
        {s: draw(seconds) for s in stages} if f.pop("real_apart") else {s: v + 3e-05 for s, v in plan.items()}
    )
    return played(f.pop("i"), f.pop("tech"), plan=plan, real=real, **f)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        sent_records() | st.builds(ping, st.sampled_from(ALL_TECHNIQUES), st.integers(0, 10**8)), max_size=20
    )
)
def test_written_lines_read_the_same(records: list[dict]) -> None:
    check(lines(*records))


_damages = st.lists(
    st.tuples(
        st.integers(0, 1000),
        st.sampled_from(["replace", "drop", "insert"]),
        st.sampled_from(b'0123456789.eE-+,:"{}[]ntfalsrux \\\x00\xff') | st.integers(0, 255),
    ),
    min_size=1,
    max_size=2,
)


def damage(line: bytes, data: st.DataObject) -> bytes:
    out = bytearray(line)
    for at, how, byte in data.draw(_damages):
        at %= max(len(out), 1)
        if how == "replace" and out:
            out[at] = byte
        elif how == "drop" and out:
            del out[at]
        else:
            out.insert(at, byte)
    return bytes(out).replace(b"\n", b" ")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_lines_read_the_same(data: st.DataObject) -> None:
    """A byte or two changed, dropped or added anywhere: json decides, the fast path must agree."""
    texts = [damage(encode_line(data.draw(sent_records())).rstrip(), data) for _ in range(16)]
    texts += [damage(encode_line(ping()).rstrip(), data) for _ in range(4)]
    check_each(texts)
    texts = [
        damage(encode_line(received(data.draw(st.integers(0, 2**64 - 1)))).rstrip(), data) for _ in range(16)
    ]
    check_each(texts, "received")


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**20), 10**20), min_size=1)
)
def test_numbers_read_the_same(numbers: list[float | int]) -> None:
    values = numbers + [round(x, 6) for x in numbers if isinstance(x, float)]
    check(lines(*({**played(), "rtt": x, "A": x, "plan": {"dns": x}, "real": {"dns": x}} for x in values)))
    check(lines(*({**received(), "t": x} for x in values)), "received")
    check_each([encode_line({**played(), "t_written": x, "dns": x, "t0": x}).rstrip() for x in values])


# -- whole runs, read in many blocks by several threads -------------------------------------------------


def assert_same_ledgers(run_dir: Path) -> None:
    fast = read_ledgers(run_dir)
    default = dict(ledger.PREPARE)
    try:
        ledger.PREPARE.update(EXACT)
        exact = read_ledgers(run_dir)
    finally:
        ledger.PREPARE.update(default)
    same_columns(fast.sent, exact.sent)
    same_columns(fast.received, exact.received)
    for keys, ids in (("sent_keys", fast.sent["id"]), ("received_keys", fast.received["id"])):
        a, b = getattr(fast, keys), getattr(exact, keys)
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b))
        if a is not None:
            assert a.dtype == np.uint64 and a.tolist() == [int(i, 16) for i in ids.tolist()]
    unkeyed = dataclasses.replace(fast, sent_keys=None, received_keys=None)
    for name, value in match_received(unkeyed).__dict__.items():
        assert np.array_equal(value, getattr(match_received(fast), name)), name
    assert match_received(fast).__dict__.keys() == match_received(exact).__dict__.keys()
    for name, value in match_received(fast).__dict__.items():
        assert np.array_equal(value, getattr(match_received(exact), name)), name
    for name in ("tech", "type", "stage", "method"):
        assert getattr(fast.vocabs, name).names == getattr(exact.vocabs, name).names
    assert [f.__dict__ for f in fast.files] == [f.__dict__ for f in exact.files]
    assert (fast.ping_requests, fast.ping_connections) == (exact.ping_requests, exact.ping_connections)


def test_a_run_in_many_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "BLOCK_BYTES", 4096)
    valid = [r for r in ODD_SENT if read(lines(r), "sent", EXACT["sent"])[0] == "ok"]
    valid_received = [r for r in ODD_RECEIVED if read(lines(r), "received", EXACT["received"])[0] == "ok"]
    sent = LedgerWriter(tmp_path / "sent", "sent", name="box-1")
    got = LedgerWriter(tmp_path / "received", "received", name="box-2", max_bytes=10_000)
    for i in range(400):
        tech = ALL_TECHNIQUES[i % len(ALL_TECHNIQUES)]
        odd = valid[i % len(valid)] if i % 7 == 0 else {}
        sent.append({**played(i, tech), **{k: v for k, v in odd.items() if k not in ("id", "tech")}})
        if i % 50 == 0:
            sent.append(ping())
        if i % 3:
            got.append(received(i, tech))
        if i % 41 == 0:
            got.append(valid_received[i % len(valid_received)])
    sent.close()
    got.close()
    path = next((tmp_path / "sent").glob("*.jsonl"))
    path.write_bytes(path.read_bytes()[:-30])  # the footer cut short: a truncated last line
    assert_same_ledgers(tmp_path)
    assert read_ledgers(tmp_path).files[0].truncated_last_line


# -- the benchmark's generator writes the writers' bytes ----------------------------------------------------


def test_the_benchmark_generates_the_writers_lines(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("compare_scale", ROOT / "benchmarks" / "compare_scale.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["compare_scale"] = bench
    spec.loader.exec_module(bench)
    bench.generate(tmp_path / "run", 4000, seed=3)
    keys = {"sent": list(played()), "received": list(received()), "ping": list(ping())}
    for path in sorted((tmp_path / "run").glob("*/*.jsonl")):
        data = path.read_bytes()
        for line in data.splitlines(keepends=True)[1:-1]:
            record = json.loads(line)
            assert encode_line(record) == line
            shape = "ping" if "ping" in record else path.parent.name
            assert list(record) == keys[shape], line
        body = b"".join(data.splitlines(keepends=True)[1:-1])
        assert len(check(body, path.parent.name).others) == 0
    assert_same_ledgers(tmp_path / "run")
    assert tuple(keys["sent"]) == ledger_fast.SENT_KEYS
    assert tuple(keys["received"]) == ledger_fast.RECEIVED_KEYS
    assert tuple(keys["ping"]) == ledger_fast.PING_KEYS


# -- one writer, one key order ---------------------------------------------------------------------------


def test_the_line_types_are_the_shape_the_fast_path_walks() -> None:
    """Lines encoded from the contract's types take the fast path, keys in the types' order; the same line
    with two keys swapped is left to msgspec. Fails if the writer's order and the reader's diverge."""
    event = SentEvent(
        id="00ab120000000001", tech="ajax", type="click", visit=7, at=12.5, rtt=0.05, dns=0.0623, A=4.25,
        abort="unload", stage="done", written=True, t_written=3.6e-05, acked=True, retried=False, requests=2,
        connections=1, conn="warm", preflight="cached", plan={"dns": 0.05, "connect": 0.1},
        real={"dns": 0.0501, "connect": 5e-06}, t0=1764250000.123456,
    )  # fmt: skip
    got = ReceivedEvent(id="00ab120000000001", tech="ajax", m="POST", t=1764250000.5, c=7)
    pinged = SentPing(ping="pixel-keepalive", requests=3, connections=0)
    for line, kind in ((event, "sent"), (got, "received"), (pinged, "sent")):
        text = encode_line(line)
        assert tuple(json.loads(text)) == written_keys(type(line))
        scan = check(text, kind)
        assert len(scan.events) + len(scan.pings) == 1 and len(scan.others) == 0, text
        record = json.loads(text)
        first, second, *rest = record
        keys = (
            [first, *rest[:1], second, *rest[1:]]
            if kind == "sent" and line is event
            else [second, first, *rest]
        )
        swapped = json.dumps({k: record[k] for k in keys}, separators=(",", ":")).encode()
        assert len(check(swapped, kind).others) == 1, swapped


@pytest.mark.parametrize("kind", ["sent", "received"])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "exact"])
def test_a_damaged_line_in_the_middle_is_skipped_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, fast: bool
) -> None:
    """A damaged line before the last: the good lines around it are read, it is counted and named (file and
    line); ``strict`` stops on it instead."""
    if not fast:
        monkeypatch.setattr(ledger_fast, "ENABLED", False)
    sent = LedgerWriter(tmp_path / "sent", "sent", name="box-1")
    got = LedgerWriter(tmp_path / "received", "received", name="box-2")
    for i in range(20):
        sent.append(played(i))
        got.append(received(i))
    sent.close()
    got.close()
    path = next((tmp_path / kind).glob("*.jsonl"))
    text = path.read_bytes().splitlines(keepends=True)
    text[8] = text[8][:40] + b"\n"  # line 9: the event of id 7, cut short
    path.write_bytes(b"".join(text))
    ledgers = read_ledgers(tmp_path)
    assert ledgers.damaged_lines == 1
    (info,) = [f for f in ledgers.files if f.kind == kind]
    assert info.damaged_lines == 1 and info.damage[0].startswith("line 9: ") and info.complete
    ids = getattr(ledgers, kind)["id"].tolist()
    assert len(ids) == 19 and f"{7:016x}".encode() not in ids
    with pytest.raises(LedgerError, match=f"{path.name}:9: "):
        read_ledgers(tmp_path, strict=True)


def test_compare_strict_stops_on_a_damaged_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``lossbench compare`` skips a damaged line with a warning; ``--strict`` exits 2 naming it."""
    sent = LedgerWriter(tmp_path / "sent", "sent", name="box-1")
    got = LedgerWriter(tmp_path / "received", "received", name="box-2")
    for i in range(10):
        sent.append(played(i))
        got.append(received(i))
    sent.append_raw(b'{"id":"00\n', 1)
    sent.append(played(10))
    sent.close()
    got.close()
    assert main(["compare", str(tmp_path)]) == 0
    assert "sent/box-1.0.jsonl: 1 damaged line skipped (line 12: invalid JSON" in capsys.readouterr().out
    assert json.loads((tmp_path / "summary.json").read_text())["ledgers"][0]["damaged_lines"] == 1
    assert main(["compare", "--strict", str(tmp_path)]) == 2
    assert "box-1.0.jsonl:12: invalid JSON" in capsys.readouterr().err


OLD_WRITERS = [  # lines as the hand-formatted writers before the line types wrote them (repr, fixed stamps)
    b'{"id":"00ab120000000001","tech":"ajax","type":"click","rtt":0.051234,"dns":0.062346,"A":3.456789,'
    b'"abort":"unload","stage":"done","written":true,"t_written":3.6e-05,"acked":true,"retried":false,'
    b'"requests":2,"connections":1,"plan":{"dns":0.05,"connect":1e-06},"real":{"dns":0.0501,"connect":1.5e-05},'
    b'"t0":1764250000.123456}',
    b'{"ping":"pixel-keepalive","requests":3,"connections":0,"virtual":true}',
]
OLD_RECEIVED = [b'{"id":"00ab120000000001","tech":"ajax","m":"POST","t":1764250000.456000,"c":17}']


def with_visit_keys(line: bytes) -> bytes:
    """An old writer's event line with the keys events have had since the browser presets (visit, visit
    time, what it found), in the old spelling of numbers: what the fast path walks."""
    if b'"ping"' in line:
        return line
    line = line.replace(b'"type":"click",', b'"type":"click","visit":7,"at":3.6e-05,')
    return line.replace(b'"connections":1,', b'"connections":1,"conn":"none","preflight":"sent",')


def test_ledgers_of_the_old_writers_take_the_fast_path() -> None:
    """Numbers as Python's repr and the collector's stamp with six decimals (the writers before the line
    types) read as msgspec reads them, every line by numpy. An event line from before the browser presets
    lacks visit, at, conn and preflight: it reads the same, by msgspec."""
    scan = check(b"\n".join(with_visit_keys(line) for line in OLD_WRITERS), "sent")
    assert (len(scan.events), len(scan.pings), len(scan.others)) == (1, 1, 0)
    scan = check(b"\n".join(OLD_RECEIVED), "received")
    assert (len(scan.events), len(scan.others)) == (1, 0)
    scan = check(b"\n".join(OLD_WRITERS), "sent")
    assert (len(scan.events), len(scan.pings), len(scan.others)) == (0, 1, 1)
