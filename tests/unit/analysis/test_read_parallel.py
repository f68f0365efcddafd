"""Reading a run in worker processes gives exactly what reading it in this thread gives.

Runs are cut into many small ranges (more than the arena has slots), read both ways, and compared column by
column: the same columns, keys, vocabularies, pings, file reports and summary, or the same error naming the
same file and line. A damaged line is skipped and counted either way (``strict``: the same error). Small
runs must not start processes at all.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lossbench.analysis import parallel as ledger_parallel
from lossbench.analysis import read as ledger
from lossbench.analysis.compare import compare
from lossbench.analysis.read import LedgerError, Ledgers
from lossbench.contract.ledger import LedgerWriter
from lossbench.contract.techniques import TECHNIQUES

STAGES = {"ajax": ["dns", "connect", "preflight", "headers", "body"], "pixel": ["dns", "connect", "request"]}


def sent_line(i: int, salt: int, rng: np.random.Generator) -> dict[str, Any]:
    """A sent line in the writers' shape (keys in their order), with what a run varies."""
    tech = TECHNIQUES[i % 4]
    stages = STAGES.get(tech, ["request", "connect"])
    done = int(rng.integers(0, len(stages) + 1))
    plan = {s: round(0.05 * (k + 1) + float(rng.random()) / 10, 6) for k, s in enumerate(stages[:done])}
    written = done == len(stages)
    return {
        "id": f"{salt:06x}{i:010x}",
        "tech": tech,
        "type": ["pageview", "click", "outbound"][i % 3],
        "rtt": round(float(rng.random()) / 5, 6),
        "dns": 0.05,
        "A": round(float(rng.random()) * 3, 6) if i % 9 else None,
        "abort": "unload",
        "stage": "done" if written else stages[done],
        "written": written,
        "t_written": max(plan.values()) if written else None,
        "acked": written and i % 2 == 0,
        "retried": False,
        "requests": done,
        "connections": int(done > 0),
        "plan": plan,
        "real": {s: round(t + 3.6e-05 * (1 + i % 5), 6) for s, t in plan.items()},
        "t0": round(1764250000 + i / 100, 6),
    }


def make_run(root: Path, events: int = 1500, seed: int = 1) -> Path:
    """Two load generators (pings, odd lines that only json reads) and two collectors (rotated parts,
    duplicates, phantoms)."""
    rng = np.random.default_rng(seed)
    got: list[dict] = []
    for p, salt in enumerate((0x00AB12, 0x7F0001)):
        writer = LedgerWriter(root / "sent", "sent", name=f"gen-{p}")
        for i in range(events):
            line = sent_line(i, salt, rng)
            if i % 97 == 0:
                line = {"note": "keys moved", **line}  # json only
            writer.append(line)
            if i % 40 == 0:
                writer.append({"ping": "pixel-keepalive", "requests": 2, "connections": 0, "virtual": True})
            if line["written"] or i % 13 == 0:
                got.append({"id": line["id"], "tech": line["tech"], "m": "GET", "t": 1764250000.5, "c": i})
        writer.close()
    got += [*got[::50], {"id": "ffffff0000000001", "tech": "pixel", "m": "GET", "t": 1.5, "c": 1}]
    for c in range(2):
        writer = LedgerWriter(root / "received", "received", name=f"col-{c}", max_bytes=20_000)
        for line in got[c::2]:
            writer.append(line)
        writer.close()
    (root / "run.json").write_text(json.dumps({"run_id": "t", "techniques": list(TECHNIQUES)}))
    return root


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch) -> list[ledger_parallel.Pool]:
    """Small blocks and ranges (many ranges per file); records the pool each reading used."""
    monkeypatch.setattr(ledger, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(ledger, "SMALL_BLOCK", 0)  # the fast path even for small blocks
    used: list[ledger_parallel.Pool] = []
    workers = ledger_parallel.workers

    @contextlib.contextmanager
    def recording(*args: Any) -> Iterator[ledger_parallel.Pool]:
        with workers(*args) as pool:
            used.append(pool)
            yield pool

    monkeypatch.setattr(ledger_parallel, "workers", recording)
    return used


def read(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, *, parallel: bool, strict: bool = False
) -> Ledgers | str:
    with monkeypatch.context() as m:
        m.setattr(ledger_parallel, "SERIAL_BYTES", 0 if parallel else 1 << 62)
        try:
            return ledger.read_ledgers(run_dir, strict=strict)
        except LedgerError as e:
            return f"LedgerError: {e}"


def same_ledgers(a: Ledgers | str, b: Ledgers | str) -> None:
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    for kind in ("sent", "received"):
        x, y = getattr(a, kind), getattr(b, kind)
        assert list(x) == list(y)
        for name in x:
            assert x[name].dtype == y[name].dtype, (kind, name)
            assert np.array_equal(x[name], y[name], equal_nan=x[name].dtype.kind == "f"), (kind, name)
        keys_a, keys_b = getattr(a, f"{kind}_keys"), getattr(b, f"{kind}_keys")
        assert (keys_a is None) == (keys_b is None)
        assert keys_a is None or np.array_equal(keys_a, keys_b)
    assert [dataclasses.asdict(f) for f in a.files] == [dataclasses.asdict(f) for f in b.files]
    for name in ("tech", "type", "stage", "method"):
        assert getattr(a.vocabs, name).names == getattr(b.vocabs, name).names
    assert list(a.ping_requests.items()) == list(b.ping_requests.items())
    assert list(a.ping_connections.items()) == list(b.ping_connections.items())
    assert (a.problems, a.collector_stats) == (b.problems, b.collector_stats)


def forks() -> bool:
    return ledger_parallel.WORKERS > 1 and threading.active_count() == 1


def test_workers_read_what_this_thread_reads(tmp_path: Path, monkeypatch, pools) -> None:
    run = make_run(tmp_path)
    loaded: list[int] = []
    load = ledger_parallel.Arena.load

    def counted(arena: ledger_parallel.Arena, refs: list) -> list[np.ndarray]:
        loaded.append(len(refs))
        return load(arena, refs)

    monkeypatch.setattr(ledger_parallel.Arena, "load", counted)
    serial, parallel = read(run, monkeypatch, parallel=False), read(run, monkeypatch, parallel=True)
    assert pools[0].executor is None
    if forks():
        assert isinstance(pools[1].executor, concurrent.futures.ProcessPoolExecutor)
        assert pools[1].arena is not None and len(loaded) > 20  # the columns came through the arena
        ranges = sum(len(ledger._ranges(ledger._open_ledger(p, p.parent.name, ""), pools[1].range_bytes))
                     for p in sorted(run.glob("*/*.jsonl")))  # fmt: skip
        assert ranges > 4 * len(pools[1].arena.free)  # slots are handed from range to range
    else:  # another thread is alive: forking is not safe, so threads read, results by reference
        assert isinstance(pools[1].executor, concurrent.futures.ThreadPoolExecutor)
        assert pools[1].arena is None and not loaded
    same_ledgers(serial, parallel)
    assert not isinstance(serial, str) and len(serial.sent["id"]) == 3000
    assert serial.ping_requests == {"pixel-keepalive": 2 * 38 * 2}
    with monkeypatch.context() as m:
        m.setattr(ledger_parallel, "SERIAL_BYTES", 0)
        summary = compare(run)
    with monkeypatch.context() as m:
        m.setattr(ledger_parallel, "SERIAL_BYTES", 1 << 62)
        assert compare(run) == summary
    assert summary.phantoms == 1


def test_results_too_big_for_their_slot_come_by_pipe(tmp_path: Path, monkeypatch, pools) -> None:
    run = make_run(tmp_path, events=400)
    stored: list[bool] = []
    store = ledger_parallel.Arena.store

    def sometimes(self: ledger_parallel.Arena, slot: int, arrays: list[np.ndarray]) -> Any:
        stored.append(len(stored) % 2 == 0)
        return store(self, slot, arrays) if stored[-1] else None

    monkeypatch.setattr(ledger_parallel.Arena, "store", sometimes)
    same_ledgers(read(run, monkeypatch, parallel=False), read(run, monkeypatch, parallel=True))


def cut(path: Path, end: int) -> None:
    path.write_bytes(path.read_bytes()[:end])


def damage(path: Path, line: int, text: bytes) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[line] = text
    path.write_bytes(b"".join(lines))


BAD_SENT = ("sent/gen-1.0.jsonl", 701)  # (file, 1-based line) of the damaged lines below
BAD_RECEIVED = ("received/col-0.1.jsonl", 31)
BAD_UTF8 = ("sent/gen-0.0.jsonl", 301)


@pytest.mark.parametrize(
    ("harm", "damaged", "error"),
    [
        pytest.param(lambda run: cut(run / "sent/gen-0.0.jsonl", -30), None, None, id="truncated-last-line"),
        pytest.param(
            lambda run: cut(run / "received/col-1.0.jsonl", -1000), None, None, id="killed-collector"
        ),
        pytest.param(
            lambda run: damage(run / BAD_SENT[0], BAD_SENT[1] - 1, b'{"id": "00\n'),
            BAD_SENT,
            None,
            id="bad-sent",
        ),
        pytest.param(
            lambda run: damage(run / BAD_RECEIVED[0], BAD_RECEIVED[1] - 1, b'{"tech":"pixel"}\n'),
            BAD_RECEIVED,
            None,
            id="bad-received",
        ),
        pytest.param(
            lambda run: damage(run / BAD_UTF8[0], BAD_UTF8[1] - 1, b"\xff\xfe\n"),
            BAD_UTF8,
            None,
            id="bad-utf8",
        ),
        pytest.param(
            lambda run: (run / "received/zz.jsonl").write_bytes(b""),
            None,
            "zz.jsonl: empty file",
            id="empty-file",
        ),
        pytest.param(
            lambda run: damage(run / "sent/gen-1.0.jsonl", 0, b"{}\n"),
            None,
            "gen-1.0.jsonl: line 1 is not a ledger header",
            id="no-header",
        ),
    ],
)
def test_damaged_runs_read_the_same(tmp_path: Path, monkeypatch, pools, harm, damaged, error) -> None:
    """Workers and this thread: the same columns and reports, a damaged line skipped and named, or the same
    error; with ``strict`` a damaged line is that error."""
    run = make_run(tmp_path, events=800)
    harm(run)
    serial, parallel = read(run, monkeypatch, parallel=False), read(run, monkeypatch, parallel=True)
    same_ledgers(serial, parallel)
    if error is not None:
        assert isinstance(serial, str) and error in serial
        return
    assert not isinstance(serial, str)
    assert serial.damaged_lines == (damaged is not None)
    if damaged is not None:
        path, line = damaged
        (info,) = [f for f in serial.files if f.damaged_lines]
        assert info.path == path and info.damage[0].startswith(f"line {line}: ")
        summary = compare(run)
        assert [f.damaged_lines for f in summary.ledgers if f.path == path] == [1]
        assert f"{path}: 1 damaged line skipped (line {line}: " in "\n".join(summary.warnings)
        for parallel_read in (False, True):
            strict = read(run, monkeypatch, parallel=parallel_read, strict=True)
            assert isinstance(strict, str) and f"{path}:{line}: " in strict, strict
    with_strict = read(run, monkeypatch, parallel=True, strict=True)
    assert isinstance(with_strict, str) == (damaged is not None)


def test_small_runs_are_read_in_this_thread(tmp_path: Path, monkeypatch, pools) -> None:
    run = make_run(tmp_path, events=200)
    total = sum(p.stat().st_size for p in run.glob("*/*.jsonl"))
    assert total < ledger_parallel.SERIAL_BYTES
    serial = ledger.read_ledgers(run)
    assert pools[-1].executor is None and pools[-1].arena is None
    monkeypatch.setattr(ledger_parallel, "SERIAL_BYTES", total)  # as large as the threshold: workers
    in_workers = ledger.read_ledgers(run)
    assert pools[-1].executor is not None
    same_ledgers(serial, in_workers)  # and what they read is what this thread read
    assert len(in_workers.sent["id"]) == 400 and in_workers.damaged_lines == 0


def test_the_arena_gives_back_what_was_stored() -> None:
    arena = ledger_parallel.Arena(2, 1 << 12)
    arrays = [np.arange(5, dtype=np.int16), np.array([b"0123456789abcdef"], "S16"), np.linspace(0, 1, 7)]
    refs = arena.store(1, arrays)
    assert refs is not None and all(ref.offset % ledger_parallel.ALIGN == 0 for ref in refs)
    assert all(1 << 12 <= ref.offset < 2 << 12 for ref in refs)
    for got, want in zip(arena.load(refs), arrays, strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert arena.store(0, [np.zeros(1 << 10)]) is None  # 8 KB do not fit a 4 KB slot
