"""The load generator's timing error and when it matters: one rule for compare's warning, the Locust
plugin's running figure and lag guard, and the sizing of ``lossbench run``.

The client decides every stage on its intended timeline, so oversleeping does not change which events
are delivered; what it changes is the real schedule the collector sees. An event's timing error is how
late the last stage it reached really ended: ``real − plan`` of the stage planned to end last (the sent
ledger's ``plan`` and ``real``). A run whose p90 timing error exceeds ``LAG_FLAG_SHARE`` of the median RTT
is *flagged*: the lag is large against stage times, and the collector's view (arrival pattern,
connection-seconds) is distorted (docs/MODEL.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

LAG_FLAG_SHARE = 0.1
"""A p90 timing error above this share of the median RTT distorts the schedule the collector sees."""

GUARD_FLOOR = 0.03
"""Seconds: the plugin's lag guard and the sizing of ``lossbench run`` hold the load to ``lag_limit`` but
never below this. On fast profiles (FIOS: 4 ms RTT, a 0.4 ms limit) the limit is below the scheduler's
own jitter, which no load size removes: compare still flags such runs, but the guard does not stop them
and sizing does not shrink the load for them."""


def lag_limit(median_rtt: float) -> float:
    """The p90 timing error above which compare flags a run with this median RTT (seconds)."""
    return LAG_FLAG_SHARE * median_rtt


def lagging(p90: float | None, median_rtt: float) -> bool:
    """compare's rule: the p90 timing error exceeds the limit (never for a zero RTT: no stage times)."""
    return p90 is not None and median_rtt > 0 and p90 > lag_limit(median_rtt)


def guard_limit(median_rtt: float) -> float | None:
    """The p90 the lag guard and sizing hold to: ``lag_limit``, at least ``GUARD_FLOOR``; None for a zero
    RTT (compare never flags such a run)."""
    return None if median_rtt <= 0 else max(lag_limit(median_rtt), GUARD_FLOOR)


def timing_error(plan: Mapping[str, float] | None, real: Mapping[str, float] | None) -> float:
    """real − plan at the last stage completed (the one planned to end last); nan when none completed."""
    if not plan or not real:
        return math.nan
    last = max(plan, key=plan.__getitem__)
    actual = real.get(last)
    return math.nan if actual is None else actual - plan[last]
