"""The pixel techniques side by side: plain, DNS pre-warmed, kept-alive connection, preconnected.

locust -f scenarios/pixel.py
"""

from lossbench.loadgen.locust.user import LossbenchUser
from lossbench.runner import attach_to_locust

attach_to_locust()


class PixelTechniques(LossbenchUser):
    techniques = ("pixel", "pixel-prewarm", "pixel-keepalive", "pixel-preconnect")
