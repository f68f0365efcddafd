"""Sizing lossbench run's load to the machine: the plan, the choice and its words with made-up probes,
reading a probe's ledger as it grows, and what run.json records. The real probes are in
tests/integration/test_sizing_runs.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lossbench.contract.ledger import LedgerWriter
from lossbench.loadgen.locust.options import PluginOptions
from lossbench.runner import RunError, RunOptions, size_run
from lossbench.sizing import (
    CAP_PROCESSES,
    CAP_USERS,
    MIN_USERS,
    SETTLE,
    TAIL,
    TARGET_SHARE,
    WINDOW,
    LedgerTail,
    LoadTooHeavy,
    Machine,
    Plan,
    Probe,
    RunSizing,
    choose,
    expected_half_width,
    measure,
    plan,
    probe_loads,
    reason,
    size_load,
)

TARGET = 0.015  # half of 3G's 30 ms limit


def generator(capacity: float) -> list[Probe]:
    """Made-up probes of a generator that lags once its tabs pass ``capacity`` per process."""
    made: list[Probe] = []

    def probe(users: int, processes: int) -> Probe:
        load = users / (capacity * processes)
        p90 = 0.002 if load <= 1 else 0.002 + 0.05 * (load - 1)
        made.append(Probe(users, processes, 3.0, users * 10, p90 / 2, p90, {"ajax": (users * 3, users // 4)}))
        return made[-1]

    return probe  # type: ignore[return-value]


def test_the_plan_halves_the_default_load_in_the_processes_the_machine_has_free() -> None:
    assert plan(Machine(cpus=2, load_average=0.2)) == [(400, 2), (200, 2), (100, 2), (50, 2)]
    assert plan(Machine(cpus=2, load_average=1.2)) == [(400, 1), (200, 1), (100, 1), (50, 1)]  # a core taken
    assert plan(Machine(cpus=1, load_average=0.0))[0] == (400, 1)  # pinned to one CPU
    assert plan(Machine(cpus=2, load_average=9.0))[0] == (400, 1)  # at least one
    assert plan(Machine(cpus=16, load_average=0.0))[0] == (
        CAP_USERS,
        CAP_PROCESSES,
    )  # never above the default
    assert plan(Machine(cpus=2, load_average=0.0))[-1][0] == MIN_USERS


def test_a_slowed_generator_gets_fewer_tabs() -> None:
    loads = plan(Machine(cpus=2, load_average=0.0))
    (users, processes), probes = choose(loads, generator(capacity=250), TARGET)
    assert (users, processes) == (400, 2) and len(probes) == 1  # an idle machine: one probe
    (slow_users, _), slow_probes = choose(loads, generator(capacity=60), TARGET)
    assert slow_users == 150 < users  # 100 held, then the middle between 100 and 200 did too
    assert [p.users for p in slow_probes] == [400, 200, 100, 150]
    assert [p.within(TARGET) for p in slow_probes] == [False, False, True, True]
    (slower, _), slower_probes = choose(loads, generator(capacity=45), TARGET)
    assert slower == 100 and [p.users for p in slower_probes] == [400, 200, 100, 150]  # the middle lagged


def test_when_even_the_fewest_tabs_lag_the_run_gets_them_and_is_told() -> None:
    loads = plan(Machine(cpus=1, load_average=0.0))
    (users, processes), probes = choose(loads, generator(capacity=10), TARGET)
    assert (users, processes) == (MIN_USERS, 1) and len(probes) == len(loads)
    words = reason(users, processes, probes, 0.03, TARGET)
    assert words.startswith("50 tabs in 1 process, the fewest tried, and still lagging: it was 202 ms")
    assert "the run will likely be flagged" in words


def test_the_reason_says_what_was_chosen_against_which_limit() -> None:
    loads = plan(Machine(cpus=2, load_average=0.0))
    _, probes = choose(loads, generator(capacity=250), TARGET)
    assert reason(400, 2, probes, 0.03, TARGET) == (
        "400 tabs in 2 processes, the most it tries: its p90 timing error was 2.0 ms (against the 30 ms "
        "limit compare warns at; probes hold to 15 ms)"
    )
    _, probes = choose(loads, generator(capacity=45), TARGET)
    assert reason(100, 2, probes, 0.03, TARGET) == (
        "100 tabs in 2 processes: the p90 timing error was 174 ms at 400, 63 ms at 200, 7.6 ms at 100, "
        "35 ms at 150 tabs (against the 30 ms limit compare warns at; probes hold to 15 ms)"
    )


def test_size_load_says_each_probe_and_the_choice(tmp_path: Path) -> None:
    said: list[str] = []
    options = RunOptions(duration=60.0)
    sizing = size_load(
        options, tmp_path / "sizing", said.append, Machine(2, 0.5), probe=generator(capacity=45)
    )
    assert (sizing.users, sizing.processes) == (100, 2)
    assert sizing.limit == pytest.approx(0.03) and sizing.target == pytest.approx(TARGET_SHARE * 0.03)
    assert said[0].startswith(
        "sizing the load to this machine (2 CPUs, load average 0.5): from 400 tabs in 2"
    )
    assert said[1] == (
        "  400 tabs in 2 processes: p90 timing error 174 ms (p50 87 ms), 4,000 events in 3 s (1,333/s): "
        "over 15 ms"
    )
    assert said[3].endswith(": ok") and said[4].endswith("over 15 ms")  # 100 held, 150 did not
    assert said[5].startswith("sized to 100 tabs in 2 processes: the p90 timing error was 174 ms at 400")
    assert "sizing took" in said[5]
    assert said[6].startswith("  at that rate, 60 s should give intervals within about ±")
    assert not (tmp_path / "sizing").exists()  # made-up probes: no collector, no directory
    record = sizing.record()
    assert [(p["users"], p["ok"]) for p in record["probes"]] == [
        (400, False), (200, False), (100, True), (150, False)
    ]  # fmt: skip
    assert record["probes"][0]["events_per_second"] == pytest.approx(1333.3)
    json.dumps(record)  # run.json takes it as it is


def test_no_sizing_without_network_delay(tmp_path: Path) -> None:
    said: list[str] = []
    options = RunOptions(plugin=PluginOptions(network_profile="loopback"))
    sizing = size_load(options, tmp_path, said.append, Machine(2, 0.0), probe=generator(capacity=1))
    assert (sizing.users, sizing.processes, sizing.probes) == (CAP_USERS, CAP_PROCESSES, [])
    assert said == [f"load: {sizing.reason}"] and "no network delay" in sizing.reason


def test_the_expected_interval_comes_from_the_probe_s_rate_and_loss() -> None:
    probe = Probe(400, 2, 3.0, 3_000, 0.001, 0.002, {"ajax": (600, 48), "pixel": (600, 18)})
    tech, half = expected_half_width(probe, 90.0)  # type: ignore[misc]
    assert tech == "ajax" and half == pytest.approx(0.0040, abs=0.0001)  # 8% over 18,000 events
    assert expected_half_width(Probe(50, 1, 3.0, 0, None, None), 90.0) is None
    # the probe's own count is low (events cut late had not finished): the model's loss comes first
    modelled = expected_half_width(probe, 90.0, {"ajax": 0.02, "pixel": 0.5})
    assert (
        modelled is not None and modelled[0] == "pixel" and modelled[1] == pytest.approx(0.0073, abs=0.0001)
    )


def test_a_probe_reads_its_growing_ledger_and_measures_its_window(tmp_path: Path) -> None:
    writer = LedgerWriter(tmp_path, "sent", name="box-1")
    for i in range(10):
        late = 0.001 * (i + 1)
        writer.append(
            {"id": f"{i:016x}", "tech": "ajax", "written": i % 5 != 0, "t0": 1000.0 + i,
             "plan": {"connect": 0.3, "body": 0.6}, "real": {"connect": 0.3, "body": 0.6 + late}}
        )  # fmt: skip
    writer.append({"ping": "pixel-keepalive", "requests": 1, "connections": 0})
    assert writer.path is not None
    with writer.path.open("ab") as f:
        f.write(b'{"id": "00000000000000ff", "tech": "aj')  # a line still being written
    tail = LedgerTail(tmp_path)
    tail.read()
    assert len(tail.events) == 10 and tail.first() == 1000.0
    probe = measure(400, 2, tail.between(1002.0, 1008.0), 6.0)
    assert probe.events == 6 and probe.losses == {"ajax": (6, 1)}  # t0 1002..1007; 1005 not written
    assert probe.p50 == pytest.approx(0.0055) and probe.p90 == pytest.approx(0.0075)
    with writer.path.open("ab") as f:
        f.write(b'ax", "written": true, "t0": 1003.5, "plan": {"a": 1.0}, "real": {"a": 1.5}}\n')
    tail.read()
    assert len(tail.events) == 11 and tail.events[-1][1] == pytest.approx(0.5)


def test_run_records_why_it_did_not_size(tmp_path: Path) -> None:
    said: list[str] = []
    options, sizing = size_run(RunOptions(users=300, processes=1, size=False), tmp_path, said.append)
    assert (options.users, options.processes, sizing) == (300, 1, None)
    assert said == ["load: 300 tabs in 1 process(es), as given (not sized)"]
    assert json.loads((tmp_path / "run.json").read_text())["sizing"] == {
        "skipped": "--users or --processes given"
    }
    url = RunOptions(size=True, target="http://127.0.0.1:9", received_from="nginx:/x.log")
    size_run(url, tmp_path, said.append)
    assert "not sized: a running target" in said[-1]
    assert size_run(RunOptions(), tmp_path, said.append) == (RunOptions(), None)  # sweep, targets: not asked


def test_a_sized_run_starts_with_the_heaviest_load_and_judges_its_first_seconds(tmp_path: Path) -> None:
    said: list[str] = []
    options, sizing = size_run(RunOptions(size=True, users=400, processes=2), tmp_path, said.append)
    assert sizing is not None and sizing.load == sizing.planned.loads[0]
    assert (options.users, options.processes) == sizing.load
    assert "the run starts with 400 tabs in" in said[0] and "keeps them if the p90 timing error" in said[0]
    assert not (tmp_path / "run.json").exists()  # the verdict is recorded when it comes


def write_first_seconds(directory: Path, late: float, seconds: float, start: float) -> None:
    """A run's sent ledger: 100 events a second from ``start`` for ``seconds``, each ``late`` seconds late."""
    writer = LedgerWriter(directory, "sent", name="box-1")
    for i in range(int(100 * seconds)):
        writer.append(
            {"id": f"{i:016x}", "tech": "ajax", "written": True, "t0": start + i / 100,
             "plan": {"body": 0.3}, "real": {"body": 0.3 + late}}
        )  # fmt: skip
    writer.close()


def run_sizing(tmp_path: Path, said: list[str], clock: list[float] | None = None) -> RunSizing:
    planned = Plan(Machine(2, 0.0), [(400, 2), (200, 2), (100, 2)], limit=0.03, target=TARGET)
    now = clock or [time.time()]
    return RunSizing(planned, tmp_path, said.append, clock=lambda: now[0])


def test_the_run_s_first_seconds_held_keep_the_load(tmp_path: Path) -> None:
    said: list[str] = []
    clock = [1000.0]
    sizing = run_sizing(tmp_path, said, clock)
    write_first_seconds(tmp_path / "sent", late=0.002, seconds=SETTLE + WINDOW, start=999.0)
    assert sizing.check() is None  # the window is not over: 1 s of the load so far
    clock[0] += SETTLE + WINDOW + TAIL
    held = sizing.check()
    assert held is not None and held.in_run and (held.users, held.processes) == (400, 2)
    assert held.record()["in_run"] is True and held.record()["probes"][0]["ok"] is True
    assert "in the run's first seconds" in held.reason
    assert said[-1].endswith("ok, in the run's first seconds: kept")
    assert sizing.check() is None  # judged once


def test_the_run_s_first_seconds_lagging_start_it_again(tmp_path: Path) -> None:
    said: list[str] = []
    sizing = run_sizing(tmp_path, said, [1030.0])
    write_first_seconds(tmp_path / "sent", late=0.040, seconds=SETTLE + WINDOW, start=1000.0)
    with pytest.raises(LoadTooHeavy) as raised:
        sizing.check()
    assert raised.value.probe.users == 400 and raised.value.probe.p90 == pytest.approx(0.040)
    assert said[-1].endswith("over 15 ms; the run starts again with fewer tabs")
    # the probes go on from the next load; the first one is not probed again, nor said again
    probed: list[tuple[int, int]] = []

    def probe(users: int, processes: int) -> Probe:
        probed.append((users, processes))
        return Probe(users, processes, 3.0, 900, 0.001, 0.002 if users <= 200 else 0.05, {})

    chosen = probe_loads(
        sizing.planned, RunOptions(), tmp_path / "sizing", said.append, probe, raised.value.probe
    )
    assert probed == [(200, 2), (300, 2)] and (chosen.users, chosen.processes) == (200, 2)
    assert [p.users for p in chosen.probes] == [400, 200, 300] and not chosen.in_run
    assert chosen.reason.startswith("200 tabs in 2 processes: the p90 timing error was 40 ms at 400")


def test_a_run_over_before_its_window_is_judged_on_what_it_fired(tmp_path: Path) -> None:
    said: list[str] = []
    sizing = run_sizing(tmp_path, said, [1002.0])
    write_first_seconds(tmp_path / "sent", late=0.001, seconds=2.0, start=1000.0)  # a 2 s run
    assert sizing.check() is None
    held = sizing.check(ended=True)
    assert held is not None and held.probes[0].events == 200 and held.probes[0].seconds == pytest.approx(1.99)
    with pytest.raises(RunError, match="fired no event"):
        run_sizing(tmp_path / "empty", said).check(ended=True)


def test_lossbench_run_sizes_and_guards_while_sweep_and_targets_hold_their_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lossbench.cli import _run_options, build_parser

    monkeypatch.delenv("LOSSBENCH_LAG_STOP", raising=False)
    parser = build_parser()

    def options(*argv: str) -> RunOptions:
        made = _run_options(parser.parse_args(list(argv)), argv[0])
        assert made is not None
        return made

    run = options("run")
    assert (run.size, run.users, run.processes, run.plugin.lag_stop) == (True, 400, 2, 20.0)
    given = options("run", "--users", "100", "--lag-stop", "0")
    assert (given.size, given.users, given.processes, given.plugin.lag_stop) == (False, 100, 2, 0.0)
    assert options("run", "--processes", "1").size is False
    for command in (("sweep", "--vary", "users=10,20"), ("targets",)):
        held = options(*command)
        assert (held.size, held.users, held.plugin.lag_stop) == (None, 400, 0.0)
    monkeypatch.setenv("LOSSBENCH_LAG_STOP", "5")
    assert options("run").plugin.lag_stop == 5.0
