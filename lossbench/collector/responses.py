"""The collector's answers: fixed bytes, built once (nothing from a request is ever reflected in them)."""

from __future__ import annotations

GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


REFUSALS: dict[str, tuple[str, str]] = {
    # HTTP framing
    "bad_http": ("400 Bad Request", "malformed HTTP request"),
    "upgrade": ("400 Bad Request", "protocol upgrades are not supported"),
    "uri_too_long": ("414 URI Too Long", "request URI too long"),
    "headers_too_large": ("431 Request Header Fields Too Large", "request headers too large"),
    "chunked": ("411 Length Required", "send a Content-Length, not a chunked body"),
    "body_too_large": ("413 Content Too Large", "body too large"),
    # routing
    "not_found": ("404 Not Found", "unknown path"),
    "method": ("405 Method Not Allowed", "method not allowed"),
    "origin": ("403 Forbidden", "origin not allowed"),
    "empty_body": ("400 Bad Request", "POST without a body"),
    "content_type": ("415 Unsupported Media Type", "send application/json or text/plain"),
    # the event itself (lossbench.contract.events says what each means)
    "missing_d": ("400 Bad Request", "invalid event: no d= parameter"),
    "bad_base64": ("400 Bad Request", "invalid event: bad_base64"),
    "bad_utf8": ("400 Bad Request", "invalid event: bad_utf8"),
    "bad_json": ("400 Bad Request", "invalid event: bad_json"),
    "not_object": ("400 Bad Request", "invalid event: not_object"),
    "bad_id": ("400 Bad Request", "invalid event: bad_id"),
    "bad_tech": ("400 Bad Request", "invalid event: bad_tech"),
    "bad_value": ("400 Bad Request", "invalid event: bad_value"),
    # the collector's own limits and faults
    "too_many_connections": ("503 Service Unavailable", "too many connections"),
    "internal_error": ("500 Internal Server Error", "internal error"),
}
"""Every reason a request is refused: its /stats ``refused`` counter name, status line and fixed text."""


def http_response(status: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """A complete HTTP/1.1 response as bytes (no Content-Length on a 204, RFC 9110 §8.6)."""
    length = [] if status.startswith("204") else [f"Content-Length: {len(body)}"]  # RFC 9110 §8.6
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers), *length, "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


CLOSE = [("Connection", "close")]
LEDGER_FAILED = http_response(
    "503 Service Unavailable",
    [("Content-Type", "text/plain"), ("Retry-After", "1"), ("Cache-Control", "no-store"), *CLOSE],
    b"ledger write failed\n",
)
TIMEOUT = http_response("408 Request Timeout", CLOSE)


def connection_header(keep_alive: bool) -> list[tuple[str, str]]:
    return [] if keep_alive else CLOSE
