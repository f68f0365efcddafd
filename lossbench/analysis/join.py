"""Joining the sent and received ledgers by event id, with numpy only.

lossbench's own ids (24 bits of process salt, 40 bits of counter, in hex) are matched by direct lookup in
a table; any other id falls back to sorting both sides and searching.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
from collections.abc import Iterator

import numpy as np

from lossbench.analysis.read import Ledgers, hex64

# ---------------------------------------------------------------------------------------------------------
# Joining sent and received ids, with numpy only.
# ---------------------------------------------------------------------------------------------------------


def _id_keys(ledgers: Ledgers) -> tuple[np.ndarray, np.ndarray]:
    """Comparable keys for both id columns: uint64 for lossbench's own ids, common-width bytes otherwise."""
    s, r = ledgers.sent_keys, ledgers.received_keys
    sent, received = ledgers.sent["id"], ledgers.received["id"]
    if s is None or r is None:
        s, r = hex64(sent), hex64(received)
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


def _sort(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable")
    return order, keys[order]


def match_received(ledgers: Ledgers) -> Match:
    """Join received lines to sent events by id, with numpy only (no Python loop per event).

    lossbench's own ids are joined by direct addressing (``_dense_match``, linear time); any other ids,
    or sent ids that repeat, by sorting both sides (``_sorted_match``). Both give the same result: a
    received id sent more than once belongs to its first sent line.
    """
    sent_keys, recv_keys = _id_keys(ledgers)
    match = _dense_match(sent_keys, recv_keys) if sent_keys.dtype == np.uint64 else None
    return match if match is not None else _sorted_match(sent_keys, recv_keys)


COUNTER_BITS = 40
"""lossbench's ids are a process's 24-bit salt then a 40-bit counter from 0 (``visits.EventIds``)."""
MAX_RUNS = 4096  # more runs of one salt than this: not one salt per load-generating process, so sort instead
CHUNK = 1 << 20
"""Rows handled at a time by passes over whole columns (the join, compare's counts): their scratch arrays
stay small enough for malloc to reuse them, where a fresh array of ten million rows costs more in page
faults than the arithmetic done on it."""


def chunks(n: int) -> Iterator[slice]:
    """Slices of ``range(n)`` of ``CHUNK`` rows."""
    return (slice(a, min(a + CHUNK, n)) for a in range(0, n, CHUNK))


def _dense_match(sent_keys: np.ndarray, recv_keys: np.ndarray) -> Match | None:
    """The join by direct addressing: (salt, counter) of a sent id is a slot in a table of about as many
    slots as events, which holds the event's index; a received id looks its slot up.

    Sorting ten million ids takes seconds; this is a few passes over them, a million at a time (the scratch
    arrays stay small). None when the ids do not have that shape (many runs of salts, sparse counters) or
    a sent id repeats: the sorted join decides then.
    """
    n, m = len(sent_keys), len(recv_keys)
    if n == 0:
        return None
    shift, mask = np.uint64(COUNTER_BITS), np.uint64((1 << COUNTER_BITS) - 1)
    ranges: dict[int, tuple[int, int]] = {}  # salt -> lowest and highest counter
    runs, last = 0, None
    for part in chunks(n):
        salt = sent_keys[part] >> shift
        counter = (sent_keys[part] & mask).view(np.int64)
        starts = np.flatnonzero(salt[1:] != salt[:-1]) + 1
        runs += len(starts) + int(last != salt[0])
        if runs > MAX_RUNS:
            return None
        last = salt[-1]
        for a, b in itertools.pairwise([0, *starts.tolist(), len(salt)]):
            low, high = ranges.get(int(salt[a]), (1 << COUNTER_BITS, -1))
            ranges[int(salt[a])] = min(low, int(counter[a:b].min())), max(high, int(counter[a:b].max()))
    salts = np.array(sorted(ranges), np.uint64)
    lo, hi = (np.array([ranges[s][i] for s in sorted(ranges)], np.int64) for i in (0, 1))
    size = hi - lo + 1
    if int(size.sum()) > 2 * n + 1024:  # sparse counters: the table would be mostly empty
        return None
    base = np.concatenate([[0], np.cumsum(size)[:-1]]) - lo  # table slot = base[salt] + counter
    table = np.full(int(size.sum()), -1, np.int64)
    for part in chunks(n):
        salt = sent_keys[part] >> shift
        slot = base[_salt_index(salts, salt)] + (sent_keys[part] & mask).view(np.int64)
        table[slot] = np.arange(part.start, part.stop)
    if np.count_nonzero(table >= 0) < n:  # a sent id repeats: the first line must win, the sort says which
        return None
    index = np.empty(m, np.int64)
    for part in chunks(m):
        salt = recv_keys[part] >> shift
        which = _salt_index(salts, salt)
        counter = (recv_keys[part] & mask).view(np.int64)
        found = (salts[which] == salt) & (counter >= lo[which]) & (counter <= hi[which])
        sent = np.take(table, base[which] + counter, mode="clip")  # meaningless where not found
        sent[~found] = -1
        index[part] = sent
    copies = table[:n]  # the table is done with: it counts the copies now (it has at least n slots)
    copies[:] = 0
    for part in chunks(m):
        sent = index[part]
        np.add.at(copies, sent[sent >= 0], 1)
    return _match(copies, index, recv_keys, repeated_sent_ids=0)


def _salt_index(salts: np.ndarray, salt: np.ndarray) -> np.ndarray:
    """Index of each ``salt`` in the sorted ``salts``, or of a neighbour when it is not there (the caller
    checks): a comparison per salt when they are few (searchsorted pays a binary search per id)."""
    if len(salts) > 8:
        return np.minimum(np.searchsorted(salts, salt), len(salts) - 1)
    which = np.zeros(len(salt), np.intp)
    for s in salts[:-1]:
        which += salt > s
    return which


def _match(copies: np.ndarray, index: np.ndarray, recv_keys: np.ndarray, repeated_sent_ids: int) -> Match:
    """The join's result; received keys matched by no sent line are phantoms."""
    phantom_keys = recv_keys[index < 0]
    return Match(
        copies=copies,
        received_index=index,
        phantom_ids=int(np.unique(phantom_keys).size),
        phantom_lines=int(phantom_keys.size),
        repeated_sent_ids=repeated_sent_ids,
    )


def _sorted_match(sent_keys: np.ndarray, recv_keys: np.ndarray) -> Match:
    """The join by sorting both sides and searching."""
    n, m = len(sent_keys), len(recv_keys)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        sent_sorted = pool.submit(_sort, sent_keys)
        recv_order, wanted = _sort(recv_keys)
        order, sorted_keys = sent_sorted.result()
    repeated = int(np.count_nonzero(sorted_keys[1:] == sorted_keys[:-1])) if n > 1 else 0
    index = np.full(m, -1, dtype=np.int64)
    if n:
        pos = np.searchsorted(sorted_keys, wanted)
        np.minimum(pos, n - 1, out=pos)
        found = sorted_keys[pos] == wanted
        del wanted, sorted_keys
        matched = order[pos[found]]
        del order, pos
        index[recv_order[found]] = matched
        copies = np.bincount(matched, minlength=n).astype(np.int64)
        del matched, found, recv_order
    else:
        copies = np.zeros(0, np.int64)
    return _match(copies, index, recv_keys, repeated_sent_ids=repeated)
