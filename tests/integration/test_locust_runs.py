"""Real runs: Locust + the reference collector on loopback, ledgers joined by compare.

These take a few seconds each: they are the product's main job in miniature.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from support import ROOT, free_port, master_on_a_free_port, wait_until

pytestmark = pytest.mark.slow


def locust(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "locust", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_techniques_rank_as_their_stages_predict(tmp_path):
    """The seed's browser (a new connection for every event), 3G, page gone 0.6 s after each event: ajax
    (DNS + 2 RTT) > pixel (DNS + RTT) > pre-warm (RTT) > keep-alive (nothing to wait for)."""
    run_dir = tmp_path / "rank"
    result = locust(
        "-f", "scenarios/all.py", "--headless", "-u", "80", "-r", "80", "-t", "12s", "--browser", "seed",
        "--run-dir", str(run_dir), "--network-profile", "3G", "--exit-model", "fixed:0.6", "--seed", "7",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "technique" in result.stdout and "pixel-keepalive" in result.stdout  # the loss table
    techniques = summary_of(run_dir)["techniques"]
    order = ["ajax", "pixel", "pixel-prewarm", "pixel-keepalive"]
    for worse, better in itertools.pairwise(order):
        assert techniques[worse]["sent"] >= 300
        assert techniques[worse]["ci95"][0] > techniques[better]["ci95"][1], (worse, better, techniques)
    for tech in order:  # the model predicts the same draws' loss: the measurement must agree with it
        measured, predicted = techniques[tech]["ci95"], techniques[tech]["predicted_loss"]
        assert measured[0] - 0.05 <= predicted <= measured[1] + 0.05, (tech, measured, predicted)


def test_no_cuts_lose_nothing(tmp_path):
    run_dir = tmp_path / "nocut"
    result = locust(
        "-f", "scenarios/all.py", "--headless", "-u", "40", "-r", "40", "-t", "6s",
        "--run-dir", str(run_dir), "--network-profile", "loopback", "--exit-model", "none",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = summary_of(run_dir)
    assert summary["phantoms"] == 0
    for tech, row in summary["techniques"].items():
        assert row["sent"] > 200, tech
        assert row["lost"] == 0 and row["duplicates"] == 0, (tech, row)


def test_graceful_stop_ends_the_tabs_promptly(tmp_path):
    """With --stop-timeout Locust waits for each tab's task to return: the tab stops firing at once (it
    does not wait out the stop timeout) and every event it fired is in the sent ledger."""
    run_dir = tmp_path / "graceful"
    started = time.monotonic()
    result = locust(
        "-f", "scenarios/pixel.py", "--headless", "-u", "20", "-r", "20", "-t", "4s", "--stop-timeout", "60",
        "--run-dir", str(run_dir), "--network-profile", "loopback", "--exit-model", "none",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert elapsed < 40, f"the run took {elapsed:.0f} s: the tabs waited for the stop timeout"
    assert "Stopping them" not in result.stderr  # Locust's message when it had to kill them
    summary = summary_of(run_dir)
    assert summary["phantoms"] == 0
    for tech, row in summary["techniques"].items():
        assert row["sent"] > 50 and row["lost"] == 0, (tech, row)


@pytest.mark.parametrize(("scenario", "expected"), [
    ("pixel.py", {"pixel", "pixel-prewarm", "pixel-keepalive", "pixel-preconnect"}),
    ("ajax.py", {"ajax"}),
])  # fmt: skip
def test_scenario_files_run_as_they_are(tmp_path, scenario, expected):
    """`locust -f scenarios/X.py` with no --host starts its own collector and prints the loss table."""
    run_dir = tmp_path / scenario
    result = locust(
        "-f", f"scenarios/{scenario}", "--headless", "-u", "10", "-r", "10", "-t", "4s",
        "--run-dir", str(run_dir), "--json-file", str(tmp_path / "stats"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "started the reference collector" in result.stderr
    summary = summary_of(run_dir)
    assert set(summary["techniques"]) == expected
    rows = json.loads((tmp_path / "stats.json").read_text())  # Locust's final statistics
    assert expected <= {row["method"] for row in rows}  # they show each technique
    for tech in expected:
        by_type = sum(row["num_requests"] for row in rows if row["method"] == tech)
        assert by_type == summary["techniques"][tech]["sent"]
    assert (run_dir / "report.html").exists()


def test_distributed_totals_match_the_ledgers(tmp_path):
    """Master + 2 workers: the master's table counts every event the workers recorded."""
    run_dir = tmp_path / "dist"
    result = locust(
        "-f", "scenarios/all.py", "--headless", "--processes", "2", "-u", "40", "-r", "40", "-t", "8s",
        *master_on_a_free_port(),
        "--run-dir", str(run_dir), "--exit-model", "fixed:0.6", "--json-file", str(tmp_path / "dist"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ledgers = sorted((run_dir / "sent").glob("*.jsonl"))
    assert len(ledgers) == 2  # one per worker
    lines = sum(1 for p in ledgers for line in p.read_text().splitlines() if line.startswith('{"id"'))
    summary = summary_of(run_dir)
    assert sum(t["sent"] for t in summary["techniques"].values()) == lines
    rows = json.loads((tmp_path / "dist.json").read_text())  # the master's final statistics
    assert sum(row["num_requests"] for row in rows) == lines
    table_sent = sum(int(m.replace(",", "")) for m in re.findall(r"^\S+\s+([\d,]+)\s", result.stdout, re.M))
    assert table_sent == lines


def test_web_ui_mode_shows_each_technique(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", "scenarios/pixel.py", "--web-host", "127.0.0.1",
         "--web-port", str(port), "--autostart", "--autoquit", "2", "-u", "5", "-r", "5", "-t", "6s",
         "--run-dir", str(tmp_path / "ui")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def stats() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/requests", timeout=2) as response:
                return json.loads(response.read())

        def shows_all() -> bool:
            try:
                names = {row["method"] for row in stats()["stats"] if row["name"] != "Aggregated"}
            except OSError:
                return False
            return {"pixel", "pixel-prewarm", "pixel-keepalive"} <= names

        assert wait_until(shows_all, timeout=20)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "pixel-keepalive" in out


def test_lossbench_run_then_compare_and_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "run", "--duration", "5", "--users", "20",
         "--out", str(tmp_path), "--run-id", "r1", "--exit-model", "fixed:0.6",
         "--fail-if", "phantoms > 0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "the collector received" in result.stdout and "report: " in result.stdout
    run_dir = tmp_path / "r1"
    # the load lasted its --run-time, plus the visits the tabs were playing (at most 10 s more)
    load_seconds = json.loads((run_dir / "run.json").read_text())["load_seconds"]
    assert 5 <= load_seconds < 5 + 10 + 5, load_seconds
    compared = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "compare", str(run_dir), "--fail-if", "ajax.loss < 0.01"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stderr
    gated = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "compare", str(run_dir), "--fail-if", "ajax.loss > 0.01"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert gated.returncode == 1 and "failing" in gated.stderr
    started = time.monotonic()
    reported = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "report", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reported.returncode == 0, reported.stderr
    assert time.monotonic() - started < 30
    assert (run_dir / "charts" / "loss.png").stat().st_size > 10_000


def test_a_slow_collector_run_records_its_service_time_and_compare_reports_it(tmp_path):
    """lossbench run --service-time: the collector is started with it, run.json says so, and the summary
    has the collector's utilisation and answer times (every event answered after its 30 ms at least)."""
    result = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "run", "--duration", "4", "--users", "10", "--processes", "1",
         "--out", str(tmp_path), "--run-id", "slow", "--techniques", "ajax,pixel", "--exit-model", "fixed:2",
         "--service-time", "30ms", "--service-workers", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "service time 30ms on 2 worker(s)" in result.stdout
    run_dir = tmp_path / "slow"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["collector"] == {"processes": 1, "service_time": "30ms", "service_workers": 2}
    collector = summary_of(run_dir)["collector"]
    print(f"\n[run --service-time 30ms, 2 workers] collector figures: {json.dumps(collector)}")
    assert collector["service_time"] == "30ms" and collector["service_workers"] == 2
    assert 0 < collector["utilisation"] <= 1
    events, preflights = collector["answer_seconds"]["event"], collector["answer_seconds"]["preflight"]
    assert events["count"] > 20 and events["p50"] >= 0.030
    assert preflights["count"] > 10 and preflights["p50"] < 0.030  # most find a free worker


def test_compare_names_a_missing_ledger(tmp_path):
    (tmp_path / "empty-run").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "compare", str(tmp_path / "empty-run")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "empty-run" in result.stderr and "sent" in result.stderr


def test_load_generator_benchmark_runs_and_prints_its_figure():
    """benchmarks/loadgen.py in miniature (its figure needs a quiet machine and longer rounds: only that it
    measures all three generators and prints the ratio last is checked here)."""
    result = subprocess.run(
        [sys.executable, "benchmarks/loadgen.py", "--rounds", "1", "--seconds", "6", "--users", "10",
         "--raw-reference"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    rates = re.findall(r"([\d,]+) events/s \((\d+) us CPU/event\)", result.stdout)
    assert len(rates) == 3, result.stdout  # bare, lossbench, bare on C sockets
    assert all(int(rate.replace(",", "")) > 0 and int(cpu) > 0 for rate, cpu in rates), result.stdout
    last = r"lossbench pixel / bare Locust events per second: \d+\.\d\d .*"
    assert re.fullmatch(last, lines[-1]), lines[-1]


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_sigterm_stops_the_run_and_its_children(tmp_path):
    """`timeout`, CI runners and `kill` send SIGTERM: the collector and Locust must not outlive the run,
    and the ledgers written so far stay readable by compare. The tabs stop at the signal: every event the
    collector received is in the sent ledger (no phantom)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossbench.cli", "run", "--duration", "60", "--users", "10",
         "--processes", "1", "--exit-model", "fixed:0.6", "--out", str(tmp_path), "--run-id", "r"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        run_dir = tmp_path / "r"
        assert wait_until(lambda: any((run_dir / "sent").glob("*.jsonl")), timeout=60)
        children = _descendants(proc.pid)
        assert children, "the run started its collector and Locust"
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143 and "interrupted" in err, err[-2000:]
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), timeout=10)
    compared = subprocess.run(
        [sys.executable, "-m", "lossbench.cli", "compare", str(run_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert summary_of(run_dir)["phantoms"] == 0
