"""The sent ledger of a Locust process (``lossbench.loadgen.locust.sent``): one file per test, late events
counted, a ledger that cannot be written named once with what to do. No Locust here: gevent alone does not
patch the process."""

from __future__ import annotations

import errno
import json
from pathlib import Path

from lossbench.contract.lines import SentPing
from lossbench.loadgen.locust.sent import SentLedger
from lossbench.loadgen.player import PlayedEvent
from lossbench.loadgen.timeline import EventResult
from lossbench.model.profiles import NetworkDraw
from lossbench.model.visits import PlannedEvent, Visit

VISIT = Visit(NetworkDraw(0.0, 0.0, None), (PlannedEvent("click", 0.0),), float("inf"), "unload")


def played(n: int) -> PlayedEvent:
    result = EventResult(id=f"{n:016x}", tech="pixel", written=True, t_written=0.0)
    return PlayedEvent(result, "click", VISIT, float("inf"), 0.0)


def event_ids(path: Path) -> list[str]:
    return [line["id"] for line in map(json.loads, path.read_text().splitlines()) if "id" in line]


def test_each_test_has_its_ledger_and_a_late_event_reopens_none(tmp_path: Path) -> None:
    failures: list[str] = []
    sent = SentLedger(on_failure=failures.append)
    sent.start_test(tmp_path / "sent")
    assert sent.append(played(1))
    sent.close()
    assert not sent.append(played(2))  # finished after its test's ledger closed
    sent.start_test(tmp_path / "sent")
    assert sent.append(played(3))
    sent.append_ping(SentPing(ping="pixel-keepalive", requests=4, connections=1))
    sent.close()
    first, second = sorted((tmp_path / "sent").glob("*.jsonl"), key=lambda p: "-test2" in p.name)
    assert "-test2" in second.name
    assert event_ids(first) == [f"{1:016x}"] and event_ids(second) == [f"{3:016x}"]
    assert '"ping":"pixel-keepalive","requests":4' in second.read_text()
    assert (sent.late, sent.recorded, failures) == (1, 2, [])


def test_a_ledger_that_cannot_be_opened_is_named_once(tmp_path: Path) -> None:
    (tmp_path / "sent").write_text("a file, not a folder\n")
    failures: list[str] = []
    sent = SentLedger(on_failure=failures.append)
    sent.start_test(tmp_path / "sent")
    assert not sent.append(played(1)) and not sent.append(played(2))
    [message] = failures  # said once, though every event after it fails too
    assert message.startswith(f"cannot write the sent ledger {tmp_path / 'sent'}")
    assert f"Check that {tmp_path / 'sent'} is a folder this process can write to" in message
    assert sent.error == message and sent.late == 0  # not late: lost to the failure, which stops the run


def test_a_full_disk_says_to_free_space(tmp_path: Path) -> None:
    failures: list[str] = []
    sent = SentLedger(on_failure=failures.append)
    full = OSError(errno.ENOSPC, "No space left on device")
    sent.failed(tmp_path / "sent" / "host-1.0.jsonl", full)
    sent.failed(tmp_path / "sent" / "host-1.0.jsonl", full)
    [message] = failures
    assert "No space left on device" in message and "Free space on that disk" in message
