"""Shared fixtures: a real collector on a free loopback port, and readers of what it recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from lossbench.collector.config import CollectorConfig
from lossbench.collector.server import CollectorThread

settings.register_profile("lossbench", deadline=None)
settings.load_profile("lossbench")
"""Hypothesis' deadline (200 ms per example) is a wall-clock window: on a loaded machine a collector round
trip can take longer, and the test fails with no bug. A hang is still caught by the tests' own timeouts."""


@pytest.fixture
def collector_factory(tmp_path: Path) -> Iterator[Callable[..., CollectorThread]]:
    """Start real collectors on port 0 (keyword arguments override CollectorConfig); stopped afterwards."""
    started: list[CollectorThread] = []

    def start(**overrides: Any) -> CollectorThread:  # any CollectorConfig field
        config = replace(CollectorConfig(port=0, out=tmp_path), **overrides)
        thread = CollectorThread(config)
        thread.start()
        started.append(thread)
        return thread

    try:
        yield start
    finally:
        for thread in started:
            thread.stop()


@pytest.fixture
def collector(collector_factory: Callable[..., CollectorThread]) -> CollectorThread:
    return collector_factory()
