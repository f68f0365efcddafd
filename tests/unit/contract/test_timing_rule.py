"""The timing rule, written once: compare's warning, the plugin's lag guard and sizing all read it."""

from __future__ import annotations

import math

import pytest

from lossbench.contract.timing import (
    GUARD_FLOOR,
    LAG_FLAG_SHARE,
    guard_limit,
    lag_limit,
    lagging,
    timing_error,
)


def test_a_run_is_flagged_when_its_p90_exceeds_a_tenth_of_the_median_rtt() -> None:
    assert LAG_FLAG_SHARE == 0.1
    assert lag_limit(0.3) == pytest.approx(0.03)
    assert lagging(0.031, 0.3) and not lagging(0.029, 0.3)
    assert not lagging(None, 0.3)
    assert not lagging(5.0, 0.0)  # no stage times: nothing to distort


def test_the_guard_holds_to_the_limit_but_never_below_its_floor() -> None:
    assert guard_limit(0.3) == pytest.approx(0.03)  # 3G: the limit itself
    assert guard_limit(0.84) == pytest.approx(0.084)  # Edge
    assert guard_limit(0.004) == GUARD_FLOOR  # FIOS: its 0.4 ms limit is the scheduler's jitter
    assert guard_limit(0.0) is None


def test_the_timing_error_is_that_of_the_stage_planned_to_end_last() -> None:
    plan = {"dns": 0.3, "connect": 0.6, "body": 0.9}
    assert timing_error(plan, {"dns": 0.31, "connect": 0.62, "body": 0.95}) == pytest.approx(0.05)
    assert math.isnan(timing_error(plan, {"dns": 0.31}))  # the last planned stage never ended
    assert math.isnan(timing_error({}, {})) and math.isnan(timing_error(None, None))
