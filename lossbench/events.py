"""The tracking event on the wire: what the client encodes and what the collector accepts.

An event is a JSON object with at least ``id`` (a short printable string, unique per event) and ``tech``
(one of the four technique names). The pixel techniques carry it base64url-encoded in the ``d`` query
parameter; ajax POSTs it as the JSON body. Decoding is strict: the collector counts an event only when its
data is complete and valid, and names the reason when it is not.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from lossbench import TECHNIQUES

MAX_ID_LENGTH = 128
_VALID_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_LENGTH}}}")  # printable ASCII, no space, CR, LF or NUL
_TECHNIQUE_SET = frozenset(TECHNIQUES)


class BadEvent(ValueError):
    """The data is not a valid event. ``reason`` is a short counter name used in /stats."""

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
    raw = value.encode("latin-1") if isinstance(value, str) else value
    raw = raw.rstrip(b"=")
    if not raw:
        raise BadEvent("bad_base64", "empty d parameter")
    try:
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadEvent("bad_base64", str(exc)) from None
    if len(raw) % 4 == 1 or base64.urlsafe_b64encode(data).rstrip(b"=") != raw:
        raise BadEvent("bad_base64", "not canonical base64url")
    return decode_event_json(data)


def decode_event_json(data: bytes) -> tuple[str, str]:
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
    if not isinstance(event_id, str) or _VALID_ID.fullmatch(event_id) is None:
        raise BadEvent("bad_id")
    tech = obj.get("tech")
    if not isinstance(tech, str) or tech not in _TECHNIQUE_SET:
        raise BadEvent("bad_tech")
    return event_id, tech
