"""Exit models: when a visit's events fire and when its page goes away, with sources."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from lossbench.contract.techniques import ABORTS
from lossbench.model.profiles import NetworkBatch, NetworkDraw
from lossbench.model.visits import Visit, VisitBatch, _assemble

DEFAULT_EXIT_MODEL = "mix"
"""A visit mix (page view at load, in-page clicks, sometimes an outbound click): closest to real traffic."""

# ------------------------------------------------------------------------------------ shared behaviour

_PAGEVIEW, _CLICK, _OUTBOUND = range(3)

LOAD_RTTS = 3
"""Page load (onload, when the page view fires) takes this many RTTs (DNS, connect, document) plus a lognormal
rest for rendering and sub-resources."""
LOAD_REST_MEDIAN = 0.5
LOAD_REST_SIGMA = 0.6


def _load_time(rng: np.random.Generator, net: NetworkBatch) -> np.ndarray:
    """Visit time of onload, when the page view fires."""
    return LOAD_RTTS * net.rtt + rng.lognormal(math.log(LOAD_REST_MEDIAN), LOAD_REST_SIGMA, len(net))


def _clicks(
    rng: np.random.Generator, start: np.ndarray, dwell: np.ndarray, rate: float, max_clicks: int
) -> tuple[np.ndarray, np.ndarray]:
    """In-page clicks: a Poisson process of ``rate`` per second during the dwell, at most ``max_clicks``."""
    n = len(start)
    gaps = rng.exponential(1.0 / rate, (n, max_clicks)) if rate > 0 else np.full((n, max_clicks), math.inf)
    since = np.cumsum(gaps, axis=1)
    keep = since < dwell[:, None]
    rows, _ = np.nonzero(keep)
    return rows, (start[:, None] + since)[keep]


def _nav_delay(
    rng: np.random.Generator, net: NetworkBatch, warm_prob: float, server_median: float, server_sigma: float
) -> np.ndarray:
    """Seconds from an outbound click until the next page starts to arrive (when the old page unloads).

    Cold destination: DNS lookup + connect (1 RTT) + request to first byte (1 RTT + server time). Warm
    destination (same site, connection kept open by the browser): 1 RTT + server time.
    """
    n = len(net)
    server = rng.lognormal(math.log(server_median), server_sigma, n)
    warm = rng.random(n) < warm_prob
    delay: np.ndarray = np.where(warm, 0.0, net.dns + net.rtt) + net.rtt + server
    return delay


_DWELL_SOURCE = (
    "Liu, White & Dumais, 'Understanding web browsing behaviors through Weibull analysis of dwell time', "
    "SIGIR 2010: dwell times fit a Weibull with shape k < 1 for 98.5% of pages (the longer a visitor has "
    "stayed, the less likely to leave now), scale < 70 s for 80% of pages"
)
_OUTBOUND_SOURCE = (
    "The old page unloads when the next one starts to arrive (a few RTTs). Field reports: image-ping loss on "
    "click-then-navigate 61% in Chrome and 76% in Safari (Taobao, 2012); beacon arrival on unload 72-82% "
    "(Jansma, 2020). Warm-destination share: lossbench's assumption (most clicks stay on the site, whose "
    "connection the browser keeps open)"
)


# --------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ExitModel:
    """How a visit's events fire and when its page goes away. Subclasses implement :meth:`draw_batch`."""

    name: str
    description: str
    source: str

    def draw_visit(self, rng: np.random.Generator, net: NetworkDraw, abort: str) -> Visit:
        """One visit on the network ``net`` (drawn by :meth:`NetworkProfile.draw`)."""
        return self.draw_batch(rng, NetworkBatch.of([net]), abort).visit_at(0)

    def draw_batch(self, rng: np.random.Generator, net: NetworkBatch, abort: str) -> VisitBatch:
        """``len(net)`` visits, one on each network draw."""
        raise NotImplementedError


def _check_abort(abort: str) -> None:
    if abort not in ABORTS:
        raise ValueError(f"unknown abort {abort!r}; valid: {', '.join(ABORTS)}")


@dataclass(frozen=True)
class DwellExit(ExitModel):
    """Page view at onload, in-page clicks while the user stays, the page left after a Weibull dwell.

    The dwell D counts from the page view; the page goes away at onload + D (tab closed, or navigated away
    without a tracked click). Only events before that fire.
    """

    shape: float = 0.6
    scale: float = 30.0
    click_rate: float = 0.05
    max_clicks: int = 8

    def __post_init__(self) -> None:
        if self.shape <= 0 or self.scale <= 0 or self.click_rate < 0 or self.max_clicks < 0:
            raise ValueError(f"exit model {self.name!r}: shape, scale > 0 and click_rate, max_clicks >= 0")

    def _dwell_parts(
        self, rng: np.random.Generator, net: NetworkBatch
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, int, np.ndarray]]]:
        n = len(net)
        load = _load_time(rng, net)
        dwell = self.scale * rng.weibull(self.shape, n)
        rows, times = _clicks(rng, load, dwell, self.click_rate, self.max_clicks)
        return load, dwell, [(np.arange(n), _PAGEVIEW, load), (rows, _CLICK, times)]

    def draw_batch(self, rng: np.random.Generator, net: NetworkBatch, abort: str) -> VisitBatch:
        _check_abort(abort)
        load, dwell, parts = self._dwell_parts(rng, net)
        return _assemble(net, load + dwell, abort, parts)


@dataclass(frozen=True)
class OutboundExit(ExitModel):
    """Page view at onload, then one outbound click after a short in-page gap; the page unloads when the next
    page starts to arrive (:func:`_nav_delay`)."""

    gap_median: float = 5.0
    gap_sigma: float = 1.0
    warm_prob: float = 0.5
    server_median: float = 0.2
    server_sigma: float = 0.6

    def __post_init__(self) -> None:
        if not 0.0 <= self.warm_prob <= 1.0 or self.gap_median <= 0 or self.server_median <= 0:
            raise ValueError(f"exit model {self.name!r}: warm_prob in [0, 1], medians > 0")

    def draw_batch(self, rng: np.random.Generator, net: NetworkBatch, abort: str) -> VisitBatch:
        _check_abort(abort)
        n = len(net)
        load = _load_time(rng, net)
        click = load + rng.lognormal(math.log(self.gap_median), self.gap_sigma, n)
        nav = _nav_delay(rng, net, self.warm_prob, self.server_median, self.server_sigma)
        idx = np.arange(n)
        return _assemble(net, click + nav, abort, [(idx, _PAGEVIEW, load), (idx, _OUTBOUND, click)])


@dataclass(frozen=True)
class MixExit(DwellExit):
    """Page view at onload, in-page clicks during a Weibull dwell, and at the end of the dwell either an
    outbound click (probability ``outbound_prob``; the page unloads when the next page arrives) or a silent
    exit (tab closed, address bar, back button)."""

    outbound_prob: float = 0.4
    warm_prob: float = 0.5
    server_median: float = 0.2
    server_sigma: float = 0.6

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0.0 <= self.outbound_prob <= 1.0 and 0.0 <= self.warm_prob <= 1.0 and self.server_median > 0):
            raise ValueError(
                f"exit model {self.name!r}: outbound_prob and warm_prob in [0, 1], server_median > 0"
            )

    def draw_batch(self, rng: np.random.Generator, net: NetworkBatch, abort: str) -> VisitBatch:
        _check_abort(abort)
        load, dwell, parts = self._dwell_parts(rng, net)
        end = load + dwell
        out = rng.random(len(net)) < self.outbound_prob
        nav = _nav_delay(rng, net, self.warm_prob, self.server_median, self.server_sigma)
        parts.append((np.flatnonzero(out), _OUTBOUND, end[out]))
        return _assemble(net, np.where(out, end + nav, end), abort, parts)


@dataclass(frozen=True)
class NoExit(MixExit):
    """The events of ``mix``, but the page never goes away while they are in flight: the zero-loss control."""

    def draw_batch(self, rng: np.random.Generator, net: NetworkBatch, abort: str) -> VisitBatch:
        batch = super().draw_batch(rng, net, abort)
        return replace(batch, leave_at=np.full(len(net), math.inf))


@dataclass(frozen=True)
class FixedExit(ExitModel):
    """One click fired at visit time ``at``; the page goes away exactly ``seconds`` later (A = seconds)."""

    name: str = "fixed"
    description: str = "one click, cut a fixed time after it fires (tests, exact cuts)"
    source: str = "lossbench"
    seconds: float = 1.0
    at: float = 5.0

    def __post_init__(self) -> None:
        if not self.seconds >= 0 or not self.at >= 0:
            raise ValueError(f"fixed exit: SECONDS and AT must be >= 0, got {self.seconds}@{self.at}")
        if self.name == "fixed":  # the name is the spec that get_exit_model turns back into this model
            object.__setattr__(self, "name", f"fixed:{self.seconds:g}@{self.at:g}")

    def draw_batch(self, rng: np.random.Generator, net: NetworkBatch, abort: str) -> VisitBatch:
        _check_abort(abort)
        n = len(net)
        at = np.full(n, self.at)
        return _assemble(net, at + self.seconds, abort, [(np.arange(n), _CLICK, at)])


EXIT_MODELS: dict[str, ExitModel] = {
    m.name: m
    for m in (
        DwellExit(
            "dwell",
            "page view at onload, Poisson in-page clicks, page left after a Weibull dwell (k=0.6, 30 s)",
            _DWELL_SOURCE,
        ),
        OutboundExit(
            "outbound",
            "page view at onload, one outbound click a few seconds later, page unloads as the next arrives",
            _OUTBOUND_SOURCE,
        ),
        MixExit(
            "mix",
            "page view, in-page clicks during a Weibull dwell, then an outbound click (40%) or a silent exit",
            f"{_DWELL_SOURCE}. {_OUTBOUND_SOURCE}",
        ),
        NoExit("none", "the events of 'mix', page never goes away: the zero-loss control", "lossbench"),
    )
}
"""Named exit models. ``fixed:SECONDS[@AT]`` is parameterised and built by :func:`get_exit_model`. A model's
``name`` is always a spec that :func:`get_exit_model` turns back into it."""

_BASE_FIELDS = {f.name for f in fields(ExitModel)}


def _valid_specs() -> str:
    return ", ".join([*EXIT_MODELS, "fixed:SECONDS[@AT]"])


def get_exit_model(spec: str) -> ExitModel:
    """Parse an exit model spec: a registered name (any case), optionally with parameters overridden as
    ``name:field=value,...`` (e.g. ``mix:outbound_prob=0.6,scale=60``), or ``fixed:SECONDS[@AT]``."""
    name, _, params = spec.strip().partition(":")
    name = name.strip().lower()
    if name == "fixed":
        return _parse_fixed(spec, params)
    if name not in EXIT_MODELS:
        raise ValueError(f"unknown exit model {spec!r}; valid: {_valid_specs()}")
    model = EXIT_MODELS[name]
    if not params.strip():
        return model
    tunable = {f.name: f.type for f in fields(model) if f.name not in _BASE_FIELDS}
    changes: dict[str, Any] = {}  # numbers, by the field they tune
    for item in params.split(","):
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq or key not in tunable:
            raise ValueError(
                f"bad parameter {item.strip()!r} in exit model {spec!r}; {name} takes "
                f"{', '.join(f'{k}=NUMBER' for k in tunable)}"
            )
        try:
            changes[key] = int(value) if tunable[key] in (int, "int") else float(value)
        except ValueError:
            raise ValueError(f"bad value {value!r} for {key} in exit model {spec!r}") from None
    # The name is the spec, so that the model can be rebuilt from what run.json records.
    tuned = ",".join(f"{k}={v:g}" for k, v in changes.items())
    return replace(model, name=f"{name}:{tuned}", **changes)


def _parse_fixed(spec: str, params: str) -> FixedExit:
    seconds, _, at = params.partition("@")
    try:
        return FixedExit(seconds=float(seconds), at=float(at) if at.strip() else 5.0)
    except ValueError as e:
        raise ValueError(
            f"bad exit model {spec!r}: expected fixed:SECONDS[@AT], e.g. fixed:0.35 or fixed:0.35@5 ({e})"
        ) from None
