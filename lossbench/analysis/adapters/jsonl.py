"""The ``jsonl`` adapter: a JSON-lines log, one object a line, as thin collectors append.

Options, comma-separated ``key=PATH`` with dotted field paths (``a.b.c``):

- ``id``: the id, or the whole event object (``{"id": ..., "tech": ...}``); empty (the default): the line
  itself is the event. A bare first option (``jsonl:log.jsonl:event``) is the ``id`` path.
- ``tech``: the technique, when ``id`` leads to the id itself (default: the ``tech`` field next to it).
- ``method``: the HTTP method the event came with, if the log has it (default: none, logged as "").

An event object is validated as the reference collector validates an ajax body (``decode_event_json``);
an id and technique found apart are held to the same id and technique rules. A line without the id
path, or whose event object has no ``id``, is foreign (a startup message, say).
"""

from __future__ import annotations

import json
from pathlib import Path

from lossbench.analysis.adapters import (
    DAMAGED,
    FOREIGN,
    REFUSED,
    LineAdapter,
    LineParser,
    Row,
    Skip,
    parse_options,
)
from lossbench.contract.events import BadEvent, decode_event_json, valid_id
from lossbench.contract.techniques import ALL_TECHNIQUES

_MISSING = object()


def _path(text: str) -> tuple[str, ...]:
    return tuple(text.split(".")) if text else ()


def _get(obj: object, path: tuple[str, ...]) -> object:
    for key in path:
        if not isinstance(obj, dict):
            return _MISSING
        obj = obj.get(key, _MISSING)
    return obj


class JsonlAdapter(LineAdapter):
    """Reads JSON-lines logs; see the module's docstring for the options."""

    def __init__(self, options: str = "") -> None:
        chosen = parse_options(options, ("id", "tech", "method"), "jsonl")
        self.id_path = _path(chosen.get("id", ""))
        self.tech_path = _path(chosen["tech"]) if "tech" in chosen else (*self.id_path[:-1], "tech")
        self.method_path = _path(chosen["method"]) if chosen.get("method") else None

    def line_parser(self, path: Path) -> LineParser:
        return self.parse_line

    def parse_line(self, line: bytes) -> Row:
        try:
            obj = json.loads(line)
        except ValueError:
            raise Skip(DAMAGED, "not JSON") from None
        if not isinstance(obj, dict):
            raise Skip(DAMAGED, "not a JSON object")
        found = _get(obj, self.id_path)
        if found is _MISSING:
            raise Skip(FOREIGN, f"no field {'.'.join(self.id_path)!r}")
        if isinstance(found, dict):
            if "id" not in found:
                raise Skip(FOREIGN, "no event id")
            try:
                event_id, tech = decode_event_json(json.dumps(found).encode())
            except BadEvent as bad:
                raise Skip(REFUSED, f"event: {bad.reason}") from None
        else:
            if not valid_id(found):
                raise Skip(REFUSED, "event: bad_id")
            event_id = str(found)
            tech_found = _get(obj, self.tech_path)
            if not isinstance(tech_found, str) or tech_found not in ALL_TECHNIQUES:
                raise Skip(REFUSED, "event: bad_tech")
            tech = tech_found
        method = "" if self.method_path is None else _get(obj, self.method_path)
        return event_id, tech, method if isinstance(method, str) else ""
