"""The chromium preset's model (lossbench.model.chromium): each technique on the visitor's network state.

Hand-worked visits first (a round trip of 0.1 s, an uncached lookup of 0.2 s), then the predictor against
``plan_visit`` event by event on drawn visits, as the seed's vectorised path is held to its reference.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from lossbench.contract.latency import LatencyHistogram
from lossbench.contract.server import ServerHints
from lossbench.contract.techniques import ALL_TECHNIQUES, STAGES, SURVIVES_UNLOAD
from lossbench.model.browser import KEEPALIVE_QUOTA_BYTES, PING_INTERVAL
from lossbench.model.chromium import AJAX_BODY_BYTES, EventPlan, pings_due, plan_visit
from lossbench.model.exits import get_exit_model
from lossbench.model.predict import (
    Prediction,
    is_lost,
    predict_batch,
    predict_loss,
    stage_at,
    stage_durations,
)
from lossbench.model.profiles import NetworkDraw, get_profile
from lossbench.model.visits import PlannedEvent, Visit, VisitBatch, sample_visits
from support import wide_draws

RTT = 0.1
LOOKUP = 0.2
NET = NetworkDraw(rtt=RTT, dns=LOOKUP)
HINTS = ServerHints(idle_timeout=30.0, cors_max_age=0.0)
"""The collector closes a connection idle 30 s; no preflight answer is cached."""
CACHED = ServerHints(idle_timeout=30.0, cors_max_age=600.0)
"""... or cached ten minutes."""


def visit(*times: float, net: NetworkDraw = NET, leave_at: float = math.inf, abort: str = "unload") -> Visit:
    return Visit(net, tuple(PlannedEvent("click", t) for t in times), leave_at, abort)


def plans(tech: str, *times: float, server: ServerHints = HINTS) -> list[EventPlan]:
    return plan_visit(visit(*times), tech, server)


# -- the page's own requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "conn", "dns", "connect"),
    [
        (0.1, "cold", 0.1, RTT),  # the ping's connection is busy until 0.4: its own, after the lookup's rest
        (0.35, "pending", 0.0, 0.05),  # a new handshake would end at 0.45; the ping's frees at 0.4
        (0.5, "warm", 0.0, 0.0),
    ],
)
def test_prewarms_first_event_races_the_pings_connection(
    at: float, conn: str, dns: float, connect: float
) -> None:
    """The ping at page load looks up until 0.2, connects until 0.3, has its answer at 0.4: an event
    before then opens its own connection or waits for the ping's, whichever is ready first."""
    (plan,) = plans("pixel-prewarm", at)
    assert plan.conn == conn and plan.preflight == "none"
    assert plan.stages == pytest.approx({"dns": dns, "connect": connect, "request": 0.0})


def test_keepalive_pings_every_20_s() -> None:
    assert PING_INTERVAL == 20.0
    assert pings_due("pixel-keepalive", 0.0, 45.0) == [20.0, 40.0]
    assert pings_due("pixel-keepalive", 20.0, 60.0) == [40.0, 60.0]
    assert pings_due("pixel-keepalive", 41.0, 59.9) == []
    assert pings_due("pixel-prewarm", 0.0, 100.0) == pings_due("pixel", 0.0, 100.0) == []


@pytest.mark.parametrize(
    ("at", "prewarm"),
    [
        (30.35, ("stale", 2 * RTT)),  # in the last round trip before the collector's close at 30.4
        (45.0, ("cold", RTT)),  # closed; the lookup is still cached (until 60.2)
        (75.0, ("cold", LOOKUP + RTT)),  # closed, and the lookup is stale
    ],
)
def test_keepalive_pings_keep_the_connection_past_the_collectors_timeout(
    at: float, prewarm: tuple[str, float]
) -> None:
    """The ping at load leaves a connection idle from 0.4; the collector closes it after 30 s. prewarm's
    event finds it closed (or closing); keep-alive's pings at 20, 40, 60 s reuse it before it is, so its
    event finds it warm, whatever the host cache."""
    (keepalive,) = plans("pixel-keepalive", at)
    assert (keepalive.conn, keepalive.written) == ("warm", 0.0)
    (plan,) = plans("pixel-prewarm", at)
    assert plan.conn == prewarm[0] and plan.written == pytest.approx(prewarm[1])
    assert plan.stages["connect"] == pytest.approx(prewarm[1] - plan.stages["dns"])


def test_keepalive_over_a_long_visit() -> None:
    """Events minutes apart on the kept connection: never a wait."""
    assert [(p.conn, p.written) for p in plans("pixel-keepalive", 45.0, 90.0, 135.0, 290.0)] == [
        ("warm", 0.0)
    ] * 4


@pytest.mark.parametrize(
    ("at", "conn", "dns", "connect"),
    [
        (0.1, "pending", 0.1, RTT),  # joins the handshake under way: the lookup's rest, then the handshake
        (10.25, "warm", 0.0, 0.0),
        (10.35, "cold", 0.0, RTT),  # unused 10 s since 0.3: dropped; the lookup is still cached
    ],
)
def test_preconnects_unused_connection_dies_after_10_s(
    at: float, conn: str, dns: float, connect: float
) -> None:
    (plan,) = plans("pixel-preconnect", at)
    assert plan.conn == conn
    assert plan.stages == pytest.approx({"dns": dns, "connect": connect, "request": 0.0})


def test_preconnects_connection_once_used_lives_as_a_used_one() -> None:
    """Used at 5 s (answer at 5.1), it is a used connection: the collector's 30 s apply, not the 10 s."""
    assert [p.conn for p in plans("pixel-preconnect", 5.0, 25.0)] == ["warm", "warm"]


def test_a_plain_pixel_has_no_page_load() -> None:
    (plan,) = plans("pixel", 5.0)
    assert plan.conn == "cold" and plan.stages == pytest.approx(
        {"dns": LOOKUP, "connect": RTT, "request": 0.0}
    )


def test_a_stale_connections_lost_round_trip_is_counted_in_connect_after_the_lookup() -> None:
    """A collector closing idle connections after 75 s closes the ping's (idle since 0.4) at 75.4. An
    event at 75.35 loses a round trip on it, looks up again (the entry filled at 0.2 is stale) and
    connects. Model and client (``PooledTab.fire``) both keep the stages' order, the lookup first, then
    everything spent getting a usable connection: a cut 0.15 s after the event is in dns, later in
    connect."""
    (plan,) = plan_visit(visit(75.35), "pixel-prewarm", ServerHints(idle_timeout=75.0, cors_max_age=0.0))
    assert plan.conn == "stale" and plan.written == pytest.approx(2 * RTT + LOOKUP)
    assert plan.stages == pytest.approx({"dns": LOOKUP, "connect": 2 * RTT, "request": 0.0})
    assert [stage_at(plan.stages, a) for a in (LOOKUP / 2, LOOKUP + RTT, LOOKUP + 2.5 * RTT)] == [
        "dns",
        "connect",
        "done",
    ]


# -- preflights ----------------------------------------------------------------------------------------


def test_ajax_with_a_max_age_sends_one_preflight_then_reuses_it() -> None:
    """The first event looks up, connects and preflights (answer at 1.4, data written at 1.4, answer to
    the POST at 1.5); the next ones reuse the connection and the cached answer: nothing to wait for."""
    first, *rest = plans("ajax", 1.0, 2.0, 3.0, server=CACHED)
    assert (first.conn, first.preflight) == ("cold", "sent")
    assert first.stages == pytest.approx(
        {"dns": LOOKUP, "connect": RTT, "preflight": RTT, "headers": 0.0, "body": 0.0}
    )
    for plan in rest:
        assert (plan.conn, plan.preflight, plan.written) == ("warm", "cached", 0.0)
        assert list(plan.stages) == list(STAGES["ajax"])


def test_ajax_with_max_age_0_preflights_every_event() -> None:
    out = plans("ajax", 1.0, 2.0, 3.0)
    assert [(p.conn, p.preflight) for p in out] == [("cold", "sent"), ("warm", "sent"), ("warm", "sent")]
    assert [p.written for p in out] == pytest.approx([0.4, RTT, RTT])


def test_an_answer_on_its_way_is_not_reused() -> None:
    """The first answer arrives at 1.4: an event at 1.35 preflights too (on a connection of its own, the
    first being busy until 1.5), one at 2 finds an answer cached."""
    out = plans("ajax", 1.0, 1.35, 2.0, server=CACHED)
    assert [p.preflight for p in out] == ["sent", "sent", "cached"]
    assert out[1].conn == "cold" and out[1].written == pytest.approx(2 * RTT)


def test_an_event_between_two_answers_finds_the_first() -> None:
    """Answers arrive at 1.4 (the event at 1.0) and 1.55 (the one at 1.35): an event at 1.45 finds the
    first cached."""
    out = plans("ajax", 1.0, 1.35, 1.45, server=CACHED)
    assert [p.preflight for p in out] == ["sent", "sent", "cached"]


def test_ajax_cachebust_never_reuses_an_answer() -> None:
    """Each POST has its own URL: a preflight every time, whatever the max-age; the connection is
    reused all the same."""
    out = plans("ajax-cachebust", 1.0, 2.0, 3.0, server=CACHED)
    assert [(p.conn, p.preflight) for p in out] == [("cold", "sent"), ("warm", "sent"), ("warm", "sent")]
    assert [p.written for p in out] == pytest.approx([0.4, RTT, RTT])
    assert [p.preflight for p in plans("fetch-keepalive", 1.0, 2.0, server=CACHED)] == ["sent", "cached"]


def test_the_preflight_waits_for_the_collectors_answer() -> None:
    out = plan_visit(visit(1.0, 2.0), "ajax", HINTS, [0.05, 0.25])
    assert [p.stages["preflight"] for p in out] == pytest.approx([RTT + 0.05, RTT + 0.25])
    out = plan_visit(visit(1.0, 2.0), "ajax", CACHED, [0.05, 0.25])
    assert [p.stages["preflight"] for p in out] == pytest.approx([RTT + 0.05, 0.0])


def test_the_body_is_paced_by_the_uplink() -> None:
    slow = NetworkDraw(rtt=RTT, dns=LOOKUP, uplink_bps=AJAX_BODY_BYTES * 8 / 0.3)
    (plan,) = plan_visit(visit(1.0, net=slow), "fetch-keepalive", HINTS)
    assert plan.stages["body"] == pytest.approx(0.3)
    (plan,) = plan_visit(visit(1.0, net=slow), "beacon", HINTS)
    assert plan.written == pytest.approx(LOOKUP + RTT)  # one write, as a pixel's


# -- keepalive requests --------------------------------------------------------------------------------


@pytest.mark.parametrize("tech", sorted(SURVIVES_UNLOAD))
def test_keepalive_requests_outlive_an_unload_but_not_a_drop(tech: str) -> None:
    """A click at 5 s, the page gone 0.05 s later, in the lookup (the cut at 0 under drop): lost under
    drop, not under unload. Gone 1 s later: written long before, under either (the drop's cut at 0.95)."""
    for abort, leave, lost in (
        ("unload", 5.05, 0.0),
        ("drop", 5.05, 1.0),
        ("unload", 6.0, 0.0),
        ("drop", 6.0, 0.0),
    ):
        batch = VisitBatch.of([visit(5.0, leave_at=leave, abort=abort)] * 10)
        pred = predict_batch(batch, [tech, "pixel"], browser="chromium", server=HINTS)
        assert pred[tech].loss == lost, (abort, leave)
        if leave == 5.05:
            assert pred[tech].by_stage["dns"] == 1.0  # cut where it was, delivered all the same on unload
            assert pred["pixel"].loss == 1.0


def test_over_the_keepalive_quota_a_beacon_is_refused_and_lost() -> None:
    """Beacons of 180 bytes, all in flight at once (answers 2 s or more later on a 1 s round trip): 364 fit
    in 64 KiB, the 365th is refused. Once their answers are in, a beacon fits again."""
    fits = KEEPALIVE_QUOTA_BYTES // AJAX_BODY_BYTES
    assert fits == 364
    slow = NetworkDraw(rtt=1.0, dns=0.5)
    page = visit(*[1.0] * 400, 1000.0, net=slow, leave_at=1001.0)
    out = plan_visit(page, "beacon", HINTS)
    assert [p.refused for p in out] == [False] * fits + [True] * (400 - fits) + [False]
    assert out[fits] == EventPlan({}, "none", "none", refused=True)
    pred = predict_batch(VisitBatch.of([page]), ["beacon"], browser="chromium", server=HINTS)
    assert pred["beacon"].by_stage["unsent"] == pred["beacon"].loss == pytest.approx(36 / 401)


# -- the predictor against plan_visit, event by event --------------------------------------------------


def reference(
    visits: list[Visit], tech: str, server: ServerHints, answers: list[list[float] | None], n: int
) -> tuple[float, Counter[str], Counter[str]]:
    """Loss and events by stage at the cut (all, lost) of the first ``n`` events, from ``plan_visit``."""
    by: Counter[str] = Counter()
    lost_by: Counter[str] = Counter()
    k = 0
    for v, answer in zip(visits, answers, strict=True):
        for event, plan in zip(v.events, plan_visit(v, tech, server, answer), strict=True):
            if k == n:
                break
            k += 1
            a = v.exit_time(event)
            if plan.refused:
                stage, lost = "unsent", True
            else:
                stage = stage_at(plan.stages, a)
                survives = tech in SURVIVES_UNLOAD and v.abort == "unload"
                lost = not survives and is_lost(a, plan.written, v.net.rtt, v.abort)
            by[stage] += 1
            lost_by[stage] += lost
    return sum(lost_by.values()) / k, by, lost_by


def assert_agrees(pred: Prediction, expected: tuple[float, Counter[str], Counter[str]], tech: str) -> None:
    loss, by, lost_by = expected
    n = pred.events
    assert pred.loss == pytest.approx(loss), tech
    assert list(pred.by_stage) == [*STAGES[tech], "done", *(["unsent"] if by["unsent"] else [])], tech
    assert pred.by_stage == pytest.approx({s: by[s] / n for s in pred.by_stage}), tech
    assert pred.lost_by_stage == pytest.approx({s: lost_by[s] / n for s in pred.lost_by_stage}), tech


@pytest.mark.parametrize("spec", ["mix", "dwell", "outbound:gap_median=50"])
@pytest.mark.parametrize("abort", ["unload", "drop"])
@pytest.mark.parametrize("answered", [False, True])
def test_predict_batch_agrees_with_plan_visit(spec: str, abort: str, answered: bool) -> None:
    """Three hundred drawn visits on a wide network (long lookups, round trips from a few ms to seconds),
    a collector closing idle connections after 20 s and caching answers 5 s (no max-age header):
    the prediction's loss and stages are those of ``plan_visit``'s events. ``answered``: each preflight
    also waits for a measured answer time (1 ms to 2 s)."""
    visits, batch, answer, per_visit = wide_draws(spec, abort, 300, answered)
    server = ServerHints(idle_timeout=20.0, cors_max_age=None)
    preds = predict_batch(batch, ALL_TECHNIQUES, preflight_answer=answer, browser="chromium", server=server)
    for tech in ALL_TECHNIQUES:
        assert_agrees(preds[tech], reference(visits, tech, server, per_visit, batch.events), tech)
        for v, a in zip(visits[:20], per_visit[:20], strict=True):
            stages = stage_durations(v, tech, a, browser="chromium", server=server)
            assert stages == [p.stages for p in plan_visit(v, tech, server, a)]


@pytest.mark.parametrize("abort", ["unload", "drop"])
def test_predict_loss_agrees_with_plan_visit(abort: str) -> None:
    """predict_loss draws its visits, then the answer times, from the seed: the same draws give
    ``plan_visit``'s answer, the last visit cut short at ``events``."""
    events, seed = 3_001, 17
    measured = LatencyHistogram()
    for seconds in (0.002, 0.02, 0.2):
        measured.add(seconds)
    rng = np.random.default_rng(seed)
    batch = sample_visits(get_profile("3G"), get_exit_model("mix"), abort, rng, events=events)
    answer = measured.sample(rng, batch.events).tolist()
    visits = batch.visits()
    starts = np.cumsum([0] + [len(v.events) for v in visits]).tolist()
    per_visit: list[list[float] | None] = [answer[a:b] for a, b in itertools.pairwise(starts)]
    preds = predict_loss(
        "3G", "mix", abort, ALL_TECHNIQUES, seed=seed, events=events, preflight_answers=measured,
        browser="chromium", server=CACHED,
    )  # fmt: skip
    assert batch.events > events  # the last visit is cut short
    for tech in ALL_TECHNIQUES:
        assert preds[tech].events == events
        assert_agrees(preds[tech], reference(visits, tech, CACHED, per_visit, events), tech)
