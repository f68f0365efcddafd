"""Thin locustfile for `locust -f scenarios/all.py` from a checkout; the scenario lives in the package."""

from lossbench.scenarios.all import AllTechniques

__all__ = ["AllTechniques"]
