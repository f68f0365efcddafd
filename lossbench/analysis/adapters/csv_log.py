"""The ``csv`` adapter: a CSV log, one event a row.

Options, comma-separated ``key=COLUMN``: ``id`` (default ``id``), ``tech`` (default ``tech``) and
``method`` (default ``method``, optional: "" when the file has no such column). A bare first option is the
``id`` column. A column is a header name (the first line is then the header) or a 1-based number (the file
then has no header). Ids and techniques are held to the reference collector's rules.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lossbench.analysis.adapters import (
    DAMAGED,
    IGNORED,
    REFUSED,
    AdapterError,
    LineAdapter,
    LineParser,
    Row,
    Skip,
    parse_options,
)
from lossbench.contract.events import valid_id
from lossbench.contract.techniques import ALL_TECHNIQUES

_KEYS = ("id", "tech", "method")


class CsvAdapter(LineAdapter):
    """Reads CSV logs; see the module's docstring for the options."""

    def __init__(self, options: str = "") -> None:
        chosen = parse_options(options, _KEYS, "csv")
        numbered = [v.isdigit() and int(v) > 0 for v in chosen.values()]
        self.names: dict[str, str] | None = None
        self.positions: dict[str, int] | None = None
        if any(numbered):
            if not all(numbered) or not {"id", "tech"} <= chosen.keys():
                raise ValueError(
                    "csv: for a file without a header give id and tech (and method) as 1-based numbers"
                )
            self.positions = {key: int(value) - 1 for key, value in chosen.items()}
        else:
            self.names = {key: chosen.get(key, key) for key in _KEYS}
        self.method_optional = "method" not in chosen

    def line_parser(self, path: Path) -> LineParser:
        index: dict[str, int] = dict(self.positions or {})

        def parse(line: bytes) -> Row:
            try:
                fields = next(csv.reader([line.decode("utf-8")]))
            except (UnicodeDecodeError, csv.Error, StopIteration):
                raise Skip(DAMAGED, "not a CSV row of UTF-8 text") from None
            if not index and self.names is not None:
                self._read_header(path, fields, self.names, index)
                raise Skip(IGNORED, "header")
            needed = max(index.values())
            if len(fields) <= needed:
                raise Skip(DAMAGED, f"{len(fields)} fields, column {needed + 1} needed")
            event_id, tech = fields[index["id"]], fields[index["tech"]]
            if not valid_id(event_id):
                raise Skip(REFUSED, "event: bad_id")
            if tech not in ALL_TECHNIQUES:  # as the reference collector: the browser-only ones too
                raise Skip(REFUSED, "event: bad_tech")
            return event_id, tech, fields[index["method"]] if "method" in index else ""

        return parse

    def _read_header(
        self, path: Path, fields: list[str], names: dict[str, str], index: dict[str, int]
    ) -> None:
        for key, name in names.items():
            if name in fields:
                index[key] = fields.index(name)
            elif not (key == "method" and self.method_optional):
                raise AdapterError(
                    f"{path}:1: no column {name!r} in the header ({', '.join(fields)}) — give the columns "
                    "with csv:PATH:id=NAME,tech=NAME"
                )
