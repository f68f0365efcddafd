"""The socket client and the model, event by event, on the same visits against the real collector.

Both presets: the client plays drawn visits on real sockets (idle time compressed), the model plans the
same visits, and every event must agree on what it found (``conn``), on how long it waited for DNS (the
host cache: a cache that disagrees shows here first), on what it did about the preflight, and on whether it
was lost — where the cut is not within a few milliseconds of the data being written (the collector's real
answer to a preflight joins the client's timeline; the model takes it as 0).
"""

from __future__ import annotations

import threading

import pytest

from lossbench.calibrate import BrowserRunOptions, draw_visits
from lossbench.contract.techniques import ALL_TECHNIQUES, SEED_TECHNIQUES, SURVIVES_UNLOAD
from lossbench.loadgen.player import EventIds, PlayedEvent, play_visit
from lossbench.model.chromium import plan_visit
from lossbench.model.predict import stage_durations

MARGIN = 0.05  # seconds: closer cuts may go either way on the collector's real answer time (threads here)


def _play(port: int, visits, techniques, browser: str) -> list[PlayedEvent]:
    played: list[PlayedEvent] = []
    lock = threading.Lock()

    def record(event: PlayedEvent) -> None:
        with lock:
            played.append(event)

    slots = threading.Semaphore(10)
    threads = []

    def one(visit) -> None:
        try:
            play_visit(visit, ("127.0.0.1", port), techniques, EventIds(), record, browser=browser)
        finally:
            slots.release()

    for visit in visits:
        slots.acquire()
        thread = threading.Thread(target=one, args=(visit,))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(60)
    return played


@pytest.mark.parametrize(("profile", "exit_model", "visits"), [("3G", "mix", 30), ("Cable", "outbound", 100)])
def test_the_chromium_client_and_model_agree_event_by_event(collector, profile, exit_model, visits):
    drawn = draw_visits(BrowserRunOptions(profile=profile, exit_model=exit_model, seed=5, visits=visits))
    played = _play(collector.port, drawn, ALL_TECHNIQUES, "chromium")
    assert len(played) == len(ALL_TECHNIQUES) * sum(len(v.events) for v in drawn)
    planned = {
        (id(v), tech, event.at): (plan, v.exit_time(event))
        for v in drawn
        for tech in ALL_TECHNIQUES
        for event, plan in zip(v.events, plan_visit(v, tech), strict=True)
    }
    decided = 0
    for event in played:
        result = event.result
        plan, exit_after = planned[(id(event.visit), result.tech, event.at)]
        assert result.error is None, result.error
        assert result.conn == plan.conn, (result.tech, event.at)
        assert result.preflight == plan.preflight, (result.tech, event.at)
        if "dns" in result.plan and result.conn != "stale":  # marks are stage ends; a stale one's lost
            # round trip comes first. A cut during the lookup leaves no mark.
            assert result.plan["dns"] == pytest.approx(plan.stages["dns"], abs=1e-9)
        if result.tech in SURVIVES_UNLOAD or abs(exit_after - plan.written) > MARGIN:
            lost = result.tech not in SURVIVES_UNLOAD and exit_after < plan.written
            assert (result.stage != "done") == lost, (result.tech, event.at, exit_after, plan.written)
            decided += 1
    assert decided > 0.9 * len(played)


def test_the_seed_client_and_model_agree_event_by_event(collector):
    """The first model: the DNS cache of every technique, pre-warm included, as the model has it (a
    disagreement here is what a pre-warm event paying a full lookup the model did not expect would be)."""
    exit_model = "outbound:gap_median=60"  # half the clicks come after the DNS entry's 60 s lifetime
    drawn = draw_visits(BrowserRunOptions(profile="3G", exit_model=exit_model, seed=3, visits=60))
    assert sum(e.at > 60 for v in drawn for e in v.events) > 20
    played = _play(collector.port, drawn, SEED_TECHNIQUES, "seed")
    planned = {
        (id(v), tech, event.at): (stages, v.exit_time(event))
        for v in drawn
        for tech in SEED_TECHNIQUES
        for event, stages in zip(v.events, stage_durations(v, tech, browser="seed"), strict=True)
    }
    for event in played:
        result = event.result
        stages, exit_after = planned[(id(event.visit), result.tech, event.at)]
        assert result.conn == "none"
        if "dns" in result.plan:
            assert result.plan["dns"] == pytest.approx(stages["dns"], abs=1e-9)
        written = sum(stages.values())
        if abs(exit_after - written) > MARGIN:
            assert (result.stage != "done") == (exit_after < written), (result.tech, event.at)
