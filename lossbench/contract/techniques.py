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
    UNSENT = "unsent"  # the Chromium client only: the page had the event, nothing of it was on the network
    DONE = "done"


TECHNIQUES: tuple[str, ...] = (
    Technique.AJAX,
    Technique.PIXEL,
    Technique.PIXEL_PREWARM,
    Technique.PIXEL_KEEPALIVE,
)
"""The four techniques of the socket client and the model, in order of how many network stages an event
needs before its data is out."""

BROWSER_TECHNIQUES: tuple[str, ...] = (
    Technique.BEACON,
    Technique.FETCH_KEEPALIVE,
    Technique.PIXEL_PRECONNECT,
    Technique.AJAX_CACHEBUST,
)
"""Techniques only the Chromium client plays: ``navigator.sendBeacon`` and ``fetch`` with ``keepalive``
(both POSTing the event's JSON to ``/e``), a pixel after ``<link rel=preconnect>`` at page load, and ajax
POSTing to ``/e?n=<event id>``, a URL of its own per event, so that no preflight answer is reused."""

ALL_TECHNIQUES: tuple[str, ...] = TECHNIQUES + BROWSER_TECHNIQUES
"""Every technique the collector accepts."""

STAGES: dict[str, tuple[str, ...]] = {
    Technique.AJAX: (Stage.DNS, Stage.CONNECT, Stage.PREFLIGHT, Stage.HEADERS, Stage.BODY),
    Technique.PIXEL: (Stage.DNS, Stage.CONNECT, Stage.REQUEST),
    Technique.PIXEL_PREWARM: (Stage.DNS, Stage.CONNECT, Stage.REQUEST),
    Technique.PIXEL_KEEPALIVE: (Stage.CONNECT, Stage.REQUEST),
}
"""Each modelled technique's stages in order, named as in docs/FORMATS.md (the model has no TLS stage).
Zero-length stages (``headers``, ``request``) never hold a cut: their data is written the instant they
start."""

DONE: str = Stage.DONE
"""The stage of an event whose data was completely written before the cut."""

EVENT_TYPES: tuple[str, ...] = ("pageview", "click", "outbound")
"""Event types, in the order of their integer codes in a visit batch."""

ABORTS: tuple[str, ...] = ("unload", "drop")
"""``unload``: bytes already written reach the collector. ``drop``: the network vanished, so bytes written in
the last one-way delay (half an RTT) before the cut are lost too."""

CLOSE_MODES: tuple[str, ...] = ("rst", "fin", "silent")
"""How the client closes a cut connection: RST (a closing tab), FIN, or nothing (the network vanished)."""
