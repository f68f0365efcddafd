"""lossbench: how many tracking events each technique loses when users leave the page."""

__version__ = "0.1.0"

TECHNIQUES: tuple[str, ...] = ("ajax", "pixel", "pixel-prewarm", "pixel-keepalive")
"""The four techniques, in order of how many network stages an event needs before its data is out."""
