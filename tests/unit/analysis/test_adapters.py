"""Received-side adapters on hand-made lines: formats, the reference collector's decoding rules, what is
skipped and how it is named, the spec parser, and the columns handed to compare. (Real logs of real
targets: tests/integration/targets/.)"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from lossbench.analysis.adapters import (
    DAMAGED,
    EXAMPLES,
    FOREIGN,
    IGNORED,
    REFUSED,
    AdapterError,
    file_infos,
    parse_spec,
    read_received,
    received_columns,
)
from lossbench.analysis.adapters.nginx import COMBINED, FORMATS, NginxAdapter, compile_format, unescape
from lossbench.analysis.read import RECEIVED_COLUMNS, Vocabs
from lossbench.contract.events import encode_event, encode_pixel_param
from lossbench.contract.techniques import TECHNIQUES
from lossbench.loadgen.techniques import event_body

ID = "0123456789abcdef"


def nginx_escaped(data: bytes) -> str:
    """A value as nginx's default log escaping writes it."""
    return "".join(f"\\x{b:02X}" if b in b'"\\' or b < 0x20 or b >= 0x7F else chr(b) for b in data)


def nginx_line(request: str, body: bytes | None = None, status: int = 200) -> str:
    shown = "-" if body is None else nginx_escaped(body)
    return (
        f'127.0.0.1 - - [01/Dec/2026:10:00:00 +0000] "{request}" {status} 43 "-" "Mozilla/5.0 (X11)" '
        f'"{shown}"'
    )


def pixel_uri(event_id: str, tech: str = "pixel") -> str:
    return "/p.gif?d=" + encode_pixel_param({"id": event_id, "tech": tech, "type": "click"})


def write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_text("\n".join(lines) + end)
    return path


def test_nginx_lossbench_format_reads_pixels_and_post_bodies(tmp_path: Path) -> None:
    body = event_body(ID, "ajax", "click")
    log = write(
        tmp_path / "access.log",
        [
            nginx_line(f"GET {pixel_uri('a1', 'pixel-keepalive')} HTTP/1.1"),
            nginx_line("OPTIONS /e HTTP/1.1", status=204),
            nginx_line("POST /e HTTP/1.1", body, status=204),
            nginx_line("GET /ping.gif?t=pixel-keepalive HTTP/1.1"),
            nginx_line(
                "GET /p.gif?x=1&d=%65yJpZCI6ImIyIiwidGVjaCI6InBpeGVsIn0 HTTP/1.1"
            ),  # d second, %-coded
        ],
    )
    got = read_received(f"nginx:{log}:lossbench")
    assert got.rows == [("a1", "pixel-keepalive", "GET"), (ID, "ajax", "POST"), ("b2", "pixel", "GET")]
    assert got.skipped == {IGNORED: 2}
    assert got.warnings() == []


def test_nginx_body_with_quotes_backslashes_and_utf8_round_trips() -> None:
    event = {"id": ID, "tech": "ajax", "title": 'say "hi" \\ to the café\t'}
    line = nginx_line("POST /e HTTP/1.1", encode_event(event)).encode()
    assert NginxAdapter("lossbench").parse_line(line) == (ID, "ajax", "POST")
    assert unescape(nginx_escaped(b'a"b\\c\xc3\xa9').encode()) == b'a"b\\c\xc3\xa9'


def test_nginx_combined_cannot_read_post_bodies_and_says_so(tmp_path: Path) -> None:
    combined = '127.0.0.1 - - [01/Dec/2026:10:00:00 +0000] "{}" 200 43 "-" "curl/8"'
    log = write(tmp_path / "a.log", [combined.format(f"GET {pixel_uri('p1')} HTTP/1.1"),
                                      combined.format("POST /e HTTP/1.1")])  # fmt: skip
    got = read_received(f"nginx:{log}")
    assert got.rows == [("p1", "pixel", "GET")]
    assert got.skipped == {REFUSED: 1}
    assert "$request_body" in got.examples[REFUSED][0] and f"{log}:2" in got.examples[REFUSED][0]


def test_nginx_given_log_format_with_method_and_uri(tmp_path: Path) -> None:
    fmt = "$msec|$request_method|$request_uri|$status|$request_body"
    body = encode_event({"id": "c3", "tech": "ajax"})
    log = write(
        tmp_path / "custom.log",
        [f"1.5|GET|{pixel_uri('c1')}|200|-", f"1.6|POST|/e|204|{nginx_escaped(body)}", "1.7|GET|/x|404|-"],
    )
    got = read_received(f"nginx:{log}:{fmt}")  # the format holds no colon here, but may: see the spec test
    assert got.rows == [("c1", "pixel", "GET"), ("c3", "ajax", "POST")]
    assert got.skipped == {FOREIGN: 1}


def test_nginx_format_without_the_request_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\$request"):
        compile_format("$remote_addr $status")
    with pytest.raises(AdapterError, match=r"unknown log format 'common'.*combined, lossbench"):
        parse_spec("nginx:access.log:common")


def test_nginx_decodes_as_the_reference_collector(tmp_path: Path) -> None:
    """Events the reference collector refuses are refused here too, each with its reason."""
    non_canonical = encode_pixel_param({"id": "x", "tech": "pixel"})[:-1] + "B"
    bad_tech = base64.urlsafe_b64encode(b'{"id":"x","tech":"pigeon"}').rstrip(b"=").decode()
    bad_id = base64.urlsafe_b64encode(b'{"id":"a b","tech":"pixel"}').rstrip(b"=").decode()
    log = write(
        tmp_path / "a.log",
        [
            nginx_line(f"GET /p.gif?d={non_canonical} HTTP/1.1"),
            nginx_line(f"GET /p.gif?d={bad_tech} HTTP/1.1"),
            nginx_line(f"GET /p.gif?d={bad_id} HTTP/1.1"),
            nginx_line("GET /p.gif HTTP/1.1"),
            nginx_line("POST /e HTTP/1.1", b'{"id":"0000000000'),  # a body cut short: nginx logs 400
            nginx_line("POST /e HTTP/1.1", status=400),
        ],
    )
    got = read_received(f"nginx:{log}:lossbench")
    assert got.rows == []
    assert got.skipped == {REFUSED: 6}
    reasons = [e.split(": ", 1)[1] for e in got.examples[REFUSED]]
    assert reasons == [
        "pixel: bad_base64",
        "pixel: bad_tech",
        "pixel: bad_id",
        "pixel without a d= parameter",
        "POST body: bad_json",
    ]  # the first EXAMPLES only
    assert len(reasons) == EXAMPLES


def test_damaged_and_foreign_lines_are_counted_named_and_skipped(tmp_path: Path) -> None:
    good = [nginx_line(f"GET {pixel_uri(f'g{i}')} HTTP/1.1") for i in range(3)]
    log = tmp_path / "access.log"
    log.write_bytes(
        (
            "\n".join(
                [
                    good[0],
                    nginx_line("GET /healthz HTTP/1.1"),
                    good[1],
                    "\x00\x01garbage\xff",
                    nginx_line("POST /p.gif HTTP/1.1"),
                    nginx_line("\\x16\\x03\\x01\\x02\\x00"),  # TLS bytes on the plain port
                    good[2],
                ]
            )
            + "\n"
        ).encode("latin-1")
        + good[0][:50].encode()  # the last line, cut short by a kill
    )
    got = read_received(f"nginx:{log}:lossbench")
    assert [r[0] for r in got.rows] == ["g0", "g1", "g2"]
    assert got.skipped == {DAMAGED: 2, FOREIGN: 3}
    assert got.examples[DAMAGED] == [
        f"{log}:4: not in the log format",
        f"{log}:8: not in the log format (the last line, cut short)",
    ]
    assert [e.split(": ")[0] for e in got.examples[FOREIGN]] == [f"{log}:2", f"{log}:5", f"{log}:6"]
    warnings = got.warnings()
    assert len(warnings) == 2 and warnings[0].startswith("2 damaged lines skipped: ")
    (info,) = file_infos(got, tmp_path)
    assert (info.path, info.lines, info.body_lines, info.truncated_last_line) == ("access.log", 3, 8, True)


def test_examples_are_capped_but_everything_is_counted(tmp_path: Path) -> None:
    log = write(tmp_path / "a.log", ["junk"] * (EXAMPLES + 7))
    got = read_received(f"nginx:{log}")
    assert got.skipped[DAMAGED] == EXAMPLES + 7 and len(got.examples[DAMAGED]) == EXAMPLES
    assert f"(first {EXAMPLES} shown)" in got.warnings()[0]


def test_jsonl_whole_line_event_and_paths(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "j1", "tech": "pixel", "m": "GET"}),
        json.dumps({"id": "j2", "tech": "ajax", "extra": {"a": [1, 2]}}),
        json.dumps({"started": True}),
        "[1, 2]",
        '{"id": "j3", "tech": "aj',
        json.dumps({"id": "j4", "tech": "nope"}),
        json.dumps({"id": "j5", "tech": "ajax", "note": "line\nbreak"}),
    ]
    got = read_received(f"jsonl:{write(tmp_path / 'a.jsonl', lines)}:method=m")
    assert got.rows == [("j1", "pixel", "GET"), ("j2", "ajax", "")]
    assert got.skipped == {FOREIGN: 1, DAMAGED: 2, REFUSED: 2}
    assert [e.split(": ", 1)[1] for e in got.examples[REFUSED]] == ["event: bad_tech", "event: bad_value"]


def test_jsonl_id_path_to_a_string_or_to_the_event_object(tmp_path: Path) -> None:
    nested = [json.dumps({"ts": 1, "req": {"method": "POST"}, "data": {"ev": {"id": "n1", "tech": "ajax"}}})]
    log = write(tmp_path / "n.jsonl", nested)
    assert read_received(f"jsonl:{log}:data.ev,method=req.method").rows == [("n1", "ajax", "POST")]
    by_id = read_received(f"jsonl:{log}:id=data.ev.id,tech=data.ev.tech")
    assert by_id.rows == [("n1", "ajax", "")]
    sibling = write(tmp_path / "s.jsonl", [json.dumps({"e": {"id": "s1", "tech": "pixel"}})])
    assert read_received(f"jsonl:{sibling}:id=e.id").rows == [("s1", "pixel", "")]
    with pytest.raises(AdapterError, match="unknown option 'ids'; known: id, tech, method"):
        parse_spec("jsonl:x.jsonl:ids=a")


def test_csv_by_header_names_and_by_numbers(tmp_path: Path) -> None:
    named = write(
        tmp_path / "a.csv",
        ["ts,event_id,technique", "1,c1,pixel", '2,"c2",ajax', "3", "4,bad id,pixel", "5,c5,laser"],
    )
    got = read_received(f"csv:{named}:id=event_id,tech=technique")
    assert got.rows == [("c1", "pixel", ""), ("c2", "ajax", "")]
    assert got.skipped == {IGNORED: 1, DAMAGED: 1, REFUSED: 2}
    numbered = write(tmp_path / "b.csv", ["GET,n1,pixel-prewarm", "POST,n2,ajax"])
    got = read_received(f"csv:{numbered}:id=2,tech=3,method=1")
    assert got.rows == [("n1", "pixel-prewarm", "GET"), ("n2", "ajax", "POST")]
    with pytest.raises(AdapterError, match=r"a.csv:1: no column 'id' in the header \(ts, event_id"):
        read_received(f"csv:{named}")
    with pytest.raises(AdapterError, match="1-based numbers"):
        parse_spec("csv:b.csv:id=2")


def test_spec_errors_name_the_known_kinds(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match=r"expected KIND:PATH.*known kinds: nginx, jsonl, csv"):
        parse_spec("access.log")
    with pytest.raises(AdapterError, match="unknown adapter kind 'apache'; known kinds: nginx, jsonl, csv"):
        parse_spec("apache:access.log")
    with pytest.raises(AdapterError, match="no such log file for the nginx adapter"):
        read_received(f"nginx:{tmp_path}/missing.log")
    spec = parse_spec('nginx:a.log:$time_iso8601 "$request" $request_body')  # options keep their colons
    assert (spec.kind, spec.path, spec.options) == (
        "nginx",
        "a.log",
        '$time_iso8601 "$request" $request_body',
    )


def test_globs_and_relative_paths_against_a_base(tmp_path: Path) -> None:
    folder = tmp_path / "received" / "app"
    folder.mkdir(parents=True)
    write(folder / "b.jsonl", [json.dumps({"id": "b", "tech": "pixel"})])
    write(folder / "a.jsonl", [json.dumps({"id": "a", "tech": "pixel"})])
    got = read_received("jsonl:received/app/*.jsonl", base=tmp_path)
    assert [r[0] for r in got.rows] == ["a", "b"]


def test_received_columns_match_the_ledger_reader() -> None:
    vocabs = Vocabs()
    rows = [(ID, "ajax", "POST"), ("fedcba9876543210", "pixel", "GET"), (ID, "ajax", "POST")]
    columns, keys = received_columns(rows, vocabs)
    assert list(columns) == list(RECEIVED_COLUMNS)
    assert {name: str(c.dtype) for name, c in columns.items()} == {
        name: str(np.dtype(d)) for name, d in RECEIVED_COLUMNS.items()
    }
    assert [vocabs.tech.names[c] for c in columns["tech"]] == ["ajax", "pixel", "ajax"]
    assert [vocabs.method.names[c] for c in columns["method"]] == ["POST", "GET", "POST"]
    assert vocabs.tech.names[: len(TECHNIQUES)] == list(TECHNIQUES)
    assert keys is not None and keys.tolist() == [int(ID, 16), 0xFEDCBA9876543210, int(ID, 16)]
    long_columns, long_keys = received_columns([("an-id-longer-than-sixteen", "pixel", "")], vocabs)
    assert long_columns["id"].tolist() == [b"an-id-longer-than-sixteen"] and long_keys is None
    empty, _ = received_columns([], Vocabs())
    assert all(len(c) == 0 for c in empty.values()) and empty["id"].dtype == np.dtype("S16")


def test_the_shipped_format_is_combined_plus_the_body() -> None:
    assert FORMATS["lossbench"].startswith(COMBINED) and FORMATS["lossbench"].endswith('"$request_body"')
