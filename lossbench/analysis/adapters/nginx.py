"""The ``nginx`` adapter: an access log in the ``combined`` format, lossbench's, or a given ``log_format``.

Options: ``combined`` (the default), ``lossbench`` (combined plus the POST body; the shipped nginx target
logs it) or a ``log_format`` string itself (anything with a ``$``). The format must log the request line
(``$request``, or ``$request_method`` and ``$request_uri``); ajax bodies need ``$request_body`` (nginx
fills it only once the body was read: see targets/nginx/nginx.conf). Values are unescaped as nginx's
default ``escape`` writes them (``\\xHH`` for ``"``, ``\\`` and every byte outside printable ASCII), and
events are decoded as the reference collector decodes them: the pixel's first ``d`` parameter, percent-
decoded (``decode_pixel_param``), and the POST body (``decode_event_json``).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote_to_bytes

from lossbench.analysis.adapters import DAMAGED, FOREIGN, IGNORED, REFUSED, LineAdapter, LineParser, Row, Skip
from lossbench.contract.events import BadEvent, decode_event_json, decode_pixel_param

COMBINED = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"'
)
FORMATS: dict[str, str] = {"combined": COMBINED, "lossbench": COMBINED + ' "$request_body"'}
"""Named formats; ``lossbench`` is the one the shipped nginx target logs (its config is filled from here)."""

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_ESCAPED = re.compile(rb"\\x([0-9A-Fa-f]{2})")
_WANTED = ("request", "request_method", "request_uri", "request_body")


def compile_format(log_format: str) -> re.Pattern[bytes]:
    """A regular expression for lines of ``log_format``, with a group for each variable the adapter reads.

    A variable matches up to the first character of the literal text after it (nginx escapes ``"``, so a
    quoted value never holds one), or to the end of the line when it is last.
    """
    parts: list[str] = []
    at = 0
    seen: set[str] = set()
    matches = list(_VARIABLE.finditer(log_format))
    for i, m in enumerate(matches):
        parts.append(re.escape(log_format[at : m.start()]))
        name = m.group(1) or m.group(2)
        end = m.end()
        following = log_format[end : matches[i + 1].start()] if i + 1 < len(matches) else log_format[end:]
        value = f"[^{re.escape(following[0])}]*" if following else ".*"
        if name in _WANTED and name not in seen:
            seen.add(name)
            parts.append(f"(?P<{name}>{value})")
        else:
            parts.append(value)
        at = end
    parts.append(re.escape(log_format[at:]))
    if "request" not in seen and not {"request_method", "request_uri"} <= seen:
        raise ValueError(
            "the nginx log_format must log the request line: $request, or $request_method and $request_uri"
        )
    return re.compile("".join(parts).encode("latin-1"), re.DOTALL)


def unescape(value: bytes) -> bytes:
    """A value as nginx's default log escaping wrote it, back to its bytes."""
    return _ESCAPED.sub(lambda m: bytes((int(m.group(1), 16),)), value) if b"\\x" in value else value


def first_param(query: bytes, name: bytes) -> bytes | None:
    """The first ``name=`` parameter of a query string, percent-decoded: the value the reference
    collector reads (lossbench.collector.protocol)."""
    prefix = name + b"="
    for part in query.split(b"&"):
        if part.startswith(prefix):
            value = part[len(prefix) :]
            return unquote_to_bytes(value) if b"%" in value else value
    return None


class NginxAdapter(LineAdapter):
    """Reads nginx access logs; see the module's docstring for the options."""

    def __init__(self, options: str = "") -> None:
        options = options or "combined"
        if "$" not in options and options not in FORMATS:
            raise ValueError(
                f"nginx: unknown log format {options!r}; give one of {', '.join(FORMATS)} or the "
                "log_format string itself"
            )
        self.log_format = FORMATS.get(options, options)
        self.pattern = compile_format(self.log_format)
        self.has_body = "request_body" in self.pattern.groupindex

    def line_parser(self, path: Path) -> LineParser:
        return self.parse_line

    def parse_line(self, line: bytes) -> Row:
        m = self.pattern.fullmatch(line)
        if m is None:
            raise Skip(DAMAGED, "not in the log format")
        fields = m.groupdict()
        if fields.get("request") is not None:
            request = fields["request"].split(b" ")
            if len(request) != 3 or not request[2].startswith(b"HTTP/"):
                raise Skip(FOREIGN, f"not an HTTP request line: {_shown(fields['request'])}")
            method, uri = request[0], request[1]
        else:
            method, uri = fields["request_method"], fields["request_uri"]
        path, _, query = uri.partition(b"?")
        if path == b"/p.gif" and method == b"GET":
            d = first_param(unescape(query), b"d")
            if d is None:
                raise Skip(REFUSED, "pixel without a d= parameter")
            try:
                event_id, tech = decode_pixel_param(d)
            except BadEvent as bad:
                raise Skip(REFUSED, f"pixel: {bad.reason}") from None
            return event_id, tech, "GET"
        if path == b"/e" and method == b"POST":
            return self._post(fields.get("request_body"))
        if (path == b"/e" and method == b"OPTIONS") or (path == b"/ping.gif" and method == b"GET"):
            raise Skip(IGNORED, "preflight or ping")
        raise Skip(FOREIGN, f"not an event request: {_shown(method + b' ' + path)}")

    def _post(self, logged: bytes | None) -> Row:
        if not self.has_body or logged is None:
            raise Skip(REFUSED, "POST /e, but the log_format has no $request_body: its event cannot be read")
        if logged in (b"", b"-"):
            raise Skip(REFUSED, "POST /e with no body logged (cut short, or not read by nginx)")
        try:
            event_id, tech = decode_event_json(unescape(logged))
        except BadEvent as bad:
            raise Skip(REFUSED, f"POST body: {bad.reason}") from None
        return event_id, tech, "POST"


def _shown(value: bytes, limit: int = 60) -> str:
    text = value.decode("latin-1")
    return repr(text if len(text) <= limit else text[:limit] + "…")
