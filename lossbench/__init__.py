"""lossbench: how many tracking events each technique loses when users leave the page."""

__version__ = "0.1.0"
