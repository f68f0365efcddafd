"""The answer-time histogram: buckets, merging, quantiles within a bucket, draws from it, its JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lossbench.contract.latency import (
    BUCKETS,
    BUCKETS_PER_DECADE,
    LAYOUT,
    UPPER_EDGES,
    LatencyHistogram,
    bucket_of,
    merge_all,
    percentiles,
)

WIDTH = 10 ** (1 / BUCKETS_PER_DECADE)  # the ratio of two neighbouring bucket edges


def histogram(values: list[float]) -> LatencyHistogram:
    h = LatencyHistogram()
    for v in values:
        h.add(v)
    return h


def test_quantiles_are_within_one_bucket_of_the_true_value() -> None:
    rng = np.random.default_rng(3)
    values = rng.lognormal(np.log(0.002), 0.5, 20_000)
    h = histogram(list(values))
    for q in (0.5, 0.9, 0.99):
        true = float(np.quantile(values, q))
        got = h.quantile(q)
        assert got is not None
        assert true <= got <= true * WIDTH * 1.001


def test_adding_many_at_once_fills_the_buckets_adding_one_by_one_does() -> None:
    rng = np.random.default_rng(5)
    edges = [UPPER_EDGES[i] for i in (0, 1, 100, BUCKETS - 2, BUCKETS - 1)]
    values = [0.0, 1e-9, 1e9, *edges, *(np.nextafter(e, 0) for e in edges), *rng.lognormal(-5, 3, 5000)]
    one_by_one, at_once = histogram([float(v) for v in values]), LatencyHistogram()
    at_once.add_many(values)
    at_once.add_many([])
    assert at_once.counts == one_by_one.counts


def test_out_of_range_values_fall_in_the_end_buckets() -> None:
    assert bucket_of(0.0) == 0
    assert bucket_of(1e6) == BUCKETS - 1


def test_merge_adds_bucket_by_bucket_and_empty_has_no_quantile() -> None:
    a, b = histogram([0.001, 0.002]), histogram([0.002, 0.5])
    merged = merge_all([a, b])
    assert merged.total == 4
    assert merged.counts[bucket_of(0.002)] == 2
    assert LatencyHistogram().quantile(0.5) is None
    assert percentiles(LatencyHistogram()) == {"p50": None, "p90": None, "p99": None}


def test_json_round_trip() -> None:
    h = histogram([0.001, 0.02, 0.02, 3.0])
    again = LatencyHistogram.from_dict(json.loads(json.dumps(h.as_dict())))
    assert again.counts == h.counts


@pytest.mark.parametrize(
    "doc",
    [{"counts": {"x": 1}}, {"counts": {"3": 1.5}}, [1], {"counts": {str(BUCKETS): 1}}, {"counts": {"3": -1}}],
)
def test_damaged_json_is_an_error(doc: object) -> None:
    with pytest.raises(ValueError):
        LatencyHistogram.from_dict(doc)


def test_the_layout_recorded_with_a_histogram_must_be_this_one() -> None:
    """Bucket i means 10⁻⁵ · 10^(i/40) s only in this layout: another one is refused, not misread; a file
    written before layouts were recorded (none) is read in this one."""
    doc = histogram([0.02]).as_dict()
    assert LAYOUT == {"lowest": 1e-05, "per_decade": 40}
    for same in (None, {"lowest": 1e-05, "per_decade": 40}, json.loads(json.dumps(LAYOUT))):
        assert LatencyHistogram.from_dict(doc, layout=same).counts == {bucket_of(0.02): 1}
    others = ({"lowest": 1e-06, "per_decade": 40}, {"lowest": 1e-05, "per_decade": 20}, {"lowest": 1e-05}, 40)
    for other in others:
        with pytest.raises(ValueError, match="layout"):
            LatencyHistogram.from_dict(doc, layout=other)


def test_draws_follow_the_recorded_distribution() -> None:
    h = histogram([0.01] * 900 + [0.1] * 100)
    draws = h.sample(np.random.default_rng(1), 10_000)
    share_slow = float((draws > 0.05).mean())
    assert 0.08 < share_slow < 0.12
    assert np.all(draws > 0.01 / WIDTH) and np.all(draws <= 0.1 * WIDTH)
    assert not LatencyHistogram().sample(np.random.default_rng(1), 3).any()
