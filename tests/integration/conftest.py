"""Integration tests start the real collector, real sockets and real Locust runs: all marked ``slow``.

``make check`` leaves them out for a quick loop; ``make test`` (and CI) runs them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)
