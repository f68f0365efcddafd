"""Faults: kill -9 in the middle of a load, SIGTERM, a disk that is full or refuses writes, a Locust worker
killed mid-run; and the zero-loss control, the baseline every fault is measured against.

The rule throughout: every event that got a 2xx answer is in the received ledger, nothing that was not
written is acknowledged, and a damaged ledger is still read by compare, which says what is incomplete.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from lossbench.analysis.compare import compare
from lossbench.contract.ledger import LedgerWriter
from lossbench.contract.lines import encode_line
from lossbench.contract.techniques import SEED_TECHNIQUES
from lossbench.loadgen.techniques import Tab, event_body, pixel_request
from lossbench.loadgen.timeline import EventResult
from lossbench.model.profiles import NetworkDraw
from support import ROOT, connect, master_on_a_free_port, read_until_closed, received_ids, wait_until

ADDRESS = "127.0.0.1"


# -- helpers ----------------------------------------------------------------------------------------------


def start_cli(
    out: Path, *args: str, preexec_fn: Callable[[], None] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """``lossbench collector --port 0`` as a process of its own (to be killed or signalled)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossbench.cli", "collector", "--port", "0", "--out", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )
    assert proc.stdout is not None
    match = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
    if not match:
        proc.kill()
        raise AssertionError(proc.communicate()[1])
    return proc, int(match.group(1))


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; whatever is still running at the end is killed (by its own pid)."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def send_pixel(port: int, event_id: str) -> int:
    """One pixel event on its own connection; the answer's status (0 when there was none)."""
    with closing(connect(port)) as sock:
        sock.sendall(pixel_request(event_body(event_id, "pixel", "click")))
        sock.shutdown(socket.SHUT_WR)
        answer = read_until_closed(sock)
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def http_stats(port: int) -> dict:
    with closing(connect(port)) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return json.loads(read_until_closed(sock).partition(b"\r\n\r\n")[2])


def received_file(run_dir: Path) -> Path:
    [path] = sorted((run_dir / "received").glob("*.jsonl"))
    return path


def ledger_body(path: Path) -> tuple[list[dict], bytes | None, bool]:
    """(event lines, the damaged last line or None, footer present). Asserts that only the last line may
    be damaged: every other line is whole JSON."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" when the file ends with a whole line
    assert json.loads(lines[0])["ledger"] == "received"
    records = [json.loads(line) for line in lines[1:]]
    footer = bool(records) and records[-1].get("ledger_end") is True
    events = [r for r in records if "id" in r]
    return events, tail or None, footer


def write_sent_ledger(run_dir: Path, results: list[EventResult]) -> None:
    """The sent ledger of events fired by test code, as the Locust scenarios write it."""
    ledger = LedgerWriter(run_dir / "sent", "sent", name="tests-1")
    for r in results:
        rest = r.as_record()
        del rest["id"], rest["tech"]
        head = {"id": r.id, "tech": r.tech, "type": "click", "rtt": 0.0, "dns": 0.0, "A": None}
        ledger.append_raw(encode_line({**head, "abort": "unload", **rest, "t0": 0.0}), 1)
    ledger.close()


# -- kill -9 ----------------------------------------------------------------------------------------------


def test_kill_9_mid_load_every_acknowledged_event_is_in_the_ledger(tmp_path, processes):
    """Four tabs fire every technique as fast as they can; the collector is killed with SIGKILL. Every
    event that got its 2xx is in the ledger, the ledger is whole up to at most its last line, and compare
    reads it and says it is incomplete — also once its last line is cut short."""
    proc, port = start_cli(tmp_path)
    processes.append(proc)
    results: list[EventResult] = []
    stop = threading.Event()

    def tab_loop(k: int) -> None:
        tab = Tab((ADDRESS, port), NetworkDraw())
        tab.page_load(list(SEED_TECHNIQUES))
        n = 0
        while not stop.is_set():
            results.append(tab.fire(SEED_TECHNIQUES[n % 4], f"k9-{k}-{n}"))
            n += 1
        tab.close()

    threads = [threading.Thread(target=tab_loop, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: sum(r.acked for r in results) >= 1500, timeout=30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: any(r.error for r in results[-8:]))  # the load did run into the kill
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    fired = {r.id for r in results}
    acked = {r.id for r in results if r.acked}
    path = received_file(tmp_path)
    events, damaged, footer = ledger_body(path)
    in_ledger = [e["id"] for e in events]
    assert not footer
    assert acked <= set(in_ledger), f"{len(acked - set(in_ledger))} acknowledged events missing"
    assert set(in_ledger) <= fired and len(in_ledger) == len(set(in_ledger))
    assert len(acked) >= 1500 and len(in_ledger) - len(acked) <= 8  # at most the events in flight

    write_sent_ledger(tmp_path, results)
    summary = compare(tmp_path, predict_events=1000)
    rel = f"received/{path.name}"
    [info] = [f for f in summary.ledgers if f.path == rel]
    assert info.complete is False and info.lines == len(in_ledger)
    assert any(w.startswith(f"{rel}: incomplete ledger (no footer)") for w in summary.warnings)
    assert sum(t.received for t in summary.techniques.values()) == len(in_ledger)
    assert summary.phantoms == 0
    assert damaged is None  # write(2) of a line is not cut by a kill; a full disk could cut one:

    with path.open("ab") as f:
        f.write(b'{"id":"k9-cut-sho')
    again = compare(tmp_path, predict_events=1000)
    [info] = [f for f in again.ledgers if f.path == rel]
    assert info.truncated_last_line is True and info.lines == len(in_ledger)
    assert any("last line was cut short" in w for w in again.warnings)
    assert again.techniques == summary.techniques


# -- SIGTERM ----------------------------------------------------------------------------------------------


def test_sigterm_stops_accepting_finishes_in_flight_flushes_and_exits_0(tmp_path, processes):
    proc, port = start_cli(tmp_path)
    processes.append(proc)
    idle = connect(port)
    idle.sendall(b"GET /ping.gif?t=pixel-keepalive HTTP/1.1\r\nHost: t\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200")
    body = b'{"id":"in-flight","tech":"ajax","type":"click"}'
    in_flight = connect(port)
    in_flight.sendall(
        b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body[:10])
    )
    assert wait_until(lambda: http_stats(port)["requests_in_flight"] == 1)
    proc.send_signal(signal.SIGTERM)

    def refused() -> bool:
        try:
            socket.create_connection((ADDRESS, port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            return True  # caught in the backlog as the listener closed: reset, not served
        return False

    assert wait_until(refused), "still accepting connections after SIGTERM"
    idle.settimeout(5)
    assert idle.recv(4096) == b"", "the idle keep-alive connection was not closed"
    in_flight.sendall(body[10:])
    answer = read_until_closed(in_flight)
    assert answer.startswith(b"HTTP/1.1 204") and b"Connection: close" in answer
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    # That it stops as soon as the work is done, not at the end of the grace, is tested on a fake clock
    # (tests/unit/collector): a wall-clock bound here would fail on a loaded machine.
    events, damaged, footer = ledger_body(received_file(tmp_path))
    assert footer and damaged is None and [e["id"] for e in events] == ["in-flight"]
    [stats_file] = (tmp_path / "received").glob("*.stats.json")
    stats = json.loads(stats_file.read_text())
    assert stats["events"] == {"ajax": 1} and stats["pings"] == 1
    idle.close()
    in_flight.close()


# -- a ledger that refuses writes --------------------------------------------------------------------------


def test_a_ledger_refusing_writes_gets_503_and_nothing_unwritten_is_acknowledged(collector, tmp_path):
    """The ledger's descriptor is pointed at /dev/full (every write fails with ENOSPC): every technique's
    event is answered 503, not acknowledged and counted in ledger_errors; once writes work again, events
    are acknowledged again and the ledger holds exactly the acknowledged ones."""
    tab = Tab((ADDRESS, collector.port), NetworkDraw())
    tab.page_load(list(SEED_TECHNIQUES))
    assert tab.fire("pixel", "before").acked
    ledger = collector.collector.ledger
    saved = os.dup(ledger.fd)
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, ledger.fd)
        results = [tab.fire(tech, f"full-{tech}") for tech in SEED_TECHNIQUES]
        assert all(r.written and not r.acked for r in results), results
        answer = b""
        with closing(connect(collector.port)) as sock:
            sock.sendall(pixel_request(event_body("full-raw", "pixel", "click")))
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable") and b"Retry-After: 1" in answer
        stats = collector.stats()
        assert stats["ledger_errors"] == 5 and stats["events"] == {"pixel": 1}
    finally:
        os.dup2(saved, ledger.fd)
        os.close(saved)
        os.close(full)
    for tech in SEED_TECHNIQUES:
        assert tab.fire(tech, f"after-{tech}").acked
    tab.close()
    collector.stop()
    events, damaged, footer = ledger_body(received_file(tmp_path))
    assert footer and damaged is None
    assert [e["id"] for e in events] == ["before", *(f"after-{tech}" for tech in SEED_TECHNIQUES)]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real disk that fills (root only; skipped elsewhere — see the RLIMIT test)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write to ``path`` until the filesystem is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def test_disk_full_answers_503_cuts_back_partial_lines_and_recovers(small_fs, processes):
    """A collector writing to a small filesystem that fills: events past the full disk are refused with
    503 and counted; the ledger holds exactly the acknowledged events, every line whole (the partial
    line of the failed write was cut back off); freeing space brings acknowledgements back; a shutdown
    on a full disk exits 1 and says what could not be written; compare reads the ledger."""
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * 16384)
    proc, port = start_cli(small_fs)
    processes.append(proc)
    acked, refused = [], []
    n = 0
    while len(refused) < 3 and n < 3000:
        event_id = f"full-{n:04d}-" + "x" * 100
        status = send_pixel(port, event_id)
        (acked if status == 200 else refused).append((event_id, status))
        n += 1
    assert refused and all(status == 503 for _, status in refused)
    assert acked and all(status == 200 for _, status in acked)
    stats = http_stats(port)
    assert stats["ledger_errors"] == len(refused) and stats["events"] == {"pixel": len(acked)}
    events, damaged, _ = ledger_body(received_file(small_fs))
    assert damaged is None, "a partial line was left behind"
    assert [e["id"] for e in events] == [event_id for event_id, _ in acked]

    filler.unlink()
    assert send_pixel(port, "after-free") == 200
    fill(small_fs / "filler2")
    while send_pixel(port, "x" * 100) == 200:  # use up the ledger's last page too
        pass
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 1, err
    assert "not written" in err or "could not be closed cleanly" in err
    events, damaged, footer = ledger_body(received_file(small_fs))
    assert damaged is None
    assert "after-free" in {e["id"] for e in events}
    (small_fs / "filler2").unlink()
    write_sent_ledger(small_fs, [])
    summary = compare(small_fs, predict_events=1000)
    [info] = [f for f in summary.ledgers if f.kind == "received"]
    assert info.complete is footer and info.lines == len(events)


def test_a_file_size_limit_gets_503_and_no_partial_line_without_root(tmp_path, processes):
    """The same without root: RLIMIT_FSIZE makes the write that crosses the limit a partial one (then
    EFBIG), exactly like a disk filling in the middle of a line. The collector cuts it back, answers 503,
    and the exit status says whether the footer fitted."""
    limit = 6000

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: EFBIG

    proc, port = start_cli(tmp_path, preexec_fn=limit_file_size)
    processes.append(proc)
    acked, refused = [], []
    n = 0
    while len(refused) < 3 and n < 500:
        event_id = f"fsize-{n:04d}-" + "y" * 60
        (acked if send_pixel(port, event_id) == 200 else refused).append(event_id)
        n += 1
    assert acked and len(refused) == 3
    path = received_file(tmp_path)
    size = path.stat().st_size
    line = len(path.read_bytes().split(b"\n")[1]) + 1
    assert limit - line < size < limit  # the next line did not fit, and nothing of it stayed
    events, damaged, _ = ledger_body(path)
    assert damaged is None and [e["id"] for e in events] == acked
    assert http_stats(port)["ledger_errors"] == 3
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    events, damaged, footer = ledger_body(path)
    assert damaged is None and [e["id"] for e in events] == acked
    assert proc.returncode == (0 if footer else 1), err


# -- a Locust worker killed mid-run ------------------------------------------------------------------------


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found.append((int(entry), f.read().replace(b"\0", b" ").decode()))
        except (OSError, ValueError, IndexError):
            continue
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind((ADDRESS, 0))
        return s.getsockname()[1]


def has_footer(path: Path) -> bool:
    return b'"ledger_end"' in path.read_bytes()[-200:]


def kill_if_still(pid: int, command: str) -> None:
    """SIGKILL ``pid`` if it is still the process we started (its command line says so)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if command.encode() in f.read().replace(b"\0", b" "):
                os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass


@pytest.mark.slow
def test_a_locust_worker_killed_mid_run_leaves_a_readable_ledger_and_compare_names_it(tmp_path):
    """Master + 2 workers (its own master port, so no other run's workers can join). One worker is
    killed with SIGKILL while it fires events; the other finishes and closes its ledger. The killed
    worker's ledger is readable, and compare names it as the incomplete one.

    The master would wait up to a minute for the dead worker's final report (lossbench.loadgen.locust),
    so once the surviving worker has closed its ledger the test stops the collector with SIGTERM and the
    master by its pid."""
    run_dir = tmp_path / "run"
    port = free_port()
    locust = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", "scenarios/all.py", "--headless", "--processes", "2",
         "-u", "20", "-r", "20", "-t", "5s", "--run-dir", str(run_dir), "--exit-model", "none",
         "--network-profile", "loopback", "--no-summary", "--master-bind-port", str(port),
         "--master-port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    family: list[tuple[int, str]] = []
    try:
        sent = run_dir / "sent"
        assert wait_until(
            lambda: (
                len(ledgers := list(sent.glob("*.jsonl"))) == 2
                and all(p.stat().st_size > 5000 for p in ledgers)
            ),
            timeout=30,
        )
        family = children_of(locust.pid)
        workers = [pid for pid, cmd in family if "-m locust " in cmd]
        collectors = [pid for pid, cmd in family if "lossbench.cli collector" in cmd]
        assert len(workers) == 2 and len(collectors) == 1, family
        victim, survivor = workers
        os.kill(victim, signal.SIGKILL)
        victim_ledger = next(sent.glob(f"*-{victim}.0.jsonl"))
        survivor_ledger = next(sent.glob(f"*-{survivor}.0.jsonl"))
        assert wait_until(lambda: has_footer(survivor_ledger), timeout=30)
        os.kill(collectors[0], signal.SIGTERM)
        assert wait_until(lambda: any((run_dir / "received").glob("*.stats.json")), timeout=15)
    finally:
        locust.kill()
        locust.wait(10)
        for pid, command in family:  # the surviving worker, and the collector if it did not stop
            kill_if_still(pid, command)
    lines = victim_ledger.read_bytes().split(b"\n")
    assert lines[-1] == b"" or not lines[-1].endswith(b"}")  # at most the last line is partial
    for line in lines[:-1]:
        json.loads(line)
    summary = compare(run_dir, predict_events=1000)
    by_path = {f.path: f for f in summary.ledgers}
    assert by_path[f"sent/{victim_ledger.name}"].complete is False
    assert by_path[f"sent/{survivor_ledger.name}"].complete is True
    assert all(f.complete for f in summary.ledgers if f.kind == "received")
    [warning] = [w for w in summary.warnings if "incomplete ledger" in w]
    assert warning.startswith(f"sent/{victim_ledger.name}: incomplete ledger")
    if summary.phantoms:  # events of the victim's last moments: received, never written down
        assert any(victim_ledger.name in w and "never sent" in w for w in summary.warnings)
    assert sum(t.sent for t in summary.techniques.values()) > 1000


# -- the zero-loss control, short ------------------------------------------------------------------------


def test_zero_loss_control_short(tmp_path, monkeypatch):
    """benchmarks/zero_loss.py at 20,000 events: no cuts, 80% of the measured capacity, all four
    techniques — received equals sent exactly, no duplicates, no phantoms, every event acknowledged."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the generator processes import it too
    import zero_loss

    outcome = zero_loss.run(20_000, 0.8, capacity_seconds=1.0, processes=2, threads=4, run_dir=tmp_path,
                            log=lambda line: None, check_rate=False)  # fmt: skip
    assert outcome.ok, outcome.problems
    assert outcome.events == 20_000 and outcome.phantoms == 0
    for tech, row in outcome.rows.items():
        assert row == {"sent": 5000, "received": 5000, "lost": 0, "duplicates": 0}, tech
    assert received_ids(tmp_path).total() == 20_000


RUN_TIME = "3600s"
"""Far longer than a test waits: a run given it that ends at all was stopped by its failure."""
STOP_WAIT = 120.0
"""Seconds a failing run may take to stop, however loaded the machine (it usually takes a few)."""


def run_until_it_stops(
    command: list[str], preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a Locust command with ``-t RUN_TIME``; fail the test if it has not stopped by itself within
    STOP_WAIT: it is meant to stop at its first failure, not to run on unmeasured."""
    try:
        return subprocess.run(
            [*command, "-t", RUN_TIME], cwd=ROOT, capture_output=True, text=True, timeout=STOP_WAIT,
            preexec_fn=preexec_fn,
        )  # fmt: skip
    except subprocess.TimeoutExpired as late:
        said = (late.stderr or b"")[-3000:]
        pytest.fail(f"the run went on for {STOP_WAIT:.0f} s after its failure: {said!r}")


@pytest.mark.parametrize("processes", [1, 2])
def test_a_sent_ledger_that_cannot_be_written_stops_the_run_and_says_why(tmp_path, processes):
    """The load generator under a file size limit: its sent ledger stops growing mid-run. The run stops
    (it does not run on unmeasured), names the file and what to do, exits 1, and the ledger holds whole
    lines only (the write that crossed the limit was cut back). With workers, the one that failed tells
    the master, which stops them all and says it."""
    from lossbench.runner import start_collector

    collector_dir = tmp_path / "collector"
    collector_dir.mkdir()
    collector, url = start_collector(collector_dir, processes=1)
    limit = 200_000  # a few hundred sent lines; run.json and the log fit

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run_dir = tmp_path / "run"
    try:
        result = run_until_it_stops(
            [sys.executable, "-m", "locust", "-f", "scenarios/pixel.py", "--headless", "-u", "20", "-r", "20",
             "--host", url, "--run-dir", str(run_dir), "--network-profile", "loopback",
             "--exit-model", "none",
             *(["--processes", str(processes), *master_on_a_free_port()] if processes > 1 else [])],
            preexec_fn=limit_file_size,
        )  # fmt: skip
    finally:
        collector.terminate()
        collector.wait(30)
    ledgers = sorted((run_dir / "sent").glob("*.jsonl"))
    assert result.returncode == 1, result.stderr[-3000:]
    said = result.stdout + result.stderr
    assert 1 <= len(ledgers) <= processes  # a worker whose tabs had not fired yet has none
    assert any(f"cannot write the sent ledger {sent}" in said for sent in ledgers), said[-3000:]
    assert "File too large" in said and "Free space" in result.stdout.splitlines()[-1], said[-3000:]
    # Lines are written in batches, all or nothing: what did not fit is counted, not half-written.
    assert re.search(r"is incomplete: [1-9][\d,]* line\(s\) could not be written", said), said[-3000:]
    for sent in ledgers:  # the one that failed, and any other worker's, stopped with it
        body = sent.read_bytes()
        assert len(body) <= limit and body.endswith(b"\n")
        lines = [json.loads(line) for line in body.splitlines()]  # every line whole
        assert lines[0]["ledger"] == "sent"


LATE_EVENT_SCRIPT = """
import json, sys, types
from pathlib import Path
from lossbench.loadgen.locust.lifecycle import LocustPlugin
from lossbench.loadgen.timeline import EventResult
from lossbench.model.profiles import NetworkDraw
from lossbench.model.visits import PlannedEvent, Visit
from lossbench.loadgen.player import PlayedEvent

plugin = LocustPlugin()
reported = []
request = types.SimpleNamespace(fire=lambda **kw: reported.append(kw))
env = types.SimpleNamespace(events=types.SimpleNamespace(request=request), runner=None)
visit = Visit(NetworkDraw(0.0, 0.0, None), (PlannedEvent("click", 0.0),), float("inf"), "unload")

def played(n):
    result = EventResult(id=f"{n:016x}", tech="pixel", written=True, t_written=0.0)
    return PlayedEvent(result, "click", visit, float("inf"), 0.0)

plugin.sent.start_test(Path(sys.argv[1]) / "sent")  # the test starts
plugin.record(env, played(1))
plugin.on_test_stop(env)  # the test ends: its sent ledger is closed
plugin.record(env, played(2))  # an event that finished later
plugin.sent.start_test(Path(sys.argv[1]) / "sent")  # a second test in the same process (the web UI)
plugin.record(env, played(3))
plugin.on_test_stop(env)
print(json.dumps({"late": plugin.sent.late, "reported": len(reported)}))
"""


def test_an_event_finishing_after_the_ledger_closed_is_late_and_truncates_nothing(tmp_path):
    """An event that ends after its test's sent ledger was closed is counted late (and warned about); it
    must not reopen the ledger, which would truncate it. A second test in the same process (web UI) gets
    a sent ledger of its own."""
    result = subprocess.run(
        [sys.executable, "-c", LATE_EVENT_SCRIPT, str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"late": 1, "reported": 2}
    assert "1 event(s) finished after the sent ledger closed" in result.stderr
    ledgers = sorted((tmp_path / "sent").glob("*.jsonl"), key=lambda path: "-test2" in path.name)
    assert len(ledgers) == 2 and "-test2" in ledgers[1].name
    for path, event_id in zip(ledgers, [f"{1:016x}", f"{3:016x}"], strict=True):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert [line["id"] for line in lines if "id" in line] == [event_id], path
        assert lines[-1]["ledger_end"] and lines[-1]["events"] == 1


def test_a_sent_ledger_that_cannot_be_opened_stops_the_run_and_says_why(tmp_path):
    """``sent`` in the run directory is a file, not a folder: no sent ledger can be opened. The run stops
    at the first event with a message naming the path, instead of failing each event on its own."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "sent").write_text("not a folder\n")
    result = run_until_it_stops(
        [sys.executable, "-m", "locust", "-f", "scenarios/pixel.py", "--headless", "-u", "5", "-r", "5",
         "--run-dir", str(run_dir), "--network-profile", "loopback", "--exit-model", "none"],
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stdout.splitlines()[-1]
    assert f"cannot write the sent ledger {run_dir / 'sent'}" in last, last
    assert f"Check that {run_dir / 'sent'} is a folder this process can write to" in last, last
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
