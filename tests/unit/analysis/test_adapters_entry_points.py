"""A user adapter registered through the ``lossbench.adapters`` entry-point group, as an installed package
would register it: a ``*.dist-info`` with ``entry_points.txt`` on ``sys.path``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lossbench.analysis.adapters import (
    DAMAGED,
    ENTRY_POINT_GROUP,
    AdapterError,
    known_kinds,
    parse_spec,
    read_received,
)

USER_MODULE = '''
from pathlib import Path

from lossbench.analysis.adapters import DAMAGED, LineAdapter, LineParser, Row, Skip


class TabAdapter(LineAdapter):
    """id<TAB>technique lines; the options name the method every line came with."""

    def __init__(self, options: str) -> None:
        self.method = options or "GET"

    def line_parser(self, path: Path) -> LineParser:
        def parse(line: bytes) -> Row:
            fields = line.decode().split("\\t")
            if len(fields) != 2:
                raise Skip(DAMAGED, "not id<TAB>technique")
            return fields[0], fields[1], self.method
        return parse


NOT_CALLABLE = 42
'''


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package ``tab-adapters`` on sys.path, registering three adapters in the group."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "lb_tab_adapter.py").write_text(USER_MODULE)
    info = site / "tab_adapters-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tab-adapters\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "tabs = lb_tab_adapter:TabAdapter\n"
        "broken = lb_no_such_module:Adapter\n"
        "number = lb_tab_adapter:NOT_CALLABLE\n"
        "nginx = lb_tab_adapter:TabAdapter\n"  # a built-in name: the built-in wins
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    sys.modules.pop("lb_tab_adapter", None)


def test_a_user_adapter_is_found_and_reads_like_a_built_in(installed: Path, tmp_path: Path) -> None:
    log = tmp_path / "events.tsv"
    log.write_text("u1\tpixel\nnot a row\nu2\tajax\n")
    assert known_kinds() == ["nginx", "jsonl", "csv", "tabs", "broken", "number"]
    got = read_received(f"tabs:{log}:POST")
    assert got.rows == [("u1", "pixel", "POST"), ("u2", "ajax", "POST")]
    assert got.skipped == {DAMAGED: 1} and got.examples[DAMAGED] == [f"{log}:2: not id<TAB>technique"]
    assert type(parse_spec(f"nginx:{log}").adapter).__name__ == "NginxAdapter"


def test_broken_user_adapters_are_named(installed: Path) -> None:
    with pytest.raises(AdapterError, match=r"adapter 'broken' \(lb_no_such_module:Adapter.*failed to import"):
        parse_spec("broken:x.log")
    with pytest.raises(AdapterError, match=r"adapter 'number' .* is not callable"):
        parse_spec("number:x.log")
    with pytest.raises(AdapterError, match="known kinds: nginx, jsonl, csv, tabs, broken, number"):
        parse_spec("nope:x.log")
