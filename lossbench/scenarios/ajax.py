"""CORS Ajax POST alone: DNS, connect, preflight round trip, then headers and body.

locust -f scenarios/ajax.py
"""

from lossbench.loadgen.locust.user import LossbenchUser
from lossbench.runner import attach_to_locust

attach_to_locust()


class AjaxTechnique(LossbenchUser):
    techniques = ("ajax",)
