"""CORS Ajax POST alone: DNS, connect, preflight round trip, then headers and body.

locust -f scenarios/ajax.py
"""

from lossbench.loadgen.locust.plugin import LossbenchUser


class AjaxTechnique(LossbenchUser):
    techniques = ("ajax",)
