"""The model's predicted loss: P(A < T) for each technique, by Monte Carlo over the same visits.

Two browser presets (``lossbench.model.browser``). The default, ``chromium``, has a connection pool and a
preflight cache: what an event must do depends on the visit's earlier events, so it is computed visit by
visit in ``lossbench.model.chromium`` (:func:`_predict_pooled`). What follows states the ``seed`` preset,
lossbench's first model (a new connection and a preflight for every event), vectorised over all events.

The client performs each technique stage by stage ("act, then wait"); T is the time, counted from the moment
the event fires, at which the event's data has been completely written. :func:`stage_durations` states the
model event by event; it is the reference. :func:`predict_loss` computes the same thing with numpy over
hundreds of thousands of events (tests hold the two to agree).

Stage durations, d being the DNS wait (below) and r the visit's RTT:

- ``ajax``: dns d, connect r, preflight r + a (the OPTIONS round trip, a the collector's answer time),
  headers 0, body = bytes * 8 / uplink.
- ``pixel``: dns d, connect r, request 0 (the GET is written at once after the handshake).
- ``pixel-prewarm``: as pixel; an empty ping at visit time 0 started a lookup that fills the cache at
  visit time ``dns``.
- ``pixel-keepalive``: connect = waiting for the connection opened at visit time 0 (lookup then handshake,
  ready at ``dns + r``), request 0.

DNS cache: ``lossbench.model.dns`` (with no fresh entry an event does a full lookup, d = dns; with one,
d = 0, or the rest of the lookup still in flight).

The collector's answer time a is 0 unless the run measured it: compare passes the preflight answer times
the collector recorded at that load (``contract.latency.LatencyHistogram``), and each event draws its own
from them (``predict_loss``'s ``preflight_answers``). A collector that is slow, or queues its preflights
behind slow events, lengthens the preflight's round trip, and with it ajax's loss.

The cut: ``unload`` loses an event iff A < T; ``drop`` iff A - r/2 < T (bytes of the last one-way delay are
lost too). Events never cut (A = inf) are delivered.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from lossbench.contract.latency import LatencyHistogram
from lossbench.contract.server import ServerHints
from lossbench.contract.techniques import (
    ABORTS,
    ALL_TECHNIQUES,
    DONE,
    SEED_TECHNIQUES,
    STAGES,
    SURVIVES_UNLOAD,
    Stage,
)
from lossbench.model import chromium
from lossbench.model.browser import DEFAULT_BROWSER, get_browser
from lossbench.model.dns import DNS_TTL, DnsCache
from lossbench.model.exits import ExitModel, get_exit_model
from lossbench.model.profiles import NetworkProfile, get_profile
from lossbench.model.visits import Visit, VisitBatch, sample_visits
from lossbench.stats import wilson_interval

AJAX_BODY_BYTES = chromium.AJAX_BODY_BYTES

# --------------------------------------------------------------------------- the model, event by event


def _body_time(uplink_bps: float | None) -> float:
    return 0.0 if uplink_bps is None else AJAX_BODY_BYTES * 8 / uplink_bps


def _check_technique(technique: str, browser: str) -> None:
    if technique not in STAGES:
        raise ValueError(f"unknown technique {technique!r}; valid: {', '.join(ALL_TECHNIQUES)}")
    if not get_browser(browser).pool and technique not in SEED_TECHNIQUES:
        raise ValueError(
            f"{technique} needs a browser with a connection pool (--browser chromium); "
            f"the seed browser has {', '.join(SEED_TECHNIQUES)}"
        )


def stage_durations(
    visit: Visit,
    technique: str,
    preflight_answer: Sequence[float] | None = None,
    *,
    browser: str = DEFAULT_BROWSER,
    server: ServerHints | None = None,
) -> list[dict[str, float]]:
    """For each event of the visit, in order: seconds spent in each stage (in stage order) until written.
    ``preflight_answer``: the collector's answer time to each event's preflight (0 when None). The
    ``chromium`` browser's are :func:`lossbench.model.chromium.plan_visit`'s (a refused keepalive
    request has no stages)."""
    _check_technique(technique, browser)
    if get_browser(browser).pool:
        return [p.stages for p in chromium.plan_visit(visit, technique, server, preflight_answer)]
    net = visit.net
    rtt = net.rtt
    if technique == "pixel-keepalive":
        ready = net.dns + rtt
        return [{"dns": 0.0, "connect": max(0.0, ready - e.at), "request": 0.0} for e in visit.events]
    cache = DnsCache(filled_at=net.dns if technique == "pixel-prewarm" else -math.inf)
    plans = []
    for i, event in enumerate(visit.events):
        d = cache.wait(event.at, net.dns)
        if technique == "ajax":
            body = _body_time(net.uplink_bps)
            preflight = rtt if preflight_answer is None else rtt + preflight_answer[i]
            plans.append({"dns": d, "connect": rtt, "preflight": preflight, "headers": 0.0, "body": body})
        else:
            plans.append({"dns": d, "connect": rtt, "request": 0.0})
    return plans


def data_written_times(
    visit: Visit,
    technique: str,
    preflight_answer: Sequence[float] | None = None,
    *,
    browser: str = DEFAULT_BROWSER,
    server: ServerHints | None = None,
) -> list[float]:
    """T for each event of the visit, in order: seconds from firing until its data is completely written
    (``inf`` for a keepalive request the browser refused: it is never written)."""
    plans = stage_durations(visit, technique, preflight_answer, browser=browser, server=server)
    return [sum(plan.values()) if plan else math.inf for plan in plans]


def stage_at(plan: dict[str, float], t: float) -> str:
    """The stage the client is in ``t`` seconds after the event fired (``done`` once all is written)."""
    end = 0.0
    for stage, duration in plan.items():
        end += duration
        if t < end:
            return stage
    return DONE


def is_lost(exit_time: float, written: float, rtt: float, abort: str) -> bool:
    """Whether an event whose data is written at T = ``written`` is lost when the page goes away at A."""
    cut = exit_time - rtt / 2 if abort == "drop" else exit_time
    return cut < written


# ------------------------------------------------------------------------------- vectorised prediction


@dataclass(frozen=True)
class Prediction:
    """A technique's predicted loss.

    ``ci95`` is the Wilson interval of the Monte Carlo estimate (events of one visit are treated as
    independent, so it is a little narrow). ``by_stage``: fraction of all events by the stage the client is
    in when the page goes away (``done`` includes events never cut), like the sent ledger's ``stage``.
    ``lost_by_stage``: fraction of all events lost, by that same stage (for ``drop``, ``done`` holds events
    written in full whose last bytes were still in flight); it sums to ``loss``. ``held_seconds_per_event``:
    the connection-seconds the collector holds open per event, pool included (the chromium preset; None
    for the seed's, whose connections live as long as their event).
    """

    loss: float
    ci95: tuple[float, float]
    events: int
    by_stage: dict[str, float]
    lost_by_stage: dict[str, float]
    held_seconds_per_event: float | None = None  # connection-seconds the collector holds per event (pool)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _positions(visit: np.ndarray) -> np.ndarray:
    """Each event's index within its visit (events ordered by visit)."""
    return np.arange(len(visit)) - np.searchsorted(visit, visit, side="left")


def _dns_waits(batch: VisitBatch, filled_at: np.ndarray) -> np.ndarray:
    """Vectorised :class:`DnsCache`: the k-th events of all visits at once, for k = 0, 1, ..."""
    pos = _positions(batch.visit)
    filled = filled_at.copy()
    waits = np.empty(batch.events)
    order = np.argsort(pos, kind="stable")
    bounds = np.searchsorted(pos[order], np.arange(pos.max(initial=-1) + 2))
    for k in range(len(bounds) - 1):
        idx = order[bounds[k] : bounds[k + 1]]
        v = batch.visit[idx]
        at = batch.at[idx]
        f = filled[v]
        lookup = batch.net.dns[v]
        fresh = at < f + DNS_TTL
        waits[idx] = np.where(fresh, np.maximum(0.0, f - at), lookup)
        filled[v] = np.where(fresh, f, at + lookup)
    return waits


def stage_matrix(batch: VisitBatch, technique: str, preflight_answer: np.ndarray | None = None) -> np.ndarray:
    """Vectorised :func:`stage_durations`: a row per event, a column per stage of ``STAGES[technique]``;
    ``preflight_answer`` holds each event's answer time to its preflight (0 when None)."""
    _check_technique(technique, "seed")
    v = batch.visit
    rtt = batch.net.rtt[v]
    dns = batch.net.dns[v]
    zero = np.zeros(batch.events)
    if technique == "pixel-keepalive":
        return np.column_stack([zero, np.maximum(0.0, dns + rtt - batch.at), zero])
    filled = batch.net.dns.copy() if technique == "pixel-prewarm" else np.full(len(batch), -math.inf)
    d = _dns_waits(batch, filled)
    if technique == "ajax":
        body = AJAX_BODY_BYTES * 8 / batch.net.uplink_bps[v]  # uplink inf -> 0
        preflight = rtt if preflight_answer is None else rtt + preflight_answer
        return np.column_stack([d, rtt, preflight, zero, body])
    return np.column_stack([d, rtt, zero])


def _predict_one(
    batch: VisitBatch, technique: str, n: int, preflight_answer: np.ndarray | None
) -> Prediction:
    stages = STAGES[technique]
    ends = np.cumsum(stage_matrix(batch, technique, preflight_answer)[:n], axis=1)
    written = ends[:, -1]
    exit_time = batch.exit_times()[:n]
    cut = exit_time - batch.net.rtt[batch.visit[:n]] / 2 if batch.abort == "drop" else exit_time
    lost = cut < written
    # Stage holding time A: the number of stage ends at or before A (zero-length stages are skipped).
    at_cut = (exit_time[:, None] >= ends).sum(axis=1)
    names = (*stages, DONE)
    all_counts = np.bincount(at_cut, minlength=len(names))
    lost_counts = np.bincount(at_cut[lost], minlength=len(names))
    k = int(lost.sum())
    return Prediction(
        loss=k / n,
        ci95=wilson_interval(k, n),
        events=n,
        by_stage={s: int(c) / n for s, c in zip(names, all_counts, strict=True)},
        lost_by_stage={s: int(c) / n for s, c in zip(names, lost_counts, strict=True)},
    )


def _predict_pooled(
    batch: VisitBatch, technique: str, n: int, preflight_answer: np.ndarray | None, server: ServerHints
) -> Prediction:
    """:func:`_predict_one` for a browser with a pool: visit by visit (``lossbench.model.chromium``)."""
    names = (*STAGES[technique], DONE, Stage.UNSENT)
    index = {name: i for i, name in enumerate(names)}
    all_counts = [0] * len(names)
    lost_counts = [0] * len(names)
    survives = technique in SURVIVES_UNLOAD and batch.abort == "unload"
    answers = None if preflight_answer is None else preflight_answer.tolist()
    first = 0
    held = 0.0
    for visit in batch.iter_visits():
        if first >= n:
            break
        count = min(len(visit.events), n - first)
        mine = None if answers is None else answers[first : first + len(visit.events)]
        plans, state = chromium.play_visit_state(visit, technique, server, mine)
        held += state.held_seconds() * count / len(visit.events)
        for event, plan in zip(visit.events[:count], plans[:count], strict=True):
            exit_time = visit.exit_time(event)
            if plan.refused:
                i = index[Stage.UNSENT]
                all_counts[i] += 1
                lost_counts[i] += 1
                continue
            i = index[stage_at(plan.stages, exit_time)]
            all_counts[i] += 1
            cut = exit_time - visit.net.rtt / 2 if batch.abort == "drop" else exit_time
            if not survives and cut < plan.written:
                lost_counts[i] += 1
        first += len(visit.events)
    k = sum(lost_counts)
    return Prediction(
        loss=k / n,
        ci95=wilson_interval(k, n),
        events=n,
        by_stage={s: c / n for s, c in zip(names, all_counts, strict=True) if s != Stage.UNSENT or c},
        lost_by_stage={s: c / n for s, c in zip(names, lost_counts, strict=True) if s != Stage.UNSENT or c},
        held_seconds_per_event=held / n,
    )


def predict_batch(
    batch: VisitBatch,
    techniques: Iterable[str],
    *,
    events: int | None = None,
    preflight_answer: np.ndarray | None = None,
    browser: str = DEFAULT_BROWSER,
    server: ServerHints | None = None,
) -> dict[str, Prediction]:
    """Predictions over given visits (the first ``events`` events; all by default), the same for each
    technique: the comparison is paired, as in ``scenarios/all.py``. ``preflight_answer``: the collector's
    answer time to each event's preflight (one per event of the batch; 0 when None). ``browser``: the
    preset (``lossbench.model.browser.BROWSERS``); ``server``: what the collector tells it."""
    n = batch.events if events is None else min(events, batch.events)
    for t in techniques:
        _check_technique(t, browser)
    if get_browser(browser).pool:
        hints = server or ServerHints()
        return {t: _predict_pooled(batch, t, n, preflight_answer, hints) for t in techniques}
    return {t: _predict_one(batch, t, n, preflight_answer) for t in techniques}


def predict_loss(
    profile: NetworkProfile | str,
    exit_model: ExitModel | str,
    abort: str,
    techniques: Iterable[str],
    *,
    seed: int,
    events: int = 200_000,
    preflight_answers: LatencyHistogram | None = None,
    browser: str = DEFAULT_BROWSER,
    server: ServerHints | None = None,
) -> dict[str, Prediction]:
    """Predicted loss of each technique under a profile, an exit model and an abort kind.

    Draws whole visits holding ``events`` events (the last visit may be cut short) from ``seed``; every
    technique is evaluated on the same visits. ``preflight_answers``: the collector's answer times to
    preflights as measured at the run's load; each event draws its own from them after the visits are
    drawn (so the visits are the same with or without), and ajax's preflight lasts its RTT plus that.
    None (or an empty histogram): answers take no time, as before. ``browser`` and ``server``: as in
    :func:`predict_batch`.
    """
    if isinstance(profile, str):
        profile = get_profile(profile)
    if isinstance(exit_model, str):
        exit_model = get_exit_model(exit_model)
    if abort not in ABORTS:
        raise ValueError(f"unknown abort {abort!r}; valid: {', '.join(ABORTS)}")
    techniques = list(techniques)
    for t in techniques:
        _check_technique(t, browser)
    rng = np.random.default_rng(seed)
    batch = sample_visits(profile, exit_model, abort, rng, events=events)
    answer = None
    if preflight_answers is not None and preflight_answers.total:
        answer = preflight_answers.sample(rng, batch.events)
    return predict_batch(
        batch, techniques, events=events, preflight_answer=answer, browser=browser, server=server
    )
