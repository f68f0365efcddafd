"""Browser tests start real Chromium, the real collector and the network emulator: all marked ``slow`` (and
``browser`` where Chromium itself runs), so the quick loop leaves them out; ``make test`` and CI run them."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)
