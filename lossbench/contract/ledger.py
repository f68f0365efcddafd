"""Writing ledger files: the JSON Lines record of what was sent and what was received (docs/FORMATS.md).

Writers call ``write(2)`` directly (no user-space buffer) so that a line is in the kernel, and survives a
``kill -9`` of the process, as soon as ``append`` returns. A batch of lines can be handed over at once
(group commit) to pay for one system call instead of many. What a line holds, and the one encoder that writes
it, are ``lossbench.contract.lines``. Reading them is ``lossbench.analysis.read``; joining sent with received
is ``lossbench.analysis.join``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from lossbench.contract.lines import SCHEMA, Footer, Header, Line, encode_line


def micro(seconds: float) -> float:
    """Seconds to the microsecond, as the ledgers record times (2x faster than ``round(x, 6)``, which
    rounds through decimal strings; it may differ from it in the last digit, never by more)."""
    return round(seconds * 1e6) / 1e6


def default_ledger_name() -> str:
    """``<host>-<pid>``: one ledger per process, named so that processes on several hosts never collide."""
    return f"{socket.gethostname()}-{os.getpid()}"


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
        salt: str | None = None,
        buffer_bytes: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.kind = kind
        self.name = name or default_ledger_name()
        self.max_bytes = max_bytes
        self.salt = salt  # sent ledgers: the process salt of the event ids, in every header
        self.part = -1
        self.lines_in_part = 0
        self.lines_total = 0
        self.bytes_in_part = 0
        self.fd = -1
        self.path: Path | None = None
        self.buffer_bytes = buffer_bytes  # 0: each append reaches the kernel at once (the collector)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._buffered_lines = 0
        self._open_next_part()

    def _open_next_part(self) -> None:
        self.part += 1
        self.path = self.directory / f"{self.name}.{self.part}.jsonl"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        self.lines_in_part = 0
        self.bytes_in_part = 0
        header = Header(
            ledger=self.kind,
            schema=SCHEMA,
            host=socket.gethostname(),
            pid=os.getpid(),
            part=self.part,
            started=time.time(),
            salt=self.salt,
        )
        try:
            self._write(encode_line(header))
        except OSError:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            raise

    def _write(self, data: bytes) -> None:
        """All of ``data`` or none of it. When the disk fills (or a file size limit is hit) in the middle of
        a line, the part already written would stay and the next successful write would follow it: a
        damaged line in the middle of the file, which compare skips (losing its event). So the file is cut
        back to its last whole line (``ftruncate`` needs no free space); if even that fails, the part ends
        there, its damaged line its last one (which compare tolerates and reports)."""
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, view[done:])
        except OSError:
            if done:
                try:
                    os.ftruncate(self.fd, self.bytes_in_part)
                except OSError:
                    os.close(self.fd)
                    self.fd = -1
            raise
        self.bytes_in_part += len(data)

    def append(self, line: Line | Mapping[str, object]) -> None:
        """Write one line (a mapping: a hand-made line, for tests and tools); raises OSError (disk full,
        read-only) with nothing half-acknowledged."""
        self.append_raw(encode_line(line), 1)

    def append_raw(self, data: bytes, lines: int) -> None:
        """Write ``lines`` already-encoded lines in one system call (group commit).

        With ``buffer_bytes`` set (the load generator's sent ledger), lines wait in memory until that many
        bytes or the next ``flush()``: a killed process loses at most that much, never a partial line
        before the last.
        """
        if self.buffer_bytes:
            self._buffer.append(data)
            self._buffered += len(data)
            self._buffered_lines += lines
            self.lines_in_part += lines
            self.lines_total += lines
            if self._buffered >= self.buffer_bytes:
                self.flush()
            return
        self._write(data)
        self.lines_in_part += lines
        self.lines_total += lines
        self._rotate_if_full()

    @property
    def unwritten_lines(self) -> int:
        """Lines still in memory: after a failed flush, what the file lacks."""
        return self._buffered_lines

    def flush(self) -> None:
        """Hand buffered lines to the kernel. On failure (OSError) none of them is in the file and all stay
        buffered, for the next flush to try again."""
        if self._buffer and self.fd >= 0:
            self._write_buffer()
            self._rotate_if_full()

    def _write_buffer(self) -> None:
        if len(self._buffer) > 1:
            self._buffer[:] = [b"".join(self._buffer)]  # one system call, and one join on a retry
        self._write(self._buffer[0])
        self._buffer.clear()
        self._buffered = 0
        self._buffered_lines = 0

    def _rotate_if_full(self) -> None:
        if self.max_bytes and self.bytes_in_part >= self.max_bytes:
            self._close_part()
            self._open_next_part()

    def _close_part(self) -> None:
        if self.fd < 0:
            return
        try:
            if self._buffer:
                self._write_buffer()
            self._write(encode_line(Footer(events=self.lines_in_part, ended=time.time())))
        finally:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    def close(self) -> None:
        """Write the footer and close: the file is then known to be complete."""
        self._close_part()
