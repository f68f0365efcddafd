"""The three pixel techniques side by side: plain, DNS pre-warmed, kept-alive connection.

locust -f scenarios/pixel.py
"""

from lossbench.loadgen.locust.plugin import LossbenchUser


class PixelTechniques(LossbenchUser):
    techniques = ("pixel", "pixel-prewarm", "pixel-keepalive")
