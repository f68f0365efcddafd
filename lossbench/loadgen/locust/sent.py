"""This process's sent ledger under Locust: opened at a test's first event, closed at the test's end.

A ledger that cannot be written stops the run: what it sends from then on could not be joined with the
collector's ledger, so it would not be measured.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from pathlib import Path

import gevent

from lossbench.contract.ledger import LedgerWriter, default_ledger_name
from lossbench.contract.lines import SentPing
from lossbench.loadgen.player import EventIds, PlayedEvent

log = logging.getLogger("lossbench")

LEDGER_BUFFER = 256 * 1024  # sent lines held in memory at most this long or FLUSH_EVERY seconds
FLUSH_EVERY = 0.25
LATE_AFTER = 35.0  # seconds the end of a test waits for events in flight; later ones are late
_OUT_OF_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class SentLedger:
    """The sent ledger of one process, one file per test (the web UI can run several in one process)."""

    def __init__(self, on_failure: Callable[[str], None]) -> None:
        self.on_failure = on_failure  # told once, with the message, when the ledger cannot be written
        self.directory: Path | None = None  # the run's sent/, known at each test's start
        self.writer: LedgerWriter | None = None
        self.error: str | None = None  # the ledger could not be written: the run was stopped
        self.closed = False  # at the end of a test: an event finishing later is late, not recorded
        self.opened = 0
        self.recorded = 0
        self.late = 0
        self._ids: EventIds | None = None

    @property
    def ids(self) -> EventIds:
        """Event ids salted per process: made at first use, so that forked workers differ."""
        if self._ids is None:
            self._ids = EventIds()
        return self._ids

    def start_test(self, directory: Path) -> None:
        """A new test: its events go to a new sent ledger in ``directory``."""
        self.directory = directory
        self.closed = False

    def open(self) -> LedgerWriter | None:
        """The test's ledger, opened at its first event; None once it is closed, or when it could not be
        opened (the run is then stopping)."""
        if self.writer is None and not self.closed and self.error is None:
            if self.directory is None:
                raise RuntimeError("lossbench: an event was recorded before its test started")
            name = default_ledger_name()
            if self.opened:  # a later test in the same process: never truncate an earlier one's
                name += f"-test{self.opened + 1}"
            self.opened += 1
            try:
                self.writer = LedgerWriter(
                    self.directory,
                    "sent",
                    name=name,
                    salt=f"{self.ids.salt:06x}",
                    buffer_bytes=LEDGER_BUFFER,
                )
            except OSError as exc:
                self.failed(self.directory / f"{name}.0.jsonl", exc)
                return None
            gevent.spawn(self._flush_periodically, self.writer)
        return self.writer

    def append(self, played: PlayedEvent) -> bool:
        """One event into the ledger; False when it has none to go to (late, or the ledger failed)."""
        ledger = self.open()
        if ledger is None:
            if self.error is None:
                self.late += 1  # finished after the test's ledger closed
            return False
        try:
            ledger.append_raw(played.record_line(), 1)
        except OSError as exc:  # the line stays buffered: a later flush may still write it
            self.failed(ledger.path or ledger.directory, exc)
        self.recorded += 1
        return True

    def append_ping(self, cost: SentPing) -> None:
        """What a page cost by itself (its pings, sent or that it would have sent during compressed idle
        time, and the connections it opened): they count in the technique's cost."""
        ledger = self.open()
        if ledger is not None:
            try:
                ledger.append(cost)
            except OSError as exc:
                self.failed(ledger.path or ledger.directory, exc)

    def close(self) -> None:
        """The test's end: close its ledger, and say what is missing from it."""
        self.closed = True
        if self.writer is not None:
            ledger, self.writer = self.writer, None
            try:
                ledger.close()
            except OSError as exc:
                self.failed(ledger.path or ledger.directory, exc)
            if ledger.unwritten_lines:
                log.error(
                    "lossbench: the sent ledger %s is incomplete: %d line(s) could not be written",
                    ledger.path,
                    ledger.unwritten_lines,
                )
        if self.late:
            log.warning(
                "lossbench: %d event(s) finished after the sent ledger closed and are not in it; compare "
                "will count them as phantoms. Events were still in flight %g s after the stop: look at the "
                "collector",
                self.late,
                LATE_AFTER,
            )

    def _flush_periodically(self, ledger: LedgerWriter) -> None:
        while ledger.fd >= 0 and self.error is None:
            gevent.sleep(FLUSH_EVERY)
            try:
                ledger.flush()
            except OSError as exc:
                self.failed(ledger.path or ledger.directory, exc)

    def failed(self, path: Path, exc: OSError) -> None:
        """The ledger cannot be written (disk full, file size limit, no such folder): say so once, naming
        the file and what to do, and stop the whole run."""
        if self.error is not None:
            return
        if exc.errno in _OUT_OF_ROOM:
            advice = "Free space on that disk (or raise the file size limit, ulimit -f) and run again"
        else:
            advice = f"Check that {path.parent} is a folder this process can write to, and run again"
        self.error = (
            f"cannot write the sent ledger {path}: {exc.strerror or exc}. The run was stopped: the events "
            f"it sends could not be joined with the collector's. {advice}"
        )
        log.error("lossbench: %s", self.error)
        self.on_failure(self.error)
