"""Locustfiles shipped in the package, so that `lossbench run` works from any directory.

``scenarios/`` in a checkout re-exports them for ``locust -f scenarios/pixel.py``.
"""
