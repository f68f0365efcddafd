"""The vocabulary every layer shares: techniques, their stages, event types, aborts and close modes.

Each name here is written once; the ledgers, the model, the load generator, compare and the report import it.
``Technique`` and ``Stage`` are string enums: a member is its name in the ledgers and the summary
(``Technique.PIXEL == "pixel"``), so code can spell a name once and read plain strings from JSON.
"""

from __future__ import annotations

from enum import StrEnum


class Technique(StrEnum):
    """A way of sending a tracking event, named as in the ledgers."""

    AJAX = "ajax"
    PIXEL = "pixel"
    PIXEL_PREWARM = "pixel-prewarm"
    PIXEL_KEEPALIVE = "pixel-keepalive"
    PIXEL_PRECONNECT = "pixel-preconnect"
    BEACON = "beacon"
    FETCH_KEEPALIVE = "fetch-keepalive"
    AJAX_CACHEBUST = "ajax-cachebust"


class Stage(StrEnum):
    """Where an event was when the page went away (``DONE``: its data was completely written)."""

    DNS = "dns"
    CONNECT = "connect"
    PREFLIGHT = "preflight"
    HEADERS = "headers"
    BODY = "body"
    REQUEST = "request"
    UNSENT = "unsent"  # nothing of the event was on the network (Chromium; a refused keepalive request)
    DONE = "done"


SEED_TECHNIQUES: tuple[str, ...] = (
    Technique.AJAX,
    Technique.PIXEL,
    Technique.PIXEL_PREWARM,
    Technique.PIXEL_KEEPALIVE,
)
"""The four techniques lossbench started with (``--browser seed`` plays only these)."""

TECHNIQUES: tuple[str, ...] = (
    *SEED_TECHNIQUES,
    Technique.PIXEL_PRECONNECT,
    Technique.BEACON,
    Technique.FETCH_KEEPALIVE,
)
"""The seven techniques a default run measures side by side: the seed's four, ``<link rel=preconnect>``
before a pixel, ``navigator.sendBeacon`` and a ``fetch`` with ``keepalive``."""

VARIANTS: tuple[str, ...] = (Technique.AJAX_CACHEBUST,)
"""Techniques played on request only: ``ajax-cachebust`` is ajax with a query string unique to each event,
so that no preflight answer is ever reused (what cache-busting costs)."""

ALL_TECHNIQUES: tuple[str, ...] = TECHNIQUES + VARIANTS
"""Every technique the socket client, the model and the collector know."""

SURVIVES_UNLOAD: frozenset[str] = frozenset({Technique.BEACON, Technique.FETCH_KEEPALIVE})
"""Keepalive requests: the browser finishes them after the page is gone, so ``unload`` never cuts them."""

PREFLIGHTED: frozenset[str] = frozenset({Technique.AJAX, Technique.FETCH_KEEPALIVE, Technique.AJAX_CACHEBUST})
"""Techniques that POST ``application/json`` across origins: a CORS preflight before the POST."""

PAGE_PINGS: frozenset[str] = frozenset({Technique.PIXEL_PREWARM, Technique.PIXEL_KEEPALIVE})
"""Techniques whose page sends an empty ping at load (``pixel-keepalive`` every 20 s after)."""

_POST_STAGES = (Stage.DNS, Stage.CONNECT, Stage.PREFLIGHT, Stage.HEADERS, Stage.BODY)
_GET_STAGES = (Stage.DNS, Stage.CONNECT, Stage.REQUEST)
STAGES: dict[str, tuple[str, ...]] = {
    t: _POST_STAGES if t in PREFLIGHTED else _GET_STAGES for t in ALL_TECHNIQUES
}
"""Each technique's stages in order, named as in docs/FORMATS.md (the model has no TLS stage). A pooled
connection skips ``dns`` and ``connect``, a cached preflight ``preflight``; a beacon's POST carries its data
in one write, as a pixel's GET (``request``). Zero-length stages (``headers``, ``request``) never hold a
cut: their data is written the instant they start."""

CONNECTION_KINDS: tuple[str, ...] = ("cold", "warm", "pending", "stale")
"""What an event found when it asked for a connection (the sent ledger's ``conn``; ``none`` when the
browser keeps no pool): none idle (``cold``: a lookup unless cached, then a handshake), an idle pooled one
(``warm``: no wait), one being opened or busy that it joined (``pending``), or a pooled one the collector
had closed (``stale``: a lost round trip, then a new one). Decided by ``lossbench.model.browser``."""

PREFLIGHT_STATES: tuple[str, ...] = ("sent", "cached", "none")
"""The sent ledger's ``preflight``: the event needed one (and sent it unless the cut came first, in its
``dns`` or ``connect`` stage), found its answer cached, or needed none."""

DONE: str = Stage.DONE
"""The stage of an event whose data was completely written before the cut."""

EVENT_TYPES: tuple[str, ...] = ("pageview", "click", "outbound")
"""Event types, in the order of their integer codes in a visit batch."""

ABORTS: tuple[str, ...] = ("unload", "drop")
"""``unload``: bytes already written reach the collector (and keepalive requests finish). ``drop``: the
network vanished, so bytes written in the last one-way delay (half an RTT) before the cut are lost too."""

CLOSE_MODES: tuple[str, ...] = ("rst", "fin", "silent")
"""How the client closes a cut request's connection: RST (the browser process killed), FIN (a closing tab:
Chromium's way, docs/CALIBRATION.md), or nothing (the network vanished)."""
