"""Ledger files: the JSON Lines record of what was sent and what was received (see docs/FORMATS.md).

Writers call ``write(2)`` directly (no user-space buffer) so that a line is in the kernel, and survives a
``kill -9`` of the process, as soon as ``append`` returns. A batch of lines can be handed over at once
(group commit) to pay for one system call instead of many.

The reading half (``read_ledgers``, ``match_received``) turns every ledger of a run into numpy columns and
joins them by event id, for ``compare``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lossbench import TECHNIQUES

SCHEMA = 1

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps_line(record: dict[str, Any]) -> bytes:
    """One compact JSON line, ending in a newline."""
    return (_dumps(record) + "\n").encode()


class LedgerWriter:
    """Appends lines to ``<directory>/<host>-<pid>.<part>.jsonl``, rotating to a new part past ``max_bytes``.

    The header line names the ledger kind; ``close`` writes the footer that marks the file complete.
    Every part but the last gets a footer too, so readers can tell a rotated part from a killed one.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        kind: str,
        *,
        name: str | None = None,
        max_bytes: int = 0,
        extra_header: dict[str, Any] | None = None,
        buffer_bytes: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.kind = kind
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.max_bytes = max_bytes
        self.extra_header = extra_header or {}
        self.part = -1
        self.lines_in_part = 0
        self.lines_total = 0
        self.bytes_in_part = 0
        self.fd = -1
        self.path: Path | None = None
        self.buffer_bytes = buffer_bytes  # 0: each append reaches the kernel at once (the collector)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._open_next_part()

    def _open_next_part(self) -> None:
        self.part += 1
        self.path = self.directory / f"{self.name}.{self.part}.jsonl"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        self.lines_in_part = 0
        self.bytes_in_part = 0
        header = {
            "ledger": self.kind,
            "schema": SCHEMA,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "part": self.part,
            "started": time.time(),
            **self.extra_header,
        }
        self._write(dumps_line(header))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.bytes_in_part += len(data)

    def append(self, record: dict[str, Any]) -> None:
        """Write one event line; raises OSError (disk full, read-only) with nothing half-acknowledged."""
        self.append_raw(dumps_line(record), 1)

    def append_raw(self, data: bytes, lines: int) -> None:
        """Write ``lines`` already-encoded lines in one system call (group commit).

        With ``buffer_bytes`` set (the load generator's sent ledger), lines wait in memory until that many
        bytes or the next ``flush()``: a killed process loses at most that much, never a partial line
        before the last.
        """
        if self.buffer_bytes:
            self._buffer.append(data)
            self._buffered += len(data)
            self.lines_in_part += lines
            self.lines_total += lines
            if self._buffered >= self.buffer_bytes:
                self.flush()
            return
        self._write(data)
        self.lines_in_part += lines
        self.lines_total += lines
        self._rotate_if_full()

    def flush(self) -> None:
        """Hand buffered lines to the kernel."""
        if self._buffer and self.fd >= 0:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            self._write(data)
            self._rotate_if_full()

    def _rotate_if_full(self) -> None:
        if self.max_bytes and self.bytes_in_part >= self.max_bytes:
            self._close_part()
            self._open_next_part()

    def _close_part(self) -> None:
        if self.fd < 0:
            return
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            self._write(data)
        try:
            self._write(dumps_line({"ledger_end": True, "events": self.lines_in_part, "ended": time.time()}))
        finally:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        """Write the footer and close: the file is then known to be complete."""
        self._close_part()


# ---------------------------------------------------------------------------------------------------------
# Reading: every ledger of a run directory into numpy columns, for compare to join.
# ---------------------------------------------------------------------------------------------------------
#
# A file is read in three parts: the header (first line), the last line (footer, an event, or a line cut
# short by a killed process) and the body between them, handed over in blocks of whole lines. Only the
# block parsers (``parse_sent_block``, ``parse_received_block``) look inside event lines, so a faster
# parser can replace them without touching the rules about headers, footers and truncation.

BLOCK_BYTES = 1 << 24
"""Body bytes parsed at a time: big enough to amortise numpy conversions, small enough to bound memory."""

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
    body_lines: int = 0  # event and ping lines found, to check against footer_events

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "kind": self.kind,
            "lines": self.lines,
            "complete": self.complete,
            "truncated_last_line": self.truncated_last_line,
        }


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


class BadLine(Exception):
    """Raised by a block parser: ``index`` is the 0-based line within the block."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


_raw_decode = json.JSONDecoder().raw_decode


def _lines(block: bytes) -> list[str]:
    """The block's lines as text, decoded once (not line by line: that costs as much as the JSON)."""
    try:
        return block.decode().split("\n")
    except UnicodeDecodeError as e:
        raise BadLine(block.count(b"\n", 0, e.start), f"invalid UTF-8 ({e.reason})") from None


def _loads(line: str, index: int) -> dict:
    try:
        obj, end = _raw_decode(line)
    except ValueError:
        end = -1
    if end != len(line):  # leading/trailing blanks, extra data or bad JSON: let json.loads decide
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise BadLine(index, f"invalid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise BadLine(index, "not a JSON object")
    return obj


def _event_id(obj: dict, index: int) -> bytes:
    ident = obj.get("id")
    if not isinstance(ident, str) or not ident:
        if obj.get("ledger_end"):
            raise BadLine(index, "a footer in the middle of the file (two ledgers concatenated?)")
        if "ledger" in obj:
            raise BadLine(index, "a header in the middle of the file (two ledgers concatenated?)")
        raise BadLine(index, 'event line without an "id"')
    return ident.encode()


def _timing_error(plan: object, real: object) -> float:
    """real − plan at the last stage completed (the one planned to end last); nan when none completed."""
    if not plan or not real or not isinstance(plan, dict) or not isinstance(real, dict):
        return _NAN
    last = max(plan, key=plan.__getitem__)
    actual = real.get(last)
    return _NAN if actual is None else float(actual) - float(plan[last])


def _num(x: object) -> float:
    return _NAN if x is None else float(x)  # type: ignore[arg-type]


def parse_sent_block(block: bytes, vocabs: Vocabs) -> Block:
    """Parse whole sent-ledger lines with ``json``; pings are tallied, not kept as events.

    Raises BadLine for the first line that is not a valid event or ping.
    """
    cols: dict[str, list] = {name: [] for name in SENT_COLUMNS}
    out = Block(columns={})
    (ids, tech, type_, stage, written, t_written, acked, retried, requests, connections, a, rtt, error) = (
        cols[name].append for name in SENT_COLUMNS
    )
    tech_code, type_code, stage_code = vocabs.tech.code, vocabs.type.code, vocabs.stage.code
    for index, line in enumerate(_lines(block)):
        if not line or line.isspace():
            continue
        obj = _loads(line, index)
        out.lines += 1
        ping = obj.get("ping")
        if ping is not None:
            out.pings += 1
            name = str(ping)
            out.ping_requests[name] = out.ping_requests.get(name, 0) + int(obj.get("requests") or 0)
            out.ping_connections[name] = out.ping_connections.get(name, 0) + int(obj.get("connections") or 0)
            continue
        ids(_event_id(obj, index))
        get = obj.get
        try:
            tech(tech_code(str(obj["tech"])))
            type_(type_code(str(get("type") or "unknown")))
            stage(stage_code(str(get("stage") or "unknown")))
            written(bool(get("written")))
            t_written(_num(get("t_written")))
            acked(bool(get("acked")))
            retried(bool(get("retried")))
            requests(int(get("requests") or 0))
            connections(int(get("connections") or 0))
            a(_num(get("A")))
            rtt(_num(get("rtt")))
            error(_timing_error(get("plan"), get("real")))
        except KeyError as e:
            raise BadLine(index, f"event line without {e}") from None
        except (TypeError, ValueError) as e:
            raise BadLine(index, f"event line with a value of the wrong type ({e})") from None
    out.columns = _to_arrays(cols, SENT_COLUMNS)
    return out


def parse_received_block(block: bytes, vocabs: Vocabs) -> Block:
    """Parse whole received-ledger lines with ``json`` (id, technique, method)."""
    cols: dict[str, list] = {name: [] for name in RECEIVED_COLUMNS}
    ids, techs, methods = (cols[name].append for name in RECEIVED_COLUMNS)
    tech_code, method_code = vocabs.tech.code, vocabs.method.code
    out = Block(columns={})
    for index, line in enumerate(_lines(block)):
        if not line or line.isspace():
            continue
        obj = _loads(line, index)
        out.lines += 1
        if "ping" in obj:
            out.pings += 1
            continue
        ids(_event_id(obj, index))
        techs(tech_code(str(obj.get("tech") or "")))
        methods(method_code(str(obj.get("m") or "")))
    out.columns = _to_arrays(cols, RECEIVED_COLUMNS)
    return out


PARSERS: dict[str, Callable[[bytes, Vocabs], Block]] = {
    "sent": parse_sent_block,
    "received": parse_received_block,
}
"""The block parser of each ledger kind: the one place a faster parser plugs in."""


def _to_arrays(cols: dict[str, list], dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    # ids: at least S16, wider when foreign ids are longer (np.array picks the widest)
    arrays = {name: np.array(values, dtype=dtypes[name]) for name, values in cols.items() if name != "id"}
    ids = np.array(cols["id"], dtype="S") if cols["id"] else np.empty(0, "S16")
    arrays["id"] = ids if ids.dtype.itemsize >= 16 else ids.astype("S16")
    return arrays


def _concat(blocks: list[dict[str, np.ndarray]], dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    if not blocks:
        return {name: np.empty(0, dtype) for name, dtype in dtypes.items()}
    return {name: np.concatenate([b[name] for b in blocks]) for name in dtypes}


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
    collector_stats: list[dict]
    problems: list[str]  # things compare should warn about that did not stop the reading

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


def _blocks(f: BinaryIO, begin: int, end: int) -> Iterator[bytes]:
    """Body bytes between begin and end, cut at newlines into blocks of about BLOCK_BYTES."""
    f.seek(begin)
    carry = b""
    remaining = end - begin
    while remaining > 0:
        chunk = f.read(min(BLOCK_BYTES, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        data = carry + chunk
        cut = data.rfind(b"\n") + 1 if remaining > 0 else len(data)
        carry = data[cut:]
        if cut:
            yield data[:cut]
    if carry:
        yield carry


def read_ledger_file(
    path: Path, kind: str, rel: str, vocabs: Vocabs, parse: Callable[[bytes, Vocabs], Block]
) -> tuple[LedgerFileInfo, list[Block]]:
    """Read one ledger: check its header, parse its body, and classify its last line."""
    info = LedgerFileInfo(path=rel, kind=kind, lines=0, complete=False, truncated_last_line=False)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise LedgerError(
                f"{path}: empty file, not even a header — the process that owns it died at start or is still "
                "starting; wait for it or delete the file"
            )
        first = f.readline(1 << 16)
        try:
            header: object = json.loads(first)
        except ValueError:
            header = None
        if not isinstance(header, dict) or "ledger" not in header:
            raise LedgerError(
                f'{path}: line 1 is not a ledger header ({{"ledger": "{kind}", "schema": {SCHEMA}, ...}}) '
                f"— is this a lossbench ledger? Move it out of {path.parent.name}/"
            )
        if header["ledger"] != kind:
            raise LedgerError(
                f"{path}: a {header['ledger']!r} ledger in {kind}/ — move it to the folder of its kind"
            )
        if not isinstance(header.get("schema"), int) or header["schema"] > SCHEMA:
            raise LedgerError(
                f"{path}: ledger schema {header.get('schema')!r}, this lossbench reads schema {SCHEMA} — "
                "upgrade lossbench"
            )
        body_start = len(first)
        last_at, last = _read_last_line(f, size, body_start)
        lineno = 1  # line number of the last line handled so far
        blocks: list[Block] = []
        for data in _blocks(f, body_start, last_at):
            try:
                block = parse(data, vocabs)
            except BadLine as e:
                bad = lineno + 1 + e.index
                raise LedgerError(
                    f"{path}:{bad}: {e.reason} — only a file's last line may be damaged; "
                    "repair or delete this line, or move the file out of the run directory"
                ) from None
            lineno += data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
            blocks.append(block)
        if last:
            lineno += 1
            _classify_last_line(last, info, blocks, vocabs, parse)
    info.lines = sum(len(b.columns["id"]) for b in blocks)
    info.pings = sum(b.pings for b in blocks)
    info.body_lines = sum(b.lines for b in blocks)
    return info, blocks


def _classify_last_line(
    last: bytes, info: LedgerFileInfo, blocks: list[Block], vocabs: Vocabs, parse: Callable
) -> None:
    """The last line is a footer (file complete), an event (file incomplete) or cut short (skipped)."""
    try:
        obj = json.loads(last)
    except ValueError:
        info.truncated_last_line = True
        return
    if isinstance(obj, dict) and obj.get("ledger_end"):
        info.complete = True
        events = obj.get("events")
        info.footer_events = events if isinstance(events, int) else None
        return
    try:
        blocks.append(parse(last, vocabs))
    except BadLine:
        info.truncated_last_line = True  # valid JSON, but not a whole event: cut at a lucky place


def _ledger_paths(run_dir: Path, kind: str, who: str) -> list[Path]:
    folder = run_dir / kind
    paths = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not paths:
        raise LedgerError(
            f"{folder}: no {kind} ledger (*.jsonl) found — was the {who} run with --run-dir {run_dir}?"
        )
    return paths


def _read_stats(run_dir: Path, problems: list[str]) -> list[dict]:
    stats = []
    for path in sorted((run_dir / "received").glob("*.stats.json")):
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError) as e:
            problems.append(f"{path}: unreadable collector stats ({e}); its costs are left out")
            continue
        if isinstance(doc, dict):
            stats.append(doc)
        else:
            problems.append(f"{path}: collector stats are not a JSON object; left out")
    return stats


def read_ledgers(run_dir: str | os.PathLike[str]) -> Ledgers:
    """Read every sent and received ledger (and collector stats) of a run directory into columns.

    Raises LedgerError when a ledger is missing, empty, not a ledger, or damaged anywhere but its last
    line. Incomplete files and truncated last lines are read as far as they go and reported in ``files``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LedgerError(
            f"{run_dir}: no such run directory — give the folder that holds sent/ and received/"
        )
    vocabs = Vocabs()
    files: list[LedgerFileInfo] = []
    problems: list[str] = []
    found: dict[str, list[dict[str, np.ndarray]]] = {"sent": [], "received": []}
    ping_requests: dict[str, int] = {}
    ping_connections: dict[str, int] = {}
    for kind, who in (("sent", "load generator"), ("received", "collector")):
        parse = PARSERS[kind]
        for path in _ledger_paths(run_dir, kind, who):
            info, blocks = read_ledger_file(path, kind, f"{kind}/{path.name}", vocabs, parse)
            files.append(info)
            for block in blocks:
                found[kind].append(block.columns)
                for tech, n in block.ping_requests.items():
                    ping_requests[tech] = ping_requests.get(tech, 0) + n
                for tech, n in block.ping_connections.items():
                    ping_connections[tech] = ping_connections.get(tech, 0) + n
    return Ledgers(
        run_dir=run_dir,
        files=files,
        vocabs=vocabs,
        sent=_concat(found["sent"], SENT_COLUMNS),
        received=_concat(found["received"], RECEIVED_COLUMNS),
        ping_requests=ping_requests,
        ping_connections=ping_connections,
        collector_stats=_read_stats(run_dir, problems),
        problems=problems,
    )


# ---------------------------------------------------------------------------------------------------------
# Joining sent and received ids, with numpy only.
# ---------------------------------------------------------------------------------------------------------

_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i


def _hex64(ids: np.ndarray) -> np.ndarray | None:
    """S16 ids of 16 lowercase hex digits as uint64 (sorts several times faster); None if any is not."""
    if ids.dtype != np.dtype("S16"):
        return None
    digits = _HEX[np.ascontiguousarray(ids).view(np.uint8).reshape(-1, 16)]
    if digits.size and digits.max() == 255:
        return None
    keys = np.zeros(len(ids), dtype=np.uint64)
    for i in range(16):
        keys <<= np.uint64(4)
        keys |= digits[:, i].astype(np.uint64)
    return keys


def _id_keys(sent: np.ndarray, received: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Comparable keys for both id columns: uint64 for lossbench's own ids, common-width bytes otherwise."""
    s, r = _hex64(sent), _hex64(received)
    if s is not None and r is not None:
        return s, r
    width = max(sent.dtype.itemsize, received.dtype.itemsize, 16)
    return sent.astype(f"S{width}"), received.astype(f"S{width}")


@dataclasses.dataclass
class Match:
    """How the received lines map onto sent events."""

    copies: np.ndarray  # per sent event: received lines carrying its id (0 = lost, >1 = duplicates)
    received_index: np.ndarray  # per received line: the sent event it belongs to, -1 for a phantom
    phantom_ids: int  # distinct received ids never sent
    phantom_lines: int  # received lines carrying them
    repeated_sent_ids: int  # sent lines whose id an earlier sent line already had (should be 0)


def match_received(ledgers: Ledgers) -> Match:
    """Join received lines to sent events by id (sort + searchsorted: O(n log n), no Python loop)."""
    sent_keys, recv_keys = _id_keys(ledgers.sent["id"], ledgers.received["id"])
    n = len(sent_keys)
    order = np.argsort(sent_keys, kind="stable")
    sorted_keys = sent_keys[order]
    repeated = int(np.count_nonzero(sorted_keys[1:] == sorted_keys[:-1])) if n > 1 else 0
    if n == 0:
        index = np.full(len(recv_keys), -1, dtype=np.int64)
    else:
        pos = np.minimum(np.searchsorted(sorted_keys, recv_keys), n - 1)
        hit = sorted_keys[pos] == recv_keys
        index = np.where(hit, order[pos], -1).astype(np.int64)
    hit = index >= 0
    copies = np.bincount(index[hit], minlength=n).astype(np.int64)
    phantom_keys = recv_keys[~hit]
    return Match(
        copies=copies,
        received_index=index,
        phantom_ids=int(np.unique(phantom_keys).size),
        phantom_lines=int(phantom_keys.size),
        repeated_sent_ids=repeated,
    )
