"""What a collector tells browsers about keeping things: its keep-alive timeout and the preflight's max-age.

Both shape what a browser's later events find (``lossbench.model.browser``): a pooled connection the
collector has closed is gone, and a preflight answer is reused for its ``Access-Control-Max-Age``. The
model and the socket client must assume what the target really does, so each target lossbench starts states
it here, and run.json records it (``server``).
"""

from __future__ import annotations

from dataclasses import dataclass

REFERENCE_IDLE_TIMEOUT = 30.0
"""Seconds the reference collector keeps an idle connection (its --idle-timeout): long enough for a page's
events a few seconds apart to share a connection, short enough that idle tabs do not pile up; nginx's own
default is 75 s."""

REFERENCE_CORS_MAX_AGE = 7200
"""The reference collector's Access-Control-Max-Age (its --cors-max-age): a collector whose CORS policy
never changes should let browsers keep the answer as long as they will, and 7,200 s is Chromium's cap.
With 0 every ajax event pays a preflight (the worst case, as in the seed model)."""


@dataclass(frozen=True)
class ServerHints:
    """A target's keep-alive timeout and Access-Control-Max-Age (None: it sends no such header, which
    Chromium reads as 5 s). The defaults are the reference collector's."""

    idle_timeout: float = REFERENCE_IDLE_TIMEOUT
    cors_max_age: float | None = REFERENCE_CORS_MAX_AGE

    def as_json(self) -> dict[str, float | None]:
        return {"idle_timeout": self.idle_timeout, "cors_max_age": self.cors_max_age}


TARGET_HINTS: dict[str, ServerHints] = {
    "reference": ServerHints(),
    "nginx": ServerHints(idle_timeout=30.0, cors_max_age=REFERENCE_CORS_MAX_AGE),  # targets/nginx/nginx.conf
    "aiohttp": ServerHints(idle_timeout=75.0, cors_max_age=REFERENCE_CORS_MAX_AGE),  # targets/aiohttp_app.py
}
"""What each target lossbench starts tells browsers (a test holds the configuration files to it)."""
