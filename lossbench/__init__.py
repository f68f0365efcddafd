"""lossbench: how many tracking events each technique loses when users leave the page."""

__version__ = "0.1.0"

TECHNIQUES: tuple[str, ...] = ("ajax", "pixel", "pixel-prewarm", "pixel-keepalive")
"""The four techniques, in order of how many network stages an event needs before its data is out."""

BROWSER_TECHNIQUES: tuple[str, ...] = ("beacon", "fetch-keepalive")
"""Techniques only a real browser has (played by the Chromium client): ``navigator.sendBeacon`` and ``fetch``
with ``keepalive``, both POSTing the event's JSON to ``/e`` (preflighted, as ajax)."""

ALL_TECHNIQUES: tuple[str, ...] = TECHNIQUES + BROWSER_TECHNIQUES
"""Every technique the collector accepts."""
