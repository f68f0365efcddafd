"""The socket half of a calibration leaves each page when Chromium's left: the lags read from the ledger."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lossbench.calibrate import chromium_exit_lags
from lossbench.contract.ledger import micro
from lossbench.model.profiles import NetworkDraw
from lossbench.model.visits import PlannedEvent, Visit


def _line(visit: Visit, event: PlannedEvent, planned: float, real: float, tech: str = "pixel") -> str:
    exit_after = micro(visit.exit_time(event)) if math.isfinite(visit.leave_at) else None
    return json.dumps({
        "id": "x", "tech": tech, "type": event.type, "rtt": micro(visit.net.rtt), "dns": micro(visit.net.dns),
        "A": exit_after, "plan": {"exit": planned}, "real": {"exit": real},
    })  # fmt: skip


def test_each_visit_gets_the_median_lag_of_its_events_matched_by_its_draw(tmp_path: Path) -> None:
    late = Visit(NetworkDraw(0.31, 0.42), (PlannedEvent("pageview", 1.0), PlannedEvent("click", 3.0)), 5.0)
    early = Visit(NetworkDraw(0.25, 0.25), (PlannedEvent("pageview", 1.0),), 2.0)
    never = Visit(NetworkDraw(0.5, 0.5), (PlannedEvent("pageview", 1.0),), math.inf)
    lines = [
        '{"ledger":"sent","schema":1,"host":"h","pid":1,"part":0,"started":0.0}',
        _line(late, late.events[0], 4.0, 4.05),
        _line(late, late.events[1], 2.0, 2.07, tech="ajax"),
        _line(early, early.events[0], 1.0, 0.99),  # closed before its plan: no negative lag
        _line(never, never.events[0], 1.0, 1.5),  # a page that never goes away has no exit to match
        '{"id":"y","tech":"pixel","rtt":0.9,"dns":0.9,"A":1.0,"plan":{"exit":1.0},"real":{"exit":1.2}}',
        '{"id":"truncat',
    ]
    sent = tmp_path / "sent"
    sent.mkdir()
    (sent / "chromium.0.jsonl").write_text("\n".join(lines) + "\n")
    lags = chromium_exit_lags(sent, [late, early, never])
    assert lags == {0: pytest.approx(0.06), 1: 0.0}
