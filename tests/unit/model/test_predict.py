"""The model's predicted loss: hand-worked answers, the vectorised path against the reference, properties.

Most answers are the ``seed`` preset's (a new connection and a preflight for every event: the vectorised
model); where the idea holds for the ``chromium`` preset too, its counterpart follows, worked out from the
rules of ``lossbench.model.browser`` with the collector's hints stated (``HINTS``).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossbench.contract.latency import LatencyHistogram
from lossbench.contract.server import ServerHints
from lossbench.contract.techniques import ALL_TECHNIQUES, SEED_TECHNIQUES, STAGES, SURVIVES_UNLOAD
from lossbench.model.dns import DNS_TTL
from lossbench.model.predict import (
    AJAX_BODY_BYTES,
    Prediction,
    data_written_times,
    is_lost,
    predict_batch,
    predict_loss,
    stage_at,
    stage_durations,
    stage_matrix,
)
from lossbench.model.profiles import NetworkDraw, NetworkProfile
from lossbench.model.visits import PlannedEvent, Visit
from lossbench.stats import wilson_interval
from support import wide_draws

# rtt exactly 0.1 s, an uncached lookup exactly 0.1 s, no uplink limit.
EXACT = NetworkProfile("exact", rtt=0.1)
NET = NetworkDraw(rtt=0.1, dns=0.1)
HINTS = ServerHints(idle_timeout=30.0, cors_max_age=0.0)
"""The collector closes a connection idle 30 s and lets no preflight answer be cached: every ajax event
preflights, as in the seed model."""
BROWSERS = ("seed", "chromium")


def techniques_of(browser: str) -> tuple[str, ...]:
    """Every technique the preset plays (the seed's browser has no pool: its four only)."""
    return SEED_TECHNIQUES if browser == "seed" else ALL_TECHNIQUES


def fixed(
    spec: str,
    abort: str = "unload",
    profile: NetworkProfile = EXACT,
    events: int = 50,
    *,
    browser: str = "seed",
) -> dict[str, Prediction]:
    return predict_loss(
        profile, spec, abort, techniques_of(browser), seed=0, events=events, browser=browser, server=HINTS
    )


def one_event(at: float, net: NetworkDraw = NET) -> Visit:
    return Visit(net, (PlannedEvent("click", at),), leave_at=math.inf)


def written(visit: Visit, tech: str, browser: str = "seed", answer: list[float] | None = None) -> list[float]:
    """T of each event of the visit under the preset, the collector's hints those of ``HINTS``."""
    return data_written_times(visit, tech, answer, browser=browser, server=HINTS)


# ---------------------------------------------------------------------------------- hand-worked answers


def test_written_times_one_event_after_warm_up() -> None:
    # At 5 s: prewarm's lookup (0..0.1) is cached, keep-alive's connection (ready at 0.2) is open.
    v = one_event(5.0)
    assert written(v, "ajax") == pytest.approx([0.3])  # dns + connect + preflight
    assert written(v, "pixel") == pytest.approx([0.2])  # dns + connect
    assert written(v, "pixel-prewarm") == pytest.approx([0.1])  # connect
    assert written(v, "pixel-keepalive") == pytest.approx([0.0])


def test_written_times_one_event_after_warm_up_chromium() -> None:
    """At 5 s the connection of prewarm's ping (answered at 0.3) is pooled and idle: warm, as keep-alive's;
    preconnect's (ready at 0.2, unused) too. The others start cold: a lookup, a handshake, ajax's preflight.
    At 15 s preconnect's unused connection has been dropped (10 s), the lookup is still cached (60 s)."""
    v = one_event(5.0)
    expected = {
        "ajax": 0.3,
        "ajax-cachebust": 0.3,
        "fetch-keepalive": 0.3,
        "pixel": 0.2,
        "beacon": 0.2,
        "pixel-prewarm": 0.0,
        "pixel-keepalive": 0.0,
        "pixel-preconnect": 0.0,
    }
    assert {t: written(v, t, "chromium")[0] for t in ALL_TECHNIQUES} == pytest.approx(expected)
    later = one_event(15.0)
    assert written(later, "pixel-preconnect", "chromium") == pytest.approx([0.1])  # connect only
    assert written(later, "pixel-prewarm", "chromium") == pytest.approx([0.0])


@pytest.mark.parametrize("browser", BROWSERS)
def test_written_times_event_during_warm_up(browser: str) -> None:
    """seed: 0.05 s left of prewarm's lookup, keep-alive's connection ready at 0.2. chromium: the pinged
    connection is busy until 0.3, so both open their own, with the lookup's 0.05 s left: the same T."""
    v = one_event(0.05)
    assert written(v, "pixel-prewarm", browser) == pytest.approx([0.15])
    assert written(v, "pixel-keepalive", browser) == pytest.approx([0.15])
    assert written(v, "pixel", browser) == pytest.approx([0.2])


@pytest.mark.parametrize("browser", BROWSERS)
def test_ajax_body_is_paced_by_the_uplink(browser: str) -> None:
    up = AJAX_BODY_BYTES * 8 / 0.1  # a body that takes exactly 0.1 s
    v = one_event(5.0, NetworkDraw(rtt=0.1, dns=0.1, uplink_bps=up))
    assert written(v, "ajax", browser) == pytest.approx([0.4])
    assert written(v, "pixel", browser) == pytest.approx([0.2])  # the GET carries no body


def test_dns_cache_in_flight_and_ttl() -> None:
    events = tuple(PlannedEvent("click", t) for t in (0.5, 0.55, 70.0, 71.0))
    v = Visit(NET, events, leave_at=math.inf)
    # 0.5: full lookup, fills at 0.6; 0.55: waits the 0.05 left; 70: stale (0.6 + 60 < 70), refills at
    # 70.1; 71: fresh.
    assert written(v, "pixel") == pytest.approx([0.2, 0.15, 0.2, 0.1])
    # prewarm's entry filled at 0.1 by the ping is fresh for the first two, stale at 70 (hits don't extend).
    assert written(v, "pixel-prewarm") == pytest.approx([0.1, 0.1, 0.2, 0.1])
    assert written(v, "pixel-keepalive") == pytest.approx([0.0, 0.0, 0.0, 0.0])
    dns = [p["dns"] for p in stage_durations(v, "ajax", browser="seed")]
    assert dns == pytest.approx([0.1, 0.05, 0.1, 0.0])


def test_dns_cache_in_flight_and_ttl_chromium() -> None:
    """The same events with a pool. pixel: 0.5 cold (lookup until 0.6); 0.55 finds that connection busy
    until 0.8 and opens its own after the 0.05 s left of the lookup (ready at 0.7, before 0.8: cold); at
    70 both connections are long closed (30 s) and the entry stale: cold with a lookup; 71 reuses it.
    prewarm: 0.5 reuses the ping's idle connection; 0.55 finds it busy until 0.6, sooner than a new
    handshake (0.65): it waits 0.05 s for it; at 70 all is gone again. keep-alive: its pings at 20, 40 and
    60 s keep the connection open, so no event waits, not even for the stale lookup at 70 s."""
    events = tuple(PlannedEvent("click", t) for t in (0.5, 0.55, 70.0, 71.0))
    v = Visit(NET, events, leave_at=math.inf)
    assert written(v, "pixel", "chromium") == pytest.approx([0.2, 0.15, 0.2, 0.0])
    assert written(v, "pixel-prewarm", "chromium") == pytest.approx([0.0, 0.05, 0.2, 0.0])
    assert written(v, "pixel-keepalive", "chromium") == pytest.approx([0.0, 0.05, 0.0, 0.0])
    dns = [p["dns"] for p in stage_durations(v, "ajax", browser="chromium", server=HINTS)]
    assert dns == pytest.approx([0.1, 0.05, 0.1, 0.0])


@pytest.mark.parametrize("browser", BROWSERS)
@pytest.mark.parametrize(("at", "expected"), [(DNS_TTL, 0.1), (DNS_TTL + 0.09, 0.1), (DNS_TTL + 0.1, 0.2)])
def test_prewarm_ttl_edge(at: float, expected: float, browser: str) -> None:
    """The ping's entry is filled at 0.1 and fresh while at < 60.1 (chromium: its connection was closed by
    the collector at 30.3, so the event opens a new one, with or without a lookup)."""
    assert written(one_event(at), "pixel-prewarm", browser) == pytest.approx([expected])


def test_stage_at() -> None:
    (plan,) = stage_durations(one_event(5.0), "ajax", browser="seed")
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


@pytest.mark.parametrize("browser", BROWSERS)
def test_fixed_cut_unload_vs_drop(browser: str) -> None:
    # A = 0.34: ajax (T = 0.3) makes it on unload; on drop the cut is at 0.29, inside its preflight.
    unload, drop = fixed("fixed:0.34", browser=browser), fixed("fixed:0.34", "drop", browser=browser)
    assert {t: p.loss for t, p in unload.items()} == dict.fromkeys(techniques_of(browser), 0.0)
    assert drop["ajax"].loss == 1.0 and drop["pixel"].loss == 0.0
    assert drop["ajax"].by_stage["done"] == 1.0  # the client had written it all: lost in flight
    assert drop["ajax"].lost_by_stage["done"] == 1.0
    if browser == "chromium":  # a keepalive request does not outlive a vanished network
        assert drop["fetch-keepalive"].loss == 1.0 and drop["beacon"].loss == 0.0


@pytest.mark.parametrize(
    ("spec", "lost_in"),
    [
        ("fixed:0.05", {"ajax": "dns", "pixel": "dns", "pixel-prewarm": "connect"}),
        ("fixed:0.15", {"ajax": "connect", "pixel": "connect"}),
        ("fixed:0.25", {"ajax": "preflight"}),
        ("fixed:0.35@0.05", {"ajax": "done", "pixel": "done"}),  # survives: A = 0.35 > T
        ("fixed:0.12@0.05", dict.fromkeys(SEED_TECHNIQUES, "connect")),
    ],
)
def test_fixed_cut_stage(spec: str, lost_in: dict[str, str]) -> None:
    preds = fixed(spec)
    for tech, p in preds.items():
        stage = lost_in.get(tech, "done")
        assert p.by_stage[stage] == 1.0, (tech, p.by_stage)
        assert p.loss == (0.0 if stage == "done" else 1.0), tech
        assert p.events == 50


_COLD = ("ajax", "pixel", "beacon", "fetch-keepalive", "ajax-cachebust")
_PREFLIGHTED = ("ajax", "fetch-keepalive", "ajax-cachebust")


@pytest.mark.parametrize(
    ("spec", "lost_in"),
    [
        ("fixed:0.05", dict.fromkeys(_COLD, "dns")),
        ("fixed:0.15", dict.fromkeys(_COLD, "connect")),
        ("fixed:0.25", dict.fromkeys(_PREFLIGHTED, "preflight")),
        ("fixed:0.35@0.05", {}),  # A = 0.35 > T for all
        ("fixed:0.12@0.05", dict.fromkeys(ALL_TECHNIQUES, "connect")),
    ],
)
def test_fixed_cut_stage_chromium(spec: str, lost_in: dict[str, str]) -> None:
    """A click at 5 s: the page's own connection (prewarm's and keep-alive's ping, preconnect's) is pooled
    and warm, T = 0; the others are cold (lookup, handshake, a preflight for the JSON POSTs). A click at
    0.05 s: the pings' connection is busy, preconnect's still opening; every one is in its handshake at
    0.12. The keepalive requests (beacon, fetch-keepalive) are cut where they are but not lost."""
    preds = fixed(spec, browser="chromium")
    assert set(preds) == set(ALL_TECHNIQUES)
    for tech, p in preds.items():
        stage = lost_in.get(tech, "done")
        assert p.by_stage[stage] == 1.0, (tech, p.by_stage)
        lost = stage != "done" and tech not in SURVIVES_UNLOAD
        assert p.loss == (1.0 if lost else 0.0), tech
        assert p.events == 50


@pytest.mark.parametrize("browser", BROWSERS)
def test_keepalive_on_drop_loses_the_last_half_rtt(browser: str) -> None:
    assert fixed("fixed:0.04", "drop", browser=browser)["pixel-keepalive"].loss == 1.0  # T = 0, A - rtt/2 < 0
    assert fixed("fixed:0.06", "drop", browser=browser)["pixel-keepalive"].loss == 0.0
    assert fixed("fixed:0", "unload", browser=browser)["pixel-keepalive"].loss == 0.0


@pytest.mark.parametrize("browser", BROWSERS)
def test_ttl_expiry_in_prediction(browser: str) -> None:
    """At 61 s the prewarm entry (filled at 0.1) is stale: a full lookup again, T = 0.2, A = 0.15 cuts it.
    (chromium: the ping's connection was closed at 30.3 by the collector; at 59 s only the handshake.)"""
    assert fixed("fixed:0.15@59", browser=browser)["pixel-prewarm"].loss == 0.0
    assert fixed("fixed:0.15@61", browser=browser)["pixel-prewarm"].loss == 1.0
    assert fixed("fixed:0.15@61", browser=browser)["pixel-prewarm"].by_stage["connect"] == 1.0


@pytest.mark.parametrize(("browser", "events"), [("seed", 20_000), ("chromium", 5_000)])
def test_zero_loss_controls(browser: str, events: int) -> None:
    for profile in ("loopback", "3G"):
        for abort in ("unload", "drop"):
            spec = "mix" if profile == "loopback" else "none"
            preds = predict_loss(
                profile, spec, abort, techniques_of(browser), seed=1, events=events, browser=browser
            )
            assert all(p.loss == 0.0 for p in preds.values()), (profile, spec, abort)


# ------------------------------------------------------------------------------------ Monte Carlo


@pytest.mark.parametrize(("browser", "events"), [("seed", 30_000), ("chromium", 5_000)])
def test_seeded_and_exact_event_count(browser: str, events: int) -> None:
    techniques = techniques_of(browser)
    a = predict_loss("3G", "mix", "unload", techniques, seed=42, events=events, browser=browser)
    b = predict_loss("3G", "mix", "unload", techniques, seed=42, events=events, browser=browser)
    c = predict_loss("3G", "mix", "unload", techniques, seed=43, events=events, browser=browser)
    assert a == b
    assert a != c
    assert all(p.events == events for p in a.values())


@pytest.mark.parametrize(("browser", "events"), [("seed", 30_000), ("chromium", 5_000)])
def test_prediction_shape_and_interval(browser: str, events: int) -> None:
    techniques = techniques_of(browser)
    preds = predict_loss("3G", "mix", "drop", techniques, seed=3, events=events, browser=browser)
    for tech, p in preds.items():
        assert list(p.by_stage) == [*STAGES[tech], "done"]
        assert sum(p.by_stage.values()) == pytest.approx(1.0)
        assert sum(p.lost_by_stage.values()) == pytest.approx(p.loss)
        assert p.ci95[0] <= p.loss <= p.ci95[1]
        assert p.as_dict()["loss"] == p.loss


def test_ordering_on_outbound_3g() -> None:
    for abort in ("unload", "drop"):
        preds = predict_loss("3G", "outbound", abort, SEED_TECHNIQUES, seed=5, events=100_000, browser="seed")
        loss = [preds[t].loss for t in SEED_TECHNIQUES]
        assert loss == sorted(loss, reverse=True), (abort, loss)
        assert loss[0] > 0.05  # the preflight costs ajax a round trip the next page does not wait for


def test_ordering_on_outbound_3g_chromium() -> None:
    """With a pool and no cached preflight (``HINTS``): ajax still pays a preflight round trip on every
    event; a plain pixel pays a cold connection on the page view, which prewarm and preconnect have
    opened before and keep-alive keeps open. The outbound click finds the page view's connection: ajax
    loses less than in the seed model (same visits), which opens a new one. Under unload the keepalive
    requests are never lost; under drop a beacon is a pixel (the same stages, the same pool) and
    fetch-keepalive an ajax, and ajax-cachebust is ajax, since ajax caches nothing either."""
    for abort in ("unload", "drop"):
        preds = predict_loss(
            "3G", "outbound", abort, ALL_TECHNIQUES, seed=5, events=20_000, browser="chromium", server=HINTS
        )
        seed = predict_loss("3G", "outbound", abort, ["ajax"], seed=5, events=20_000, browser="seed")
        loss = {t: p.loss for t, p in preds.items()}
        assert loss["ajax"] > loss["pixel"] > max(loss["pixel-prewarm"], loss["pixel-preconnect"])
        assert loss["pixel-keepalive"] <= loss["pixel-prewarm"]
        assert 0 < loss["ajax"] < seed["ajax"].loss
        assert loss["ajax-cachebust"] == loss["ajax"]
        if abort == "unload":
            assert loss["beacon"] == loss["fetch-keepalive"] == 0.0
        else:
            assert loss["beacon"] == loss["pixel"] and loss["fetch-keepalive"] == loss["ajax"]


def test_prediction_is_fast() -> None:
    """The seed preset's vectorised path: 200,000 events in well under a second (the chromium preset goes
    visit by visit; its speed is a benchmark's business, not a unit test's)."""
    start = time.perf_counter()
    predict_loss("3G", "mix", "unload", SEED_TECHNIQUES, seed=0, events=200_000, browser="seed")
    assert time.perf_counter() - start < 2.0


def test_wilson_interval() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_errors() -> None:
    with pytest.raises(ValueError, match="unknown technique 'smoke-signal'"):
        predict_loss("3G", "mix", "unload", ["smoke-signal"], seed=0, events=10)
    for tech in ("beacon", "fetch-keepalive", "pixel-preconnect", "ajax-cachebust"):
        with pytest.raises(ValueError, match=f"{tech} needs a browser with a connection pool"):
            predict_loss("3G", "mix", "unload", [tech], seed=0, events=10, browser="seed")
    with pytest.raises(ValueError, match="unknown browser preset 'netscape'"):
        predict_loss("3G", "mix", "unload", ["pixel"], seed=0, events=10, browser="netscape")
    with pytest.raises(ValueError, match="unknown abort"):
        predict_loss("3G", "mix", "close", SEED_TECHNIQUES, seed=0, events=10)
    with pytest.raises(ValueError, match="unknown network profile"):
        predict_loss("4G", "mix", "unload", SEED_TECHNIQUES, seed=0, events=10)


def test_the_preflight_waits_for_the_collectors_answer() -> None:
    """Two events, the first with a lookup (0.1 s), the second with a warm cache: ajax writes its data after
    dns + connect (an RTT) + preflight (an RTT + the collector's answer); a pixel waits for no answer."""
    visit = Visit(NET, (PlannedEvent("click", 0.0), PlannedEvent("click", 10.0)), leave_at=math.inf)
    assert written(visit, "ajax") == pytest.approx([0.3, 0.2])
    assert written(visit, "ajax", answer=[0.05, 0.25]) == pytest.approx([0.35, 0.45])
    assert written(visit, "pixel", answer=[0.05, 0.25]) == written(visit, "pixel")


def test_the_preflight_waits_for_the_collectors_answer_chromium() -> None:
    """The same two events with a pool: the second reuses the first's connection (idle since 0.4 or 0.45)
    and, with no answer cached (max-age 0), pays only the preflight; with a max-age of 10 minutes the
    first answer (arrived at 0.3 or 0.35) is reused and the second event waits for nothing, whatever the
    answer time its own preflight would have had."""
    visit = Visit(NET, (PlannedEvent("click", 0.0), PlannedEvent("click", 10.0)), leave_at=math.inf)
    assert written(visit, "ajax", "chromium") == pytest.approx([0.3, 0.1])
    assert written(visit, "ajax", "chromium", [0.05, 0.25]) == pytest.approx([0.35, 0.35])
    assert written(visit, "pixel", "chromium", [0.05, 0.25]) == written(visit, "pixel", "chromium")
    cached = ServerHints(idle_timeout=30.0, cors_max_age=600.0)
    for answer in (None, [0.05, 0.25]):
        plans = stage_durations(visit, "ajax", answer, browser="chromium", server=cached)
        assert [sum(p.values()) for p in plans] == pytest.approx([0.3 + (answer or [0.0])[0], 0.0])
        assert plans[1]["preflight"] == 0.0


def test_a_queue_aware_prediction_rises_with_the_answer_time() -> None:
    """Measured preflight answer times lengthen ajax's preflight: its loss rises with them, the pixels'
    does not move; without answer times (None, or an empty histogram) the prediction is bit for bit the one
    without the argument."""
    args = ("3G", "mix", "unload", SEED_TECHNIQUES)
    plain = predict_loss(*args, seed=3, events=50_000, browser="seed")
    assert predict_loss(*args, seed=3, events=50_000, preflight_answers=None, browser="seed") == plain
    empty = LatencyHistogram()
    assert predict_loss(*args, seed=3, events=50_000, preflight_answers=empty, browser="seed") == plain
    losses = []
    for seconds in (0.001, 0.05, 0.3, 1.0):
        pred = predict_loss(*args, seed=3, events=50_000, preflight_answers=answers(seconds), browser="seed")
        assert {t: pred[t] for t in SEED_TECHNIQUES if t != "ajax"} == {
            t: plain[t] for t in SEED_TECHNIQUES if t != "ajax"
        }
        losses.append(pred["ajax"].loss)
    assert plain["ajax"].loss <= losses[0] < losses[1] < losses[2] < losses[3]
    assert losses[3] > plain["ajax"].loss + 0.05


def answers(seconds: float) -> LatencyHistogram:
    """A collector that answered every preflight in ``seconds``."""
    measured = LatencyHistogram(counts={})
    for _ in range(20):
        measured.add(seconds)
    return measured


def test_a_queue_aware_prediction_rises_with_the_answer_time_chromium() -> None:
    """The chromium preset: the techniques without a preflight do not move; ajax and ajax-cachebust rise
    with the answer time (no answer cached: every event preflights); fetch-keepalive outlives the unload,
    so its loss stays 0. With answers cached ten minutes, ajax preflights once a visit and cache-busting
    costs more than ajax."""

    def run(server: ServerHints, measured: LatencyHistogram | None = None) -> dict[str, Prediction]:
        return predict_loss(
            "3G", "mix", "unload", ALL_TECHNIQUES, seed=3, events=8_000, browser="chromium", server=server,
            preflight_answers=measured,
        )  # fmt: skip

    plain = run(HINTS)
    assert run(HINTS, LatencyHistogram()) == plain
    fast, slow = run(HINTS, answers(0.05)), run(HINTS, answers(1.0))
    unmoved = [t for t in ALL_TECHNIQUES if t not in ("ajax", "ajax-cachebust", "fetch-keepalive")]
    assert {t: fast[t] for t in unmoved} == {t: plain[t] for t in unmoved} == {t: slow[t] for t in unmoved}
    for tech in ("ajax", "ajax-cachebust"):
        assert plain[tech].loss <= fast[tech].loss < slow[tech].loss, tech
    assert slow["ajax"].loss > plain["ajax"].loss + 0.05
    assert plain["fetch-keepalive"].loss == slow["fetch-keepalive"].loss == 0.0
    assert slow["fetch-keepalive"].by_stage != plain["fetch-keepalive"].by_stage  # cut in its preflight
    slow_cached = run(ServerHints(idle_timeout=30.0, cors_max_age=600.0), answers(1.0))
    assert slow_cached["ajax"].loss < slow_cached["ajax-cachebust"].loss
    assert slow_cached["ajax-cachebust"].loss == slow["ajax-cachebust"].loss  # it never reuses an answer


# ------------------------------------------------------------- vectorised path against the reference


@pytest.mark.parametrize("spec", ["mix", "dwell", "outbound:gap_median=50"])
@pytest.mark.parametrize("abort", ["unload", "drop"])
@pytest.mark.parametrize("answered", [False, True])
def test_vectorised_matches_reference(spec: str, abort: str, answered: bool) -> None:
    """``answered``: each event's preflight also waits for a collector answer time drawn from a histogram
    of measured ones (spread from 1 ms to 2 s)."""
    visits, batch, answer, per_visit = wide_draws(spec, abort, 400, answered)
    preds = predict_batch(batch, SEED_TECHNIQUES, preflight_answer=answer, browser="seed")
    for tech in SEED_TECHNIQUES:
        plans = [
            plan
            for v, a in zip(visits, per_visit, strict=True)
            for plan in stage_durations(v, tech, a, browser="seed")
        ]
        expected = np.array([list(plan.values()) for plan in plans])
        np.testing.assert_allclose(stage_matrix(batch, tech, answer), expected, rtol=0, atol=1e-12)
        exits = [(v.exit_time(e), v.net.rtt) for v in visits for e in v.events]
        times = [
            t
            for v, a in zip(visits, per_visit, strict=True)
            for t in data_written_times(v, tech, a, browser="seed")
        ]
        lost = sum(is_lost(a, w, r, abort) for (a, r), w in zip(exits, times, strict=True))
        assert preds[tech].loss == pytest.approx(lost / len(times))
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
    ajax, pixel, prewarm, keepalive = (written(v, t) for t in SEED_TECHNIQUES)
    for a, p, w, k in zip(ajax, pixel, prewarm, keepalive, strict=True):
        assert a >= p >= rtt  # same cache, one more round trip (and the body)
        assert w >= rtt >= 0 and k <= w + 1e-9  # the kept connection is never slower than a pre-warmed lookup


@settings(max_examples=60, deadline=None)
@given(
    rtt=st.floats(0.001, 2.0),
    miss=st.floats(0.0, 1.0),
    times=st.lists(st.floats(0.0, 200.0), min_size=1, max_size=10),
)
def test_twins_write_alike_chromium(rtt: float, miss: float, times: list[float]) -> None:
    """With no preflight answer cached, ajax-cachebust is ajax and so is fetch-keepalive (ten events never
    fill the keepalive quota), a beacon is a pixel: the same stages, event by event; and every preflighted
    event pays its round trip."""
    net = NetworkDraw(rtt=rtt, dns=rtt + miss, uplink_bps=50_000.0)
    v = Visit(net, tuple(PlannedEvent("click", t) for t in sorted(times)), leave_at=math.inf)

    def plans(tech: str) -> list[dict[str, float]]:
        return stage_durations(v, tech, browser="chromium", server=HINTS)

    ajax = plans("ajax")
    assert plans("ajax-cachebust") == ajax and plans("fetch-keepalive") == ajax
    assert plans("beacon") == plans("pixel")
    assert all(p["preflight"] == rtt for p in ajax)
