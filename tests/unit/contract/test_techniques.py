"""The shared vocabulary: enum members are the plain names the ledgers and the summary hold."""

from __future__ import annotations

import json

from lossbench.contract.lines import SentPing, encode_line
from lossbench.contract.techniques import (
    ALL_TECHNIQUES,
    DONE,
    STAGES,
    TECHNIQUES,
    Stage,
    Technique,
)


def test_every_technique_and_stage_is_named_once_by_its_enum() -> None:
    assert set(ALL_TECHNIQUES) == {t.value for t in Technique}
    assert len(set(ALL_TECHNIQUES)) == len(ALL_TECHNIQUES)
    assert set(STAGES) == set(TECHNIQUES)
    assert {s for stages in STAGES.values() for s in stages} <= {s.value for s in Stage}
    assert DONE == "done" and Stage.DONE == DONE


def test_members_are_written_as_their_plain_names() -> None:
    assert json.dumps({Technique.PIXEL: [Stage.DNS]}) == '{"pixel": ["dns"]}'
    line = json.loads(encode_line(SentPing(ping=Technique.PIXEL_KEEPALIVE, requests=1, connections=0)))
    assert line["ping"] == "pixel-keepalive"
    assert Technique("pixel-prewarm") is Technique.PIXEL_PREWARM
