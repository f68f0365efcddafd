"""docs/FORMATS.md's summary.json and progress.json tables list exactly the fields of the contract's
``Summary`` and ``Progress``, with their JSON types: a field added to one and not the other fails here, with
the rows to paste."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import msgspec.inspect as mi

from lossbench.contract import progress
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
    """(path, type) of the rows of the table in a section (the summary.json one by default)."""
    text = FORMATS.read_text(encoding="utf-8")
    section = text[text.index(heading + "\n") :]
    section = section.split("\n## ", 1)[0]  # up to the next section
    return [(m[1], m[2].replace("\\|", "|")) for line in section.splitlines() if (m := ROW.match(line))]


def test_the_summary_table_matches_the_contract() -> None:
    summary = mi.type_info(Summary)
    assert isinstance(summary, mi.StructType)
    want = list(rows(summary))
    assert documented() == want, "docs/FORMATS.md rows should be:\n" + "\n".join(
        f"| `{path}` | {kind} | ... |" for path, kind in want
    )


def test_the_doc_names_the_schema_version() -> None:
    assert f'"schema": "{SCHEMA}"' in FORMATS.read_text(encoding="utf-8")


def test_the_progress_table_matches_the_contract() -> None:
    info = mi.type_info(progress.Progress)
    assert isinstance(info, mi.StructType)
    want = list(rows(info))
    assert documented("## progress.json") == want, "docs/FORMATS.md rows should be:\n" + "\n".join(
        f"| `{path}` | {kind} | ... |" for path, kind in want
    )
    assert f'"schema": "{progress.SCHEMA}"' in FORMATS.read_text(encoding="utf-8")
