"""The harness page and the loopback HTTP server that serves it, the next page, and the page's record.

A page has to come from a real loopback server: a page fulfilled by Playwright has no address, and
Chromium then refuses its requests to loopback (local network access). The server is asyncio, HTTP/1.1
with keep-alive, and knows three things: the visit pages (``/visit/<key>``: the harness with the visit's
plan written into it), the next pages (``/next/<key>``: answered after the visit's next-page delay, so
that the old page goes away when the next one commits) and the records (``POST /record/<key>``: what the
page fired, sent with ``sendBeacon`` at ``pagehide``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from lossbench.loadgen.browser.proxy import PAGE_HOSTS
from lossbench.loadgen.techniques import PAGE_URL, REFERRER

PAGE_ORIGIN = f"http://{PAGE_HOSTS[0]}"
NEXT_ORIGIN = f"http://{PAGE_HOSTS[1]}"
MAX_REQUEST = 1 << 20

_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>lossbench visit {key}</title>
<link rel="icon" href="data:,">
<script>window.LOSSBENCH_PLAN = {plan};</script>
<script>{script}</script>
</head><body><p>catalog item 4711</p></body></html>
"""
_NEXT = '<!doctype html><html><head><link rel="icon" href="data:,"></head><body>next page</body></html>'
_BLANK = '<!doctype html><html><head><link rel="icon" href="data:,"></head><body></body></html>'


def harness_script() -> str:
    return resources.files("lossbench.loadgen.browser").joinpath("harness.js").read_text()


@dataclass
class PagePlan:
    """What the page of one visit does, in real milliseconds from its start (wall time ``start``)."""

    key: str
    start: float  # wall time (s) of visit time 0
    techniques: list[str]
    hosts: dict[str, str]
    events: list[dict[str, Any]]  # {"at": ms, "type": str, "ids": {tech: id}}
    how: str  # "close" or "navigate"
    leave_at: float | None  # ms from start when the page goes away (close) or the next page arrives
    next_delay: float = 0.0  # seconds the next page takes to answer (navigate)
    ping_interval: float = 20.0
    record: asyncio.Future[dict[str, Any]] | None = field(default=None, repr=False)

    def document(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "start": self.start * 1000.0,
            "techniques": self.techniques,
            "hosts": self.hosts,
            "events": self.events,
            "leave": {"how": self.how, "at": self.leave_at, "next": f"{NEXT_ORIGIN}/next/{self.key}"},
            "ping_interval": self.ping_interval * 1000.0,
            "page_url": PAGE_URL,
            "referrer": REFERRER,
        }


class PageServer:
    """The shop's loopback server: visit pages, next pages and records."""

    def __init__(self) -> None:
        self.plans: dict[str, PagePlan] = {}
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.script = harness_script()
        self.records_late = 0  # records that came for no known visit (after it was given up)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)

    def add(self, plan: PagePlan) -> PagePlan:
        plan.record = asyncio.get_running_loop().create_future()
        self.plans[plan.key] = plan
        return plan

    def remove(self, key: str) -> None:
        self.plans.pop(key, None)

    def page_html(self, plan: PagePlan) -> bytes:
        document = json.dumps(plan.document(), separators=(",", ":")).replace("</", "<\\/")
        return _HTML.format(key=plan.key, plan=document, script=self.script).encode()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > MAX_REQUEST:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length > MAX_REQUEST:
                    return
                body = await reader.readexactly(length) if length else b""
                status, ctype, payload = await self._answer(method, target, body)
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
                    "Cache-Control: no-store\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, method: str, target: str, body: bytes) -> tuple[str, str, bytes]:
        path = target.split("?", 1)[0]
        kind, _, key = path.strip("/").partition("/")
        plan = self.plans.get(key)
        if method == "GET" and kind == "visit" and plan is not None:
            return "200 OK", "text/html; charset=utf-8", self.page_html(plan)
        if method == "GET" and kind == "next":
            if plan is not None and plan.next_delay > 0:
                await asyncio.sleep(plan.next_delay)
            return "200 OK", "text/html; charset=utf-8", _NEXT.encode()
        if method == "POST" and kind == "record":
            if plan is not None and plan.record is not None and not plan.record.done():
                with contextlib.suppress(ValueError):
                    record = json.loads(body)
                    record["received"] = time.time() * 1000.0
                    plan.record.set_result(record)
            else:
                self.records_late += 1
            return "204 No Content", "text/plain", b""
        if method == "GET" and kind == "blank":
            return "200 OK", "text/html; charset=utf-8", _BLANK.encode()
        return "404 Not Found", "text/plain", b"not found\n"
