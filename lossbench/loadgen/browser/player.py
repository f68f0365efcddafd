"""Playing visits in real headless Chromium: the same draws as the socket client, the same sent ledger.

Each worker is a Chromium with a regular profile of its own (its own pools and caches; see
``chromium.launch`` for why not an off-the-record context) with one tab at a time. A visit's page is
loaded from the shop's loopback server, then visit time 0 is set in the page and in the proxy at the same
wall instant; the page fires every technique at each event's time, and goes away the exit model's way:
navigation to a next page (started at the last event, the outbound click, and answered after the rest of
the visit's exit time, so that it commits at the drawn exit) or a tab close (from outside, at the drawn
exit: a script may not close a tab it did not open).

Idle time is compressed as in the socket client, but statically (the page cannot see a beacon finish): a
gap longer than ``max_gap`` (``GAP_RTTS`` RTTs plus the lookup plus a second: every stage of every
technique is over by then) is played as ``max_gap``. What depends on idle time is decided on visit time by
the proxy: DNS cache ages, and the collector's idle timeout (connections it would have closed during a
compressed gap are closed just before the gap ends). Chromium's own timers (its idle-socket timeouts,
the preflight cache) run on real time: a documented limit.

The sent ledger line of each event is built from the page's record (ids, fire times, its ``pagehide``
time) and the proxy's view of the technique host's traffic (when the event's data left the browser, or
the stage it was in when the page went away), in the socket client's key order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench.contract.ledger import LedgerWriter, default_ledger_name, micro
from lossbench.contract.lines import SentEvent, SentPing, encode_lines
from lossbench.contract.techniques import PREFLIGHTED
from lossbench.loadgen.browser import chromium
from lossbench.loadgen.browser.page import NEXT_ORIGIN, PAGE_ORIGIN, PagePlan, PageServer
from lossbench.loadgen.browser.proxy import (
    ConnectionLog,
    Draw,
    Request,
    Socks5Proxy,
    Visitor,
    collector_host,
    stage_at,
    written_at,
)
from lossbench.loadgen.player import KEEPALIVE_PING_INTERVAL, EventIds
from lossbench.model.visits import Visit

EXIT_HOWS = ("auto", "close", "navigate")
GAP_RTTS = 4.0  # a gap is compressed to GAP_RTTS RTTs + the lookup + GAP_EXTRA: every stage is over by then
GAP_EXTRA = 1.0
CALL_TIMEOUT = 15.0  # any one Playwright call (a page that never closes must not stall a worker)
SETTLE_SECONDS = 3.0  # after the page went away, how long late requests (beacons) may still leave
PROGRESS_EVERY = 30.0  # seconds between two progress lines of a long run
RECORD_TIMEOUT = 5.0  # waiting for the page's pagehide record after it went away
CONTEXT_VISITS = 100  # a worker's browser is replaced after this many visits (pools stay small)
LOAD_TIMEOUT_MS = 20_000
START_LEAD_MS = 20.0  # visit time 0 comes this long after the page is told to start
ASKED_SLACK = 0.001  # a connection asked this long before an event fired is still the event's own

Say = Callable[[str], None]


@dataclass
class BrowserOptions:
    """How the browser client plays visits."""

    workers: int = 8
    max_gap: float | None = None  # None: per visit, GAP_RTTS * rtt + dns + 1 s
    exit_how: str = "auto"  # auto: navigate when the visit ends with an outbound click, else close
    idle_timeout: float = 30.0  # the collector's, emulated across compressed gaps
    duration: float | None = None  # stop starting visits after this many seconds
    net_log: Path | None = None
    ping_interval: float = KEEPALIVE_PING_INTERVAL  # the keep-alive page's timer (shorter in tests)


@dataclass
class Timing:
    """A visit's real schedule: event offsets, the exit, where visit time jumps (compressed gaps)."""

    offsets: list[float]
    leave: float | None  # real seconds from the start to the exit, None: never
    breakpoints: list[tuple[float, float]]


def schedule(visit: Visit, max_gap: float | None) -> Timing:
    """Compress the visit's idle gaps to ``max_gap`` (the wait before the first event stays real)."""
    gap = max_gap if max_gap is not None else GAP_RTTS * visit.net.rtt + visit.net.dns + GAP_EXTRA
    offsets: list[float] = []
    breakpoints = [(0.0, 0.0)]
    real = prev_at = 0.0
    for i, event in enumerate(visit.events):
        step = event.at - prev_at
        if i and step > gap:
            step = gap
            breakpoints.append((real + gap, event.at))
        real += step
        offsets.append(real)
        prev_at = event.at
    leave = None
    if math.isfinite(visit.leave_at):
        rest = visit.leave_at - prev_at
        leave = real + min(rest, gap)
        if rest > gap:
            breakpoints.append((leave, visit.leave_at))
    return Timing(offsets, leave, breakpoints)


@dataclass
class PlayerStats:
    visits: int = 0
    events: int = 0
    records_missing: int = 0
    records_from_console: int = 0  # the pagehide beacon was lost; the console notes served
    late_starts: int = 0
    errors: list[str] = field(default_factory=list)
    exit_lags: list[float] = field(default_factory=list)  # per visit cut: pagehide minus planned, seconds


def progress_line(stats: PlayerStats, total: int | None, elapsed: float, limit: float | None) -> str:
    """One line on a long browser run: visits done and their rate, when it ends, how late the exits are
    (the figure that says whether the machine keeps up: a late exit gives requests more time)."""
    rate = stats.visits / elapsed if elapsed > 0 else 0.0
    line = f"chromium: {stats.visits:,}" + ("" if total is None else f" of {total:,}") + " visits played"
    line += f" in {elapsed:.0f} s ({rate:.2f}/s)"
    if total is not None and rate > 0:
        left = (total - stats.visits) / rate
        if limit is not None and elapsed + left > limit:
            line += f", --duration stops it in {limit - elapsed:.0f} s"
        else:
            line += f", about {left:.0f} s left"
    if stats.exit_lags:
        lags = sorted(stats.exit_lags)
        p50, p90 = lags[len(lags) // 2], lags[min(len(lags) - 1, int(0.9 * len(lags)))]
        line += f"; exits late by {1000 * p50:.0f} ms (p50), {1000 * p90:.0f} ms (p90)"
    if stats.errors:
        line += f"; {len(stats.errors)} visit errors"
    return line


class _Notes:
    """What the page said on its console (each fire, its pagehide): the record when the pagehide beacon is
    lost (a busy machine, a tab torn down first). Without a pagehide note, the page went away when
    lossbench closed it, or when the next page committed."""

    def __init__(self) -> None:
        self.fired: list[dict[str, Any]] = []
        self.gone: dict[str, Any] | None = None
        self.closed: float | None = None
        self.committed: float | None = None

    def on_console(self, message: Any) -> None:
        text = message.text
        if not text.startswith("lossbench "):
            return
        _, kind, data = text.split(" ", 2)
        if kind == "fired":
            self.fired.append(json.loads(data))
        elif kind == "gone":
            self.gone = json.loads(data)

    def on_navigated(self, frame: Any) -> None:
        if self.committed is None and "/next/" in frame.url and frame.parent_frame is None:
            self.committed = time.time()

    def record(self, plan: PagePlan) -> dict[str, Any] | None:
        if not self.fired:
            return None
        gone = self.gone["t"] if self.gone else None
        if gone is None:
            fallback = self.closed if plan.how == "close" else self.committed
            gone = None if fallback is None else fallback * 1000.0
        if gone is None:
            return None
        acked = self.gone["acked"] if self.gone else {}
        return {"key": plan.key, "fired": self.fired, "gone": gone, "acked": acked, "from": "console"}


class BrowserPlayer:
    """Plays visits in Chromium through the proxy, against a collector on loopback port ``collector_port``,
    writing the sent ledger to ``sent_dir``."""

    def __init__(
        self,
        collector_port: int,
        sent_dir: Path,
        techniques: Sequence[str],
        options: BrowserOptions | None = None,
        *,
        ids: EventIds | None = None,
        say: Say = print,
    ) -> None:
        self.collector_port = collector_port
        self.techniques = list(techniques)
        self.options = options or BrowserOptions()
        if self.options.exit_how not in EXIT_HOWS:
            raise ValueError(f"exit_how must be one of {', '.join(EXIT_HOWS)}")
        self.ids = ids or EventIds()
        self.say = say
        self.ledger = LedgerWriter(
            sent_dir, "sent", name=f"chromium-{default_ledger_name()}", buffer_bytes=256 * 1024
        )
        self.stats = PlayerStats()
        self.visits_recorded = 0
        self.pages = PageServer()
        self.proxy: Socks5Proxy | None = None
        self.pending: set[asyncio.Task[None]] = set()
        self.played: list[int] = []  # indices of the visits played to the end (not cut by the deadline,
        # no error): a calibration plays exactly these with the socket client
        self.records: list[dict[str, Any]] = []  # the page records, for tests
        self.keep_records = False

    async def play(self, visits: Iterable[Visit]) -> PlayerStats:
        """Play every visit (bounded by ``options.duration``); returns counts."""
        async_api = chromium.require_playwright()
        await self.pages.start()
        self.proxy = Socks5Proxy(self.collector_port, self.pages.port)
        await self.proxy.start()
        started = time.monotonic()
        deadline = None if self.options.duration is None else started + self.options.duration
        total = len(visits) if isinstance(visits, Sequence) else None
        source = iter(enumerate(visits))
        progress = asyncio.get_running_loop().create_task(self._progress(started, total))
        try:
            async with async_api.async_playwright() as playwright:
                launched = await asyncio.gather(
                    *(self._launch(playwright, w, 0) for w in range(self.options.workers)),
                    return_exceptions=True,
                )
                browsers = [b for b in launched if isinstance(b, chromium.Profile)]
                failed = [e for e in launched if isinstance(e, BaseException)]
                if failed:
                    await asyncio.gather(*(b.close() for b in browsers), return_exceptions=True)
                    raise failed[0]
                await asyncio.gather(
                    *(self._worker(playwright, w, b, source, deadline) for w, b in enumerate(browsers))
                )
                if self.pending:
                    await asyncio.gather(*self.pending)
        finally:
            progress.cancel()
            await self.proxy.close()
            await self.pages.close()
            self.ledger.close()
        return self.stats

    async def _progress(self, started: float, total: int | None) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            self.say(progress_line(self.stats, total, time.monotonic() - started, self.options.duration))

    async def _launch(self, playwright: Any, worker: int, generation: int) -> chromium.Profile:
        """A fresh browser for ``worker`` (its NetLog, if asked for, in a file of its own)."""
        assert self.proxy is not None
        net_log = self.options.net_log
        if net_log is not None:
            net_log = net_log.with_name(f"{net_log.stem}-w{worker}-{generation}{net_log.suffix}")
        return await chromium.launch(playwright, self.proxy.port, net_log=net_log)

    async def _worker(
        self, playwright: Any, worker: int, browser: chromium.Profile, source: Any, deadline: float | None
    ) -> None:
        played = 0
        try:
            for n, visit in source:
                if deadline is not None and time.monotonic() > deadline:
                    break
                if played and played % CONTEXT_VISITS == 0:
                    fresh = await self._launch(playwright, worker, played // CONTEXT_VISITS)
                    old, browser = browser, fresh
                    self._later(self._close_profile(old))
                played += 1
                try:
                    await self._visit(browser.context, f"w{worker}n{n}", visit)
                    self.played.append(n)
                except Exception as exc:  # a visit that failed is reported, the run goes on
                    where = traceback.extract_tb(exc.__traceback__)[-1]
                    self.stats.errors.append(f"visit {n}: {type(exc).__name__} {exc} (line {where.lineno})")
        finally:
            await self._close_profile(browser)

    async def _close_profile(self, browser: chromium.Profile) -> None:
        await asyncio.sleep(SETTLE_SECONDS)  # beacons of its last visits may still be leaving
        with contextlib.suppress(Exception):
            await asyncio.wait_for(browser.close(), CALL_TIMEOUT)

    def _later(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _visit(self, context: Any, key: str, visit: Visit) -> None:
        assert self.proxy is not None
        timing = schedule(visit, self.options.max_gap)
        how = self._how(visit, timing)
        events = [
            {"at": off * 1000.0, "type": e.type, "ids": {t: self.ids.next() for t in self.techniques}}
            for off, e in zip(timing.offsets, visit.events, strict=True)
        ]
        next_delay = 0.0
        if how == "navigate" and visit.events:
            next_delay = max(0.0, visit.leave_at - visit.events[-1].at)
        plan = self.pages.add(
            PagePlan(
                key=key,
                start=0.0,
                techniques=self.techniques,
                hosts={t: f"http://{collector_host(t, key)}" for t in self.techniques},
                events=events,
                how=how,
                leave_at=None if timing.leave is None else timing.leave * 1000.0,
                next_delay=next_delay,
                ping_interval=self.options.ping_interval,
            )
        )
        net = visit.net
        visitor = self.proxy.add_visitor(
            Visitor(
                key,
                Draw(net.rtt, net.dns, net.uplink_bps, visit.abort),
                started=time.time() + 3600.0,  # set once the page says when it starts
                breakpoints=timing.breakpoints,
                idle_timeout=self.options.idle_timeout,
                pinged=(
                    (collector_host("pixel-keepalive", key), self.options.ping_interval)
                    if "pixel-keepalive" in self.techniques
                    else None
                ),
            ),
            arm=False,
        )
        page = await asyncio.wait_for(context.new_page(), CALL_TIMEOUT)
        notes = _Notes()
        page.on("console", notes.on_console)
        page.on("framenavigated", notes.on_navigated)
        try:
            await page.goto(f"{PAGE_ORIGIN}/visit/{key}", wait_until="load", timeout=LOAD_TIMEOUT_MS)
            begin = page.evaluate("lead => window.lossbenchStart(lead)", START_LEAD_MS)
            start = await asyncio.wait_for(begin, CALL_TIMEOUT) / 1000.0
            visitor.started = plan.start = start
            self.proxy.arm(visitor)
            loop = asyncio.get_running_loop()
            if visit.abort == "drop" and timing.leave is not None:
                loop.call_later(max(0.0, start + timing.leave - time.time()), visitor.vanish)
            if how == "close":
                end = timing.leave
                if end is None:  # never cut: stay until every event's requests are over
                    end = timing.offsets[-1] + GAP_RTTS * net.rtt + net.dns + GAP_EXTRA
                await asyncio.sleep(max(0.0, start + end - time.time()))
                notes.closed = time.time()
                await asyncio.wait_for(page.close(), CALL_TIMEOUT)
            assert plan.record is not None
            record: dict[str, Any] | None
            try:
                record = await asyncio.wait_for(
                    asyncio.shield(plan.record), (timing.leave or 0) + RECORD_TIMEOUT
                )
            except TimeoutError:
                record = notes.record(plan)
            if how == "navigate":
                await _next_page_loaded(page, key)
        finally:
            if not page.is_closed():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(page.close(), CALL_TIMEOUT)
        self._later(self._settle(key, visit, timing, plan, record, visitor))

    def _how(self, visit: Visit, timing: Timing) -> str:
        if timing.leave is None:
            return "close"
        if self.options.exit_how != "auto":
            return self.options.exit_how
        return "navigate" if visit.events and visit.events[-1].type == "outbound" else "close"

    async def _settle(
        self,
        key: str,
        visit: Visit,
        timing: Timing,
        plan: PagePlan,
        record: dict[str, Any] | None,
        visitor: Visitor,
    ) -> None:
        """After late requests had time to leave: write the visit's sent lines, forget the visit."""
        await asyncio.sleep(SETTLE_SECONDS + 2 * visit.net.rtt + visit.net.dns)
        self.pages.remove(key)
        # The visitor stays routable until the run ends: a beacon may leave a busy browser later still,
        # and must reach the collector (then it counts as received, though its line says unwritten).
        logs = visitor.logs
        lines = self._lines(visit, timing, plan, record, logs)
        self.ledger.append_raw(encode_lines(lines), len(lines))
        self.stats.visits += 1
        self.stats.events += len(lines)
        pings = _virtual_pings(visit, self.techniques, self.options.ping_interval)
        if pings:
            self.ledger.append(pings)
        if "pixel-preconnect" in self.techniques:
            first = min((line.t0 for line in lines if line.tech == "pixel-preconnect"), default=None)
            preconnected = _preconnected(logs, "pixel-preconnect", first)
            if preconnected:
                self.ledger.append(preconnected)
        if record is not None and self.keep_records:
            connections = [
                {
                    "host": log.host,
                    "asked": log.asked,
                    "connected": log.connected,
                    "ended": log.ended,
                    "closed": log.closed,
                    "requests": [f"{r.method} {r.target}" for r in log.requests],
                }
                for log in logs
            ]
            self.records.append({**record, "connections": connections})

    def _lines(
        self,
        visit: Visit,
        timing: Timing,
        plan: PagePlan,
        record: dict[str, Any] | None,
        logs: list[ConnectionLog],
    ) -> list[SentEvent]:
        net = visit.net
        if record is None:
            self.stats.records_missing += 1
            fired = {
                e["ids"][t]: (plan.start + e["at"] / 1000.0, e["type"])
                for e in plan.events
                for t in self.techniques
            }
            gone = plan.start + (timing.leave if timing.leave is not None else timing.offsets[-1])
            acked: dict[str, float] = {}
        else:
            self.stats.records_from_console += record.get("from") == "console"
            fired = {f["id"]: (f["t"] / 1000.0, f["type"]) for f in record["fired"]}
            gone = record["gone"] / 1000.0 if record.get("gone") else time.time()
            if timing.leave is not None:  # known only from the page's own record
                self.stats.exit_lags.append(gone - (plan.start + timing.leave))
            acked = record.get("acked", {})
            if record.get("started") and record["started"] / 1000.0 - plan.start > 0.01:
                self.stats.late_starts += 1
        by_host: dict[str, list[ConnectionLog]] = {}
        for log in logs:
            by_host.setdefault(log.host.split(".", 1)[0], []).append(log)
        lines: list[SentEvent] = []
        number = self.visits_recorded
        self.visits_recorded += 1
        for i, event in enumerate(plan.events):
            for tech in self.techniques:
                event_id = event["ids"][tech]
                if event_id not in fired:
                    continue  # never fired: the page went away first (a late page load)
                t0, kind = fired[event_id]
                host_logs = by_host.get(tech, [])
                carried = written_at(host_logs, event_id)
                complete = None if carried is None else carried.complete
                stage = stage_at(host_logs, t0, gone, event_id)
                A = visit.leave_at - visit.events[i].at
                planned = None if timing.leave is None else timing.leave - timing.offsets[i]
                requests, connections = _cost(host_logs, carried, t0, gone)
                lines.append(
                    SentEvent(
                        id=event_id,
                        tech=tech,
                        type=kind,
                        visit=number,
                        at=micro(visit.events[i].at),
                        rtt=micro(net.rtt),
                        dns=micro(net.dns),
                        A=None if math.isinf(A) else micro(A),
                        abort=visit.abort,
                        stage=stage,
                        written=carried is not None,
                        t_written=None if complete is None else micro(complete - t0),
                        acked=event_id in acked,
                        retried=False,
                        requests=requests,
                        connections=connections,
                        # inferred from the proxy: a connection opened for the event, or a pooled one
                        conn="cold" if connections else "warm",
                        preflight=_preflight_state(tech, requests),
                        # timing error: the exit as it happened (pagehide after the actual fire) minus as
                        # planned (A itself, or less where idle time before the exit was compressed)
                        plan={} if planned is None else {"exit": micro(planned)},
                        real={} if planned is None else {"exit": micro(gone - t0)},
                        error="no page record: fire times as planned" if record is None else None,
                        t0=micro(t0),
                    )
                )
        return lines


async def _next_page_loaded(page: Any, key: str) -> None:
    """Wait, at most ``RECORD_TIMEOUT``, until the visit's next page has loaded in ``page``. The record comes
    at ``pagehide``, while the next page commits; a tab closed during that commit is acknowledged by Chromium
    and never closed (measured here): ``page.close()`` would wait out ``CALL_TIMEOUT`` and leave the
    tab open in the worker's browser."""
    with contextlib.suppress(Exception):
        await page.wait_for_url(f"{NEXT_ORIGIN}/next/{key}", wait_until="load", timeout=RECORD_TIMEOUT * 1000)


def _cost(logs: list[ConnectionLog], carried: Request | None, fired: float, gone: float) -> tuple[int, int]:
    """Requests (its preflight included) and new connections an event cost, from the proxy's logs: a
    connection asked for before the event fired is not its cost (a preconnect's: ``_preconnected``)."""
    if carried is None:
        preflights = sum(
            1 for g in logs for r in g.requests if r.method == "OPTIONS" and fired <= r.started <= gone
        )
        opened = sum(1 for g in logs if fired <= g.asked <= gone)
        return min(preflights, 1), min(opened, 1)
    for log in logs:
        if carried in log.requests:
            index = log.requests.index(carried)
            before = log.requests[index - 1] if index else None
            preflight = before is not None and before.method == "OPTIONS" and before.started >= fired
            first = index == 0 or (index == 1 and preflight)
            return 1 + int(preflight), int(first and log.asked >= fired - ASKED_SLACK)
    return 1, 0


def _preconnected(logs: list[ConnectionLog], tech: str, first_fired: float | None) -> SentPing | None:
    """The connections the page's ``<link rel=preconnect>`` opened, asked for before the technique's first
    event (no event line counts them), as a ping line without requests: a cost of the technique."""
    before = math.inf if first_fired is None else first_fired - ASKED_SLACK
    opened = sum(1 for log in logs if log.host.split(".", 1)[0] == tech and log.asked < before)
    return SentPing(ping=tech, requests=0, connections=opened, virtual=False) if opened else None


def _virtual_pings(visit: Visit, techniques: Sequence[str], interval: float) -> SentPing | None:
    """The keep-alive pings the page would have sent while idle time was compressed, as the socket
    client counts them (``virtual`` ping lines)."""
    if "pixel-keepalive" not in techniques or not visit.events:
        return None
    last = visit.events[-1].at
    stayed = min(visit.leave_at, last) if math.isfinite(visit.leave_at) else last
    pings = int(stayed // interval)
    if not pings:
        return None
    return SentPing(ping="pixel-keepalive", requests=pings, connections=0)


def _preflight_state(tech: str, requests: int) -> str:
    """What the proxy saw of a preflight: two requests or more, sent; one, the answer was cached."""
    if tech not in PREFLIGHTED:
        return "none"
    return "sent" if requests >= 2 else "cached" if requests == 1 else "none"
