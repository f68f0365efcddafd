"""The vocabulary every layer shares: techniques, their stages, event types, aborts and close modes.

Each name here is written once; the ledgers, the model, the load generator, compare and the report import it.
"""

from __future__ import annotations

TECHNIQUES: tuple[str, ...] = ("ajax", "pixel", "pixel-prewarm", "pixel-keepalive")
"""The four techniques, in order of how many network stages an event needs before its data is out."""

BROWSER_TECHNIQUES: tuple[str, ...] = ("beacon", "fetch-keepalive")
"""Techniques only a real browser has (played by the Chromium client): ``navigator.sendBeacon`` and ``fetch``
with ``keepalive``, both POSTing the event's JSON to ``/e`` (preflighted, as ajax)."""

ALL_TECHNIQUES: tuple[str, ...] = TECHNIQUES + BROWSER_TECHNIQUES
"""Every technique the collector accepts."""

STAGES: dict[str, tuple[str, ...]] = {
    "ajax": ("dns", "connect", "preflight", "headers", "body"),
    "pixel": ("dns", "connect", "request"),
    "pixel-prewarm": ("dns", "connect", "request"),
    "pixel-keepalive": ("connect", "request"),
}
"""Each technique's stages in order, named as in docs/FORMATS.md (the model has no TLS stage). Zero-length
stages (``headers``, ``request``) never hold a cut: their data is written the instant they start."""

DONE = "done"
"""The stage of an event whose data was completely written before the cut."""

EVENT_TYPES: tuple[str, ...] = ("pageview", "click", "outbound")
"""Event types, in the order of their integer codes in a visit batch."""

ABORTS: tuple[str, ...] = ("unload", "drop")
"""``unload``: bytes already written reach the collector. ``drop``: the network vanished, so bytes written in
the last one-way delay (half an RTT) before the cut are lost too."""

CLOSE_MODES: tuple[str, ...] = ("rst", "fin", "silent")
"""How the client closes a cut connection: RST (a closing tab), FIN, or nothing (the network vanished)."""
