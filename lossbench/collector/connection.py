"""What a connection is to the rest of the collector: its states, the events it queues, and the interface the
shared state (``lossbench.collector.state``) uses to commit, answer and expire it.

They live here, below both the shared state and the protocol (``lossbench.collector.protocol``, the one
implementation), so that neither of those imports the other's module.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

IDLE, HEADERS, BODY, CLOSING = range(4)
"""A connection's state: waiting for a request, reading its head, reading its body, going away."""

Event = tuple[str, str, str, int, str]
"""A valid event waiting for the commit: (id, tech, method, connection number, User-Agent family or "")."""
Routed = tuple[Event | None, str, bytes, str | None]
"""A routed request: (its event or None, its technique, its answer, the kind of answer it is timed as: one
of ``contract.latency.ANSWER_KINDS``, or None: not timed)."""
Pending = tuple[Event | None, str, bytes, str | None, float]
"""A complete request waiting for the commit: its ``Routed``, then when it was complete (the collector's
clock)."""


class Connection(Protocol):
    """One client connection, as the shared state sees it (``CollectorProtocol`` is the implementation)."""

    @property
    def state(self) -> int:
        """IDLE, HEADERS, BODY or CLOSING."""

    @property
    def deadline(self) -> float:
        """When the current state times out, on the collector's clock (``Collector.clock``)."""

    @property
    def pending(self) -> list[Pending]:
        """Requests completed since the last commit, in order."""

    @property
    def transport(self) -> asyncio.Transport | None:
        """The connection's transport; None once it is lost."""

    def answer(self, written: bool, now: float) -> None:
        """Send the pending answers, or hand them to the service queue (``--service-time``); ``written``
        says whether their ledger lines reached the kernel; ``now`` is the commit's collector clock."""

    def on_deadline(self) -> None:
        """The deadline passed: answer 408 (if a request is in progress) and close, or abort."""

    def close(self, linger: bool = False) -> None:
        """Close after the answers are flushed."""

    def abort(self) -> None:
        """Drop the connection at once (an RST)."""
