"""Reading ledger files: every ledger of a run directory into numpy columns, for ``compare`` to join.

Lines in the writers' exact shape are read with numpy (``lossbench.analysis.fast``), any other line with
msgspec, decoded into the contract's line types (``lossbench.contract.lines``) with every key optional: the
columns are the same either way. Large runs are read in worker processes (``lossbench.analysis.parallel``).
A missing, empty or headerless ledger raises ``LedgerError`` naming the file and what to do; a damaged line
is skipped, counted and named (``strict``: raises); a truncated last line is skipped and reported.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import numpy as np

from lossbench.analysis import fast as ledger_fast
from lossbench.analysis import parallel as ledger_parallel
from lossbench.contract.lines import SCHEMA, ReceivedEvent, SentEvent, SentPing
from lossbench.contract.techniques import TECHNIQUES
from lossbench.contract.timing import timing_error

# ---------------------------------------------------------------------------------------------------------
# Reading: every ledger of a run directory into numpy columns, for compare to join.
# ---------------------------------------------------------------------------------------------------------
#
# A file is read in three parts: the header (first line), the last line (footer, an event, or a line cut
# short by a killed process) and the body between them, handed over in blocks of whole lines. Only the
# block parsers look inside event lines, so that the rules about headers, footers and truncation hold
# whichever parser reads the body: ``prepare_fast`` (numpy for the writers' lines, msgspec for the others)
# or ``prepare_exact`` (msgspec for every line, the reference). A block is prepared without the run's
# vocabularies — in worker processes, ranges of the files at a time — and finished (names coded) in file
# order, so that the codes are those a reading line by line gives.

BLOCK_BYTES = 1 << 23
"""Body bytes parsed at a time: big enough to amortise numpy's per-call cost, small enough to stay in the
processor's cache while the fast path reads it field by field (reads from a 16 MB block cost twice as
much as from an 8 MB one), and to bound memory."""

_NAN = float("nan")


class LedgerError(Exception):
    """A run directory or ledger file that cannot be read; the message names the file and what to do."""


@dataclasses.dataclass
class LedgerFileInfo:
    """What compare reports about one file (the summary's ``ledgers`` list)."""

    path: str  # relative to the run directory, e.g. "sent/box-1.0.jsonl"
    kind: str  # "sent" or "received"
    lines: int  # event lines read (header, footer, pings and a truncated last line not counted)
    complete: bool  # the footer is there: the writer closed the file cleanly
    truncated_last_line: bool  # the last line was cut short and skipped
    pings: int = 0
    footer_events: int | None = None  # lines the footer says were written between header and footer
    body_lines: int = 0  # event, ping and damaged lines found, to check against footer_events
    damaged_lines: int = 0  # lines before the last that were not valid events or pings: skipped
    damage: list[str] = dataclasses.field(default_factory=list)  # the first few: "line N: reason"


class Vocab:
    """Strings (technique, stage, ...) as small integer codes, so columns stay numeric."""

    def __init__(self, initial: tuple[str, ...] = ()) -> None:
        self.names: list[str] = []
        self.codes: dict[str, int] = {}
        for name in initial:
            self.code(name)

    def code(self, name: str) -> int:
        code = self.codes.get(name)
        if code is None:
            code = self.codes[name] = len(self.names)
            self.names.append(name)
        return code


@dataclasses.dataclass
class Vocabs:
    """The code books shared by every file of a run (sent and received technique codes agree)."""

    tech: Vocab = dataclasses.field(default_factory=lambda: Vocab(TECHNIQUES))
    type: Vocab = dataclasses.field(default_factory=Vocab)
    stage: Vocab = dataclasses.field(default_factory=Vocab)
    method: Vocab = dataclasses.field(default_factory=Vocab)
    # what an event found (``conn``) and did about its preflight: every known name coded up front, so that
    # the codes are the same in every run (a ledger without the keys reads as ``none``)
    conn: Vocab = dataclasses.field(default_factory=lambda: Vocab(ledger_fast.CONN_NAMES))
    preflight: Vocab = dataclasses.field(default_factory=lambda: Vocab(ledger_fast.PREFLIGHT_NAMES))


SENT_COLUMNS: dict[str, str] = {
    "id": "S16",
    "tech": "i2",
    "type": "i2",
    "stage": "i2",
    "written": "?",
    "t_written": "f8",
    "acked": "?",
    "retried": "?",
    "requests": "i4",
    "connections": "i4",
    "conn": "i2",
    "preflight": "i2",
    "A": "f8",
    "rtt": "f8",
    "timing_error": "f8",
}
RECEIVED_COLUMNS: dict[str, str] = {"id": "S16", "tech": "i2", "method": "i2"}


@dataclasses.dataclass
class Block:
    """Columns parsed from one block of lines, plus the pings (sent ledgers) it contained."""

    columns: dict[str, np.ndarray]
    pings: int = 0
    ping_requests: dict[str, int] = dataclasses.field(default_factory=dict)
    ping_connections: dict[str, int] = dataclasses.field(default_factory=dict)
    lines: int = 0  # event and ping lines (blank lines excluded)
    keys: np.ndarray | None = None  # the ids as uint64 when all are 16 lowercase hex digits, to join on


class BadLine(Exception):
    """A line that is not a valid event or ping: ``index`` is its 0-based line within the block."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


def _reading(name: str, line_types: tuple[type[msgspec.Struct], ...], markers: tuple[str, ...]) -> type:
    """The lines of a ledger's body as the exact path decodes them: the keys of ``line_types`` with their
    types, every one optional (a line edited by hand may lack any: a default, or the line is bad), unknown
    keys ignored; ``markers``, keys of any value that tell a line of another kind (a header in the middle,
    a ping in a received ledger)."""
    fields: dict[str, tuple[str, object, object]] = {}
    for line_type in line_types:
        for f in msgspec.structs.fields(line_type):
            fields.setdefault(f.name, (f.name, f.type | None, None))
    fields.update({key: (key, object, msgspec.UNSET) for key in markers})
    return msgspec.defstruct(name, list(fields.values()), gc=False)


_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "sent": msgspec.json.Decoder(_reading("SentLine", (SentEvent, SentPing), ("ledger", "ledger_end"))),
    "received": msgspec.json.Decoder(
        _reading("ReceivedLine", (ReceivedEvent,), ("ping", "ledger", "ledger_end"))
    ),
}


def _decode(kind: str, line: bytes, index: int) -> Any:
    try:
        return _DECODERS[kind].decode(line)
    except msgspec.ValidationError as e:
        raise BadLine(index, f"not a {kind} ledger line ({e})") from None
    except msgspec.DecodeError as e:
        raise BadLine(index, f"invalid JSON ({e})") from None


def _event_id(line: Any, index: int) -> bytes:
    ident = line.id
    if not ident:
        if line.ledger_end:
            raise BadLine(index, "a footer in the middle of the file (two ledgers concatenated?)")
        if line.ledger is not msgspec.UNSET:
            raise BadLine(index, "a header in the middle of the file (two ledgers concatenated?)")
        raise BadLine(index, 'event line without an "id"')
    return str(ident).encode()


def _num(x: float | None) -> float:
    return _NAN if x is None else x


SENT_NAMED = {"tech": "tech", "type": "type", "stage": "stage", "conn": "conn", "preflight": "preflight"}
RECEIVED_NAMED = {"tech": "tech", "method": "method"}
"""Columns of names, coded through the run's vocabularies (column -> ``Vocabs`` field)."""

NO_NAME = "none"
"""``conn`` and ``preflight`` of a line without them (ledgers written before the client had a pool)."""

Row = tuple[object, ...]
Tally = tuple[str, int, int]  # a ping line: (technique, requests, connections)


def _sent_row(line: Any, index: int) -> Row:
    """One sent event's values in SENT_COLUMNS order, names (not codes) in the named columns."""
    ident = _event_id(line, index)
    if line.tech is None:
        raise BadLine(index, "event line without 'tech'")
    try:
        return (
            ident,
            line.tech,
            line.type or "unknown",
            line.stage or "unknown",
            bool(line.written),
            _num(line.t_written),
            bool(line.acked),
            bool(line.retried),
            _count(line.requests),
            _count(line.connections),
            line.conn or NO_NAME,
            line.preflight or NO_NAME,
            _num(line.A),
            _num(line.rtt),
            timing_error(line.plan, line.real),
        )
    except ValueError as e:
        raise BadLine(index, f"event line with a value out of range ({e})") from None


def _count(x: int | None) -> int:
    n = x or 0
    if not -(2**31) <= n < 2**31:
        raise ValueError(f"{n} does not fit a 32-bit count")
    return n


def _received_row(line: Any, index: int) -> Row:
    """One received event's values in RECEIVED_COLUMNS order, names in the named columns."""
    return (_event_id(line, index), line.tech or "", line.m or "")


def _sent_ping(line: Any) -> Tally | None:
    """(technique, requests, connections) of a ping line; None for an event line."""
    return None if line.ping is None else (line.ping, line.requests or 0, line.connections or 0)


def _received_ping(line: Any) -> Tally | None:
    return None if line.ping is msgspec.UNSET else ("", 0, 0)


_KINDS: dict[
    str, tuple[dict[str, str], dict[str, str], Callable[[Any, int], Row], Callable[[Any], Tally | None]]
] = {
    "sent": (SENT_COLUMNS, SENT_NAMED, _sent_row, _sent_ping),
    "received": (RECEIVED_COLUMNS, RECEIVED_NAMED, _received_row, _received_ping),
}


@dataclasses.dataclass
class Prepared:
    """A block read but not yet coded through the run's vocabularies (``prepare`` may run in any thread;
    ``finish`` runs in file order, so that names get the codes the exact path would give them)."""

    kind: str
    scan: ledger_fast.Scan | None  # what the fast path read (None: every line went through msgspec)
    slow_lines: list[int]  # lines (0-based) of the events read by msgspec, and rows
    slow_rows: list[Row]
    pings: list[tuple[int, str, int, int]]  # read by msgspec: (line, technique, requests, connections)
    lines: int  # event and ping lines (blank and bad lines excluded)
    span: int = 0  # lines in the block, the last one counted even without its newline
    size: int = 0  # bytes of the block
    # all pings, msgspec's and numpy's: how many, and per technique [requests, connections] summed, in order
    # of first appearance (the order a reading line by line adds them in)
    ping_count: int = 0
    ping_tally: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    # assembled by _assemble, still in the worker: the columns, named columns as indices into their names,
    # with those names and the indices present in order of first appearance
    columns: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    names: dict[str, tuple[list[str], list[int]]] = dataclasses.field(default_factory=dict)
    keys: np.ndarray | None = None
    bad: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (line, reason), skipped


def _read_slowly(kind: str, lines: Iterable[tuple[int, bytes]], prepared: Prepared) -> None:
    """Read (index, text) lines with msgspec, the exact path, into ``prepared``; a bad line is noted in
    ``prepared.bad`` and skipped."""
    _, _, row, ping = _KINDS[kind]
    for index, line in lines:
        if not line or line.isspace():
            continue
        try:
            decoded = _decode(kind, line, index)
            tally = ping(decoded)
            if tally is None:
                prepared.slow_rows.append(row(decoded, index))
                prepared.slow_lines.append(index)
            else:
                prepared.pings.append((index, *tally))
        except BadLine as e:
            prepared.bad.append((e.index, e.reason))
            continue
        prepared.lines += 1


def prepare_exact(block: bytes | ledger_fast.Padded, kind: str) -> Prepared:
    """Every line of the block read with msgspec: the reference the fast path must equal."""
    lines = (block if isinstance(block, bytes) else block.tobytes()).split(b"\n")
    prepared = Prepared(kind, None, [], [], [], 0, len(lines) - (lines[-1] == b""))
    _read_slowly(kind, enumerate(lines), prepared)
    _tally_pings(prepared, None)
    _assemble(prepared)
    return prepared


def prepare_fast(block: bytes | ledger_fast.Padded, kind: str) -> Prepared:
    """The lines of the writers' exact shape read with numpy (``lossbench.analysis.fast``), the others with
    msgspec; the same result as ``prepare_exact``."""
    if not ledger_fast.ENABLED:
        return prepare_exact(block, kind)
    scan = (ledger_fast.scan_sent if kind == "sent" else ledger_fast.scan_received)(block)
    prepared = Prepared(kind, scan, [], [], [], len(scan.events) + len(scan.pings), len(scan.starts))
    starts, ends = scan.starts, scan.ends
    data = block.array if isinstance(block, ledger_fast.Padded) else np.frombuffer(block, np.uint8)
    _read_slowly(kind, ((i, data[starts[i] : ends[i]].tobytes()) for i in scan.others.tolist()), prepared)
    _tally_pings(prepared, scan)
    _assemble(prepared)
    return prepared


def _tally_pings(prepared: Prepared, scan: ledger_fast.Scan | None) -> None:
    """Sum the block's pings per technique: numpy's (``scan``) by technique code, msgspec's one by one.

    Pings are many (one a visit), and only their sums matter; the sums are kept in order of each
    technique's first ping, as a reading line by line would add them.
    """
    tally: dict[str, tuple[int, int, int]] = {}  # technique -> (first line, requests, connections)
    count = len(prepared.pings)
    if scan is not None and len(scan.pings):
        c = scan.ping_columns
        tech = c["tech"]
        count += len(tech)
        for code in np.unique(tech).tolist():
            mine = tech == code
            first = int(scan.pings[np.argmax(mine)])
            requests, connections = int(c["requests"][mine].sum()), int(c["connections"][mine].sum())
            tally[ledger_fast.TECH_NAMES[code]] = (first, requests, connections)
    for line, name, requests, connections in prepared.pings:
        first, r, k = tally.get(name, (line, 0, 0))
        tally[name] = (min(first, line), r + requests, k + connections)
    prepared.ping_count = count
    prepared.ping_tally = {
        name: [r, c] for name, (_, r, c) in sorted(tally.items(), key=lambda item: item[1][0])
    }
    prepared.pings = []  # tallied: nothing left to send back


_FAST_NAMES = {
    "tech": ledger_fast.TECH_NAMES,
    "type": ledger_fast.TYPE_NAMES,
    "stage": ledger_fast.STAGE_NAMES,
    "method": ledger_fast.METHOD_NAMES,
    "conn": ledger_fast.CONN_NAMES,
    "preflight": ledger_fast.PREFLIGHT_NAMES,
}


def _first_seen(local: np.ndarray, count: int) -> list[int]:
    """The indices present in ``local``, in order of first appearance."""
    present = np.flatnonzero(np.bincount(local, minlength=count))
    if len(present) < 2:
        return [int(c) for c in present]
    first = [int(np.argmax(local == c)) for c in present]
    return [int(c) for c in present[np.argsort(first)]]


def _assemble(prepared: Prepared) -> None:
    """The fast path's rows and msgspec's, merged in line order into columns (no vocabulary needed yet)."""
    dtypes, named, _, _ = _KINDS[prepared.kind]
    scan, rows = prepared.scan, prepared.slow_rows
    slow = dict(zip(dtypes, map(list, zip(*rows, strict=True)), strict=True)) if rows else None
    if scan is not None and slow is not None:
        order = np.argsort(
            np.concatenate([scan.events, np.array(prepared.slow_lines, np.int64)]), kind="stable"
        )
    for name, dtype in dtypes.items():
        fast = None if scan is None else scan.columns[name]
        if name in named:
            names = list(_FAST_NAMES[name])
            local = np.empty(0, np.int16) if fast is None else fast
            if slow is not None:
                index = {n: i for i, n in enumerate(names)}
                more = np.array([index.setdefault(n, len(index)) for n in slow[name]], np.int16)
                names = list(index)
                local = np.concatenate([local, more])
                if scan is not None:
                    local = local[order]
            prepared.columns[name] = local
            prepared.names[name] = (names, _first_seen(local, len(names)))
            continue
        if slow is None:
            column = fast.astype(dtype, copy=False) if fast is not None else np.empty(0, dtype)
        else:
            more = _to_arrays({name: slow[name]}, {name: dtype})[name]
            column = more if fast is None else np.concatenate([fast.astype(dtype, copy=False), more])[order]
        prepared.columns[name] = column
    prepared.keys = (
        scan.columns["key"] if scan is not None and slow is None else hex64(prepared.columns["id"])
    )


def finish(prepared: Prepared, vocabs: Vocabs) -> Block:
    """A prepared block's columns, names coded through ``vocabs`` (new names in order of first
    appearance, as the exact path codes them line by line); pings tallied."""
    dtypes, named, _, _ = _KINDS[prepared.kind]
    out = Block(columns={}, lines=prepared.lines, keys=prepared.keys, pings=prepared.ping_count)
    if prepared.kind == "sent":
        out.ping_requests = {name: r for name, (r, _) in prepared.ping_tally.items()}
        out.ping_connections = {name: c for name, (_, c) in prepared.ping_tally.items()}
    for name in dtypes:
        column = prepared.columns[name]
        if name in named:
            names, first_seen = prepared.names[name]
            vocab = getattr(vocabs, named[name])
            table = np.zeros(max(len(names), 1), np.int16)
            for c in first_seen:
                table[c] = vocab.code(names[c])
            column = table[column]
        out.columns[name] = column
    return out


SMALL_BLOCK = 1 << 16
"""Below this many bytes msgspec is quicker than numpy's fixed cost per block: both give the same result."""


def prepare(block: bytes | ledger_fast.Padded, kind: str) -> Prepared:
    """``prepare_fast``, or ``prepare_exact`` for a block too small to be worth it."""
    return (prepare_exact if len(block) < SMALL_BLOCK else prepare_fast)(block, kind)


PREPARE: dict[str, Callable[[bytes | ledger_fast.Padded], Prepared]] = {
    "sent": functools.partial(prepare, kind="sent"),
    "received": functools.partial(prepare, kind="received"),
}


def _to_arrays(cols: dict[str, list[object]], dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    # ids: at least S16, wider when foreign ids are longer (np.array picks the widest)
    arrays = {name: np.array(values, dtype=dtypes[name]) for name, values in cols.items() if name != "id"}
    if "id" in cols:
        ids = np.array(cols["id"], dtype="S") if cols["id"] else np.empty(0, "S16")
        arrays["id"] = ids if ids.dtype.itemsize >= 16 else ids.astype("S16")
    return arrays


@dataclasses.dataclass
class Ledgers:
    """Everything the ledgers of one run say, as columns (one row per event line)."""

    run_dir: Path
    files: list[LedgerFileInfo]
    vocabs: Vocabs
    sent: dict[str, np.ndarray]  # SENT_COLUMNS
    received: dict[str, np.ndarray]  # RECEIVED_COLUMNS
    ping_requests: dict[str, int]
    ping_connections: dict[str, int]
    collector_stats: dict[str, dict[str, object]]  # the collector's stats files, by path
    problems: list[str]  # things compare should warn about that did not stop the reading
    sent_keys: np.ndarray | None = None  # the id columns as uint64, when every id is 16 hex digits
    received_keys: np.ndarray | None = None

    @property
    def damaged_lines(self) -> int:
        """Damaged lines skipped in all the files (each file's are in ``files``)."""
        return sum(info.damaged_lines for info in self.files)

    @property
    def techniques(self) -> list[str]:
        """Names of the ``tech`` codes of both ``sent`` and ``received``."""
        return self.vocabs.tech.names


def _read_last_line(f: BinaryIO, size: int, start: int) -> tuple[int, bytes]:
    """(offset, content) of the last non-blank line at or after ``start``; offset == size when none."""
    window = 1 << 16
    while True:
        lo = max(start, size - window)
        f.seek(lo)
        tail = f.read(size - lo).rstrip()
        if not tail:
            if lo == start:
                return size, b""
            window *= 4
            continue
        nl = tail.rfind(b"\n")
        if nl >= 0:
            return lo + nl + 1, tail[nl + 1 :]
        if lo == start:
            return start, tail
        window *= 4


def _blocks(
    f: io.BufferedReader, begin: int, end: int, spare: list[np.ndarray] | None = None
) -> Iterator[ledger_fast.Padded]:
    """Body bytes between begin and end, cut at newlines into blocks of about BLOCK_BYTES.

    Each block is read straight into a numpy buffer, with room after it for the fast path; buffers are
    taken from ``spare`` when it has one (the caller puts back those it is done with: a fresh buffer costs
    page faults, about as much as reading it).
    """
    f.seek(begin)
    carry = b""
    remaining = end - begin
    while remaining > 0:
        want = min(BLOCK_BYTES, remaining)
        size = len(carry) + want + ledger_fast.PAD
        buf = spare.pop() if spare else np.empty(0, np.uint8)
        if len(buf) < size:
            buf = np.empty(max(size, BLOCK_BYTES + 2 * ledger_fast.PAD), np.uint8)
        buf[: len(carry)] = np.frombuffer(carry, np.uint8)
        filled = len(carry)
        view = buf.data
        while filled < len(carry) + want:
            got = f.readinto(view[filled : len(carry) + want])
            if not got:
                break
            filled += got
        got = filled - len(carry)
        remaining = remaining - got if got else 0
        cut = _after_last_newline(buf, filled) if remaining > 0 else filled
        carry = buf[cut:filled].tobytes()
        if cut:
            yield ledger_fast.Padded(buf, cut)
        elif spare is not None:
            spare.append(buf)
    if carry:
        buf = np.empty(len(carry) + ledger_fast.PAD, np.uint8)
        buf[: len(carry)] = np.frombuffer(carry, np.uint8)
        yield ledger_fast.Padded(buf, len(carry))


def _after_last_newline(buf: np.ndarray, filled: int) -> int:
    """Offset just after the last newline in ``buf[:filled]``, 0 if there is none."""
    hi, window = filled, 1 << 16
    while hi > 0:
        lo = max(0, hi - window)
        hits = np.flatnonzero(buf[lo:hi] == 10)
        if len(hits):
            return lo + int(hits[-1]) + 1
        hi, window = lo, window * 4
    return 0


@dataclasses.dataclass
class _Opened:
    """A ledger file whose header was checked: its body is [body, last_at), then its last line."""

    path: Path
    kind: str
    info: LedgerFileInfo
    body: int = 0
    last_at: int = 0
    last: bytes = b""
    error: LedgerError | None = None  # raised when the reading gets to this file


def _open_ledger(path: Path, kind: str, rel: str) -> _Opened:
    """Check a ledger's header and find its last line."""
    info = LedgerFileInfo(path=rel, kind=kind, lines=0, complete=False, truncated_last_line=False)
    opened = _Opened(path, kind, info)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            opened.error = LedgerError(
                f"{path}: empty file, not even a header — the process that owns it died at start or is still "
                "starting; wait for it or delete the file"
            )
            return opened
        first = f.readline(1 << 16)
        try:
            header: object = msgspec.json.decode(first)
        except msgspec.DecodeError:
            header = None
        if not isinstance(header, dict) or "ledger" not in header:
            opened.error = LedgerError(
                f'{path}: line 1 is not a ledger header ({{"ledger": "{kind}", "schema": {SCHEMA}, ...}}) '
                f"— is this a lossbench ledger? Move it out of {path.parent.name}/"
            )
        elif header["ledger"] != kind:
            opened.error = LedgerError(
                f"{path}: a {header['ledger']!r} ledger in {kind}/ — move it to the folder of its kind"
            )
        elif not isinstance(header.get("schema"), int) or header["schema"] > SCHEMA:
            opened.error = LedgerError(
                f"{path}: ledger schema {header.get('schema')!r}, this lossbench reads schema {SCHEMA} — "
                "upgrade lossbench"
            )
        else:
            opened.body = len(first)
            opened.last_at, opened.last = _read_last_line(f, size, opened.body)
    return opened


@dataclasses.dataclass
class _Range:
    """Whole lines [start, end) of a ledger's body: the unit of work of a reading process or thread."""

    path: Path
    kind: str
    start: int
    end: int


@dataclasses.dataclass
class _RangeRead:
    blocks: list[Prepared]
    bad: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (line within the range, reason)
    # per block, where its columns and keys are while the blocks travel without them (see _to_arena)
    shared: list[tuple[dict[str, ledger_parallel.Shared], ledger_parallel.Shared | None]] | None = None


def _ranges(opened: _Opened, size: int) -> list[_Range]:
    """The body cut at newlines into ranges of about ``size`` bytes."""
    cuts = [opened.body]
    with open(opened.path, "rb") as f:
        at = opened.body + size
        while at < opened.last_at:
            f.seek(at)
            ahead = f.read(1 << 16)
            nl = ahead.find(b"\n")
            if nl < 0:  # a line longer than the window: look further
                at += len(ahead) or opened.last_at
                continue
            cut = at + nl + 1
            if cut >= opened.last_at:
                break
            cuts.append(cut)
            at = cut + size
    cuts.append(opened.last_at)
    return [_Range(opened.path, opened.kind, a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _read_range(task: _Range, slot: int | None = None) -> _RangeRead:
    """Read and prepare a range, block by block (in a worker process or thread); with an arena ``slot``,
    leave the columns there."""
    prepare = PREPARE[task.kind]
    out = _RangeRead([])
    lines = 0
    spare: list[np.ndarray] = []
    with open(task.path, "rb") as f:
        for data in _blocks(f, task.start, task.end, spare):
            prepared = prepare(data)
            out.bad += [(lines + index, reason) for index, reason in prepared.bad]
            prepared.bad = []
            prepared.scan, prepared.slow_rows, prepared.slow_lines = None, [], []  # less to send back
            prepared.size = len(data)
            out.blocks.append(prepared)
            lines += prepared.span
            spare.append(data.array)
    arena = ledger_parallel.worker_arena()
    if arena is not None and slot is not None:
        _to_arena(out, arena, slot)
    return out


def _to_arena(result: _RangeRead, arena: ledger_parallel.Arena, slot: int) -> None:
    """Move the blocks' arrays into ``slot`` (in a worker): the pipe then carries only where they are."""
    arrays = [a for p in result.blocks for a in (*p.columns.values(), *([] if p.keys is None else [p.keys]))]
    refs = arena.store(slot, arrays)
    if refs is None:
        return
    shared, at = [], iter(refs)
    for p in result.blocks:
        shared.append(({name: next(at) for name in p.columns}, None if p.keys is None else next(at)))
        p.columns, p.keys = {}, None
    result.shared = shared


def _from_arena(result: _RangeRead, arena: ledger_parallel.Arena | None) -> _RangeRead:
    """Put the blocks' arrays back (in the main process): views of the arena, valid until the next range."""
    if result.shared is not None and arena is not None:
        for p, (columns, keys) in zip(result.blocks, result.shared, strict=True):
            arrays = arena.load([*columns.values(), *([] if keys is None else [keys])])
            p.columns = dict(zip(columns, arrays[: len(columns)], strict=True))
            p.keys = None if keys is None else arrays[-1]
        result.shared = None
    return result


def _read_body(
    opened: _Opened,
    results: Iterator[_RangeRead],
    ranges: int,
    vocabs: Vocabs,
    sink: Callable[[Block, int], None],
    strict: bool,
) -> None:
    """Finish a file's prepared blocks in order (names coded, blocks handed to ``sink``), then its last
    line. A damaged line is counted and skipped (``strict``: raises LedgerError naming it)."""
    info = opened.info
    lineno = 1  # line number of the last line handled so far

    def keep(block: Block, size: int) -> None:
        info.lines += len(block.columns["id"])
        info.pings += block.pings
        info.body_lines += block.lines
        sink(block, size)

    for _ in range(ranges):
        result = next(results)
        first = lineno + 1  # line number of the range's first line
        for index, reason in result.bad:
            _damaged(opened, first + index, reason, strict)
        for prepared in result.blocks:
            keep(finish(prepared, vocabs), prepared.size)
            lineno += prepared.span
    if opened.last:
        tail: list[Block] = []
        _classify_last_line(opened.last, info, tail, vocabs, PREPARE[opened.kind])
        for block in tail:
            keep(block, len(opened.last))


KEPT_DAMAGE = 5
"""Damaged lines named per file (the others are only counted)."""


def _damaged(opened: _Opened, line: int, reason: str, strict: bool) -> None:
    """A damaged line (not the last): fatal with ``strict``, else counted, named (the first few) and
    skipped."""
    if strict:
        raise LedgerError(
            f"{opened.path}:{line}: {reason} — a damaged line (--strict stops on it); repair or delete this "
            "line, or compare without --strict to skip it"
        )
    info = opened.info
    info.damaged_lines += 1
    info.body_lines += 1
    if len(info.damage) < KEPT_DAMAGE:
        info.damage.append(f"line {line}: {reason}")


def _classify_last_line(
    last: bytes,
    info: LedgerFileInfo,
    blocks: list[Block],
    vocabs: Vocabs,
    prepare: Callable[[bytes], Prepared],
) -> None:
    """The last line is a footer (file complete), an event (file incomplete) or cut short (skipped)."""
    try:
        obj = msgspec.json.decode(last)
    except msgspec.DecodeError:
        info.truncated_last_line = True
        return
    if isinstance(obj, dict) and obj.get("ledger_end"):
        info.complete = True
        events = obj.get("events")
        info.footer_events = events if isinstance(events, int) and not isinstance(events, bool) else None
        return
    prepared = prepare(last)
    if prepared.bad:
        info.truncated_last_line = True  # valid JSON, but not a whole event: cut at a lucky place
    else:
        blocks.append(finish(prepared, vocabs))


def _ledger_paths(run_dir: Path, kind: str, who: str) -> list[Path]:
    folder = run_dir / kind
    paths = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not paths:
        raise LedgerError(
            f"{folder}: no {kind} ledger (*.jsonl) found — was the {who} run with --run-dir {run_dir}?"
        )
    return paths


def _read_stats(run_dir: Path, problems: list[str]) -> dict[str, dict[str, object]]:
    stats = {}
    for path in sorted((run_dir / "received").glob("*.stats.json")):
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError) as e:
            problems.append(f"{path}: unreadable collector stats ({e}); its costs are left out")
            continue
        if isinstance(doc, dict):
            stats[str(path)] = doc
        else:
            problems.append(f"{path}: collector stats are not a JSON object; left out")
    return stats


def read_ledgers(run_dir: str | os.PathLike[str], *, strict: bool = False, received: bool = True) -> Ledgers:
    """Read every sent and received ledger (and collector stats) of a run directory into columns.
    ``received=False`` reads the sent side only (the received columns are empty): for a run against
    another target, whose own log an adapter reads instead (``lossbench.analysis.adapters``).

    Raises LedgerError when a ledger is missing, empty or not a ledger. A damaged line is skipped, and
    counted and named in ``files`` (``strict``: LedgerError naming it). Incomplete files and truncated last
    lines are read as far as they go and reported in ``files``.

    Ranges of the files are read and prepared by worker processes (``lossbench.analysis.parallel``; this
    thread for a small run), several at a time; their results are finished here in file order, so that
    the columns are as a reading line by line gives them.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LedgerError(
            f"{run_dir}: no such run directory — give the folder that holds sent/ and received/"
        )
    vocabs = Vocabs()
    problems: list[str] = []
    paths = {
        "sent": _ledger_paths(run_dir, "sent", "load generator"),
        "received": _ledger_paths(run_dir, "received", "collector") if received else [],
    }
    stores = {
        "sent": _Store(SENT_COLUMNS, sum(p.stat().st_size for p in paths["sent"])),
        "received": _Store(RECEIVED_COLUMNS, sum(p.stat().st_size for p in paths["received"])),
    }
    opened = [
        _open_ledger(path, kind, f"{kind}/{path.name}")
        for kind in ("sent", "received")
        for path in paths[kind]
    ]
    total = stores["sent"].total_bytes + stores["received"].total_bytes
    ahead = 2 * ledger_parallel.WORKERS
    with ledger_parallel.workers(total, BLOCK_BYTES, ahead) as pool:
        ranges = [_ranges(o, pool.range_bytes) if o.error is None else [] for o in opened]
        in_order = ledger_parallel.in_order(pool, _read_range, [r for rs in ranges for r in rs], ahead)
        results = (_from_arena(result, pool.arena) for result in in_order)
        try:
            for o, rs in zip(opened, ranges, strict=True):
                if o.error is not None:
                    raise o.error
                _read_body(o, results, len(rs), vocabs, stores[o.kind].add, strict)
        finally:
            results.close()
            in_order.close()
    sent, sent_keys = stores["sent"].result()
    received_columns, received_keys = stores["received"].result()
    return Ledgers(
        run_dir=run_dir,
        files=[o.info for o in opened],
        vocabs=vocabs,
        sent=sent,
        received=received_columns,
        ping_requests=stores["sent"].ping_requests,
        ping_connections=stores["sent"].ping_connections,
        collector_stats=_read_stats(run_dir, problems),
        problems=problems,
        sent_keys=sent_keys,
        received_keys=received_keys,
    )


class _Store:
    """The columns of one ledger kind, filled block by block in file order: no second copy at the end.

    The capacity is estimated from the bytes left to read and the rows per byte seen so far, with room to
    spare (grown, with one copy, if it runs out); capacity never written costs address space, not memory.
    """

    def __init__(self, dtypes: dict[str, str], total_bytes: int) -> None:
        self.dtypes = dtypes
        self.total_bytes = total_bytes
        self.bytes_read = 0
        self.n = 0
        self.columns: dict[str, np.ndarray] = {name: np.empty(0, dtype) for name, dtype in dtypes.items()}
        self.keys: np.ndarray | None = np.empty(0, np.uint64)
        self.ping_requests: dict[str, int] = {}
        self.ping_connections: dict[str, int] = {}

    def add(self, block: Block, size: int) -> None:
        for tech, k in block.ping_requests.items():
            self.ping_requests[tech] = self.ping_requests.get(tech, 0) + k
        for tech, k in block.ping_connections.items():
            self.ping_connections[tech] = self.ping_connections.get(tech, 0) + k
        self.bytes_read += size
        cols = block.columns
        m = len(cols["id"])
        if not m:
            return
        if self.n + m > len(self.columns["id"]):
            rows_per_byte = (self.n + m) / max(self.bytes_read, 1)
            left = max(self.total_bytes - self.bytes_read, 0)
            self._resize(int((self.n + m + left * rows_per_byte) * 1.1) + 1024)
        if cols["id"].dtype.itemsize > self.columns["id"].dtype.itemsize:
            self.columns["id"] = self.columns["id"].astype(cols["id"].dtype)
        at, to = self.n, self.n + m
        for name in self.dtypes:
            self.columns[name][at:to] = cols[name]
        if self.keys is not None and block.keys is not None:
            self.keys[at:to] = block.keys
        else:
            self.keys = None
        self.n = to

    def _resize(self, capacity: int) -> None:
        for name, column in self.columns.items():
            grown = np.empty(capacity, column.dtype)
            grown[: self.n] = column[: self.n]
            self.columns[name] = grown
        if self.keys is not None:
            grown = np.empty(capacity, np.uint64)
            grown[: self.n] = self.keys[: self.n]
            self.keys = grown

    def result(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        columns = {name: column[: self.n] for name, column in self.columns.items()}
        return columns, None if self.keys is None else self.keys[: self.n]


def hex64(ids: np.ndarray) -> np.ndarray | None:
    """S16 ids of 16 lowercase hex digits as uint64 (sorts several times faster); None if any is not."""
    if ids.dtype != np.dtype("S16"):
        return None
    words = np.ascontiguousarray(ids).view(np.uint64).reshape(-1, 2)
    ok, keys = ledger_fast.hex_keys(words)
    return keys if ok.all() else None
