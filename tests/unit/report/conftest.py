"""Summaries the report tests render: one stored by a real run, so a renderer reads what compare writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossbench.contract.summary import Summary, load_summary

STORED = Path(__file__).parents[2] / "data" / "run-before" / "summary.before.json"
"""summary.json of a 5 s run of the four techniques (3G, exit model mix, seed 11), written before issue 10."""


@pytest.fixture(scope="session")
def stored() -> Summary:
    return load_summary(STORED)
