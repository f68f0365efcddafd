"""The collector's received ledger names the browser family of each event (``ua``), only when the request
had a User-Agent: the socket client's lines keep their shape."""

from __future__ import annotations

import json
from pathlib import Path

from lossbench.collector.routes import ua_family
from lossbench.contract.events import encode_pixel_param
from support import exchange, wait_until

CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 "
    "Safari/537.36"
)


def _lines(run_dir: Path) -> list[dict]:
    out = []
    for path in (run_dir / "received").glob("*.jsonl"):
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in out if "id" in line]


def test_ua_family_from_a_fixed_list() -> None:
    assert ua_family(CHROME.encode()) == "chromium"
    assert ua_family(b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0") == "firefox"
    assert ua_family(b"Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 Version/17.0 Safari/605.1.15") == "safari"
    assert ua_family(b'curl/8.0 "\r\n') == "other"


def test_received_line_carries_ua_only_with_a_user_agent(collector, tmp_path: Path) -> None:
    for event_id, headers in (
        ("ua-browser", f"User-Agent: {CHROME}\r\n"),
        ("ua-none", ""),
        ("ua-beacon", ""),
    ):
        tech = "beacon" if event_id == "ua-beacon" else "pixel"
        target = "/p.gif?d=" + encode_pixel_param({"id": event_id, "tech": tech})
        if tech == "beacon":
            body = json.dumps({"id": event_id, "tech": tech}).encode()
            raw = (
                f"POST /e HTTP/1.1\r\nHost: c\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode() + body
        else:
            raw = f"GET {target} HTTP/1.1\r\nHost: c\r\n{headers}Connection: close\r\n\r\n".encode()
        assert exchange(collector.port, raw).split(b" ", 2)[1] in (b"200", b"204")
    assert wait_until(lambda: len(_lines(tmp_path)) == 3)
    by_id = {line["id"]: line for line in _lines(tmp_path)}
    assert by_id["ua-browser"]["ua"] == "chromium"
    assert "ua" not in by_id["ua-none"]
    assert by_id["ua-beacon"]["tech"] == "beacon"  # the browser-only techniques are accepted
