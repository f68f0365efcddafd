"""Kept-alive connections, and delivery without cuts: every event exactly once."""

from __future__ import annotations

import time

import pytest

from lossbench.contract.techniques import SEED_TECHNIQUES
from lossbench.loadgen.techniques import Tab
from lossbench.model.profiles import NetworkDraw
from support import received_ids, wait_until


def test_many_events_over_one_kept_connection(collector, tmp_path):
    tab = Tab(("127.0.0.1", collector.port), NetworkDraw(rtt=0.0, dns=0.0))
    tab.page_load(["pixel-keepalive"])
    results = [tab.fire("pixel-keepalive", f"ka-{i}", visit_time=1.0) for i in range(200)]
    tab.close()
    assert all(r.written and r.acked and not r.retried and r.connections == 0 for r in results)
    assert wait_until(lambda: sum(received_ids(tmp_path).values()) == 200)
    stats = collector.stats()
    assert stats["connections_total"] == 1
    assert stats["pings"] == 1
    assert stats["events"] == {"pixel-keepalive": 200}


def test_collector_closing_idle_connection_then_retry_delivers(collector_factory, tmp_path):
    collector = collector_factory(idle_timeout=0.2)
    tab = Tab(("127.0.0.1", collector.port), NetworkDraw(rtt=0.02, dns=0.02))
    tab.page_load(["pixel-keepalive"])
    first = tab.fire("pixel-keepalive", "before-idle", visit_time=1.0)
    assert wait_until(lambda: collector.stats()["idle_timeouts"] == 1)
    second = tab.fire("pixel-keepalive", "after-idle", visit_time=2.0)
    tab.close()
    assert first.written and not first.retried
    assert second.written and second.acked and second.retried and second.connections == 1
    # Found closed: a new connection costs one connect round trip before the GET.
    assert second.t_written == pytest.approx(0.02, abs=0.01)
    assert wait_until(lambda: received_ids(tmp_path) == {"before-idle": 1, "after-idle": 1})


def test_closed_under_the_request_is_retried_once(collector_factory, tmp_path, monkeypatch):
    """The race a browser meets: the GET is written on a connection the collector already closed. The
    client learns it one RTT later and retries once on a new connection."""
    collector = collector_factory(idle_timeout=0.2)
    tab = Tab(("127.0.0.1", collector.port), NetworkDraw(rtt=0.02, dns=0.02))
    tab.page_load(["pixel-keepalive"])
    assert wait_until(lambda: collector.stats()["idle_timeouts"] == 1)
    monkeypatch.setattr(type(tab.keepalive), "looks_closed", lambda self: self.sock is None)
    result = tab.fire("pixel-keepalive", "raced", visit_time=1.0)
    tab.close()
    assert result.retried and result.written and result.acked
    assert result.requests == 2
    assert result.t_written == pytest.approx(0.04, abs=0.015)  # RST learned after 1 RTT, then connect
    assert wait_until(lambda: received_ids(tmp_path) == {"raced": 1})


def test_pings_keep_the_connection_alive(collector_factory, tmp_path):
    collector = collector_factory(idle_timeout=0.3)
    tab = Tab(("127.0.0.1", collector.port), NetworkDraw())
    tab.page_load(["pixel-keepalive"])
    for _ in range(5):
        time.sleep(0.15)
        tab.keepalive_tick()
    result = tab.fire("pixel-keepalive", "kept", visit_time=1.0)
    tab.close()
    assert result.written and not result.retried
    stats = collector.stats()
    assert stats["idle_timeouts"] == 0
    assert stats["pings"] == 6


def test_no_cut_every_event_received_exactly_once(collector, tmp_path):
    per_technique = 60
    sent: list[str] = []
    for n in range(per_technique):
        tab = Tab(("127.0.0.1", collector.port), NetworkDraw(rtt=0.001, dns=0.001))
        tab.page_load(SEED_TECHNIQUES)
        for tech in SEED_TECHNIQUES:
            event_id = f"{tech}-{n}"
            result = tab.fire(tech, event_id, exit_after=None, visit_time=0.5)
            assert result.written and result.acked, result
            sent.append(event_id)
        tab.close()
    assert wait_until(lambda: sum(received_ids(tmp_path).values()) >= len(sent))
    received = received_ids(tmp_path)
    assert set(received) == set(sent)
    assert all(count == 1 for count in received.values())
    stats = collector.stats()
    assert stats["events"] == dict.fromkeys(SEED_TECHNIQUES, per_technique)
