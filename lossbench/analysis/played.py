"""The visits a run played, rebuilt from its sent ledger: the model then predicts on those very visits.

A prediction drawn from the seed is the model's loss over the population of visits; a run measures a
sample of a few thousand visits, and a sample can be unusual (the default seed's 200 tabs happen to play 45
outbound clicks past the DNS entry's 60 s lifetime where 25 are expected: pre-warmed pixels then pay a
full lookup, and measured loss sits beyond a population prediction with no fault anywhere). Predicting on
the played visits pairs the two: what remains between them is what the model leaves out (a late load
generator, a slow or saturated collector), not the luck of the draw. The measured interval still speaks
for the population.

Each sent line carries its visit (``visit``, numbered per ledger writer, whose header holds the process's
``salt``) and its visit time (``at``); the network draw (``rtt``, ``dns``) and the exit (``A``) are there
too, and the uplink is the profile's. Ledgers written before these keys give None: the prediction is then
the seed's, as before.
"""

from __future__ import annotations

import math
from pathlib import Path

import msgspec

from lossbench.model.profiles import NetworkDraw, NetworkProfile
from lossbench.model.visits import PlannedEvent, Visit


class _Header(msgspec.Struct):
    salt: str | None = None
    pid: int = 0


class _Line(msgspec.Struct):
    tech: str | None = None
    type: str = "click"
    visit: int | None = None
    at: float | None = None
    rtt: float = 0.0
    dns: float = 0.0
    A: float | None = None
    abort: str = "unload"


_header = msgspec.json.Decoder(_Header)
_line = msgspec.json.Decoder(_Line)


def played_visits(sent_dir: Path, technique: str, profile: NetworkProfile) -> list[Visit] | None:
    """The visits behind ``technique``'s events in ``sent_dir`` (every technique played the same ones);
    None when a line lacks ``visit`` or ``at`` (an older ledger) or nothing was sent."""
    needle = f'"tech":"{technique}"'.encode()
    events: dict[tuple[str, int], list[_Line]] = {}
    for path in sorted(sent_dir.glob("*.jsonl")):
        with path.open("rb") as file:
            first = file.readline()
            try:
                header = _header.decode(first)
            except msgspec.DecodeError:
                return None
            writer = header.salt or f"pid{header.pid}:{path.name}"
            for raw in file:
                if needle not in raw:
                    continue
                try:
                    line = _line.decode(raw)
                except msgspec.DecodeError:
                    continue  # a truncated last line: compare reports it
                if line.tech != technique:
                    continue
                if line.visit is None or line.at is None:
                    return None
                events.setdefault((writer, line.visit), []).append(line)
    if not events:
        return None
    uplink = profile.uplink_bps
    visits = []
    for lines in events.values():
        lines.sort(key=lambda ln: ln.at or 0.0)
        first_line = lines[0]
        exit_after = first_line.A
        leave_at = math.inf if exit_after is None else (first_line.at or 0.0) + exit_after
        visits.append(
            Visit(
                NetworkDraw(first_line.rtt, first_line.dns, uplink),
                tuple(PlannedEvent(ln.type, ln.at or 0.0) for ln in lines),
                leave_at,
                first_line.abort,
            )
        )
    return visits
