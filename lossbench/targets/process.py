"""What every target shares: the ``Target`` handle, waiting until it answers, stopping it, its CPU time."""

from __future__ import annotations

import dataclasses
import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import lossbench

TARGETS_DIR = Path(lossbench.__file__).resolve().parent.parent / "targets"
"""The shipped targets' files (targets/nginx/nginx.conf, targets/aiohttp_app.py), in the source checkout."""

HOST = "127.0.0.1"


class TargetError(Exception):
    """A target that cannot be started or stopped; the message says what to install or look at."""


@dataclasses.dataclass
class Target:
    """A started target: where to send the load, where its raw log is, and how compare reads it."""

    kind: str
    url: str
    process: subprocess.Popen[bytes]
    raw_logs: tuple[Path, ...]  # the target's own log file(s), under the run's received/
    received_from: str | None  # adapter spec, paths relative to the run directory; None: the received ledger
    stop_signal: int = signal.SIGTERM  # the one that lets the target finish what is in flight
    stop_timeout: float = 20.0

    def stop(self) -> None:
        """Stop gracefully (``stop_signal``), killing after ``stop_timeout``; idempotent."""
        proc = self.process
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the target's process and its children so far (Linux /proc)."""
        return cpu_seconds(self.process.pid)

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A loopback port free at this instant (for servers that cannot listen on port 0 and report it)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_answers(
    proc: subprocess.Popen[bytes], port: int, what: str, log: Path, timeout: float = 10.0, since: int = 0
) -> None:
    """Poll ``GET /healthz`` until it answers 200; a clear error if the process exits (quoting what it
    wrote to ``log`` after offset ``since``) or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            said = log.read_bytes()[since:].decode(errors="replace").strip()[-1500:] if log.exists() else ""
            raise TargetError(f"{what} exited with {proc.returncode} at start; {log}: {said or 'empty'}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=1.0)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise TargetError(f"{what} did not answer on {HOST}:{port} within {timeout:g} s; see {log}")
        time.sleep(0.05)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 0


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live children (nginx's workers, the collector's processes)."""
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[1] == str(pid):  # ppid
                pids.append(int(entry.name))
    total = 0
    for p in pids:
        fields = _stat_fields(p)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks
