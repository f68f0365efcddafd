"""Thin locustfile for `locust -f scenarios/ajax.py` from a checkout; the scenario lives in the package."""

from lossbench.scenarios.ajax import AjaxTechnique

__all__ = ["AjaxTechnique"]
