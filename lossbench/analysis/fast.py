"""Ledger lines read with numpy, a block at a time: the fast path of ``lossbench.analysis.read``.

A JSON parser costs microseconds a sent line (``json`` about 9 µs, msgspec into typed Structs about 3):
tens of seconds for a run of 10 million events. The writers always write the same shape — compact JSON,
keys in the order of the line types of ``lossbench.contract.lines``, which this module walks — so a block
of lines can be read column by column instead: every line of the block at once, one key after the other,
with a cursor per line. Each step fetches a window of 16 to 64 bytes at every cursor (one numpy gather) and
checks it with word-wide integer arithmetic (SWAR): literal text is compared whole, a technique or stage
name is picked from the known names, a number is taken apart digit by digit.

Every byte of a line the fast path accepts is checked against that shape, so an accepted line is valid JSON
and its values are exactly what a JSON parser gives. Numbers are converted exactly: their digits make an
integer below 2**53, divided (or multiplied) by an exact power of ten up to 10**22 — one correctly rounded
operation, the same double ``float()`` gives (Clinger's fast path); any other number is left to the exact
path. A line of any other shape — a foreign id, an escaped character, a missing, moved or extra key, a
number written otherwise, damage — is left to the exact path (msgspec): the scan says which lines those
are, and ``lossbench.analysis.read`` reads them one by one. The columns are the same either way; only the
time differs.

Nothing here decides what a line means (pings, defaults, errors): that stays in ``lossbench.analysis.read``.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading
from collections.abc import Callable
from typing import cast

import numpy as np

from lossbench.contract.lines import ReceivedEvent, SentEvent, SentPing, written_keys
from lossbench.contract.techniques import (
    ABORTS,
    ALL_TECHNIQUES,
    CONNECTION_KINDS,
    DONE,
    EVENT_TYPES,
    PREFLIGHT_STATES,
    STAGES,
    Stage,
)

ENABLED = sys.byteorder == "little"
"""Windows are read as little-endian words; elsewhere every line takes the JSON path."""

SENT_KEYS = written_keys(SentEvent)
RECEIVED_KEYS = written_keys(ReceivedEvent)
PING_KEYS = written_keys(SentPing)
"""The key orders walked: the writers' own, from the line types (``lossbench.contract.lines``)."""

TECH_NAMES: tuple[str, ...] = ALL_TECHNIQUES
TYPE_NAMES: tuple[str, ...] = EVENT_TYPES
ABORT_NAMES: tuple[str, ...] = ABORTS
STAGE_NAMES: tuple[str, ...] = (
    *dict.fromkeys(s for t in ALL_TECHNIQUES for s in STAGES[t]),
    Stage.UNSENT,
    "tls",
    DONE,
    "error",
)
"""Stages: the model's, ``unsent`` (a keepalive request the browser refused), ``tls`` (for ledgers that name
it) and ``error`` (the client failed, not cut)."""
METHOD_NAMES = ("GET", "POST")
CONN_NAMES: tuple[str, ...] = (*CONNECTION_KINDS, "none")
PREFLIGHT_NAMES: tuple[str, ...] = PREFLIGHT_STATES
"""Names the fast path knows; a line with another name takes the JSON path."""

MAX_STAGES = 8  # entries of "plan"/"real" read by the fast path; a line with more takes the JSON path

PAD = 4096  # bytes after a block: windows read past a line's end never leave the buffer
_U = np.uint64
Read = tuple[np.ndarray, np.ndarray, np.ndarray | None]
"""What a value reader gives per window: read (valid there), length in bytes, value (None: only checked)."""
ValueReader = Callable[[np.ndarray, int, bytes], Read]
"""Reads a value at ``offset`` of each window, followed by one of the ``bytes`` given."""
_HIGH = _U(0x8080808080808080)
_ZEROS = _U(0x3030303030303030)
_ADD_LO = _U(0x5050505050505050)  # byte + 0x50 has its high bit set iff byte >= 0x30 ("0")
_ADD_HI = _U(0x4646464646464646)  # byte + 0x46 has its high bit set iff byte >= 0x3a (past "9")
_BYTE = _U(0xFF)
# powers of ten by a byte count; 256 entries so that any uint8 index (even from a rejected line) is in range
_POW10 = np.array([10.0**k for k in range(23)] + [1.0] * 233)
_SCALE = np.array([10.0 ** (8 - k) for k in range(9)] + [1.0] * 247)  # 10^(8 - k)
_SCALE_INT = np.array([10 ** (8 - k) for k in range(9)] + [1] * 247, dtype=np.uint64)


def _word(text: bytes) -> np.uint64:
    """Up to 8 bytes as the little-endian word a window holding them starts with."""
    return _U(int.from_bytes(text[:8], "little"))


def _mask(n: int) -> np.uint64:
    return _U((1 << (8 * n)) - 1)


def _nondigits(w: np.ndarray) -> np.ndarray:
    """High bit set in every byte of ``w`` that is not an ASCII digit (bytes must be below 0x80)."""
    return (~(w + _ADD_LO) | (w + _ADD_HI)) & _HIGH


def _lowest(x: np.ndarray) -> np.ndarray:
    """The lowest set bit of each word (0 for 0)."""
    return cast(np.ndarray, x & np.negative(x))


def _bytes_below(unit: np.ndarray) -> np.ndarray:
    """Number of whole bytes below the single set bit ``unit`` = 1 << 8k, i.e. k (8 for 0)."""
    return np.bitwise_count(unit - _U(1)) >> np.uint8(3)


def _parse8(v: np.ndarray) -> np.ndarray:
    """Eight digit values (0-9, first byte most significant) as one integer (simdjson's SWAR)."""
    v = ((v & _U(0x0F0F0F0F0F0F0F0F)) * _U(2561)) >> _U(8)
    v = ((v & _U(0x00FF00FF00FF00FF)) * _U(6553601)) >> _U(16)
    return cast(np.ndarray, (((v & _U(0x0000FFFF0000FFFF)) * _U(42949672960001)) >> _U(32)) & _U(0xFFFFFFFF))


def _not_number_char(c: np.ndarray) -> np.ndarray:
    """Bytes that cannot continue a JSON number: a number ends before one of them."""
    return cast(
        np.ndarray,
        ((c - np.uint8(0x2D)) > np.uint8(12))
        & (c != np.uint8(0x2B))
        & ((c | np.uint8(0x20)) != np.uint8(0x65)),
    )


def _ends(w: np.ndarray, unit: np.ndarray, end: bytes) -> np.ndarray:
    """The byte of ``w`` at ``unit`` (1 << 8k) is one of ``end`` (what may follow the value)."""
    at = w & (unit * _BYTE)
    found = at == unit * _U(end[0])
    for c in end[1:]:
        found |= at == unit * _U(c)
    return cast(np.ndarray, found)


def _zero_bytes(t: np.ndarray) -> np.ndarray:
    """High bit set in every byte of ``t`` that is zero (exact: no borrow between bytes)."""
    return cast(np.ndarray, ~(((t & _U(0x7F7F7F7F7F7F7F7F)) + _U(0x7F7F7F7F7F7F7F7F)) | t) & _HIGH)


@functools.cache
def _expected(offset: int, text: bytes, width: int) -> tuple[tuple[int, np.uint64 | None, np.uint64], ...]:
    """``text`` placed at ``offset`` of a window, as (word index, mask or None for all, value) per word."""
    placed = bytes(offset) + text
    if -(-len(placed) // 8) > width // 8:
        raise ValueError(f"{text!r} at {offset} does not fit a window of {width} bytes")
    out = []
    for k in range(offset // 8, -(-len(placed) // 8)):
        chunk = placed[8 * k : 8 * k + 8]
        lo, hi = max(offset - 8 * k, 0), len(chunk)
        mask = int.from_bytes(bytes(lo) + b"\xff" * (hi - lo), "little")
        value = int.from_bytes(chunk, "little") & mask
        out.append((k, None if mask == (1 << 64) - 1 else _U(mask), _U(value)))
    return tuple(out)


class Padded:
    """``n`` bytes of whole lines at the start of ``array`` (uint8), followed by at least ``PAD`` bytes of
    any content: the scanner reads it without a copy."""

    def __init__(self, array: np.ndarray, n: int) -> None:
        assert len(array) >= n + PAD
        self.array, self.n = array, n
        self._ascii: bool | None = None

    def __len__(self) -> int:
        return self.n

    def tobytes(self) -> bytes:
        return self.array[: self.n].tobytes()

    def isascii(self) -> bool:
        if self._ascii is None:  # cached: asked by the scan and the buffer
            self._ascii = not self.n or int(self.array[: self.n].max()) < 0x80
        return self._ascii


_local = threading.local()


def _scratch(n: int) -> np.ndarray:
    """A boolean array of n items, reused by the thread (a fresh one costs page faults)."""
    mask = getattr(_local, "mask", None)
    if mask is None or len(mask) < n:
        mask = _local.mask = np.empty(max(n, 1 << 20), bool)
    return mask[:n]


class _Buffer:
    """A block of lines as bytes, fetched in windows of 8 to 64 bytes at any offsets (one numpy gather:
    a 64-byte window costs about 1.5 times an 8-byte one), and where its lines start and end."""

    def __init__(self, data: bytes | Padded) -> None:
        if isinstance(data, Padded):
            buf, n = data.array, data.n
        else:
            n = len(data)
            buf = np.zeros(n + PAD, np.uint8)
            buf[:n] = np.frombuffer(data, np.uint8)
        self.buf = buf
        self.views = {
            width: np.ndarray((len(buf) - width + 1,), dtype=f"V{width}", buffer=buf, strides=(1,))
            for width in (8, 16, 32, 64)
        }
        self.limit = n + PAD - 128
        newlines = np.flatnonzero(np.equal(buf[:n], 10, out=_scratch(n)))
        starts = np.empty(len(newlines) + 1, np.int64)
        starts[0] = 0
        starts[1:] = newlines + 1
        ends = np.empty(len(newlines) + 1, np.int64)
        ends[:-1] = newlines
        ends[-1] = n
        if starts[-1] == n:  # the block ends with a newline: no line after it
            starts, ends = starts[:-1], ends[:-1]
        self.starts, self.ends = starts, ends
        self.ascii = np.ones(len(starts), bool)
        if not data.isascii():  # such lines take the exact path, which checks their UTF-8
            where = np.flatnonzero(buf[:n] >= 0x80)
            self.ascii[np.unique(np.searchsorted(starts, where, side="right") - 1)] = False

    def fetch(self, p: np.ndarray, width: int) -> np.ndarray:
        """The ``width`` bytes at each offset in ``p``, as (len(p), width / 8) little-endian words.

        Cursors never pass a line's start by more than about 1,300 bytes (the longest shape the walk
        reads), so they stay in the buffer; the check is cheap insurance.
        """
        if len(p) and p.max() > self.limit:
            p = np.minimum(p, self.limit)
        return cast(np.ndarray, self.views[width][p].view(_U).reshape(len(p), width // 8))

    def window(self, p: np.ndarray) -> np.ndarray:
        return self.fetch(p, 8)[:, 0]


def _word_at(g: np.ndarray, offset: int) -> np.ndarray:
    """Bytes [offset, offset + 8) of fetched windows ``g`` as words."""
    k, r = divmod(offset, 8)
    if r == 0:
        return np.ascontiguousarray(g[:, k])
    return (g[:, k] >> _U(8 * r)) | (g[:, k + 1] << _U(64 - 8 * r))


def _text(g: np.ndarray, offset: int, text: bytes) -> np.ndarray:
    """Whether the windows ``g`` hold exactly ``text`` at ``offset``."""
    ok = None
    for k, mask, value in _expected(offset, text, g.shape[1] * 8):
        eq = (g[:, k] if mask is None else (g[:, k] & mask)) == value
        ok = eq if ok is None else (ok & eq)
    assert ok is not None
    return cast(np.ndarray, ok)


def _choice(g: np.ndarray, offset: int, options: tuple[bytes, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``options`` (none a prefix of another) the windows hold at ``offset``: (index or -1,
    length)."""
    table = _dispatch(offset, options, g.shape[1] * 8)
    if table is not None:
        return _choice_by_table(g, table)
    found = np.zeros(len(g), np.int8)  # index + 1
    length = np.zeros(len(g), np.int64)
    for i, option in enumerate(options, 1):
        hit = _text(g, offset, option)
        found += hit.view(np.int8) * np.int8(i)
        length += hit * len(option)
    return found.astype(np.int16) - 1, length


_Table = tuple[np.ndarray, np.ndarray, np.ndarray, list[int], np.ndarray, int, int, int]
"""``_dispatch``'s table: lut, masks, values, columns, lengths, word and byte of the telling bytes, span."""


@functools.cache
def _dispatch(offset: int, options: tuple[bytes, ...], width: int) -> _Table | None:
    """For many options: one or two bytes that tell them apart, a table from those bytes to the option,
    and each option's expected words (to check the whole of it); None when no such bytes exist."""
    if len(options) < 5:
        return None
    shortest = min(map(len, options))
    for span in (1, 2):
        for at in range(shortest - span + 1):
            keys = [int.from_bytes(o[at : at + span], "little") for o in options]
            if len(set(keys)) == len(options):
                break
        else:
            continue
        break
    else:
        return None
    lut = np.full(1 << (8 * span), len(options), np.int16)  # the last row: no option
    lut[keys] = np.arange(len(options))
    words = width // 8
    masks = np.zeros((words, len(options) + 1), _U)
    values = np.ones((words, len(options) + 1), _U)  # no option: mask 0, value 1 never matches
    for i, option in enumerate(options):
        values[:, i] = 0
        for k, mask, value in _expected(offset, option, width):
            masks[k, i] = _U((1 << 64) - 1) if mask is None else mask
            values[k, i] = value
    columns = sorted({k for o in options for k, _, _ in _expected(offset, o, width)})
    lengths = np.array([len(o) for o in options] + [0], np.int64)
    k, r = divmod(offset + at, 8)
    return lut, masks, values, columns, lengths, k, r, span


def _choice_by_table(g: np.ndarray, table: _Table) -> tuple[np.ndarray, np.ndarray]:
    lut, masks, values, columns, lengths, k, r, span = table
    word = g[:, k] >> _U(8 * r)
    if r + span > 8:
        word |= g[:, k + 1] << _U(64 - 8 * r)
    code = lut[(word & _U((1 << (8 * span)) - 1)).astype(np.intp)]
    ok = None
    for c in columns:
        eq = (g[:, c] & masks[c][code]) == values[c][code]
        ok = eq if ok is None else (ok & eq)
    return (code + 1) * ok - 1, lengths[code] * ok


# -- numbers: (read, length, value) from windows; other spellings go to _general -------------------------


def _short(g: np.ndarray, offset: int, end: bytes) -> Read:
    """A number of at most 8 characters written "I.F" (as most seconds are written) followed by one of
    ``end``: (read, length, value)."""
    return _short_words(_word_at(g, offset), _word_at(g, offset + 1), end)[:3]


def _words_at(g: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bytes [offset, offset + 8) and [offset + 1, offset + 9) of windows ``g``, ``offset`` per row (the
    nine bytes within the window)."""
    flat = g.ravel()
    at = np.arange(0, flat.size, g.shape[1]) + np.minimum(offset >> 3, g.shape[1] - 2)
    lo, hi = flat[at], flat[at + 1]
    bits = (offset & 7).astype(_U) << _U(3)
    w = (lo >> bits) | (hi << (_U(64) - bits))
    bits += _U(8)
    return w, (lo >> bits) | (hi << (_U(64) - bits))


def _short_words(
    w: np.ndarray, w1: np.ndarray, end: bytes
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``_short`` on a number's first 8 bytes ``w`` and the 8 bytes one on, ``w1``; and whether "}" ends
    it."""
    dot = _lowest(_nondigits(w))
    u1 = dot >> _U(7)  # 1 << 8d
    good = (w & (u1 * _BYTE)) == (u1 * _U(0x2E))  # "." at d
    good &= (u1 > _U(1)) & (u1 <= _U(1 << 48))  # 1 <= d <= 6
    good &= ~(((w & _BYTE) == _U(0x30)) & (u1 > _U(0x100)))  # no leading zero
    u2 = _lowest(_nondigits(w1) & ~(dot >> _U(8))) >> _U(7)  # 1 << 8(T - 1): the end, T <= 8
    good &= u2 >= (u1 << _U(8))  # T >= d + 2: a digit after the dot
    good &= _ends(w1, u2, end)
    length = _bytes_below(u2).astype(np.int64) + 1
    below = u1 - _U(1)
    v = w ^ _ZEROS
    digits = (v & below) | ((v >> _U(8)) & ~below & (u2 - _U(1)))
    value = _parse8(digits).astype(np.float64) / _SCALE[_bytes_below(u1)]
    return good, length, value, (w1 & (u2 * _BYTE)) == u2 * _U(0x7D)


def _dotted(g: np.ndarray, offset: int, end: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A number "I.F" with up to 7 digits before the dot and 6 after it (exit times: "1234.5678")."""
    w0, w1 = _word_at(g, offset), _word_at(g, offset + 8)
    u1 = _lowest(_nondigits(w0)) >> _U(7)
    good = (w0 & (u1 * _BYTE)) == (u1 * _U(0x2E))
    good &= u1 > _U(1)  # 1 <= d <= 7 ("." within the window)
    good &= ~(((w0 & _BYTE) == _U(0x30)) & (u1 > _U(0x100)))
    bits = np.bitwise_count(u1 - _U(1)).astype(_U)  # 8d
    frac_w = (w0 >> bits) | (w1 << (_U(64) - bits))  # from the dot on
    u2 = _lowest(_nondigits(frac_w) & ~_U(0x80)) >> _U(7)  # the end, counted from the dot
    good &= u2 >= _U(1 << 16)  # a digit after the dot, and the end within the window
    good &= _ends(frac_w, u2, end)
    d = _bytes_below(u1)
    length = d.astype(np.int64) + _bytes_below(u2)
    whole = _parse8((w0 ^ _ZEROS) & (u1 - _U(1))).astype(np.float64) / _SCALE[d]
    frac_digits = _bytes_below(u2) - np.uint8(1)
    frac = _parse8(((frac_w ^ _ZEROS) >> _U(8)) & ((u2 >> _U(8)) - _U(1))).astype(np.float64)
    frac /= _SCALE[frac_digits]
    scale = _POW10[frac_digits]
    return good, length, (whole * scale + frac) / scale


def _wall(g: np.ndarray, offset: int, end: bytes) -> tuple[np.ndarray, np.ndarray, None]:
    """A Unix time as ``round(time.time(), 6)`` writes it: 10 digits, ".", 1 to 6 digits (checked only)."""
    wa, wb, wc = _word_at(g, offset), _word_at(g, offset + 2), _word_at(g, offset + 10)
    good = (_nondigits(wa) | _nondigits(wb)) == _U(0)
    good &= (wa & _BYTE) != _U(0x30)
    good &= (wc & _BYTE) == _U(0x2E)
    u2 = _lowest(_nondigits(wc) & ~_U(0x80)) >> _U(7)
    good &= u2 >= _U(1 << 16)
    good &= _ends(wc, u2, end)
    return good, 10 + _bytes_below(u2).astype(np.int64), None


def _integer(g: np.ndarray, offset: int, end: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A non-negative integer of at most 7 digits (no other spelling: a JSON float is not an int)."""
    w = _word_at(g, offset)
    u1 = _lowest(_nondigits(w)) >> _U(7)  # 1 << 8T
    good = u1 > _U(1)  # 1 <= T <= 7
    good &= ~(((w & _BYTE) == _U(0x30)) & (u1 > _U(0x100)))
    good &= _ends(w, u1, end)
    t = _bytes_below(u1)
    value = (_parse8((w ^ _ZEROS) & (u1 - _U(1))) // _SCALE_INT[t]).astype(np.int64)
    return good, t.astype(np.int64), value


def _scientific(w: np.ndarray, end: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ "Me-X" or "M.Fe-XX" in at most 7 characters: seconds below 1e-5 as msgspec writes them ("5e-6"), and
    below 1e-4 as Python's repr did in older ledgers ("5e-06", "1.5e-05")."""
    nd = _nondigits(w)
    ue = _lowest(_zero_bytes(w ^ _U(0x6565656565656565))) >> _U(7)  # 1 << 8x: the "e"
    um = ue << _U(8)
    good = (ue > _U(1)) & ((w & (um * _BYTE)) == um * _U(0x2D))  # x >= 1, then "-"
    rest = nd & ~((ue | um) * _U(0x80))
    first = _lowest(rest) >> _U(7)
    has_dot = first < ue
    dot = first * has_dot  # 1 << 8d or 0
    good &= ~has_dot | (((w & (dot * _BYTE)) == dot * _U(0x2E)) & (dot > _U(1)) & ((dot << _U(16)) <= ue))
    u2 = _lowest(rest & ~(dot * _U(0x80))) >> _U(7)  # the end
    good &= (u2 > (um << _U(8))) & (u2 <= (um << _U(24))) & (u2 != _U(0))  # 1 or 2 exponent digits
    good &= _ends(w, u2, end)
    mantissa_end = np.where(has_dot, dot, ue)
    good &= ~(((w & _BYTE) == _U(0x30)) & (mantissa_end > _U(0x100)))
    v = w ^ _ZEROS
    below_dot = np.where(has_dot, dot - _U(1), ue - _U(1))
    digits = (v & below_dot) | (
        (v >> _U(8)) & ~below_dot & ((ue >> _U(8)) - _U(1)) & (np.negative(has_dot.astype(_U)))
    )
    n_digits = _bytes_below(ue) - has_dot.astype(np.uint8)
    mantissa = _parse8(digits).astype(np.float64) / _SCALE[n_digits]
    bits = np.bitwise_count(ue - _U(1)).astype(_U) + _U(16)  # 8(x + 2): the exponent's digits
    exp_digits = _parse8((v >> bits) & ((u2 >> bits) - _U(1)))
    exponent = exp_digits // _SCALE_INT[_bytes_below(u2) - _bytes_below(ue) - np.uint8(2)]
    frac = _bytes_below(ue) - _bytes_below(dot) - np.uint8(1)
    scale = exponent.astype(np.int64) + np.where(has_dot, frac, 0)
    good &= scale <= 22  # beyond, the division by a power of ten would not be exact: msgspec reads it
    return good, _bytes_below(u2).astype(np.int64), mantissa / _POW10[scale.clip(0, 22)]


def _general(
    b: _Buffer,
    pos: np.ndarray,
    good: np.ndarray,
    length: np.ndarray,
    value: np.ndarray | None,
    want: np.ndarray,
    end: bytes,
) -> None:
    """Numbers the window readers did not read (where ``want``): other spellings, in place."""
    redo = np.flatnonzero(want & ~good)
    if not len(redo):
        return
    g = b.fetch(pos[redo], 16)
    s_good, s_len, s_value = _scientific(np.ascontiguousarray(g[:, 0]), end)
    good[redo], length[redo] = s_good, s_len
    if value is not None:
        value[redo] = s_value
    left = np.flatnonzero(~s_good)
    redo = redo[left]
    if len(left):  # "12.345678": a dotted number longer than the short reader's window
        d_good, d_len, d_value = _dotted(g[left], 0, end)
        good[redo], length[redo] = d_good, d_len
        if value is not None:
            value[redo] = d_value
        redo = redo[~d_good]
    if len(redo):  # anything else JSON allows: the general reader
        n_good, n_len, n_value = _numbers(b, pos[redo])
        n_good &= np.isin(b.buf[np.minimum(pos[redo] + n_len, b.limit)], np.frombuffer(end, np.uint8))
        good[redo], length[redo] = n_good, n_len
        if value is not None:
            value[redo] = n_value


def _numbers(b: _Buffer, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Any JSON number of up to 23 characters at each offset in ``p``: (read, length, value).

    Read only when exact: the digits make an integer up to 2**53 and the power of ten is at most 10**22
    (Clinger's fast path); other numbers are not read and their lines take the JSON path.
    """
    m = len(p)
    words = np.empty((m, 3), _U)
    for k in range(3):
        words[:, k] = b.window(p + 8 * k)
    c = words.view(np.uint8).reshape(m, 24)
    col = np.arange(24)
    digit = (c - np.uint8(48)) < np.uint8(10)
    number_char = ~_not_number_char(c)
    length = np.argmin(number_char, axis=1)  # first byte that is no part of a number
    ok = ~number_char[np.arange(m), length]
    rows = np.arange(m)
    neg = c[:, 0] == 45
    i0 = neg.astype(np.int64)
    nondigit = ~digit
    d = np.argmax(nondigit & (col >= i0[:, None]), axis=1)  # end of the integer part
    ok &= d > i0
    ok &= ~((c[rows, i0] == 48) & (d > i0 + 1))  # no leading zero
    has_dot = c[rows, d] == 46
    f_end = np.where(has_dot, np.argmax(nondigit & (col > d[:, None]), axis=1), d)
    ok &= ~has_dot | (f_end > d + 1)
    e = c[rows, np.minimum(f_end, 23)] | np.uint8(0x20)
    has_exp = e == 0x65
    sign_at = np.minimum(f_end + 1, 23)
    sign = c[rows, sign_at]
    has_sign = has_exp & ((sign == 43) | (sign == 45))
    x0 = f_end + 1 + has_sign
    x_end = np.where(has_exp, np.argmax(nondigit & (col >= x0[:, None]), axis=1), f_end)
    ok &= ~has_exp | ((x_end > x0) & (x_end - x0 <= 3))
    ok &= x_end == length
    mantissa_cols = digit & (col >= i0[:, None]) & (col < f_end[:, None])
    n_digits = mantissa_cols.sum(axis=1)
    ok &= n_digits <= 17
    after = n_digits[:, None] - np.cumsum(mantissa_cols, axis=1)  # digits to the right of each
    weights = np.where(mantissa_cols, 10 ** np.clip(after, 0, 17), 0).astype(np.int64)
    mantissa = ((c.astype(np.int64) - 48) * weights).sum(axis=1)
    exp_cols = digit & (col >= x0[:, None]) & (col < x_end[:, None]) & has_exp[:, None]
    exp_after = (x_end - x0)[:, None] - 1 - (col - x0[:, None])
    exponent = ((c.astype(np.int64) - 48) * np.where(exp_cols, 10 ** np.clip(exp_after, 0, 3), 0)).sum(axis=1)
    exponent = np.where(has_sign & (sign == 45), -exponent, exponent)
    scale = exponent - np.where(has_dot, f_end - d - 1, 0)
    ok &= (mantissa <= 1 << 53) & (np.abs(scale) <= 22)
    power = _POW10[np.clip(np.abs(scale), 0, 22)]
    m_float = mantissa.astype(np.float64)
    value = np.where(scale >= 0, m_float * power, m_float / power)
    is_int = ~has_dot & ~has_exp  # a JSON integer: float(int) has no sign for zero
    value = np.where(neg & ~(is_int & (mantissa == 0)), -value, value)
    return ok, length.astype(np.int64), value


# ---------------------------------------------------------------------------------------------------------
# The three line shapes.
# ---------------------------------------------------------------------------------------------------------


def _quoted(names: tuple[str, ...], after: str = '"') -> tuple[bytes, ...]:
    return tuple((name + after).encode() for name in names)


_TECH_OPTIONS = _quoted(TECH_NAMES)
_TYPE_OPTIONS = _quoted(TYPE_NAMES)
_ABORT_OPTIONS = _quoted(ABORT_NAMES)
_STAGE_OPTIONS = _quoted(STAGE_NAMES)
_METHOD_OPTIONS = _quoted(METHOD_NAMES)
_CONN_OPTIONS = _quoted(CONN_NAMES)
_PREFLIGHT_OPTIONS = _quoted(PREFLIGHT_NAMES)
_BOOL_OPTIONS = (b"false", b"true")
_KEY_NAMES = tuple(s for s in STAGE_NAMES if s not in (DONE, "error"))  # stages a plan can hold
_KEY_OPTIONS = [tuple(f'{sep}"{name}":'.encode() for name in _KEY_NAMES) for sep in "{,"]


@dataclasses.dataclass
class Scan:
    """What the fast path read from a block of lines.

    ``events`` and ``pings`` are the (0-based) numbers of the lines it read as such, in order, with their
    columns; every other line (blank lines too) is in ``others``, for the JSON path. Categorical columns
    hold indices into the ``*_NAMES`` tuples above; ``key`` is the id's value (ids are 16 hex digits).
    """

    events: np.ndarray
    columns: dict[str, np.ndarray]
    pings: np.ndarray
    ping_columns: dict[str, np.ndarray]
    others: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


class _Walk:
    """A cursor per line, moved key by key; ``ok`` turns False where a line is not of the expected shape.

    A step fetches one window at every cursor and reads a key and its value from it at fixed offsets.
    """

    def __init__(self, buffer: _Buffer, lines: np.ndarray) -> None:
        self.b = buffer
        self.lines = lines  # indices of the lines walked
        self.p = buffer.starts[lines].copy()
        self.ok = buffer.ascii[lines].copy()

    def step(
        self, key: bytes, read: ValueReader, width: int = 32, end: bytes = b",", general: bool = False
    ) -> np.ndarray | None:
        """``key`` then a value read by ``read(windows, offset, end)``; the cursor moves past both."""
        g = self.b.fetch(self.p, width)
        self.ok &= _text(g, 0, key)
        good, length, value = read(g, len(key), end)
        if general:
            _general(self.b, self.p + len(key), good, length, value, self.ok, end)
        self.ok &= good
        self.p += len(key) + length
        return value

    def choose(self, key: bytes, options: tuple[bytes, ...], width: int = 32) -> np.ndarray:
        g = self.b.fetch(self.p, width)
        self.ok &= _text(g, 0, key)
        found, length = _choice(g, len(key), options)
        self.ok &= found >= 0
        self.p += len(key) + length
        return found

    def close(self) -> None:
        """The closing brace, and the line ends there."""
        self.ok &= self.b.buf[np.minimum(self.p, self.b.limit)] == ord("}")
        self.p += 1
        self.ok &= self.p == self.b.ends[self.lines]


def _or_null(read: ValueReader) -> ValueReader:
    """A reader of ``read``'s numbers or ``null`` (nan)."""

    def read_or_null(g: np.ndarray, offset: int, end: bytes) -> Read:
        null = (_word_at(g, offset) & _mask(5)) == _word(b"null" + end[:1])
        good, length, value = read(g, offset, end)
        assert value is not None
        value[null] = np.nan
        length[null] = 4
        return good | null, length, value

    return read_or_null


def hex_keys(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of words holding 16 ASCII characters: (all lowercase hex digits, their value as uint64)."""
    ok = np.ones(len(words), bool)
    key = np.zeros(len(words), _U)
    for k in range(2):
        w = np.ascontiguousarray(words[:, k])
        digit = ~_nondigits(w) & _HIGH
        letter = (w + _U(0x1F1F1F1F1F1F1F1F)) & ~(w + _U(0x1919191919191919)) & _HIGH  # a-f
        ok &= (digit | letter) == _HIGH
        v = (w & _U(0x0F0F0F0F0F0F0F0F)) + ((w >> _U(6)) & _U(0x0101010101010101)) * _U(9)  # nibbles
        v = ((v & _U(0x000F000F000F000F)) << _U(4)) | ((v >> _U(8)) & _U(0x000F000F000F000F))
        v = ((v & _U(0x000000FF000000FF)) << _U(8)) | ((v >> _U(16)) & _U(0x000000FF000000FF))
        v = ((v & _U(0xFFFF)) << _U(16)) | ((v >> _U(32)) & _U(0xFFFF))
        key |= v << _U(32 - 32 * k)
    return ok, key


def _head(walk: _Walk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``{"id":"<16 lowercase hex digits>","tech":"<technique>"``: the ids (as S16), their values as uint64
    (to join on) and the technique codes."""
    g = walk.b.fetch(walk.p, 64)
    walk.ok &= _text(g, 0, b'{"id":"')
    ids = np.empty((len(g), 2), _U)
    ids[:, 0] = _word_at(g, 7)
    ids[:, 1] = _word_at(g, 15)
    hex_ok, keys = hex_keys(ids)
    walk.ok &= hex_ok
    walk.ok &= _text(g, 23, b'","tech":"')
    tech, length = _choice(g, 33, _TECH_OPTIONS)
    walk.ok &= tech >= 0
    walk.p += 33 + length
    return ids.view("S16").ravel(), keys, tech


class _Stages:
    """A ``plan``: per line its keys in order, and the first entry planned to end last (its index, value)."""

    def __init__(self, n: int) -> None:
        self.keys: list[np.ndarray] = []
        self.count = np.zeros(n, np.int64)
        self.best = np.full(n, -np.inf)
        self.at = np.full(n, -1, np.int64)


def _stages(walk: _Walk, key: bytes, plan: _Stages | None) -> tuple[_Stages, np.ndarray]:
    """``key`` then ``{"stage":seconds,...}``, for the lines still ok.

    Without ``plan``, returns the plan read; with it (``real``), the keys must be the plan's, in its order
    (any other ``real`` is left to the exact path), and returns the value at the plan's entry planned to end
    last.
    The lines still in the object are kept in compact arrays (``rows``), shrinking entry by entry.
    """
    n = len(walk.p)
    read = _Stages(n) if plan is None else plan
    at_best = np.full(n, np.nan)
    rows = np.flatnonzero(walk.ok)
    walk.ok[rows] = False  # until the closing "}" is read
    p = walk.p[rows]
    g = walk.b.fetch(p, 32)
    off = len(key)
    good = _text(g, 0, key)
    empty = good & ((_word_at(g, off) & _mask(2)) == _word(b"{}"))
    if plan is not None:
        empty &= plan.count[rows] == 0
    done = np.flatnonzero(empty)
    walk.ok[rows[done]] = True
    walk.p[rows[done]] = p[done] + off + 2
    good &= ~empty
    # per line still open: keys seen (a key twice is left to the exact path: it keeps the last), best so far
    seen = np.zeros(len(rows), np.int64)
    best = np.full(len(rows), -np.inf)
    best_at = np.full(len(rows), -1, np.int64)
    if plan is not None:
        want_at, want_count = plan.at[rows], plan.count[rows]
    for j in range(MAX_STAGES):
        stage, length = _choice(g, off, _KEY_OPTIONS[j > 0])
        good &= stage >= 0
        if plan is None:
            bit = np.left_shift(1, stage.astype(np.int64) & 63)
            good &= (seen & bit) == 0
            seen |= bit
            keys = np.full(n, -1, np.int16)
            keys[rows] = stage
            read.keys.append(keys)
        else:
            good &= stage == plan.keys[j][rows]
        q = p + off + length
        n_good, n_len, value, closing = _short_words(*_words_at(g, off + length), b",}")
        redo = np.flatnonzero(good & ~n_good)
        if len(redo):
            _general(walk.b, q, n_good, n_len, value, good, b",}")
            closing[redo] = walk.b.buf[q[redo] + n_len[redo]] == ord("}")
        good &= n_good
        if plan is None:
            later = value > best
            best = np.where(later, value, best)
            best_at[later] = j
        else:
            best = np.where(want_at == j, value, best)
        closed = good & closing
        if plan is not None:
            closed &= want_count == j + 1
        done = np.flatnonzero(closed)
        if len(done):
            r = rows[done]
            walk.ok[r] = True
            walk.p[r] = q[done] + n_len[done] + 1
            if plan is None:
                read.count[r] = j + 1
                read.best[r] = best[done]
                read.at[r] = best_at[done]
            else:
                at_best[r] = best[done]
        more = np.flatnonzero(good & ~closing)
        if not len(more) or j + 1 == MAX_STAGES:
            break
        rows, p, seen, best, best_at = rows[more], (q + n_len)[more], seen[more], best[more], best_at[more]
        if plan is not None:
            want_at, want_count = want_at[more], want_count[more]
        g, off, good = walk.b.fetch(p, 32), 0, np.ones(len(rows), bool)
    if plan is None:
        while len(read.keys) < MAX_STAGES:
            read.keys.append(np.full(n, -1, np.int16))
    return read, at_best


def _key(name: str) -> bytes:
    """A key as it follows the previous value."""
    return f',"{name}":'.encode()


def _head_keys(keys: tuple[str, ...], first: str, second: str | None = None) -> tuple[str, ...]:
    """The keys after those ``_head`` (or a ping's head) reads, which must be the line's first."""
    head = (first,) if second is None else (first, second)
    if keys[: len(head)] != head:
        raise ImportError(f"a ledger line must start with the keys {head}, not {keys[: len(head)]}")
    return keys[len(head) :]


Reader = Callable[[_Walk, bytes, bytes], np.ndarray | None]
"""Reads one key (``bytes``, with its comma) and its value at every cursor, given what ends the value."""


def _string(options: tuple[bytes, ...], width: int = 32) -> Reader:
    return lambda walk, key, end: walk.choose(key + b'"', options, width)


def _boolean(walk: _Walk, key: bytes, end: bytes) -> np.ndarray:
    return cast(np.ndarray, walk.choose(key, _BOOL_OPTIONS, 16) == 1)


def _number(read: ValueReader, width: int = 32, general: bool = True) -> Reader:
    return lambda walk, key, end: walk.step(key, read, width, end, general)


_SENT_READERS: dict[str, Reader] = {
    "type": _string(_TYPE_OPTIONS),
    "visit": _number(_integer, general=False),
    "at": _number(_dotted),
    "rtt": _number(_short, 16),
    "dns": _number(_short, 16),
    "A": _number(_or_null(_dotted)),
    "abort": _string(_ABORT_OPTIONS),
    "stage": _string(_STAGE_OPTIONS),
    "written": _boolean,
    "t_written": _number(_or_null(_short)),
    "acked": _boolean,
    "retried": _boolean,
    "requests": _number(_integer, general=False),
    "connections": _number(_integer, general=False),
    "conn": _string(_CONN_OPTIONS),
    "preflight": _string(_PREFLIGHT_OPTIONS),
    "t0": _number(_wall),
}
"""How the fast path reads each key of a sent event line (``plan`` and ``real`` are read by ``_stages``)."""
_SENT_WALK = _head_keys(SENT_KEYS, "id", "tech")
_SENT_COLUMNS = frozenset(("type", "rtt", "A", "stage", "written", "t_written", "acked", "retried",
                           "requests", "connections", "conn", "preflight"))  # fmt: skip
"""The keys whose values become columns (the others are checked and skipped)."""

_RECEIVED_READERS: dict[str, Reader] = {
    "m": _string(_METHOD_OPTIONS, 16),
    "t": _number(_wall),
    "c": _number(_integer, 16, general=False),
}
_RECEIVED_WALK = _head_keys(RECEIVED_KEYS, "id", "tech")
_RECEIVED_COLUMNS = {"m": "method"}

_PING_READERS: dict[str, Reader] = {
    "requests": _number(_integer, general=False),
    "connections": _number(_integer, general=False),
    "virtual": _boolean,
}
_PING_WALK = _head_keys(PING_KEYS, "ping")


def _walk_keys(
    walk: _Walk, keys: tuple[str, ...], readers: dict[str, Reader], kept: dict[str, str]
) -> dict[str, np.ndarray]:
    """Read ``keys`` in order, then the closing brace; returns the values of the ``kept`` keys (key ->
    column). Sent lines' ``plan`` and ``real`` give the ``timing_error`` column."""
    out: dict[str, np.ndarray] = {}
    plan: _Stages | None = None
    for i, name in enumerate(keys):
        key, end = _key(name), (b"}" if i == len(keys) - 1 else b",")
        if name == "plan":
            plan, _ = _stages(walk, key, None)
        elif name == "real" and plan is not None:
            _, real = _stages(walk, key, plan)
            out["timing_error"] = np.where(plan.count > 0, real - plan.best, np.nan)
        else:
            value = readers[name](walk, key, end)
            if name in kept and value is not None:
                out[kept[name]] = value
    walk.close()
    return out


def _event_lines(b: _Buffer) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    walk = _Walk(b, np.arange(len(b.starts)))
    cols: dict[str, np.ndarray] = {}
    cols["id"], cols["key"], cols["tech"] = _head(walk)
    cols.update(_walk_keys(walk, _SENT_WALK, _SENT_READERS, {name: name for name in _SENT_COLUMNS}))
    events = np.flatnonzero(walk.ok)
    return events, _rows(cols, events, len(walk.ok))


def _rows(cols: dict[str, np.ndarray], events: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """The columns of the lines read; as they are when every line was (a received block, usually)."""
    return cols if len(events) == n else {name: col[events] for name, col in cols.items()}


def _ping_lines(b: _Buffer, lines: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    walk = _Walk(b, lines)
    g = b.fetch(walk.p, 32)
    walk.ok &= _text(g, 0, b'{"ping":"')
    tech, length = _choice(g, 9, _TECH_OPTIONS)
    walk.ok &= tech >= 0
    walk.p += 9 + length
    cols = _walk_keys(walk, _PING_WALK, _PING_READERS, {"requests": "requests", "connections": "connections"})
    read = np.flatnonzero(walk.ok)
    return lines[read], {
        "tech": tech[read],
        "requests": cols["requests"][read],
        "connections": cols["connections"][read],
    }


def _others(n: int, *read: np.ndarray) -> np.ndarray:
    left = np.ones(n, bool)
    for lines in read:
        left[lines] = False
    return np.flatnonzero(left)


def scan_sent(data: bytes | Padded) -> Scan:
    """Read a block of whole sent-ledger lines (event lines and pings) as far as the fast path can."""
    b = _Buffer(data)
    n = len(b.starts)
    events, cols = _event_lines(b)
    rest = _others(n, events)
    maybe = rest[b.window(b.starts[rest]) == _word(b'{"ping":')] if len(rest) else rest
    pings, ping_cols = _ping_lines(b, maybe)
    return Scan(events, cols, pings, ping_cols, _others(n, events, pings), b.starts, b.ends)


def scan_received(data: bytes | Padded) -> Scan:
    """Read a block of whole received-ledger lines as far as the fast path can."""
    b = _Buffer(data)
    walk = _Walk(b, np.arange(len(b.starts)))
    cols: dict[str, np.ndarray] = {}
    cols["id"], cols["key"], cols["tech"] = _head(walk)
    cols.update(_walk_keys(walk, _RECEIVED_WALK, _RECEIVED_READERS, _RECEIVED_COLUMNS))
    events = np.flatnonzero(walk.ok)
    empty = np.empty(0, np.int64)
    return Scan(
        events,
        _rows(cols, events, len(walk.ok)),
        empty,
        {},
        _others(len(b.starts), events),
        b.starts,
        b.ends,
    )
