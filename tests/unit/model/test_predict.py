"""The model's predicted loss: hand-worked answers, the vectorised path against the reference, properties."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossbench.contract.latency import LatencyHistogram
from lossbench.contract.techniques import STAGES, TECHNIQUES
from lossbench.model.dns import DNS_TTL
from lossbench.model.exits import get_exit_model
from lossbench.model.predict import (
    AJAX_BODY_BYTES,
    data_written_times,
    is_lost,
    predict_batch,
    predict_loss,
    stage_at,
    stage_durations,
    stage_matrix,
)
from lossbench.model.profiles import NetworkDraw, NetworkProfile
from lossbench.model.visits import PlannedEvent, Visit, VisitBatch
from lossbench.stats import wilson_interval

# rtt exactly 0.1 s, an uncached lookup exactly 0.1 s, no uplink limit.
EXACT = NetworkProfile("exact", rtt=0.1)
NET = NetworkDraw(rtt=0.1, dns=0.1)


def fixed(spec: str, abort: str = "unload", profile: NetworkProfile = EXACT, events: int = 50) -> dict:
    return predict_loss(profile, spec, abort, TECHNIQUES, seed=0, events=events)


def one_event(at: float, net: NetworkDraw = NET) -> Visit:
    return Visit(net, (PlannedEvent("click", at),), leave_at=math.inf)


# ---------------------------------------------------------------------------------- hand-worked answers


def test_written_times_one_event_after_warm_up() -> None:
    # At 5 s: prewarm's lookup (0..0.1) is cached, keep-alive's connection (ready at 0.2) is open.
    v = one_event(5.0)
    assert data_written_times(v, "ajax") == pytest.approx([0.3])  # dns + connect + preflight
    assert data_written_times(v, "pixel") == pytest.approx([0.2])  # dns + connect
    assert data_written_times(v, "pixel-prewarm") == pytest.approx([0.1])  # connect
    assert data_written_times(v, "pixel-keepalive") == pytest.approx([0.0])


def test_written_times_event_during_warm_up() -> None:
    v = one_event(0.05)
    assert data_written_times(v, "pixel-prewarm") == pytest.approx([0.15])  # 0.05 left of the lookup
    assert data_written_times(v, "pixel-keepalive") == pytest.approx([0.15])  # connection ready at 0.2
    assert data_written_times(v, "pixel") == pytest.approx([0.2])


def test_ajax_body_is_paced_by_the_uplink() -> None:
    up = AJAX_BODY_BYTES * 8 / 0.1  # a body that takes exactly 0.1 s
    v = one_event(5.0, NetworkDraw(rtt=0.1, dns=0.1, uplink_bps=up))
    assert data_written_times(v, "ajax") == pytest.approx([0.4])
    assert data_written_times(v, "pixel") == pytest.approx([0.2])  # the GET carries no body


def test_dns_cache_in_flight_and_ttl() -> None:
    events = tuple(PlannedEvent("click", t) for t in (0.5, 0.55, 70.0, 71.0))
    v = Visit(NET, events, leave_at=math.inf)
    # 0.5: full lookup, fills at 0.6; 0.55: waits the 0.05 left; 70: stale (0.6 + 60 < 70), refills at
    # 70.1; 71: fresh.
    assert data_written_times(v, "pixel") == pytest.approx([0.2, 0.15, 0.2, 0.1])
    # prewarm's entry filled at 0.1 by the ping is fresh for the first two, stale at 70 (hits don't extend).
    assert data_written_times(v, "pixel-prewarm") == pytest.approx([0.1, 0.1, 0.2, 0.1])
    assert data_written_times(v, "pixel-keepalive") == pytest.approx([0.0, 0.0, 0.0, 0.0])
    assert [p["dns"] for p in stage_durations(v, "ajax")] == pytest.approx([0.1, 0.05, 0.1, 0.0])


@pytest.mark.parametrize(("at", "written"), [(DNS_TTL, 0.1), (DNS_TTL + 0.09, 0.1), (DNS_TTL + 0.1, 0.2)])
def test_prewarm_ttl_edge(at: float, written: float) -> None:
    # The ping's entry is filled at 0.1 and fresh while at < 60.1.
    assert data_written_times(one_event(at), "pixel-prewarm") == pytest.approx([written])


def test_stage_at() -> None:
    (plan,) = stage_durations(one_event(5.0), "ajax")
    assert list(plan) == list(STAGES["ajax"])
    assert [stage_at(plan, t) for t in (0.0, 0.05, 0.15, 0.25, 0.31)] == [
        "dns",
        "dns",
        "connect",
        "preflight",
        "done",
    ]


def test_is_lost() -> None:
    assert is_lost(0.25, 0.3, 0.1, "unload") and not is_lost(0.3, 0.3, 0.1, "unload")
    assert is_lost(0.34, 0.3, 0.1, "drop") and not is_lost(0.36, 0.3, 0.1, "drop")
    assert not is_lost(math.inf, 10.0, 0.1, "drop")


# ------------------------------------------------------------------------------ predictions, exact cuts


def test_fixed_cut_unload_vs_drop() -> None:
    # A = 0.34: ajax (T = 0.3) makes it on unload; on drop the cut is at 0.29, inside its preflight.
    unload, drop = fixed("fixed:0.34"), fixed("fixed:0.34", "drop")
    assert {t: p.loss for t, p in unload.items()} == dict.fromkeys(TECHNIQUES, 0.0)
    assert drop["ajax"].loss == 1.0 and drop["pixel"].loss == 0.0
    assert drop["ajax"].by_stage["done"] == 1.0  # the client had written it all: lost in flight
    assert drop["ajax"].lost_by_stage["done"] == 1.0


@pytest.mark.parametrize(
    ("spec", "lost_in"),
    [
        ("fixed:0.05", {"ajax": "dns", "pixel": "dns", "pixel-prewarm": "connect"}),
        ("fixed:0.15", {"ajax": "connect", "pixel": "connect"}),
        ("fixed:0.25", {"ajax": "preflight"}),
        ("fixed:0.35@0.05", {"ajax": "done", "pixel": "done"}),  # survives: A = 0.35 > T
        ("fixed:0.12@0.05", dict.fromkeys(TECHNIQUES, "connect")),
    ],
)
def test_fixed_cut_stage(spec: str, lost_in: dict[str, str]) -> None:
    preds = fixed(spec)
    for tech, p in preds.items():
        stage = lost_in.get(tech, "done")
        assert p.by_stage[stage] == 1.0, (tech, p.by_stage)
        assert p.loss == (0.0 if stage == "done" else 1.0), tech
        assert p.events == 50


def test_keepalive_on_drop_loses_the_last_half_rtt() -> None:
    assert fixed("fixed:0.04", "drop")["pixel-keepalive"].loss == 1.0  # T = 0 but A - rtt/2 < 0
    assert fixed("fixed:0.06", "drop")["pixel-keepalive"].loss == 0.0
    assert fixed("fixed:0", "unload")["pixel-keepalive"].loss == 0.0


def test_ttl_expiry_in_prediction() -> None:
    # At 61 s the prewarm entry (filled at 0.1) is stale: a full lookup again, T = 0.2, A = 0.15 cuts it.
    assert fixed("fixed:0.15@59")["pixel-prewarm"].loss == 0.0
    assert fixed("fixed:0.15@61")["pixel-prewarm"].loss == 1.0
    assert fixed("fixed:0.15@61")["pixel-prewarm"].by_stage["connect"] == 1.0


def test_zero_loss_controls() -> None:
    for profile in ("loopback", "3G"):
        for abort in ("unload", "drop"):
            spec = "mix" if profile == "loopback" else "none"
            preds = predict_loss(profile, spec, abort, TECHNIQUES, seed=1, events=20_000)
            assert all(p.loss == 0.0 for p in preds.values()), (profile, spec, abort)


# ------------------------------------------------------------------------------------ Monte Carlo


def test_seeded_and_exact_event_count() -> None:
    a = predict_loss("3G", "mix", "unload", TECHNIQUES, seed=42, events=30_000)
    b = predict_loss("3G", "mix", "unload", TECHNIQUES, seed=42, events=30_000)
    c = predict_loss("3G", "mix", "unload", TECHNIQUES, seed=43, events=30_000)
    assert a == b
    assert a != c
    assert all(p.events == 30_000 for p in a.values())


def test_prediction_shape_and_interval() -> None:
    preds = predict_loss("3G", "mix", "drop", TECHNIQUES, seed=3, events=30_000)
    for tech, p in preds.items():
        assert list(p.by_stage) == [*STAGES[tech], "done"]
        assert sum(p.by_stage.values()) == pytest.approx(1.0)
        assert sum(p.lost_by_stage.values()) == pytest.approx(p.loss)
        assert p.ci95[0] <= p.loss <= p.ci95[1]
        assert p.as_dict()["loss"] == p.loss


def test_ordering_on_outbound_3g() -> None:
    for abort in ("unload", "drop"):
        preds = predict_loss("3G", "outbound", abort, TECHNIQUES, seed=5, events=100_000)
        loss = [preds[t].loss for t in TECHNIQUES]
        assert loss == sorted(loss, reverse=True), (abort, loss)
        assert loss[0] > 0.05  # the preflight costs ajax a round trip the next page does not wait for


def test_prediction_is_fast() -> None:
    start = time.perf_counter()
    predict_loss("3G", "mix", "unload", TECHNIQUES, seed=0, events=200_000)
    assert time.perf_counter() - start < 2.0


def test_wilson_interval() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_errors() -> None:
    with pytest.raises(ValueError, match="unknown technique 'beacon'"):
        predict_loss("3G", "mix", "unload", ["beacon"], seed=0, events=10)
    with pytest.raises(ValueError, match="unknown abort"):
        predict_loss("3G", "mix", "close", TECHNIQUES, seed=0, events=10)
    with pytest.raises(ValueError, match="unknown network profile"):
        predict_loss("4G", "mix", "unload", TECHNIQUES, seed=0, events=10)


def test_the_preflight_waits_for_the_collectors_answer() -> None:
    """Two events, the first with a lookup (0.1 s), the second with a warm cache: ajax writes its data after
    dns + connect (an RTT) + preflight (an RTT + the collector's answer); a pixel waits for no answer."""
    visit = Visit(NET, (PlannedEvent("click", 0.0), PlannedEvent("click", 10.0)), leave_at=math.inf)
    assert data_written_times(visit, "ajax") == pytest.approx([0.3, 0.2])
    assert data_written_times(visit, "ajax", [0.05, 0.25]) == pytest.approx([0.35, 0.45])
    assert data_written_times(visit, "pixel", [0.05, 0.25]) == data_written_times(visit, "pixel")


def test_a_queue_aware_prediction_rises_with_the_answer_time() -> None:
    """Measured preflight answer times lengthen ajax's preflight: its loss rises with them, the pixels'
    does not move; without answer times (None, or an empty histogram) the prediction is bit for bit the one
    without the argument."""
    args = ("3G", "mix", "unload", TECHNIQUES)
    plain = predict_loss(*args, seed=3, events=50_000)
    assert predict_loss(*args, seed=3, events=50_000, preflight_answers=None) == plain
    assert predict_loss(*args, seed=3, events=50_000, preflight_answers=LatencyHistogram()) == plain
    losses = []
    for seconds in (0.001, 0.05, 0.3, 1.0):
        measured = LatencyHistogram(counts={})
        for _ in range(20):
            measured.add(seconds)
        pred = predict_loss(*args, seed=3, events=50_000, preflight_answers=measured)
        assert {t: pred[t] for t in TECHNIQUES if t != "ajax"} == {
            t: plain[t] for t in TECHNIQUES if t != "ajax"
        }
        losses.append(pred["ajax"].loss)
    assert plain["ajax"].loss <= losses[0] < losses[1] < losses[2] < losses[3]
    assert losses[3] > plain["ajax"].loss + 0.05


# ------------------------------------------------------------- vectorised path against the reference


@pytest.mark.parametrize("spec", ["mix", "dwell", "outbound:gap_median=50"])
@pytest.mark.parametrize("abort", ["unload", "drop"])
@pytest.mark.parametrize("answered", [False, True])
def test_vectorised_matches_reference(spec: str, abort: str, answered: bool) -> None:
    """``answered``: each event's preflight also waits for a collector answer time drawn from a histogram
    of measured ones (spread from 1 ms to 2 s)."""
    rng = np.random.default_rng(8)
    profile = NetworkProfile("wide", rtt=0.3, rtt_spread=0.8, dns_miss_prob=0.5, dns_miss_extra=0.2)
    model = get_exit_model(spec)
    visits = [model.draw_visit(rng, profile.draw(rng), abort) for _ in range(400)]
    batch = VisitBatch.of(visits)
    answer = None
    per_visit: list[list[float] | None] = [None] * len(visits)
    if answered:
        measured = LatencyHistogram()
        for seconds in np.geomspace(0.001, 2.0, 200):
            measured.add(float(seconds))
        answer = measured.sample(rng, batch.events)
        starts = np.cumsum([0] + [len(v.events) for v in visits]).tolist()
        per_visit = [answer[a:b].tolist() for a, b in itertools.pairwise(starts)]
    preds = predict_batch(batch, TECHNIQUES, preflight_answer=answer)
    for tech in TECHNIQUES:
        plans = [plan for v, a in zip(visits, per_visit, strict=True) for plan in stage_durations(v, tech, a)]
        expected = np.array([list(plan.values()) for plan in plans])
        np.testing.assert_allclose(stage_matrix(batch, tech, answer), expected, rtol=0, atol=1e-12)
        exits = [(v.exit_time(e), v.net.rtt) for v in visits for e in v.events]
        written = [t for v, a in zip(visits, per_visit, strict=True) for t in data_written_times(v, tech, a)]
        lost = sum(is_lost(a, w, r, abort) for (a, r), w in zip(exits, written, strict=True))
        assert preds[tech].loss == pytest.approx(lost / len(written))
        stages = [stage_at(plan, a) for plan, (a, _) in zip(plans, exits, strict=True)]
        for stage, share in preds[tech].by_stage.items():
            assert share == pytest.approx(stages.count(stage) / len(stages)), (tech, stage)


@settings(max_examples=60, deadline=None)
@given(
    rtt=st.floats(0.001, 2.0),
    miss=st.floats(0.0, 1.0),
    times=st.lists(st.floats(0.0, 200.0), min_size=1, max_size=10),
)
def test_fewer_stages_never_write_later(rtt: float, miss: float, times: list[float]) -> None:
    net = NetworkDraw(rtt=rtt, dns=rtt + miss, uplink_bps=50_000.0)
    v = Visit(net, tuple(PlannedEvent("click", t) for t in sorted(times)), leave_at=math.inf)
    ajax, pixel, prewarm, keepalive = (data_written_times(v, t) for t in TECHNIQUES)
    for a, p, w, k in zip(ajax, pixel, prewarm, keepalive, strict=True):
        assert a >= p >= rtt  # same cache, one more round trip (and the body)
        assert w >= rtt >= 0 and k <= w + 1e-9  # the kept connection is never slower than a pre-warmed lookup
