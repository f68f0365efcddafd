"""Network profiles, exit models and the visit sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lossbench.contract.techniques import EVENT_TYPES
from lossbench.model.exits import DEFAULT_EXIT_MODEL, EXIT_MODELS, FixedExit, get_exit_model
from lossbench.model.profiles import DEFAULT_PROFILE, PROFILES, NetworkDraw, NetworkProfile, get_profile
from lossbench.model.visits import PlannedEvent, Visit, VisitBatch, sample_visits

EXACT = NetworkProfile("exact", rtt=0.1)


def _visits(spec: str, n: int = 2000, *, seed: int = 7, profile: str = "3G", abort: str = "unload"):
    rng = np.random.default_rng(seed)
    prof = get_profile(profile)
    return get_exit_model(spec).draw_batch(rng, prof.draw_batch(rng, n), abort).visits()


# ------------------------------------------------------------------------------------------ profiles


@pytest.mark.parametrize(
    ("name", "rtt", "uplink"),
    [
        ("FIOS", 0.004, 5_000_000),
        ("Cable", 0.028, 1_000_000),
        ("DSL", 0.050, 384_000),
        ("3GFast", 0.150, 768_000),
        ("3G", 0.300, 768_000),
        ("Edge", 0.840, 200_000),
        ("2G", 1.300, 32_000),
        ("desktopDense4G", 0.040, 10 * 1024 * 1024),
        ("mobileSlow4G", 0.150, 750 * 1024),
        ("mobileRegular3G", 0.300, 700 * 1024),
    ],
)
def test_presets(name: str, rtt: float, uplink: float) -> None:
    p = PROFILES[name]
    assert p.rtt == pytest.approx(rtt)
    assert p.uplink_bps == pytest.approx(uplink)
    assert ("WebPageTest" in p.source) or ("Lighthouse" in p.source)
    assert p.description


def test_defaults_are_registered() -> None:
    assert get_profile(DEFAULT_PROFILE) is PROFILES[DEFAULT_PROFILE]
    assert get_exit_model(DEFAULT_EXIT_MODEL) is EXIT_MODELS[DEFAULT_EXIT_MODEL]


def test_get_profile_any_case_and_error_lists_names() -> None:
    assert get_profile("3gfast") is PROFILES["3GFast"]
    assert get_profile("MOBILESLOW4G") is PROFILES["mobileSlow4G"]
    with pytest.raises(ValueError, match=r"unknown network profile '5G'.*FIOS.*mobileRegular3G.*loopback"):
        get_profile("5G")


def test_loopback_draws_nothing() -> None:
    d = PROFILES["loopback"].draw(np.random.default_rng(0))
    assert d == NetworkDraw(rtt=0.0, dns=0.0, uplink_bps=None)


def test_zero_spread_profile_draws_exactly() -> None:
    d = EXACT.draw(np.random.default_rng(0))
    assert d == NetworkDraw(rtt=0.1, dns=0.1, uplink_bps=None)


def test_profile_draw_spread_and_dns_misses() -> None:
    p = PROFILES["3G"]
    b = p.draw_batch(np.random.default_rng(1), 40_000)
    assert np.median(b.rtt) == pytest.approx(0.3, rel=0.03)
    assert np.std(np.log(b.rtt)) == pytest.approx(p.rtt_spread, rel=0.03)
    extra = b.dns - b.rtt
    assert set(np.round(extra, 12)) == {0.0, p.dns_miss_extra}
    assert np.mean(extra > 0) == pytest.approx(p.dns_miss_prob, abs=0.01)


def test_bad_profile_rejected() -> None:
    with pytest.raises(ValueError):
        NetworkProfile("x", rtt=0.1, dns_miss_prob=1.5)


# ------------------------------------------------------------------------------------------ registry


def test_registry() -> None:
    assert set(EXIT_MODELS) == {"dwell", "outbound", "mix", "none"}
    for m in EXIT_MODELS.values():
        assert m.description and m.source
    assert "Liu, White & Dumais" in EXIT_MODELS["dwell"].source
    assert "Taobao" in EXIT_MODELS["outbound"].source and "Jansma" in EXIT_MODELS["outbound"].source


def test_get_exit_model_fixed_forms() -> None:
    m = get_exit_model("fixed:0.35")
    assert isinstance(m, FixedExit) and (m.seconds, m.at) == (0.35, 5.0)
    assert get_exit_model("FIXED:1.5@2").at == 2.0
    assert get_exit_model(m.name) == m  # the name is a spec
    assert m.name == "fixed:0.35@5"


def test_get_exit_model_tuned_and_case() -> None:
    assert get_exit_model("MIX") is EXIT_MODELS["mix"]
    m = get_exit_model("mix:outbound_prob=0.6, max_clicks=3")
    assert (m.outbound_prob, m.max_clicks) == (0.6, 3) and isinstance(m.max_clicks, int)
    assert get_exit_model(m.name) == m


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bounce", r"unknown exit model 'bounce'; valid: dwell, outbound, mix, none, fixed:SECONDS\[@AT\]"),
        ("fixed", r"expected fixed:SECONDS\[@AT\]"),
        ("fixed:abc", r"expected fixed:SECONDS\[@AT\]"),
        ("fixed:-1", r"expected fixed:SECONDS\[@AT\]"),
        ("dwell:speed=3", r"bad parameter 'speed=3'.*shape=NUMBER"),
        ("dwell:shape=x", r"bad value 'x' for shape"),
        ("mix:outbound_prob=1.5", r"'mix:outbound_prob=1\.5': outbound_prob and warm_prob in \[0, 1\]"),
        ("none:warm_prob=-0.1", r"outbound_prob and warm_prob in \[0, 1\]"),
    ],
)
def test_get_exit_model_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_exit_model(spec)


# ------------------------------------------------------------------------------------------- visits


@pytest.mark.parametrize("spec", ["dwell", "outbound", "mix", "none", "fixed:0.2"])
def test_visit_invariants(spec: str) -> None:
    for v in _visits(spec, 1000, abort="drop"):
        assert v.abort == "drop"
        assert 1 <= len(v.events) <= 10
        times = [e.at for e in v.events]
        assert times == sorted(times) and times[0] >= 0
        assert all(e.type in EVENT_TYPES for e in v.events)
        assert all(v.exit_time(e) >= 0 for e in v.events)
        if spec == "none":
            assert v.leave_at == math.inf
        if spec not in ("none",):
            assert math.isfinite(v.leave_at)
        if not spec.startswith("fixed"):
            assert v.events[0].type == "pageview"
            assert v.events[0].at >= 3 * v.net.rtt


def test_same_seed_same_visits() -> None:
    for spec in ("dwell", "outbound", "mix", "fixed:1"):
        assert _visits(spec, 50, seed=3) == _visits(spec, 50, seed=3)
        assert _visits(spec, 50, seed=3) != _visits(spec, 50, seed=4) or spec.startswith("fixed")


def test_draw_visit_one_at_a_time_is_seeded() -> None:
    def run(seed: int) -> list[Visit]:
        rng = np.random.default_rng(seed)
        return [EXIT_MODELS["mix"].draw_visit(rng, PROFILES["3G"].draw(rng), "unload") for _ in range(20)]

    assert run(5) == run(5)


def test_none_has_the_events_of_mix() -> None:
    mix, none = _visits("mix", 300, seed=9), _visits("none", 300, seed=9)
    assert [v.events for v in mix] == [v.events for v in none]
    assert [v.net for v in mix] == [v.net for v in none]


def test_fixed_cut_is_exact() -> None:
    (v,) = _visits("fixed:0.35@2", 1)
    assert v.events == (PlannedEvent("click", 2.0),)
    assert v.exit_time(v.events[0]) == pytest.approx(0.35)


def test_dwell_is_weibull_with_shape_below_one() -> None:
    m = EXIT_MODELS["dwell"]
    assert m.shape < 1 and m.scale < 70  # Liu, White & Dumais: k < 1 for 98.5% of pages, scale < 70 s
    rng = np.random.default_rng(11)
    batch = m.draw_batch(rng, PROFILES["3G"].draw_batch(rng, 20_000), "unload")
    first = np.searchsorted(batch.visit, np.arange(len(batch)))
    assert np.all(batch.type[first] == EVENT_TYPES.index("pageview"))
    dwell = batch.leave_at - batch.at[first]
    for x in (1.0, 10.0, 30.0, 100.0):
        cdf = 1 - math.exp(-((x / m.scale) ** m.shape))
        assert np.mean(dwell < x) == pytest.approx(cdf, abs=0.015)
    # k < 1: negative ageing, the longer a visitor has stayed, the less likely to leave in the next 10 s.
    leave_early = np.mean(dwell < 10)
    leave_later = np.mean(dwell[dwell > 30] < 40)
    assert leave_later < leave_early


def test_clicks_only_during_the_dwell() -> None:
    for v in _visits("dwell", 2000, seed=2):
        assert all(e.at < v.leave_at for e in v.events)
        assert sum(e.type == "click" for e in v.events) <= EXIT_MODELS["dwell"].max_clicks


def test_outbound_unloads_when_the_next_page_arrives() -> None:
    cold = get_exit_model("outbound:warm_prob=0")
    rng = np.random.default_rng(4)
    for _ in range(300):
        net = PROFILES["3G"].draw(rng)
        v = cold.draw_visit(rng, net, "unload")
        assert [e.type for e in v.events] == ["pageview", "outbound"]
        assert v.exit_time(v.events[1]) > net.dns + 2 * net.rtt  # DNS + connect + first byte + server
    for v in _visits("outbound", 1000):
        assert v.exit_time(v.events[1]) > v.net.rtt  # even warm: a round trip plus server time


def test_mix_outbound_share() -> None:
    visits = _visits("mix", 5000, seed=1)
    share = np.mean([v.events[-1].type == "outbound" for v in visits])
    assert share == pytest.approx(EXIT_MODELS["mix"].outbound_prob, abs=0.03)


def test_bad_abort_rejected() -> None:
    with pytest.raises(ValueError, match="unknown abort 'close'"):
        EXIT_MODELS["mix"].draw_visit(np.random.default_rng(0), EXACT.draw(np.random.default_rng(0)), "close")


def test_batch_round_trip_and_sampler() -> None:
    visits = _visits("mix", 200)
    batch = VisitBatch.of(visits)
    assert batch.visits() == visits
    assert batch.events == sum(len(v.events) for v in visits)
    b = sample_visits(PROFILES["3G"], EXIT_MODELS["mix"], "unload", np.random.default_rng(0), events=5000)
    assert 5000 <= b.events < 5400
    assert np.all(np.diff(b.visit) >= 0) and b.visit[-1] == len(b) - 1
