"""The collector's configuration and the fixed bounds on what one client can hold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lossbench.collector.service import parse_service_time
from lossbench.contract.server import REFERENCE_CORS_MAX_AGE, REFERENCE_IDLE_TIMEOUT

HEAD_SLICE = 16384
"""Bytes fed to the parser at a time while a head may be in progress (bounds head buffering)."""
CLOSE_LINGER = 5.0
"""Seconds a connection the collector closed may take to flush its answer before it is aborted."""
SWEEPS_PER_TIMEOUT = 5
"""Deadline checks per shortest timeout: a connection outlives its deadline by at most a fifth of it."""


@dataclass
class CollectorConfig:
    """Everything that shapes the collector's behaviour; the CLI fills it from flags."""

    host: str = "127.0.0.1"
    port: int = 8787
    out: Path = Path("results/collector")
    processes: int = 1
    idle_timeout: float = REFERENCE_IDLE_TIMEOUT
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_url: int = 8192
    max_header_bytes: int = 16384
    max_body: int = 65536
    max_connections: int = 10000
    cors_max_age: int = REFERENCE_CORS_MAX_AGE  # negative: no Access-Control-Max-Age header
    allow_origins: tuple[str, ...] = ("*",)
    ledger_max_bytes: int = 256 * 1024 * 1024
    uvloop: bool = True
    service_time: str | None = None  # --service-time DIST (lossbench.collector.service); None: answer at once
    service_workers: int = 1  # virtual workers serving it, per process
    service_seed: int | None = None  # seeds the service-time draws; None: fresh entropy

    @property
    def sweep_every(self) -> float:
        """Seconds between two deadline checks (``Collector.sweep``): a sweeper checks every connection's
        deadline a few times per shortest timeout instead of arming a timer per request; never more often
        than every 20 ms, never less often than every second."""
        shortest = min(1.0, self.header_timeout, self.body_timeout, self.idle_timeout)
        return max(0.02, shortest / SWEEPS_PER_TIMEOUT)


def validate_config(config: CollectorConfig) -> None:
    """Refuse a configuration that would put something unsafe in an answer (raises ValueError).

    An --allow-origin value is echoed in Access-Control-Allow-Origin: it must be one printable ASCII
    token, or a CR LF in it would let the command line inject headers into every answer. A
    ``--service-time`` must be one of the forms ``lossbench.collector.service`` reads, served by one
    worker or more.
    """
    if config.service_time is not None:
        parse_service_time(config.service_time)
    if config.service_workers < 1:
        raise ValueError(f"--service-workers {config.service_workers}: at least one worker")
    for origin in config.allow_origins:
        if origin != "*" and not (origin and origin.isascii() and origin.isprintable() and " " not in origin):
            raise ValueError(f"--allow-origin {origin!r}: not a valid origin (scheme://host[:port] or *)")
