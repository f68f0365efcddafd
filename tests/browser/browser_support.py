"""Playing hand-made visits in real Chromium against a real collector, for tests; and the skip rule."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from lossbench.collector.config import CollectorConfig
from lossbench.collector.server import CollectorThread
from lossbench.loadgen.browser.chromium import CHROMIUM, Profile
from lossbench.loadgen.browser.player import BrowserOptions, BrowserPlayer
from lossbench.loadgen.player import KEEPALIVE_PING_INTERVAL
from lossbench.model.profiles import NetworkDraw
from lossbench.model.visits import PlannedEvent, Visit

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium (CI installs it)",
)


def visit(
    at: float, exit_after: float, *, rtt: float, dns: float, how: str = "close", abort: str = "unload"
) -> Visit:
    """One event at visit time ``at``; the page goes away ``exit_after`` seconds later, by tab close or by
    navigation started at the event (an outbound click) whose next page answers ``exit_after`` later."""
    kind = "outbound" if how == "navigate" else "click"
    return Visit(NetworkDraw(rtt, dns, None), (PlannedEvent(kind, at),), at + exit_after, abort)


@dataclass
class Played:
    """What a played set of visits left: sent lines by id, received ids, the proxy's names, the sent
    ledger's ping lines and the collector's counters at the end."""

    sent: dict[str, dict]
    received: dict[str, dict]
    names: list[str]
    refused: list[str]
    records: list[dict]
    pings: list[dict]
    stats: dict[str, Any]


def play(
    out: Path,
    visits: Sequence[Visit],
    techniques: Sequence[str],
    *,
    workers: int = 4,
    net_log: Path | None = None,
    ping_interval: float = KEEPALIVE_PING_INTERVAL,
    collector_options: dict[str, Any] | None = None,
    launched: threading.Barrier | None = None,
) -> Played:
    """Play ``visits`` with a fresh collector on loopback (``collector_options``: CollectorConfig fields);
    everything stopped before returning. ``launched``: a barrier that each of this play's ``workers``
    browsers waits at once it is up, so that plays side by side in threads start their visits together,
    after every one of their browsers was launched (launching is what keeps a small machine busy)."""
    collector = CollectorThread(replace(CollectorConfig(port=0, out=out), **(collector_options or {})))
    collector.start()
    try:
        player = _Player(
            launched,
            collector.port,
            out / "sent",
            techniques,
            BrowserOptions(workers=workers, net_log=net_log, ping_interval=ping_interval),
            say=lambda _: None,
        )
        player.keep_records = True
        stats = asyncio.run(player.play(visits))
        assert not stats.errors, stats.errors
        counters = collector.stats()
    finally:
        collector.stop()
    assert player.proxy is not None
    return Played(
        sent=_lines(out / "sent"),
        received=_lines(out / "received"),
        names=list(player.proxy.names),
        refused=list(player.proxy.refused),
        records=player.records,
        pings=[record for record in _read(out / "sent") if "ping" in record],
        stats=counters,
    )


LAUNCH_WAIT = 120.0  # seconds a launched browser waits at the barrier for the others


class _Player(BrowserPlayer):
    """The browser client, its first browsers (one per worker) waiting at ``launched`` once each is up."""

    def __init__(self, launched: threading.Barrier | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.launched = launched

    async def _launch(self, playwright: Any, worker: int, generation: int) -> Profile:
        try:
            browser = await super()._launch(playwright, worker, generation)
        except BaseException:
            if self.launched is not None:
                self.launched.abort()  # the other plays' browsers stop waiting for this one
            raise
        if self.launched is not None and generation == 0:
            try:
                await asyncio.to_thread(self.launched.wait, LAUNCH_WAIT)
            except BaseException:
                await browser.close()
                raise
        return browser


def _read(folder: Path) -> list[dict]:
    return [json.loads(line) for path in folder.glob("*.jsonl") for line in path.read_text().splitlines()]


def _lines(folder: Path) -> dict[str, dict]:
    return {record["id"]: record for record in _read(folder) if "id" in record}
