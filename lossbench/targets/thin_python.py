"""The aiohttp target: targets/aiohttp_app.py in a subprocess on a free loopback port."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from lossbench.targets.process import HOST, TARGETS_DIR, Target, TargetError, wait_until_answers

APP = TARGETS_DIR / "aiohttp_app.py"
INSTALL = "pip install '.[targets]'"
READ_WITH = {"jsonl": "event,method=method", "csv": ""}
"""The adapter options for each format the app writes (targets/aiohttp_app.py says what it writes)."""


def aiohttp_installed() -> bool:
    return importlib.util.find_spec("aiohttp") is not None


def start_aiohttp(run_dir: Path, timeout: float = 10.0, log_format: str = "jsonl") -> Target:
    """The aiohttp app logging to ``<run>/received/aiohttp/events.<log_format>`` (jsonl or csv), answering
    when returned."""
    if not aiohttp_installed():
        raise TargetError(f"the aiohttp target needs aiohttp: {INSTALL} (from the lossbench checkout)")
    if not APP.is_file():
        raise TargetError(f"{APP}: the aiohttp target is missing; it ships in the lossbench source checkout")
    folder = (Path(run_dir) / "received" / "aiohttp").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if log_format not in READ_WITH:
        raise TargetError(f"the aiohttp target writes {' or '.join(READ_WITH)}, not {log_format!r}")
    log, stderr_path = folder / f"events.{log_format}", folder / "stderr.log"
    command = [sys.executable, str(APP), "--host", HOST, "--port", "0", "--log", str(log), "--format"]
    with stderr_path.open("ab") as stderr:
        proc = subprocess.Popen(
            [*command, log_format],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace")  # the app prints its URL once it listens
    proc.stdout.close()
    if "listening on " not in line:
        proc.kill()
        proc.wait()
        said = stderr_path.read_text(errors="replace").strip()[-1500:] or line.strip() or "no output"
        raise TargetError(f"the aiohttp target did not start: {said}")
    url = line.split("listening on ", 1)[1].strip()
    wait_until_answers(proc, int(url.rsplit(":", 1)[1]), "the aiohttp target", stderr_path, timeout)
    return Target(
        kind="aiohttp",
        url=url,
        process=proc,
        raw_logs=(log,),
        received_from=f"{log_format}:{log.relative_to(Path(run_dir).resolve())}"
        + (f":{READ_WITH[log_format]}" if READ_WITH[log_format] else ""),
    )
