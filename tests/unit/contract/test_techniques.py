"""The shared vocabulary: enum members are the plain names the ledgers and the summary hold."""

from __future__ import annotations

import json

from lossbench.analysis import fast
from lossbench.contract.lines import SentPing, encode_line
from lossbench.contract.techniques import (
    ALL_TECHNIQUES,
    CONNECTION_KINDS,
    DONE,
    PAGE_PINGS,
    PREFLIGHT_STATES,
    PREFLIGHTED,
    SEED_TECHNIQUES,
    STAGES,
    SURVIVES_UNLOAD,
    TECHNIQUES,
    VARIANTS,
    Stage,
    Technique,
)


def test_every_technique_and_stage_is_named_once_by_its_enum() -> None:
    assert set(ALL_TECHNIQUES) == {t.value for t in Technique}
    assert len(set(ALL_TECHNIQUES)) == len(ALL_TECHNIQUES)
    assert set(STAGES) == set(ALL_TECHNIQUES)
    assert {s for stages in STAGES.values() for s in stages} <= {s.value for s in Stage}
    assert DONE == "done" and Stage.DONE == DONE


def test_the_default_set_the_seed_and_the_variants() -> None:
    """A default run plays seven techniques, the seed's four first (``--browser seed`` plays only those);
    the cache-busting variant is played on request only."""
    assert SEED_TECHNIQUES == ("ajax", "pixel", "pixel-prewarm", "pixel-keepalive")
    assert (*SEED_TECHNIQUES, "pixel-preconnect", "beacon", "fetch-keepalive") == TECHNIQUES
    assert VARIANTS == ("ajax-cachebust",)
    assert ALL_TECHNIQUES == TECHNIQUES + VARIANTS


def test_the_technique_families_are_subsets_of_the_known_ones() -> None:
    """Only keepalive requests outlive the page; the JSON POSTs are preflighted; the pixels with a page ping
    are the seed's two; every technique's stages follow from its family."""
    assert {"beacon", "fetch-keepalive"} == SURVIVES_UNLOAD
    assert {"ajax", "fetch-keepalive", "ajax-cachebust"} == PREFLIGHTED
    assert {"pixel-prewarm", "pixel-keepalive"} == PAGE_PINGS
    assert set(ALL_TECHNIQUES) >= SURVIVES_UNLOAD | PREFLIGHTED | PAGE_PINGS
    for tech in ALL_TECHNIQUES:
        if tech in PREFLIGHTED:
            assert STAGES[tech] == ("dns", "connect", "preflight", "headers", "body"), tech
        else:
            assert STAGES[tech] == ("dns", "connect", "request"), tech  # a beacon's POST: one write


def test_connection_kinds_and_preflight_states_are_what_the_fast_reader_knows() -> None:
    """The sent ledger's ``conn`` and ``preflight`` values: a name the fast path does not know would send
    every line of a run to the slow path."""
    assert CONNECTION_KINDS == ("cold", "warm", "pending", "stale")
    assert PREFLIGHT_STATES == ("sent", "cached", "none")
    assert set(fast.CONN_NAMES) == {*CONNECTION_KINDS, "none"}
    assert set(fast.PREFLIGHT_NAMES) == set(PREFLIGHT_STATES)
    assert set(fast.TECH_NAMES) == set(ALL_TECHNIQUES)


def test_members_are_written_as_their_plain_names() -> None:
    assert json.dumps({Technique.PIXEL: [Stage.DNS]}) == '{"pixel": ["dns"]}'
    line = json.loads(encode_line(SentPing(ping=Technique.PIXEL_KEEPALIVE, requests=1, connections=0)))
    assert line["ping"] == "pixel-keepalive"
    assert Technique("pixel-prewarm") is Technique.PIXEL_PREWARM
    assert Technique("ajax-cachebust") is Technique.AJAX_CACHEBUST
