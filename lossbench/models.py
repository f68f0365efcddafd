"""Network profiles, exit models and the visit sampler: the stated model of network and user behaviour.

A *visit* is one page view in one tab. Visit time runs from the moment the tracker script starts on the page
(visit time 0, when ``pixel-prewarm`` fires its empty ping and ``pixel-keepalive`` opens its connection).
Each visit draws a network condition from a :class:`NetworkProfile`, then a list of tracking events and the
moment the page goes away from an :class:`ExitModel`. An event's exit time A (seconds from firing until the
page goes away) is what the technique races against.

Everything random is drawn from the ``numpy.random.Generator`` handed in: the same seed gives the same visits.
Each model draws whole batches of visits with numpy (:meth:`ExitModel.draw_batch`, used by the predictor
for hundreds of thousands of events); :meth:`ExitModel.draw_visit` is the same code for one visit, used by
the load generator. Pure numpy and Python: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

EVENT_TYPES: tuple[str, ...] = ("pageview", "click", "outbound")
"""Event types, in the order of their integer codes in :class:`VisitBatch`."""

ABORTS: tuple[str, ...] = ("unload", "drop")
"""``unload``: bytes already written reach the collector. ``drop``: the network vanished, so bytes written in
the last one-way delay (half an RTT) before the cut are lost too."""

DEFAULT_PROFILE = "3G"
"""WebPageTest's standard mobile profile (300 ms RTT, also Lighthouse's ``mobileRegular3G``). It is chosen as
the default because every network stage costs 300 ms there, so the techniques' differences are large next to
the load generator's timing error (milliseconds), and it stands for the slow end of real mobile users, where
the choice of technique matters. Use ``mobileSlow4G`` for a typical mobile user, ``Cable`` for desktop."""

DEFAULT_EXIT_MODEL = "mix"
"""A visit mix (page view at load, in-page clicks, sometimes an outbound click): closest to real traffic."""

_WPT_SOURCE = "WebPageTest connectivity profiles (connectivity.ini)"
_LH_SOURCE = "Lighthouse throttling constants (core/config/constants.js)"
_DNS_SOURCE = (
    "DNS: lossbench's assumption of about one RTT to the resolver; a resolver miss 20% of the time "
    "(Jung et al., 'DNS performance and the effectiveness of caching', IEEE/ACM ToN 2002: resolver hit "
    "rates of 80-87%) costing 100 ms more. Per-visit RTT spread: lossbench's assumption."
)

# Lognormal sigma of the per-visit median RTT: the presets give one figure, real users scatter around it.
# Mobile links vary more than wired ones. These are lossbench's assumptions, not the presets'.
_WIRED_SPREAD = 0.3
_MOBILE_SPREAD = 0.5
_DNS_MISS_PROB = 0.2
_DNS_MISS_EXTRA = 0.1


# --------------------------------------------------------------------------------------------- network


@dataclass(frozen=True)
class NetworkDraw:
    """One visit's network: median RTT, the cost of one uncached DNS lookup, uplink rate (None: unlimited)."""

    rtt: float
    dns: float
    uplink_bps: float | None = None


@dataclass(frozen=True, eq=False)
class NetworkBatch:
    """The network draws of n visits as arrays (``uplink_bps`` is ``inf`` where the rate is unlimited)."""

    rtt: np.ndarray
    dns: np.ndarray
    uplink_bps: np.ndarray

    def __len__(self) -> int:
        return len(self.rtt)

    def draw(self, i: int) -> NetworkDraw:
        up = float(self.uplink_bps[i])
        return NetworkDraw(float(self.rtt[i]), float(self.dns[i]), None if math.isinf(up) else up)

    @classmethod
    def of(cls, draws: Sequence[NetworkDraw]) -> NetworkBatch:
        return cls(
            rtt=np.array([d.rtt for d in draws], dtype=float),
            dns=np.array([d.dns for d in draws], dtype=float),
            uplink_bps=np.array([math.inf if d.uplink_bps is None else d.uplink_bps for d in draws], float),
        )


@dataclass(frozen=True)
class NetworkProfile:
    """A named network condition.

    Each visit draws its median RTT from a lognormal around ``rtt`` (sigma ``rtt_spread``). An uncached DNS
    lookup costs one RTT to the resolver, plus ``dns_miss_extra`` seconds with probability ``dns_miss_prob``
    (the resolver's own recursion, on its own network: seconds, not a multiple of the client's RTT).
    ``uplink_bps`` paces request bodies; None means unlimited.
    """

    name: str
    rtt: float
    rtt_spread: float = 0.0
    dns_miss_prob: float = 0.0
    dns_miss_extra: float = 0.0
    uplink_bps: float | None = None
    source: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if self.rtt < 0 or self.rtt_spread < 0 or self.dns_miss_extra < 0:
            raise ValueError(f"profile {self.name!r}: rtt, rtt_spread and dns_miss_extra must be >= 0")
        if not 0.0 <= self.dns_miss_prob <= 1.0:
            raise ValueError(f"profile {self.name!r}: dns_miss_prob must be in [0, 1]")
        if self.uplink_bps is not None and self.uplink_bps <= 0:
            raise ValueError(f"profile {self.name!r}: uplink_bps must be > 0 or None")

    def draw(self, rng: np.random.Generator) -> NetworkDraw:
        """One visit's network condition."""
        return self.draw_batch(rng, 1).draw(0)

    def draw_batch(self, rng: np.random.Generator, n: int) -> NetworkBatch:
        """n visits' network conditions (consumes the same random numbers whatever the parameters)."""
        rtt = self.rtt * np.exp(self.rtt_spread * rng.standard_normal(n))
        miss = rng.random(n) < self.dns_miss_prob
        dns = rtt + np.where(miss, self.dns_miss_extra, 0.0)
        up = math.inf if self.uplink_bps is None else float(self.uplink_bps)
        return NetworkBatch(rtt=rtt, dns=dns, uplink_bps=np.full(n, up))


def _preset(
    name: str, rtt_ms: float, uplink_bps: float, spread: float, label: str, source: str
) -> NetworkProfile:
    return NetworkProfile(
        name=name,
        rtt=rtt_ms / 1000,
        rtt_spread=spread,
        dns_miss_prob=_DNS_MISS_PROB,
        dns_miss_extra=_DNS_MISS_EXTRA,
        uplink_bps=float(uplink_bps),
        source=f"{source}: {label}. {_DNS_SOURCE}",
        description=label,
    )


def _wpt(name: str, rtt_ms: float, up_kbps: float, spread: float, label: str) -> NetworkProfile:
    return _preset(name, rtt_ms, up_kbps * 1000, spread, label, f"{_WPT_SOURCE} [{name}]")


def _lh(name: str, rtt_ms: float, up_kbps: float, spread: float, label: str) -> NetworkProfile:
    # Lighthouse counts 1 Kbps as 1024 bit/s (DevTools' bytes/s = Kbps * 1024 / 8).
    return _preset(name, rtt_ms, up_kbps * 1024, spread, label, f"{_LH_SOURCE} [throttling.{name}]")


PROFILES: dict[str, NetworkProfile] = {
    p.name: p
    for p in (
        _wpt("FIOS", 4, 5000, _WIRED_SPREAD, "FIOS, 20 Mbps down / 5 Mbps up, 4 ms RTT"),
        _wpt("Cable", 28, 1000, _WIRED_SPREAD, "Cable, 5 Mbps down / 1 Mbps up, 28 ms RTT"),
        _wpt("DSL", 50, 384, _WIRED_SPREAD, "DSL, 1.5 Mbps down / 384 Kbps up, 50 ms RTT"),
        _wpt("3GFast", 150, 768, _MOBILE_SPREAD, "Mobile 3G - Fast, 1.6 Mbps down / 768 Kbps up, 150 ms RTT"),
        _wpt("3G", 300, 768, _MOBILE_SPREAD, "Mobile 3G, 1.6 Mbps down / 768 Kbps up, 300 ms RTT"),
        _wpt("Edge", 840, 200, _MOBILE_SPREAD, "Mobile Edge, 240 Kbps down / 200 Kbps up, 840 ms RTT"),
        _wpt("2G", 1300, 32, _MOBILE_SPREAD, "Mobile 2G, 35 Kbps down / 32 Kbps up, 1300 ms RTT"),
        _lh(
            "desktopDense4G",
            40,
            10 * 1024,
            _WIRED_SPREAD,
            "desktop broadband ('Dense 4G 25th percentile'), 40 ms RTT, 10 Mbps throughput (no separate "
            "upload figure: the simulated throughput applies both ways)",
        ),
        _lh(
            "mobileSlow4G",
            150,
            750,
            _MOBILE_SPREAD,
            "Lighthouse's default mobile throttling ('Slow 4G'), 150 ms RTT, 1.6 Mbps down / 750 Kbps up",
        ),
        _lh(
            "mobileRegular3G",
            300,
            700,
            _MOBILE_SPREAD,
            "Lighthouse 'Regular 3G', 300 ms RTT, 700 Kbps down / 700 Kbps up",
        ),
        NetworkProfile(
            name="loopback",
            rtt=0.0,
            source="lossbench: no emulated network delay",
            description="zero delay, no DNS cost, unlimited uplink: every technique should lose nothing",
        ),
    )
}


def get_profile(name: str) -> NetworkProfile:
    """The profile called ``name``, in any letter case; ValueError listing the valid names otherwise."""
    if name in PROFILES:
        return PROFILES[name]
    by_lower = {k.lower(): p for k, p in PROFILES.items()}
    try:
        return by_lower[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown network profile {name!r}; valid: {', '.join(PROFILES)}") from None


# ---------------------------------------------------------------------------------------------- visits


@dataclass(frozen=True)
class PlannedEvent:
    """A tracking event of a visit: its type and the visit time (s since the tracker started) it fires."""

    type: str
    at: float


@dataclass(frozen=True)
class Visit:
    """One page view in one tab: its network, its events in firing order, when the page goes away, and how."""

    net: NetworkDraw
    events: tuple[PlannedEvent, ...]
    leave_at: float
    abort: str = "unload"

    def exit_time(self, event: PlannedEvent) -> float:
        """The event's A: seconds from firing until the page goes away (``inf``: never)."""
        return self.leave_at - event.at


@dataclass(frozen=True, eq=False)
class VisitBatch:
    """n visits as flat arrays: the vectorised form of a list of :class:`Visit`.

    Events are ordered by visit, then by firing time; ``visit[j]`` is the index of event j's visit and
    ``type[j]`` its index into :data:`EVENT_TYPES`. Every visit drawn by an exit model has at least one event.
    """

    net: NetworkBatch
    leave_at: np.ndarray
    visit: np.ndarray
    type: np.ndarray
    at: np.ndarray
    abort: str

    def __len__(self) -> int:
        return len(self.leave_at)

    @property
    def events(self) -> int:
        return len(self.at)

    def exit_times(self) -> np.ndarray:
        """A for every event (``inf`` where the page never goes away)."""
        return self.leave_at[self.visit] - self.at

    def visit_at(self, i: int) -> Visit:
        lo, hi = np.searchsorted(self.visit, [i, i + 1])
        events = tuple(
            PlannedEvent(EVENT_TYPES[int(k)], float(t))
            for k, t in zip(self.type[lo:hi], self.at[lo:hi], strict=True)
        )
        return Visit(self.net.draw(i), events, float(self.leave_at[i]), self.abort)

    def visits(self) -> list[Visit]:
        return list(self.iter_visits())

    def iter_visits(self) -> Iterator[Visit]:
        """The visits one by one, as ``visit_at`` gives them, converting the arrays to Python once."""
        starts = np.searchsorted(self.visit, np.arange(len(self) + 1)).tolist()
        types, ats, leave = self.type.tolist(), self.at.tolist(), self.leave_at.tolist()
        rtt, dns, up = self.net.rtt.tolist(), self.net.dns.tolist(), self.net.uplink_bps.tolist()
        for i in range(len(self)):
            lo, hi = starts[i], starts[i + 1]
            events = tuple(
                PlannedEvent(EVENT_TYPES[k], t) for k, t in zip(types[lo:hi], ats[lo:hi], strict=True)
            )
            draw = NetworkDraw(rtt[i], dns[i], None if math.isinf(up[i]) else up[i])
            yield Visit(draw, events, leave[i], self.abort)

    @classmethod
    def of(cls, visits: Sequence[Visit]) -> VisitBatch:
        """The batch form of hand-made visits (all with the same abort kind)."""
        aborts = {v.abort for v in visits}
        if len(aborts) != 1:
            raise ValueError(f"a batch needs visits with one abort kind, got {sorted(aborts)}")
        return cls(
            net=NetworkBatch.of([v.net for v in visits]),
            leave_at=np.array([v.leave_at for v in visits], dtype=float),
            visit=np.array([i for i, v in enumerate(visits) for _ in v.events], dtype=np.int64),
            type=np.array([EVENT_TYPES.index(e.type) for v in visits for e in v.events], dtype=np.int8),
            at=np.array([e.at for v in visits for e in v.events], dtype=float),
            abort=aborts.pop(),
        )

    @classmethod
    def concat(cls, batches: Sequence[VisitBatch]) -> VisitBatch:
        offsets = np.cumsum([0] + [len(b) for b in batches[:-1]])
        return cls(
            net=NetworkBatch(
                rtt=np.concatenate([b.net.rtt for b in batches]),
                dns=np.concatenate([b.net.dns for b in batches]),
                uplink_bps=np.concatenate([b.net.uplink_bps for b in batches]),
            ),
            leave_at=np.concatenate([b.leave_at for b in batches]),
            visit=np.concatenate([b.visit + o for b, o in zip(batches, offsets, strict=True)]),
            type=np.concatenate([b.type for b in batches]),
            at=np.concatenate([b.at for b in batches]),
            abort=batches[0].abort,
        )


def _assemble(
    net: NetworkBatch, leave_at: np.ndarray, abort: str, parts: list[tuple[np.ndarray, int, np.ndarray]]
) -> VisitBatch:
    """Join (visit index, type code, firing time) columns into a batch ordered by visit, then time."""
    visit = np.concatenate([v for v, _, _ in parts])
    kind = np.concatenate([np.full(len(v), k, dtype=np.int8) for v, k, _ in parts])
    at = np.concatenate([t for _, _, t in parts])
    order = np.lexsort((kind, at, visit))
    return VisitBatch(net, leave_at, visit[order].astype(np.int64), kind[order], at[order], abort)


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
    return np.where(warm, 0.0, net.dns + net.rtt) + net.rtt + server


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
    changes: dict[str, float | int] = {}
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


# ------------------------------------------------------------------------------------ visit sampler


def sample_visits(
    profile: NetworkProfile, exit_model: ExitModel, abort: str, rng: np.random.Generator, *, events: int
) -> VisitBatch:
    """Whole visits holding at least ``events`` events in all, drawn in a few vectorised batches."""
    if events <= 0:
        raise ValueError("events must be > 0")
    batches: list[VisitBatch] = []
    total = 0
    n = min(events, 1000)  # pilot batch: learn how many events a visit has
    while True:
        batch = exit_model.draw_batch(rng, profile.draw_batch(rng, n), abort)
        batches.append(batch)
        total += batch.events
        if total >= events:
            break
        per_visit = max(total / sum(len(b) for b in batches), 1e-9)
        n = min(max(int((events - total) / per_visit * 1.02) + 16, 16), 10 * events)
    return batches[0] if len(batches) == 1 else VisitBatch.concat(batches)


__all__ = [
    "ABORTS",
    "DEFAULT_EXIT_MODEL",
    "DEFAULT_PROFILE",
    "EVENT_TYPES",
    "EXIT_MODELS",
    "PROFILES",
    "DwellExit",
    "ExitModel",
    "FixedExit",
    "MixExit",
    "NetworkBatch",
    "NetworkDraw",
    "NetworkProfile",
    "NoExit",
    "OutboundExit",
    "PlannedEvent",
    "Visit",
    "VisitBatch",
    "get_exit_model",
    "get_profile",
    "sample_visits",
]
