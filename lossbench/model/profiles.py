"""Network profiles: per-visit RTT, DNS cost and uplink, drawn around published presets, with sources."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_PROFILE = "3G"
"""WebPageTest's standard mobile profile (300 ms RTT, also Lighthouse's ``mobileRegular3G``). It is chosen as
the default because every network stage costs 300 ms there, so the techniques' differences are large next to
the load generator's timing error (milliseconds), and it stands for the slow end of real mobile users, where
the choice of technique matters. Use ``mobileSlow4G`` for a typical mobile user, ``Cable`` for desktop."""


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
    """One visit's network: median RTT, the cost of one uncached DNS lookup, uplink rate (None: unlimited).
    The load generator's tabs play it as it is (zero delays by default: a bare tab, for tests)."""

    rtt: float = 0.0
    dns: float = 0.0
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
