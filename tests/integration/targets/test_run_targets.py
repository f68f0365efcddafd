"""Issue 13's acceptance: ``lossbench run --target nginx`` counts what nginx's own raw log says it
received, and ``lossbench targets`` compares the three shipped targets in one command. Short real runs."""

from __future__ import annotations

import base64
import codecs
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from lossbench.contract.targets import load_targets
from lossbench.contract.techniques import TECHNIQUES
from lossbench.runner import RunError, RunOptions, run
from lossbench.targets import nginx as nginx_target
from support import ROOT
from target_support import needs_aiohttp, needs_nginx

LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3}) .* "(?P<body>[^"]*)"$')
"""A line of the shipped nginx.conf's log: combined, then the request body in quotes."""


def lossbench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lossbench.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def events_in_nginx_log(log: Path) -> dict[str, str]:
    """Event id -> technique for every event nginx answered with a 2xx, decoded here from the raw log
    without the adapter: a pixel's ``d`` parameter (base64url JSON), a POST's logged body (``\\xHH``)."""
    out = {}
    for text in log.read_text().splitlines():
        m = LINE.search(text)
        assert m is not None, text
        if not m["status"].startswith("2"):
            continue
        if m["method"] == "GET" and m["uri"].startswith("/p.gif?"):
            d = parse_qs(urlsplit(m["uri"]).query)["d"][0]
            event = json.loads(base64.urlsafe_b64decode(d + "=" * (-len(d) % 4)))
        elif m["method"] == "POST":
            event = json.loads(codecs.escape_decode(m["body"].encode())[0])
        else:
            continue  # pings, preflights
        out[event["id"]] = event["tech"]
    return out


def sent_ids(run_dir: Path) -> set[str]:
    ids = set()
    for path in (run_dir / "sent").glob("*.jsonl"):
        for text in path.read_text().splitlines():
            line = json.loads(text)
            if "id" in line and "tech" in line:
                ids.add(line["id"])
    return ids


@needs_nginx
def test_run_against_nginx_counts_what_its_raw_log_says(tmp_path: Path) -> None:
    result = lossbench(
        "run", "--target", "nginx", "--duration", "5", "--users", "20", "--processes", "1",
        "--out", str(tmp_path), "--run-id", "n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    run_dir = tmp_path / "n"
    log = run_dir / "received" / "nginx" / "access.log"
    assert log.is_file()  # the raw log, kept as nginx wrote it
    summary = json.loads((run_dir / "summary.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    assert run["target"] == "nginx" and run["received_from"] == "nginx:received/nginx/access.log:lossbench"
    assert summary["received_from"] == run["received_from"]
    sent = sent_ids(run_dir)
    logged = Counter(tech for i, tech in events_in_nginx_log(log).items() if i in sent)
    for tech in ("pixel", "pixel-keepalive", "ajax"):
        assert summary["techniques"][tech]["sent"] > 0, tech
        assert summary["techniques"][tech]["received"] == logged[tech], (tech, logged)
    assert summary["phantoms"] == 0
    again = lossbench("compare", str(run_dir), "--json")  # later, from run.json alone
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["techniques"] == summary["techniques"]


def test_a_running_target_needs_its_log(tmp_path: Path) -> None:
    result = lossbench("run", "--target", "http://127.0.0.1:9", "--out", str(tmp_path), "--duration", "1")
    assert result.returncode == 2
    assert "--received-from" in result.stderr


@needs_nginx
@needs_aiohttp
def test_targets_compares_the_three_in_one_command(tmp_path: Path) -> None:
    result = lossbench(
        "targets", "--duration", "4", "--users", "20", "--processes", "1", "--out", str(tmp_path),
        "--run-id", "t",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    folder = tmp_path / "t"
    document = load_targets(folder / "targets.json")
    assert [t.target for t in document.targets] == ["reference", "nginx", "aiohttp"]
    reference = document.targets[0]
    assert reference.written_lost == 0  # by construction: it logs before answering
    for t in document.targets:
        assert (folder / t.run_dir / "summary.json").is_file()
        assert t.sent > 0 and t.throughput > 0 and t.cpu_seconds >= 0
        assert set(t.techniques) == set(TECHNIQUES)
    overall = [c for c in document.comparisons if c.technique is None]
    assert [c.target for c in overall] == ["nginx", "aiohttp"]
    assert all(c.text.startswith(f"the {c.target} target lost ") for c in overall)
    for c in overall:
        assert c.text in result.stdout
    assert (folder / "targets.html").is_file() and (folder / "targets.md").is_file()
    assert (folder / "charts" / "targets.png").read_bytes().startswith(b"\x89PNG")


def test_run_without_nginx_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error reaches ``lossbench run`` as a RunError (exit 2 with the message), before any load."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(nginx_target, "SBIN_DIRS", ())
    with pytest.raises(RunError, match=r"nginx not found .* `apt-get install nginx-light`"):
        run(RunOptions(out=tmp_path, run_id="r", target="nginx"), say=lambda _: None)
    assert not (tmp_path / "r" / "sent").exists()
