"""The browser's host cache for the collector's name: what the model predicts and the load generator plays.

One cache per technique's tab, in visit time (seconds since page load), entries fresh ``DNS_TTL`` seconds as
in Chrome's host cache. With no fresh entry an event does a full lookup and fills the cache when the lookup
ends; with a fresh entry it waits for nothing, or for the rest of a lookup still in flight. A hit does not
extend the entry's life.
"""

from __future__ import annotations

import math

DNS_TTL = 60.0
"""Seconds a host-cache entry stays fresh (Chrome's host cache keeps an entry 60 s)."""


class DnsCache:
    """One tab's cache entry for the collector's host name, in visit time."""

    def __init__(self, filled_at: float = -math.inf) -> None:
        self.filled_at = filled_at  # visit time the entry was (or will be) filled; -inf: no entry

    def wait(self, at: float, lookup: float) -> float:
        """Seconds an event firing at visit time ``at`` waits for DNS; a miss starts a lookup of ``lookup``
        seconds that refills the cache."""
        if at < self.filled_at + DNS_TTL:
            return max(0.0, self.filled_at - at)  # fresh, or a lookup still in flight
        self.filled_at = at + lookup
        return lookup
