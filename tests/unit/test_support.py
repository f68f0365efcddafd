"""The tests' own ledger readers: they read ledgers the collector may be writing at that very moment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import received_events, received_ids, whole_lines

HEADER = b'{"ledger":"received","schema":1}\n'
FOOTER = b'{"ledger_end":true,"events":2}\n'


def event(event_id: str) -> bytes:
    return b'{"id":"%s","tech":"pixel","m":"GET","t":1.5,"c":1}\n' % event_id.encode()


def ledger(run_dir: Path, name: str, data: bytes) -> Path:
    path = run_dir / "received" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_last_line_still_being_written_is_left_out(tmp_path: Path) -> None:
    """The CI flake: a read caught the collector half-way through a line, ``{"id":"rst-28``."""
    ledger(tmp_path, "a.0.jsonl", HEADER + event("rst-27") + event("rst-26") + b'{"id":"rst-28')
    assert received_ids(tmp_path) == {"rst-27": 1, "rst-26": 1}
    assert [e["id"] for e in received_events(tmp_path)] == ["rst-27", "rst-26"]


def test_whole_ledgers_count_every_event_in_every_part_and_no_header_or_footer(tmp_path: Path) -> None:
    ledger(tmp_path, "a.0.jsonl", HEADER + event("x") + event("y") + FOOTER)
    ledger(tmp_path, "a.1.jsonl", HEADER + event("x"))  # the part being written, cut after a whole line
    assert received_ids(tmp_path) == {"x": 2, "y": 1}
    assert received_events(tmp_path)[0] == {"id": "x", "tech": "pixel", "m": "GET", "t": 1.5, "c": 1}


def test_no_ledger_yet_is_no_event(tmp_path: Path) -> None:
    assert received_ids(tmp_path) == {}
    path = ledger(tmp_path, "a.0.jsonl", b"")
    assert whole_lines(path) == [] and received_ids(tmp_path) == {}


def test_a_damaged_line_before_the_last_one_still_fails(tmp_path: Path) -> None:
    """Only the line on its way is forgiven: damage anywhere else is a collector bug the test must see."""
    ledger(tmp_path, "a.0.jsonl", HEADER + b'{"id":"rst-1\n' + event("rst-2"))
    with pytest.raises(json.JSONDecodeError):
        received_ids(tmp_path)
