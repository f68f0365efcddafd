"""Locustfiles shipped in the package, so that `lossbench run` works from any directory.

A locustfile is an entry point, like the command line: it composes the layers. Each one names its
techniques on the load generator's tab user and attaches the orchestration (``lossbench.runner``), which
starts the reference collector when no --host is given and finishes the run, to the plugin. ``scenarios/``
in a checkout re-exports them for ``locust -f scenarios/pixel.py``.
"""
