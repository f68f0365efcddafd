"""Security: CORS by an explicit origin list, nothing from a request reflected in an answer, ledger paths
from the command line only, counters from a closed set of names, and a loopback bind unless told
otherwise.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lossbench.cli import build_parser
from lossbench.collector.config import CollectorConfig
from lossbench.collector.responses import REFUSALS
from lossbench.collector.state import Collector
from lossbench.contract.events import encode_event, encode_pixel_param
from lossbench.contract.techniques import ALL_TECHNIQUES
from support import exchange, received_ids

SHOP = "https://shop.lossbench.test"
EVIL = "https://evil.example"


def head_of(answer: bytes) -> dict[str, str]:
    """Header fields of the first response, names lowercased."""
    lines = answer.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def preflight(origin: str | None) -> bytes:
    extra = f"Origin: {origin}\r\n" if origin else ""
    return f"OPTIONS /e HTTP/1.1\r\nHost: t\r\n{extra}Access-Control-Request-Method: POST\r\n\r\n".encode()


def post(event_id: str, origin: str | None) -> bytes:
    body = encode_event({"id": event_id, "tech": "ajax"})
    extra = f"Origin: {origin}\r\n" if origin else ""
    return (
        f"POST /e HTTP/1.1\r\nHost: t\r\n{extra}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def pixel(event_id: str, origin: str | None = None) -> bytes:
    extra = f"Origin: {origin}\r\n" if origin else ""
    d = encode_pixel_param({"id": event_id, "tech": "pixel"})
    return f"GET /p.gif?d={d} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


# -- CORS --------------------------------------------------------------------------------------------------


def test_default_cors_is_any_origin_without_credentials(collector):
    for raw in (preflight(EVIL), post("star", EVIL), pixel("star-gif", EVIL)):
        headers = head_of(exchange(collector.port, raw))
        assert headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in headers
        assert "vary" not in headers
    assert collector.stats()["events"] == {"ajax": 1, "pixel": 1}


def test_an_origin_list_echoes_listed_origins_and_refuses_the_others(collector_factory, tmp_path):
    collector = collector_factory(allow_origins=(SHOP, "https://other.lossbench.test"))
    answer = exchange(collector.port, preflight(SHOP))
    assert status(answer) == 204
    headers = head_of(answer)
    assert headers["access-control-allow-origin"] == SHOP and headers["vary"] == "Origin"
    answer = exchange(collector.port, post("listed", SHOP))
    assert status(answer) == 204 and head_of(answer)["access-control-allow-origin"] == SHOP

    for raw in (preflight(EVIL), post("unlisted", EVIL), preflight("null"), post("case", SHOP.upper())):
        answer = exchange(collector.port, raw)
        assert status(answer) == 403, answer
        assert "access-control-allow-origin" not in head_of(answer)
    # A pixel is a no-cors image request (browsers send no Origin): it counts, but is never given ACAO.
    answer = exchange(collector.port, pixel("gif-from-unlisted", EVIL))
    assert status(answer) == 200 and "access-control-allow-origin" not in head_of(answer)
    # Non-browser clients send no Origin at all: CORS does not apply to them.
    assert status(exchange(collector.port, post("no-origin", None))) == 204
    stats = collector.stats()
    assert stats["refused"] == {"origin": 4}
    assert received_ids(tmp_path) == {"listed": 1, "gif-from-unlisted": 1, "no-origin": 1}


@pytest.mark.parametrize(
    "origin", ["https://a.test\r\nSet-Cookie: x=1", "https://a.test b", "", "https://é.test"]
)
def test_an_allow_origin_that_could_break_a_header_is_rejected_at_start(tmp_path, origin):
    with pytest.raises(ValueError, match="--allow-origin"):
        Collector(CollectorConfig(out=tmp_path, allow_origins=(origin,)))


def test_the_command_refuses_a_bad_allow_origin_before_binding(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "collector", "--port", "0", "--out", str(tmp_path),
         "--allow-origin", "https://a.test\r\nSet-Cookie: x=1"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 2 and "--allow-origin" in result.stderr and "Traceback" not in result.stderr
    assert not Path(tmp_path, "received").exists()


# -- nothing reflected -------------------------------------------------------------------------------------

MARK = "zqreflect7"
REFLECTION_PROBES = [
    f"GET /{MARK} HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
    f"GET /p.gif?d={MARK} HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
    f"GET /p.gif?{MARK}=1 HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
    pixel(MARK, origin=f"https://{MARK}.test"),
    post(MARK, origin=f"https://{MARK}.test"),
    post(MARK, origin=None).replace(b"application/json", f"text/{MARK}".encode()),
    preflight(f"https://{MARK}.test").replace(
        b"\r\n\r\n", f"\r\nAccess-Control-Request-Headers: x-{MARK}\r\n\r\n".encode()
    ),
    f"{MARK.upper()} /e HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
    f"GET /healthz HTTP/1.1\r\nHost: {MARK}\r\nX-{MARK}: {MARK}\r\nCookie: {MARK}=1\r\n\r\n".encode(),
    f"GET /p.gif?d={encode_pixel_param({'id': 'ok', 'tech': MARK})} HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
    f"GET /ping.gif?t={MARK} HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
    f"GET /stats?{MARK} HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
    f"GET /x HTTP/1.1\r\nHost: t\r\n{MARK}\r\n\r\n".encode(),
    f"GET /x{MARK} HTTP/9.9\r\n\r\n".encode(),
]


@pytest.mark.parametrize("raw", REFLECTION_PROBES)
def test_nothing_from_a_request_is_reflected(collector_factory, raw):
    """The marker goes in the path, query, event, every kind of header, the method, the version: it never
    comes back, whatever the answer (allowed origins aside, which come from the command line)."""
    collector = collector_factory(allow_origins=(SHOP,))
    answer = exchange(collector.port, raw)
    assert answer.startswith(b"HTTP/1.1 ")
    assert MARK.encode() not in answer.lower(), answer
    stats = exchange(collector.port, b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n")
    assert MARK.encode() not in stats.lower()
    for name in head_of(answer):
        assert name in {
            "content-type", "content-length", "connection", "cache-control", "x-content-type-options",
            "allow", "access-control-allow-origin", "access-control-allow-methods",
            "access-control-allow-headers", "access-control-max-age", "vary", "retry-after",
        }, name  # fmt: skip


def test_counter_names_come_from_a_closed_set(collector):
    """/stats keys name reasons and techniques the collector knows, never something a request said."""
    for n in range(30):
        exchange(collector.port, f"GET /p{n}.gif?t=tech{n} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        exchange(collector.port, f"GET /ping.gif?t=tech{n} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        exchange(collector.port, pixel(f"id{n}").replace(b"/p.gif", b"/p.gif?t=x&"))
    exchange(collector.port, b"GET /ping.gif?t=pixel-prewarm HTTP/1.1\r\nHost: t\r\n\r\n")
    stats = collector.stats()
    assert set(stats["refused"]) <= set(REFUSALS)
    assert set(stats["requests"]) <= {*ALL_TECHNIQUES, "ping"}
    assert set(stats["events"]) <= set(ALL_TECHNIQUES)
    assert set(stats["conn_seconds"]) <= {*ALL_TECHNIQUES, "ping", ""}


# -- ledger paths ------------------------------------------------------------------------------------------


def test_ledger_paths_come_from_the_command_line_only(collector_factory, tmp_path):
    """Ids, paths and headers that look like file names change nothing on disk but the ledger's lines."""
    out = tmp_path / "out"
    collector = collector_factory(out=out)
    tricks = [
        pixel("../../../evil"),
        pixel("/tmp/evil.jsonl"),
        f"GET /../../{tmp_path.name}/evil.jsonl HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
        f"GET /p.gif?out={tmp_path}/evil&d=x HTTP/1.1\r\nHost: ../../evil\r\n\r\n".encode(),
        post("..%2F..%2Fevil", None),
    ]
    for raw in tricks:
        exchange(collector.port, raw)
    collector.stop()
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    name = f"{socket.gethostname()}-{os.getpid()}"
    assert files == [f"out/received/{name}.0.jsonl", f"out/received/{name}.stats.json"]
    assert received_ids(out) == {"../../../evil": 1, "/tmp/evil.jsonl": 1, "..%2F..%2Fevil": 1}


# -- where it listens --------------------------------------------------------------------------------------


def test_loopback_is_the_default_bind(tmp_path):
    assert CollectorConfig().host == "127.0.0.1"
    assert build_parser().parse_args(["collector"]).host == "127.0.0.1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossbench.cli", "collector", "--port", "0", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline()).group(1))
        listening = []
        for table in ("tcp", "tcp6"):
            with open(f"/proc/{proc.pid}/net/{table}") as f:
                for row in f.read().splitlines()[1:]:
                    local, state = row.split()[1], row.split()[3]
                    address, _, hex_port = local.partition(":")
                    if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                        listening.append(address)
        assert listening == ["0100007F"]  # 127.0.0.1, and on nothing else
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_binding_elsewhere_needs_allow_remote(tmp_path, host):
    result = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "collector", "--host", host, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "--allow-remote" in result.stderr
    assert not Path(tmp_path, "received").exists()  # refused before anything was opened
