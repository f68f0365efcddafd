"""Received-side adapters: a target's own log read as the received events compare joins with the sent ledger.

The reference collector writes a received ledger; a production collector writes its own log: nginx's access
log, or a JSON-lines or CSV file a thin collector appends to. An adapter reads such a log into rows of
``(event id, technique, method)``, validating each event as the reference collector does
(``lossbench.contract.events``), so that "received" means the same thing whichever target took the load.

A line that holds no received event is skipped and counted by category, never silently:

- ``damaged``: not in the log's format (cut short, binary junk, not JSON);
- ``foreign``: well formed, but not event traffic (another path, a health check, a line of another kind);
- ``refused``: an event request whose data is not a valid event (the reference collector refuses it too);
- ``ignored``: the load's own requests that carry no event (pings, CORS preflights) and blank lines.

The first few of each of the first three are named with file and line number for the warning; all are
counted. Adapters are chosen with a spec, ``KIND:PATH[:OPTIONS]`` (``parse_spec``): the built-in kinds
``nginx``, ``jsonl`` and ``csv``, or a user adapter registered in the entry-point group
``lossbench.adapters`` (name -> a callable that takes the options string and returns an object with
``read(path) -> ReceivedLog``; a class whose constructor takes the options is one).
"""

from __future__ import annotations

import dataclasses
import glob
from collections import Counter
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from lossbench.analysis.read import RECEIVED_COLUMNS, RECEIVED_NAMED, LedgerFileInfo, Vocabs, hex64

Row = tuple[str, str, str]
"""One received event: (event id, technique, method), in ``RECEIVED_COLUMNS`` order."""

ENTRY_POINT_GROUP = "lossbench.adapters"
EXAMPLES = 5
"""Skipped lines named per category in the warning (all are counted)."""

DAMAGED, FOREIGN, REFUSED, IGNORED = "damaged", "foreign", "refused", "ignored"
SKIP_CATEGORIES = (DAMAGED, FOREIGN, REFUSED, IGNORED)
WARNED = (DAMAGED, FOREIGN, REFUSED)
"""The categories a warning names; ``ignored`` lines are expected and only counted."""


class AdapterError(Exception):
    """A spec, an adapter or a log that cannot be read at all; the message says what to do."""


class Skip(Exception):
    """Raised by a line parser for a line without a received event: ``category`` (one of the four above)
    and a short ``reason``, which the warning shows after the file and line number."""

    def __init__(self, category: str, reason: str) -> None:
        super().__init__(reason)
        self.category = category
        self.reason = reason


@dataclasses.dataclass
class LogFile:
    """What was read from one file of a target's log."""

    path: str
    lines: int = 0
    events: int = 0
    truncated_last_line: bool = False  # the last line had no newline and was not a valid line


@dataclasses.dataclass
class ReceivedLog:
    """The received events read from a target's log, and what was skipped."""

    rows: list[Row] = dataclasses.field(default_factory=list)
    files: list[LogFile] = dataclasses.field(default_factory=list)
    skipped: Counter[str] = dataclasses.field(default_factory=Counter)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # category -> "file:line: why"

    def skip(self, category: str, where: str, reason: str) -> None:
        """Count a skipped line; name it if it is among the first few of a warned category."""
        self.skipped[category] += 1
        named = self.examples.setdefault(category, [])
        if category in WARNED and len(named) < EXAMPLES:
            named.append(f"{where}: {reason}")

    def extend(self, other: ReceivedLog) -> None:
        self.rows.extend(other.rows)
        self.files.extend(other.files)
        self.skipped.update(other.skipped)
        for category, named in other.examples.items():
            mine = self.examples.setdefault(category, [])
            mine.extend(named[: EXAMPLES - len(mine)])

    def warnings(self) -> list[str]:
        """One sentence per warned category that occurred, naming its first lines."""
        out = []
        for category in WARNED:
            n = self.skipped[category]
            if n:
                named = "; ".join(self.examples.get(category, []))
                more = f" (first {EXAMPLES} shown)" if n > EXAMPLES else ""
                out.append(f"{n:,} {category} line{'s' if n != 1 else ''} skipped{more}: {named}")
        return out


@runtime_checkable
class Adapter(Protocol):
    """What every adapter, built-in or user, provides."""

    def read(self, path: Path) -> ReceivedLog: ...


AdapterFactory = Callable[[str], Adapter]
"""An adapter kind: called with the spec's options string (empty when none); raises ValueError for bad
options."""

LineParser = Callable[[bytes], Row]
"""Parses one line (without its newline) into a row, or raises ``Skip``."""


class LineAdapter:
    """Base of line-oriented adapters: ``line_parser`` gives the parser of one file; ``read`` does the rest
    (numbering, counting, naming, a last line cut short)."""

    def line_parser(self, path: Path) -> LineParser:
        raise NotImplementedError

    def read(self, path: Path) -> ReceivedLog:
        log = ReceivedLog()
        info = LogFile(str(path))
        log.files.append(info)
        parse = self.line_parser(path)
        try:
            f = open(path, "rb")  # noqa: SIM115  # closed below; the error names the file
        except OSError as exc:
            raise AdapterError(f"{path}: cannot read the target's log ({exc.strerror})") from None
        with f:
            for lineno, raw in enumerate(f, 1):
                info.lines += 1
                whole = raw.endswith(b"\n")
                line = raw.rstrip(b"\r\n") if whole else raw
                if not line.strip():
                    log.skip(IGNORED, f"{path}:{lineno}", "blank line")
                    continue
                try:
                    row = parse(line)
                except Skip as skip:
                    reason = skip.reason
                    if not whole and skip.category == DAMAGED:
                        info.truncated_last_line = True
                        reason += " (the last line, cut short)"
                    log.skip(skip.category, f"{path}:{lineno}", reason)
                    continue
                log.rows.append(row)
                info.events += 1
        return log


def parse_options(options: str, keys: tuple[str, ...], kind: str) -> dict[str, str]:
    """An adapter's options: ``key=value`` pairs separated by commas, a bare first item being the first
    key's value; ``kind`` names the adapter in errors."""
    out: dict[str, str] = {}
    for i, item in enumerate(options.split(",") if options else []):
        key, sep, value = item.partition("=")
        if not sep:
            if i:
                raise ValueError(f"{kind}: option {item!r} is not key=value (keys: {', '.join(keys)})")
            key, value = keys[0], item
        key = key.strip()
        if key not in keys:
            raise ValueError(f"{kind}: unknown option {key!r}; known: {', '.join(keys)}")
        out[key] = value.strip()
    return out


def builtin_kinds() -> dict[str, AdapterFactory]:
    """The adapters shipped with lossbench, by kind."""
    from lossbench.analysis.adapters.csv_log import CsvAdapter
    from lossbench.analysis.adapters.jsonl import JsonlAdapter
    from lossbench.analysis.adapters.nginx import NginxAdapter

    return {"nginx": NginxAdapter, "jsonl": JsonlAdapter, "csv": CsvAdapter}


def known_kinds() -> list[str]:
    """Built-in kinds, then those registered in the entry-point group (a built-in name wins)."""
    kinds = list(builtin_kinds())
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in kinds:
            kinds.append(ep.name)
    return kinds


def find_adapter(kind: str) -> AdapterFactory:
    """The factory of an adapter kind: built-in, or loaded from its entry point."""
    builtin = builtin_kinds().get(kind)
    if builtin is not None:
        return builtin
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP, name=kind):
        try:
            loaded = ep.load()
        except Exception as exc:
            raise AdapterError(
                f"adapter {kind!r} ({ep.value}, entry point group {ENTRY_POINT_GROUP}) failed to import: "
                f"{exc!r} — fix or uninstall the package that provides it"
            ) from exc
        if not callable(loaded):
            raise AdapterError(
                f"adapter {kind!r} ({ep.value}) is not callable: register a function or class that takes "
                "the options string and returns an object with read(path)"
            )
        factory: AdapterFactory = loaded
        return factory
    raise AdapterError(
        f"unknown adapter kind {kind!r}; known kinds: {', '.join(known_kinds())} (user adapters register in "
        f"the entry point group {ENTRY_POINT_GROUP})"
    )


@dataclasses.dataclass(frozen=True)
class AdapterSpec:
    """A parsed ``KIND:PATH[:OPTIONS]``: which adapter reads which file(s), with which options."""

    kind: str
    path: str  # a file, or a glob pattern; relative to the ``base`` given to ``read_received``
    options: str
    adapter: Adapter

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" + (f":{self.options}" if self.options else "")


SPEC_HELP = "KIND:PATH[:OPTIONS], e.g. nginx:access.log, nginx:access.log:lossbench, jsonl:events.jsonl:event"


def parse_spec(text: str) -> AdapterSpec:
    """Parse ``KIND:PATH[:OPTIONS]`` (the value of ``--received-from``) and build its adapter.

    The path ends at the second colon: everything after it is the options (they may hold colons, as an
    nginx ``log_format`` does), so a path cannot contain a colon.
    """
    kind, sep, rest = text.partition(":")
    path, _, options = rest.partition(":")
    if not sep or not kind or not path:
        raise AdapterError(
            f"received-from {text!r}: expected {SPEC_HELP}; known kinds: {', '.join(known_kinds())}"
        )
    factory = find_adapter(kind)
    try:
        adapter = factory(options)
    except ValueError as exc:
        raise AdapterError(f"received-from {text!r}: {exc}") from None
    if not isinstance(adapter, Adapter):
        raise AdapterError(
            f"received-from {text!r}: adapter {kind!r} returned {type(adapter).__name__}, which has no "
            "read(path) method"
        )
    return AdapterSpec(kind, path, options, adapter)


def log_paths(spec: AdapterSpec, base: Path | None = None) -> list[Path]:
    """The files a spec names, sorted (a glob may name several); an error when there are none."""
    pattern = Path(spec.path)
    if base is not None and not pattern.is_absolute():
        pattern = base / pattern
    if glob.has_magic(str(pattern)):
        paths = sorted(Path(p) for p in glob.glob(str(pattern)))
    else:
        paths = [pattern] if pattern.exists() else []
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise AdapterError(
            f"{pattern}: no such log file for the {spec.kind} adapter — check the path in {spec}"
        )
    return paths


def read_received(spec: AdapterSpec | str, base: Path | None = None) -> ReceivedLog:
    """Every file of a spec read through its adapter, in path order. ``base``: where relative paths are
    (a run directory, for the specs targets write); the current directory when None."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    log = ReceivedLog()
    for path in log_paths(spec, base):
        log.extend(spec.adapter.read(path))
    return log


def received_columns(rows: Iterable[Row], vocabs: Vocabs) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Rows as the received columns of the ledger reader (``RECEIVED_COLUMNS``, names coded through the
    run's ``vocabs``), and the ids as uint64 keys when all are 16 hex digits (``Ledgers.received_keys``)."""
    values = list(zip(*rows, strict=True)) or [() for _ in RECEIVED_COLUMNS]
    columns: dict[str, np.ndarray] = {}
    for (name, dtype), column in zip(RECEIVED_COLUMNS.items(), values, strict=True):
        if name in RECEIVED_NAMED:
            vocab = getattr(vocabs, RECEIVED_NAMED[name])
            columns[name] = np.array([vocab.code(v) for v in column], dtype)
        else:
            encoded = [str(v).encode() for v in column]
            width = max([np.dtype(dtype).itemsize, *map(len, encoded)])
            columns[name] = np.array(encoded, f"S{width}") if encoded else np.empty(0, dtype)
    return columns, hex64(columns["id"])


def file_infos(log: ReceivedLog, base: Path | None = None) -> list[LedgerFileInfo]:
    """The log's files as the summary's ``ledgers`` entries (a raw log has no footer to check)."""
    infos = []
    for f in log.files:
        path = Path(f.path)
        if base is not None and path.is_relative_to(base):
            path = path.relative_to(base)
        infos.append(
            LedgerFileInfo(
                path=str(path),
                kind="received",
                lines=f.events,
                complete=not f.truncated_last_line,
                truncated_last_line=f.truncated_last_line,
                body_lines=f.lines,
            )
        )
    return infos
