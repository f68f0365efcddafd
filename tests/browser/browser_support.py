"""Playing hand-made visits in real Chromium against a real collector, for tests; and the skip rule."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from lossbench.collector.config import CollectorConfig
from lossbench.collector.server import CollectorThread
from lossbench.loadgen.browser.chromium import CHROMIUM
from lossbench.loadgen.browser.player import BrowserOptions, BrowserPlayer
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
    """What a played set of visits left: sent lines by id, received ids, the proxy's names."""

    sent: dict[str, dict]
    received: dict[str, dict]
    names: list[str]
    refused: list[str]
    records: list[dict]


def play(
    out: Path,
    visits: Sequence[Visit],
    techniques: Sequence[str],
    *,
    workers: int = 4,
    net_log: Path | None = None,
) -> Played:
    """Play ``visits`` with a fresh collector on loopback; everything stopped before returning."""
    collector = CollectorThread(CollectorConfig(port=0, out=out))
    collector.start()
    try:
        player = BrowserPlayer(
            collector.port,
            out / "sent",
            techniques,
            BrowserOptions(workers=workers, net_log=net_log),
            say=lambda _: None,
        )
        player.keep_records = True
        stats = asyncio.run(player.play(visits))
        assert not stats.errors, stats.errors
    finally:
        collector.stop()
    assert player.proxy is not None
    return Played(
        sent=_lines(out / "sent"),
        received=_lines(out / "received"),
        names=list(player.proxy.names),
        refused=list(player.proxy.refused),
        records=player.records,
    )


def _lines(folder: Path) -> dict[str, dict]:
    lines = {}
    for path in folder.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if "id" in record:
                lines[record["id"]] = record
    return lines
