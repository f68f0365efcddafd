"""The tracking event on the wire: what the client encodes and what the collector accepts.

An event is a JSON object with at least ``id`` and ``tech`` (one of the four technique names). The pixel
techniques carry it base64url-encoded (no padding, canonical) in the ``d`` query parameter; ajax POSTs it
as the JSON body. Decoding is strict: the collector counts an event only when its data is complete and
valid, and names the reason when it is not. The rules, and the counter (``/stats`` ``refused``) each
breaks:

- ``bad_base64``: ``d`` is empty, not base64url (``A-Z a-z 0-9 - _``, optional ``=`` padding), or not the
  canonical encoding of its bytes (stray trailing bits): one event has exactly one encoding.
- ``bad_utf8``: the decoded bytes are not UTF-8.
- ``bad_json``: not JSON (raw control characters inside strings are not JSON either).
- ``not_object``: JSON, but not an object.
- ``bad_id``: ``id`` missing, not a string, or not 1-128 printable ASCII characters without space: no
  CR, LF, NUL, tab or other control character, nothing outside ASCII. Ids reach ledgers and logs as
  they are, so they must not be able to break a line or hide in a terminal.
- ``bad_tech``: ``tech`` missing or not one of the four techniques.
- ``bad_value``: CR, LF or NUL in any other string of the event (keys and values, at any depth). The
  reference collector writes only ``id`` and ``tech`` to its ledger, but a production collector passes
  the other fields on to logs, headers and C libraries, where these three characters split lines or
  truncate strings: refusing them here keeps lossbench's definition of a valid event the safe one.
  Other control characters (a tab in a page title) are allowed in those fields.

JSON can only carry CR, LF or NUL inside a string as an escape (``\\n``, ``\\u0000``), so an event
without a backslash is checked for them without walking it: the common event pays one byte search.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from lossbench.contract.techniques import ALL_TECHNIQUES

MAX_ID_LENGTH = 128
_TECHNIQUE_SET = frozenset(ALL_TECHNIQUES)  # the browser-only ones too
_FORBIDDEN_IN_VALUES = ("\r", "\n", "\x00")

_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")
_B64URL_VALUE = bytearray(b"\xff" * 256)
for _i, _c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"):
    _B64URL_VALUE[_c] = _i
_UNUSED_BITS = {2: 0x0F, 3: 0x03}  # low bits of the last character that encode nothing, by length % 4
_PADDING = {0: b"", 2: b"==", 3: b"="}


class BadEvent(ValueError):
    """The data is not a valid event. ``reason`` is a short counter name used in /stats.

    The message is made of fixed text only: it is sent back to the client, and nothing from a request is
    ever reflected in an answer.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def encode_event(event: dict[str, Any]) -> bytes:
    """Compact JSON bytes, as an ajax body."""
    return json.dumps(event, separators=(",", ":")).encode()


def encode_pixel_param(event: dict[str, Any]) -> str:
    """base64url without padding, as the ``d`` query parameter of a pixel."""
    return base64.urlsafe_b64encode(encode_event(event)).rstrip(b"=").decode("ascii")


def decode_pixel_param(value: str | bytes) -> tuple[str, str]:
    """Decode a pixel's ``d`` parameter and validate it; returns (id, tech)."""
    if isinstance(value, str):
        try:
            value = value.encode("ascii")
        except UnicodeEncodeError:
            raise BadEvent("bad_base64", "not base64url") from None
    raw = value.rstrip(b"=")
    if not raw:
        raise BadEvent("bad_base64", "empty d parameter")
    size = len(raw)
    rest = size % 4
    if rest == 1 or b"+" in raw or b"/" in raw:
        raise BadEvent("bad_base64", "not base64url")
    # strict_mode refuses every byte outside the alphabet (the default silently skips them)
    try:
        data = binascii.a2b_base64(raw.translate(_URLSAFE_TO_STD) + _PADDING[rest], strict_mode=True)
    except (binascii.Error, ValueError):
        raise BadEvent("bad_base64", "not base64url") from None
    if rest and _B64URL_VALUE[raw[-1]] & _UNUSED_BITS[rest]:
        raise BadEvent("bad_base64", "not canonical base64url")
    return decode_event_json(data)


def decode_event_json(data: bytes | bytearray) -> tuple[str, str]:
    """Validate a JSON event body; returns (id, tech) or raises BadEvent naming what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEvent("bad_utf8") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise BadEvent("bad_json") from None
    if not isinstance(obj, dict):
        raise BadEvent("not_object")
    event_id = obj.get("id")
    if not valid_id(event_id):
        raise BadEvent("bad_id", f"id must be 1-{MAX_ID_LENGTH} printable ASCII characters without space")
    tech = obj.get("tech")
    if not isinstance(tech, str) or tech not in _TECHNIQUE_SET:
        raise BadEvent("bad_tech", "tech must be one of " + ", ".join(ALL_TECHNIQUES))
    if "\\" in text and _has_forbidden_string(obj):
        raise BadEvent("bad_value", "CR, LF or NUL in a string")
    return event_id, tech  # type: ignore[return-value]  # valid_id checked it is a str


def valid_id(event_id: object) -> bool:
    """The id rule on its own (for tests and tools that build events)."""
    return (
        isinstance(event_id, str)
        and 0 < len(event_id) <= MAX_ID_LENGTH
        and event_id.isascii()
        and event_id.isprintable()
        and " " not in event_id
    )


def _has_forbidden_string(value: object) -> bool:
    """True if CR, LF or NUL is in any string (key or value) inside ``value``; iterative, so a deeply
    nested event cannot exhaust the stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any(c in item for c in _FORBIDDEN_IN_VALUES):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
