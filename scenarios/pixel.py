"""Thin locustfile for `locust -f scenarios/pixel.py` from a checkout; the scenario lives in the package."""

from lossbench.scenarios.pixel import PixelTechniques

__all__ = ["PixelTechniques"]
