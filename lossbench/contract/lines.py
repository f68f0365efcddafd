"""The lines of a ledger file, as types: what the writers encode and the readers expect (docs/FORMATS.md).

Each line is a msgspec Struct, encoded by the one writer ``encode_line`` (``encode_lines`` for a batch):
compact JSON whose keys come in the order the fields are declared here. That order is the shape the fast
reader (``lossbench.analysis.fast``) walks, key by key, and it takes it from these definitions: moving a
field moves both, and a field it has no reader for fails at import. Readers accept any other shape too
(keys moved or added, spaces, escapes), only more slowly.

Numbers are written as msgspec writes a double: the shortest text that reads back to the same value
(``0.05``, ``12.0``, ``0.000036``, ``5e-6``), seconds rounded to the microsecond first
(``lossbench.contract.ledger.micro``). Ledgers written before (Python's ``repr``: ``3.6e-05``) hold the same
values and read the same.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

SCHEMA = 1
"""Version of the ledger format, in every header; readers refuse a newer one."""


class SentEvent(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One event fired by the load generator (the sent ledger). Times in seconds, to the microsecond."""

    id: str  # first, so that a reader finds it at a fixed offset
    tech: str
    type: str
    visit: int  # the visit's number in its process (with the header's salt: unique in the run)
    at: float  # visit time the event fired (seconds since the tracker started on the page)
    rtt: float
    dns: float
    A: float | None  # seconds from firing until the page went away; None: never cut
    abort: str
    stage: str
    written: bool
    t_written: float | None
    acked: bool
    retried: bool
    requests: int
    connections: int
    conn: str  # what it found: cold, warm, pending, stale (contract.techniques.CONNECTION_KINDS) or none
    preflight: str  # sent (needed one: sent unless the cut came first), cached, or none (needs none)
    plan: dict[str, float]
    real: dict[str, float]
    error: str | None = None  # written only when there is one
    t0: float  # wall-clock time the event fired


class SentPing(msgspec.Struct, kw_only=True, gc=False):
    """Pings a page sent (or would have sent while its idle time was compressed): not events, but costs."""

    ping: str  # the technique
    requests: int
    connections: int
    virtual: bool = True


class ReceivedEvent(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One event the collector fully parsed (the received ledger)."""

    id: str
    tech: str
    m: str  # HTTP method
    t: float  # wall time of the group commit that wrote it
    c: int  # the collector's connection number (per process)
    ua: str | None = None  # the User-Agent family; only with a User-Agent (the socket client sends none)


class Header(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """The first line of every ledger file."""

    ledger: str  # "sent" or "received"
    schema: int
    host: str
    pid: int
    part: int
    started: float
    salt: str | None = None  # sent ledgers: the process salt of its event ids


class Footer(msgspec.Struct, kw_only=True, gc=False):
    """The last line of a file closed cleanly: ``events`` lines were written between header and footer."""

    ledger_end: bool = True
    events: int
    ended: float


Line = SentEvent | SentPing | ReceivedEvent | Header | Footer

encoder = msgspec.json.Encoder()
"""The ledgers' one JSON encoder."""
encode_lines = encoder.encode_lines
"""Lines (an iterable of structs) as one ``bytes``, each ending in a newline: a batch, one call."""


def encode_line(line: Line | Mapping[str, object]) -> bytes:
    """One line, ending in a newline (a mapping: a hand-made line of any shape, for tests and tools)."""
    return encoder.encode(line) + b"\n"


def written_keys(line_type: type[msgspec.Struct]) -> tuple[str, ...]:
    """The keys of a line of ``line_type`` whose optional fields are at their defaults, in the order the
    writer writes them (the shape the fast reader walks)."""
    omitted = line_type.__struct_config__.omit_defaults
    return tuple(f.encode_name for f in msgspec.structs.fields(line_type) if f.required or not omitted)
