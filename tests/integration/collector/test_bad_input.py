"""Bad input: every kind gets a clear 4xx and its own counter, nothing invalid is counted, and the
collector keeps serving; then property-based tests of the event decoder and a fuzz pass over raw request
bytes sent to a running collector.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lossbench.collector.config import CollectorConfig
from lossbench.collector.responses import REFUSALS
from lossbench.collector.server import CollectorThread
from lossbench.contract.events import (
    MAX_ID_LENGTH,
    BadEvent,
    decode_event_json,
    decode_pixel_param,
    encode_event,
    encode_pixel_param,
    valid_id,
)
from lossbench.contract.techniques import ALL_TECHNIQUES
from lossbench.loadgen.techniques import Tab
from lossbench.model.profiles import NetworkDraw
from support import exchange, received_events, received_ids

# -- raw HTTP helpers ---------------------------------------------------------------------------------


def responses(answer: bytes) -> list[int]:
    """Status codes of the HTTP responses in ``answer``; asserts each is well formed (Content-Length
    framing, or none for a 204) and that nothing but whole responses was sent."""
    statuses = []
    rest = answer
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"unterminated response head: {head[:200]!r}"
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1.1 "), lines[0]
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        assert len(rest) >= length, "truncated response body"
        rest = rest[length:]
        statuses.append(status)
    return statuses


def get(target: str | bytes, extra: bytes = b"") -> bytes:
    target = target.encode() if isinstance(target, str) else target
    return b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n"


def post(body: bytes, content_type: bytes = b"application/json", extra: bytes = b"") -> bytes:
    return (
        b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


def pixel(event: object) -> bytes:
    """A pixel GET carrying any JSON value (or raw bytes) base64url-encoded in d."""
    data = event if isinstance(event, bytes) else json.dumps(event).encode()
    return get("/p.gif?d=" + base64.urlsafe_b64encode(data).rstrip(b"=").decode())


def good_pixel(event_id: str, tech: str = "pixel") -> bytes:
    return get("/p.gif?d=" + encode_pixel_param({"id": event_id, "tech": tech}))


def good_post(event_id: str) -> bytes:
    return post(encode_event({"id": event_id, "tech": "ajax"}))


# -- every kind of bad input: its status, its counter, nothing counted, still serving ---------------------

EV = {"id": "ok-1", "tech": "pixel"}
ONE_TOO_MANY = encode_pixel_param(EV) + "A" * ((1 - len(encode_pixel_param(EV))) % 4)  # length 4n+1
CASES: list[tuple[str, bytes, int, str]] = [
    # name, request, status, counter in /stats "refused"
    ("base64 garbage", get("/p.gif?d=***"), 400, "bad_base64"),
    ("base64 length 4n+1", get("/p.gif?d=" + ONE_TOO_MANY), 400, "bad_base64"),
    ("base64 not canonical", get("/p.gif?d=eyJpZCI6ImExIiwidGVjaCI6InBpeGVsIn1"), 400, "bad_base64"),
    ("base64 with + and /", get("/p.gif?d=eyJ+aWQiOi/x"), 400, "bad_base64"),
    ("empty d", get("/p.gif?d="), 400, "bad_base64"),
    ("no d", get("/p.gif?x=1"), 400, "missing_d"),
    ("percent-encoded CR LF in d", get("/p.gif?d=eyJp%0D%0AZCI6"), 400, "bad_base64"),
    ("base64 of non-JSON", pixel(b"not json at all"), 400, "bad_json"),
    ("base64 of truncated JSON", pixel(b'{"id": "x", "tech": "pix'), 400, "bad_json"),
    ("raw CR inside a JSON string", pixel(b'{"id": "x\r", "tech": "pixel"}'), 400, "bad_json"),
    ("JSON array", pixel([EV]), 400, "not_object"),
    ("JSON string", pixel("ok-1"), 400, "not_object"),
    ("JSON number", pixel(42), 400, "not_object"),
    ("JSON null", pixel(None), 400, "not_object"),
    ("missing id", pixel({"tech": "pixel"}), 400, "bad_id"),
    ("numeric id", pixel({"id": 17, "tech": "pixel"}), 400, "bad_id"),
    ("null id", pixel({"id": None, "tech": "pixel"}), 400, "bad_id"),
    ("list id", pixel({"id": ["a"], "tech": "pixel"}), 400, "bad_id"),
    ("empty id", pixel({"id": "", "tech": "pixel"}), 400, "bad_id"),
    ("id too long", pixel({"id": "x" * (MAX_ID_LENGTH + 1), "tech": "pixel"}), 400, "bad_id"),
    ("id with space", pixel({"id": "a b", "tech": "pixel"}), 400, "bad_id"),
    ("id with CR LF", pixel({"id": "a\r\nb", "tech": "pixel"}), 400, "bad_id"),
    ("id with LF", post(b'{"id": "a\\nb", "tech": "ajax"}'), 400, "bad_id"),
    ("id with NUL", pixel({"id": "a\u0000b", "tech": "pixel"}), 400, "bad_id"),
    ("id not ASCII", pixel({"id": "caf\u00e9", "tech": "pixel"}), 400, "bad_id"),
    ("CR LF in another value", pixel({**EV, "url": "https://a/\r\nSet-Cookie: x"}), 400, "bad_value"),
    ("NUL in a nested key", post(b'{"id":"x","tech":"ajax","m":{"k\\u0000":1}}'), 400, "bad_value"),
    ("LF deep in a list", pixel({**EV, "l": [[{"v": "a\nb"}]]}), 400, "bad_value"),
    ("unknown technique", pixel({"id": "x", "tech": "morse"}), 400, "bad_tech"),
    ("missing technique", pixel({"id": "x"}), 400, "bad_tech"),
    ("technique not a string", pixel({"id": "x", "tech": ["pixel"]}), 400, "bad_tech"),
    ("non-UTF-8 pixel data", pixel(b'{"id": "x", "tech": "pixel", "u": "\xff\xfe"}'), 400, "bad_utf8"),
    ("non-UTF-8 body", post(b'{"id": "x", "tech": "ajax", "u": "\xc3\x28"}'), 400, "bad_utf8"),
    ("UTF-16 body", post('{"id": "x", "tech": "ajax"}'.encode("utf-16")), 400, "bad_utf8"),
    ("recursion bomb within limits", post(b"[" * 30000 + b"]" * 30000), 400, "bad_json"),
    ("raw CR LF in the request line", b"GET /p.gif?d=a\rb HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad_http"),
    ("NUL in a header value", get("/healthz", b"X-A: a\x00b\r\n"), 400, "bad_http"),
    ("LF alone in a header value", get("/healthz", b"X-A: a\nb c\r\n"), 400, "bad_http"),
    ("not HTTP", b"HELLO\r\n\r\n", 400, "bad_http"),
    ("binary garbage", bytes(range(256)), 400, "bad_http"),
    ("two Content-Lengths", post(b"{}", extra=b"Content-Length: 3\r\n"), 400, "bad_http"),
    ("query over the URL limit", get("/p.gif?d=" + "A" * 9000), 414, "uri_too_long"),
    (
        "declared body over the limit",
        post(b"").replace(b"Length: 0", b"Length: 70000"),
        413,
        "body_too_large",
    ),
    (
        "GET body over the limit",
        get("/healthz", b"Content-Length: 70000\r\n") + b"x" * 70000,
        413,
        "body_too_large",
    ),
    (
        "too many header bytes",
        get("/healthz", b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(200))),
        431,
        "headers_too_large",
    ),
    ("form content type", post(encode_event(EV), b"application/x-www-form-urlencoded"), 415, "content_type"),
    (
        "no content type",
        post(encode_event(EV)).replace(b"Content-Type: application/json\r\n", b""),
        415,
        "content_type",
    ),
    (
        "chunked body",
        b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n0\r\n\r\n',
        411,
        "chunked",
    ),
    ("POST with Content-Length 0", post(b""), 400, "empty_body"),
    (
        "POST with no Content-Length",
        b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\r\n",
        400,
        "empty_body",
    ),
    ("DELETE /e", b"DELETE /e HTTP/1.1\r\nHost: t\r\n\r\n", 405, "method"),
    ("GET /e", get("/e"), 405, "method"),
    ("POST /p.gif", post(encode_event(EV)).replace(b"POST /e", b"POST /p.gif"), 405, "method"),
    ("PUT /ping.gif", b"PUT /ping.gif HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 405, "method"),
    ("unknown path", get("/nowhere"), 404, "not_found"),
    ("path prefix", get("/p.gifx?d=" + encode_pixel_param(EV)), 404, "not_found"),
    ("path case", get("/P.GIF?d=" + encode_pixel_param(EV)), 404, "not_found"),
    ("non-ASCII bytes in the path", get(b"/\xff\xfe"), 400, "bad_http"),
    ("traversal path", get("/../../etc/passwd"), 404, "not_found"),
]


@pytest.mark.parametrize(("name", "raw", "status", "reason"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_its_4xx_and_counter_and_nothing_is_counted(
    collector, tmp_path, name, raw, status, reason
):
    assert reason in REFUSALS
    answer = exchange(collector.port, raw)
    assert responses(answer) == [status], answer[:300]
    assert b"Connection: close" in answer.partition(b"\r\n\r\n")[0]
    stats = collector.stats()
    assert stats["refused"] == {reason: 1}
    assert stats["events"] == {} and received_events(tmp_path) == []
    # still serving, on a new connection, with a valid event
    tab = Tab(("127.0.0.1", collector.port), NetworkDraw())
    assert tab.fire("pixel", "after-bad-input").acked
    tab.close()
    assert received_ids(tmp_path) == {"after-bad-input": 1}


def test_a_valid_event_before_bad_input_on_the_same_connection_is_kept(collector, tmp_path):
    """Pipelined: a valid event, garbage, another valid event. The first is answered and counted; the
    garbage is refused and closes the connection, so the third is never read (nor answered)."""
    answer = exchange(collector.port, good_pixel("first") + get("/p.gif?d=***") + good_pixel("never-read"))
    assert responses(answer) == [200, 400]
    assert received_ids(tmp_path) == {"first": 1}
    assert collector.stats()["events"] == {"pixel": 1}


def test_connection_close_stops_reading_what_is_pipelined_behind(collector, tmp_path):
    """An answer that says Connection: close is the last: a request behind it is neither counted nor
    answered (the client would not read its answer, so it would be received but never acknowledged)."""
    first = good_pixel("closing").replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n")
    answer = exchange(collector.port, first + good_pixel("behind-close"))
    assert responses(answer) == [200]
    assert received_ids(tmp_path) == {"closing": 1}
    assert collector.stats()["refused"] == {}


def test_refusals_are_cached_but_counted_each_time(collector):
    for _ in range(3):
        assert responses(exchange(collector.port, get("/nowhere"))) == [404]
    assert collector.stats()["refused"] == {"not_found": 3}


def test_upgrade_is_refused(collector):
    answer = exchange(collector.port, get("/healthz", b"Connection: Upgrade\r\nUpgrade: websocket\r\n"))
    assert responses(answer)[-1] == 400
    assert collector.stats()["refused"] == {"upgrade": 1}


# -- property-based tests of the decoder -------------------------------------------------------------------

ID_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
VALID_IDS = st.text(ID_CHARS, min_size=1, max_size=MAX_ID_LENGTH)
SAFE_TEXT = st.text(st.characters(blacklist_characters="\r\n\x00", codec="utf-8"), max_size=20)
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | SAFE_TEXT
SAFE_JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SAFE_TEXT, inner, max_size=4),
    max_leaves=12,
)
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=20) | st.sampled_from(
    ["pixel", "ajax", "a\rb", "\n", "\x00", "ok-1", "x" * 129, ""]
)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


def expected_outcome(value: object) -> tuple[str, str] | str:
    """The rules of lossbench.contract.events, written out independently: (id, tech) or the refusal reason."""
    if not isinstance(value, dict):
        return "not_object"
    event_id, tech = value.get("id"), value.get("tech")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= MAX_ID_LENGTH:
        return "bad_id"
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in event_id):
        return "bad_id"
    if tech not in ALL_TECHNIQUES:
        return "bad_tech"

    def strings(v: object) -> Iterator[str]:
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            for k, item in v.items():
                yield k
                yield from strings(item)
        elif isinstance(v, list):
            for item in v:
                yield from strings(item)

    if any(bad in s for s in strings(value) for bad in "\r\n\x00"):
        return "bad_value"
    return event_id, tech


def outcome(decode, data) -> tuple[str, str] | str:
    try:
        return decode(data)
    except BadEvent as bad:
        return bad.reason


@given(VALID_IDS, st.sampled_from(ALL_TECHNIQUES), st.dictionaries(SAFE_TEXT, SAFE_JSON, max_size=5))
def test_valid_events_round_trip_both_encodings(event_id, tech, extra):
    event = {**extra, "id": event_id, "tech": tech}
    assert decode_pixel_param(encode_pixel_param(event)) == (event_id, tech)
    assert decode_event_json(encode_event(event)) == (event_id, tech)
    assert valid_id(event_id)


@given(ANY_JSON)
@example({"id": "a\rb", "tech": "pixel"})
@example({"id": "ok", "tech": "pixel", "k": {"\x00": 1}})
@example({"id": "ok", "tech": "pixel", "k": ["x\ny"]})
@example({"id": "ok", "tech": "pixel", "k": "tab\tis fine"})
def test_decoder_accepts_exactly_what_the_rules_say(value):
    if isinstance(value, dict) and "id" not in value and value:
        value = {"id": "ok", "tech": "pixel", **value}  # reach the deeper rules more often
    expected = expected_outcome(value)
    for encoded in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode()):
        assert outcome(decode_event_json, encoded) == expected
        assert outcome(decode_pixel_param, base64.urlsafe_b64encode(encoded).rstrip(b"=")) == expected


def assert_valid_or_named_refusal(decode, data) -> None:
    """A decoder either returns a valid (id, tech) or refuses with a reason /stats counts."""
    try:
        event_id, tech = decode(data)
    except BadEvent as bad:
        assert bad.reason in REFUSALS
    else:
        assert valid_id(event_id) and tech in ALL_TECHNIQUES


@given(st.binary(max_size=300))
@example(b"\xef\xbb\xbf{}")
@example(b'{"id": "x", "tech": "pixel"}\x00')
@example(b"[" * 5000)
def test_decoder_never_raises_anything_but_bad_event_on_bytes(data):
    for decode in (decode_event_json, decode_pixel_param):
        assert_valid_or_named_refusal(decode, data)


@given(st.text(max_size=200))
def test_pixel_decoder_on_any_text(value):
    assert_valid_or_named_refusal(decode_pixel_param, value)


@given(VALID_IDS, st.sampled_from(ALL_TECHNIQUES), st.data())
def test_any_non_alphabet_byte_in_base64_is_refused(event_id, tech, data):
    encoded = encode_pixel_param({"id": event_id, "tech": tech}).encode()
    position = data.draw(st.integers(0, len(encoded)))
    bad = data.draw(st.sampled_from(b"+/=.* \t\r\n\x00%\xff"))
    mutated = encoded[:position] + bytes([bad]) + encoded[position:]
    if mutated.rstrip(b"=") == encoded:
        return  # trailing padding is allowed
    assert outcome(decode_pixel_param, mutated) == "bad_base64"


@given(VALID_IDS, st.sampled_from(ALL_TECHNIQUES), st.integers(1, 15))
def test_each_event_has_exactly_one_base64_encoding(event_id, tech, flip):
    encoded = encode_pixel_param({"id": event_id, "tech": tech})
    unused = {2: 0x0F, 3: 0x03}.get(len(encoded) % 4)
    if not unused or not flip & unused:
        return
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    other = alphabet[alphabet.index(encoded[-1]) ^ (flip & unused)]
    assert base64.urlsafe_b64decode(encoded[:-1] + other + "==") == encode_event(
        {"id": event_id, "tech": tech}
    )
    assert outcome(decode_pixel_param, encoded[:-1] + other) == "bad_base64"


# -- fuzzing a running collector with raw request bytes ----------------------------------------------------


def templates(n: int) -> list[bytes]:
    """Valid requests of every kind the collector serves, the events among them with id mut-<n>."""
    return [
        good_pixel(f"mut-{n}"),
        good_pixel(f"mut-{n}", "pixel-prewarm"),
        post(
            encode_event({"id": f"mut-{n}", "tech": "ajax", "u": "https://a.test/?q=1"}),
            extra=b"Origin: https://a.test\r\n",
        ),
        b"OPTIONS /e HTTP/1.1\r\nHost: t\r\nOrigin: https://a.test\r\n"
        b"Access-Control-Request-Method: POST\r\n\r\n",
        get("/ping.gif?t=pixel-keepalive"),
        get("/healthz"),
    ]


SPECIAL = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b"\xff",
    b"%",
    b"=",
    b"&",
    b"?",
    b" ",
    b":",
    b"\r\n\r\n",
    b"0",
    b"9999999999",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"\\",
    b'"',
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """1-4 random edits: flip, delete, insert special bytes, duplicate or truncate."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        kind = rng.randrange(6)
        if kind == 0 and at < len(out):
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1 and at < len(out):
            del out[at : at + rng.randint(1, 8)]
        elif kind == 2:
            out[at:at] = rng.choice(SPECIAL)
        elif kind == 3:
            out[at:at] = out[at : at + rng.randint(1, 40)]
        elif kind == 4:
            del out[at:]
        else:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
    return bytes(out)


@pytest.fixture
def quiet_errors(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Fails the test if the collector (or its event loop) logs an error: that would be a crash."""
    caplog.set_level(logging.ERROR)
    yield caplog
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_fuzzed_requests_never_crash_never_count_invalid_never_lose_valid(
    collector_factory, tmp_path, quiet_errors
):
    """Each case: a valid event, then a mutated request, on one connection, sent in random pieces.
    Meanwhile another client sends valid events on fresh connections. The valid events are never lost;
    no event is counted on a connection whose answers hold no 2xx beyond the first; every answer is
    well-formed HTTP; nothing is logged as an error; the counters agree with the ledger."""
    collector = collector_factory(header_timeout=2.0, body_timeout=2.0)
    rng = random.Random(20240611)
    cases = 1200
    stop = threading.Event()
    others: list[tuple[str, bool]] = []

    def other_client() -> None:
        tab = Tab(("127.0.0.1", collector.port), NetworkDraw())
        n = 0
        while not stop.is_set():
            event_id = f"other-{n}"
            others.append((event_id, tab.fire(("pixel", "ajax")[n % 2], event_id).acked))
            n += 1

    thread = threading.Thread(target=other_client)
    thread.start()
    extra_2xx: dict[str, int] = {}
    try:
        for n in range(cases):
            options = templates(n)
            template = options[n % len(options)]
            fuzzed = mutate(rng, template)
            data = good_pixel(f"head-{n}") + fuzzed
            with socket.create_connection(("127.0.0.1", collector.port), timeout=5) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                cuts = sorted(rng.sample(range(1, len(data)), k=min(2, len(data) - 1)))
                for piece in (data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)):
                    try:
                        sock.sendall(piece)
                    except (BrokenPipeError, ConnectionResetError):
                        break
                answer = b""
                try:
                    sock.shutdown(socket.SHUT_WR)
                    while chunk := sock.recv(65536):
                        answer += chunk
                except (ConnectionResetError, OSError):  # refused and closed while we were still sending
                    pass
            statuses = responses(answer)
            assert statuses and statuses[0] == 200, (n, fuzzed, answer[:200])
            extra_2xx[f"head-{n}"] = sum(200 <= s < 300 for s in statuses[1:])
    finally:
        stop.set()
        thread.join(10)
    stats = collector.stats()
    lines = received_events(tmp_path)
    assert exchange(collector.port, get("/healthz")).endswith(b"ok\n")
    assert "internal_error" not in stats["refused"]
    assert sum(stats["events"].values()) == len(lines)
    ids = received_ids(tmp_path)
    # never lose a valid event: the one before the garbage, and the other client's
    assert all(ids[f"head-{n}"] == 1 for n in range(cases))
    assert others and all(acked and ids[event_id] == 1 for event_id, acked in others)
    # never count an invalid one: no event on a connection beyond its answered 2xx
    connection_of = {line["id"]: line["c"] for line in lines if line["id"].startswith("head-")}
    head_of = {c: event_id for event_id, c in connection_of.items()}
    counted_after_head: dict[int, int] = {}
    for line in lines:
        assert valid_id(line["id"]) and line["tech"] in ALL_TECHNIQUES
        if line["c"] in head_of and not line["id"].startswith("head-"):
            counted_after_head[line["c"]] = counted_after_head.get(line["c"], 0) + 1
    for c, count in counted_after_head.items():
        assert count <= extra_2xx[head_of[c]], (head_of[c], count)
    assert set(stats["refused"]) <= set(REFUSALS)
    assert sum(stats["refused"].values()) > cases / 2  # the fuzzing did reach the refusals


@pytest.fixture(scope="module")
def shared_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CollectorThread, Path]]:
    """One collector for every hypothesis example (function-scoped fixtures are reset per test only)."""
    out = tmp_path_factory.mktemp("fuzz")
    thread = CollectorThread(CollectorConfig(port=0, out=out, header_timeout=1.0, body_timeout=1.0))
    thread.start()
    try:
        yield thread, out
    finally:
        thread.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.binary(min_size=1, max_size=400)
    | st.builds(lambda a, b: a + b, st.sampled_from(templates(0)), st.binary(max_size=100))
)
def test_raw_bytes_from_hypothesis(shared_collector, data):
    collector, out = shared_collector
    before = collector.stats()
    answer = exchange(collector.port, data)
    responses(answer)  # well-formed, whatever came in
    after = collector.stats()
    assert "internal_error" not in after["refused"]
    assert sum(after["events"].values()) == len(received_events(out))
    assert after["connections_total"] > before["connections_total"]
