"""docs/FORMATS.md's summary.json, sweep.json and progress.json tables list exactly the fields of the
contract's ``Summary``, ``SweepDocument`` and ``Progress``, with their JSON types: a field added to one
and not the other fails here, with the rows to paste."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import msgspec.inspect as mi
import pytest

from lossbench.contract import progress, sweep
from lossbench.contract.summary import SCHEMA, Summary

FORMATS = Path(__file__).parents[3] / "docs" / "FORMATS.md"
ROW = re.compile(r"^\| `([^`]+)` \| ([^|]+?) \|")


def json_type(t: mi.Type) -> str:
    """How docs/FORMATS.md writes a field's JSON type."""
    match t:
        case mi.IntType():
            return "int"
        case mi.FloatType():
            return "number"
        case mi.StrType():
            return "string"
        case mi.BoolType():
            return "bool"
        case mi.NoneType():
            return "null"
        case mi.AnyType():
            return "any"
        case mi.StructType():
            return "object"
        case mi.LiteralType(values=values):
            return " or ".join(json.dumps(v) for v in values)
        case mi.UnionType(types=types):
            return " or ".join(json_type(u) for u in types)
        case mi.ListType(item_type=item):
            return f"[{json_type(item)}, ...]"
        case mi.TupleType(item_types=items):
            return f"[{', '.join(json_type(i) for i in items)}]"
        case mi.DictType(key_type=key, value_type=value):
            return f"{{{json_type(key)}: {json_type(value)}}}"
    raise AssertionError(f"no JSON type name for {t!r}: add one to json_type")


def _inner(t: mi.Type, path: str) -> Iterator[tuple[str, str]]:
    """Rows of the structs inside a field: ``a.b``, ``a.*.b``, ``a[].b``."""
    match t:
        case mi.StructType():
            yield from rows(t, path + ".")
        case mi.UnionType(types=types):
            for u in types:
                yield from _inner(u, path)
        case mi.DictType(value_type=value):
            yield from _inner(value, path + ".*")
        case mi.ListType(item_type=item):
            yield from _inner(item, path + "[]")


def rows(t: mi.StructType, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, JSON type) of every field, in document order."""
    for field in t.fields:
        path = prefix + field.encode_name
        yield path, json_type(field.type)
        yield from _inner(field.type, path)


def documented(heading: str = "## summary.json") -> list[tuple[str, str]]:
    """(path, type) of the rows of the table in the section under ``heading``."""
    text = FORMATS.read_text(encoding="utf-8")
    section = text[text.index(heading + "\n") :]
    section = section.split("\n## ", 1)[0]  # up to the next section
    return [(m[1], m[2].replace("\\|", "|")) for line in section.splitlines() if (m := ROW.match(line))]


@pytest.mark.parametrize(
    ("heading", "document"),
    [
        ("## summary.json", Summary),
        ("## sweep.json (`lossbench sweep`)", sweep.SweepDocument),
        ("## progress.json", progress.Progress),
    ],
)
def test_the_table_matches_the_contract(heading: str, document: type) -> None:
    info = mi.type_info(document)
    assert isinstance(info, mi.StructType)
    want = list(rows(info))
    assert documented(heading) == want, f"docs/FORMATS.md rows under {heading} should be:\n" + "\n".join(
        f"| `{path}` | {kind} | ... |" for path, kind in want
    )


@pytest.mark.parametrize("schema", [SCHEMA, sweep.SCHEMA, progress.SCHEMA])
def test_the_doc_names_the_schema_version(schema: str) -> None:
    assert f'"schema": "{schema}"' in FORMATS.read_text(encoding="utf-8")
