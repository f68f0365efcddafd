"""``lossbench sweep`` without a load: every value checked before the first point runs (a bad one named in
one line), the options each point runs with, the findings of constructed departures, and the orchestration
(sweep.json after each point, an interrupted or failed sweep keeping its finished points) with the runs
replaced by the stored summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lossbench import cli
from lossbench import sweep as sweep_module
from lossbench.contract.summary import AnswerTimes, CollectorFigures, Summary, load_summary
from lossbench.contract.sweep import Departure, SweepDocument, SweepPoint, SweepTechnique, load_sweep
from lossbench.runner import RunError, RunOptions, RunResult
from lossbench.sweep import PARAMETERS, findings, plan_sweep, run_sweep

STORED = Path(__file__).parents[1] / "data" / "run-before" / "summary.before.json"


@pytest.fixture(scope="module")
def stored() -> Summary:
    return load_summary(STORED)


def base(tmp_path: Path, exit_model: str = "mix", **run: Any) -> RunOptions:
    """Run's options into ``tmp_path/s``, with ``run``'s fields and the exit model changed."""
    options = RunOptions(out=tmp_path, run_id="s", **run)
    return replace(options, plugin=replace(options.plugin, exit_model=exit_model))


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("vary", "message"),
    [
        ("users=10,ten,30", r"--vary users: bad value 'ten': not a whole number \(expected 1 or more\)"),
        ("users=10,0", r"--vary users: bad value '0': must be 1 or more"),
        ("users=10,20,10", r"--vary users: '10' is the same value as '10'"),
        ("profile=3G,5G", r"--vary profile: bad value '5G': unknown network profile '5G'; valid: FIOS"),
        ("profile=3G,3g", r"--vary profile: '3g' is the same value as '3G'"),
        ("exit-model=mix,bounce", r"--vary exit-model: bad value 'bounce': unknown exit model 'bounce'"),
        (
            "exit-model=mix;mix:speed=2",
            r"--vary exit-model: bad value 'mix:speed=2': bad parameter 'speed=2'",
        ),
        ("dwell-scale=10,-1", r"--vary dwell-scale: bad value '-1': must be more than 0"),
        ("dwell-scale=10,inf", r"--vary dwell-scale: bad value 'inf': must be more than 0"),
        ("outbound-share=0.2,1.5", r"--vary outbound-share: bad value '1.5': must be between 0 and 1"),
        ("outbound-share=x", r"--vary outbound-share: bad value 'x': not a number"),
        ("abort=unload,close", r"--vary abort: bad value 'close': choose from unload, drop"),
        ("service-workers=1,two", r"--vary service-workers: bad value 'two': not a whole number"),
        ("collector-processes=2,0", r"--vary collector-processes: bad value '0': must be 1 or more"),
        ("service-time=2ms,a b", r"--vary service-time: bad value 'a b': expected a --service-time spec"),
        (
            "rtt=10,20",
            r"--vary: unknown parameter 'rtt'; choose from users, profile, exit-model, dwell-scale",
        ),
        ("users", r"--vary 'users': expected PARAM=V1,V2,\.\.\., e\.g\. --vary users=100,200,400"),
        ("users=", r"--vary users: no values; e\.g\. --vary users=100,200,400"),
        ("users=10,,20", r"--vary users: an empty value in '10,,20'"),
    ],
)
def test_a_bad_value_is_named_in_one_line_before_anything_runs(
    tmp_path: Path, vary: str, message: str
) -> None:
    with pytest.raises(RunError, match=f"^{message}") as raised:
        plan_sweep(vary, base(tmp_path))
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "s").exists()


def test_what_a_parameter_cannot_do_is_said(tmp_path: Path) -> None:
    with pytest.raises(
        RunError, match=r"the exit model outbound has no scale: choose --exit-model dwell, mix"
    ):
        plan_sweep("dwell-scale=10,30", base(tmp_path, exit_model="outbound"))
    with pytest.raises(
        RunError, match=r"the exit model fixed:0\.35 has no outbound_prob: choose .*mix, none"
    ):
        plan_sweep("outbound-share=0.1", base(tmp_path, exit_model="fixed:0.35"))
    with pytest.raises(
        RunError, match=r"--vary service-workers sets the reference collector: .*--target ref"
    ):
        plan_sweep("service-workers=1,2", base(tmp_path, target="nginx"))
    with pytest.raises(RunError, match=r"unknown exit model 'bounce'"):  # the fixed options are run's
        plan_sweep("users=10,20", base(tmp_path, exit_model="bounce"))


def test_a_sweep_directory_must_be_new_or_empty(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    assert plan_sweep("users=10,20", base(tmp_path)).folder == tmp_path / "s"
    (tmp_path / "s" / "old.txt").write_text("")
    with pytest.raises(RunError, match=r"s exists and is not empty; choose another --run-id or remove it"):
        plan_sweep("users=10,20", base(tmp_path))


def test_the_cli_says_a_bad_value_in_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["sweep", "--vary", "users=10,ten", "--out", str(tmp_path), "--duration", "3"])
    err = capsys.readouterr().err
    assert status == 2
    assert err == "lossbench sweep: --vary users: bad value 'ten': not a whole number (expected 1 or more)\n"


def test_sweep_help_explains_every_parameter_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    text = capsys.readouterr().out
    for parameter in PARAMETERS.values():
        assert f"  {parameter.name} " in text and f"e.g. --vary {parameter.example}" in text
    assert "--exit-model mix, --vary dwell-scale=10,30 runs mix:scale=10 and mix:scale=30" in " ".join(
        text.split()
    )


# ------------------------------------------------------------------------------------------ the plan


def test_each_point_changes_one_option_and_shares_the_others(tmp_path: Path) -> None:
    plan = plan_sweep("users=10,20,30", base(tmp_path, duration=3.0))
    assert [p.dir_name for p in plan.points] == ["1-users-10", "2-users-20", "3-users-30"]
    assert [(p.options.users, p.options.spawn_rate) for p in plan.points] == [
        (10, 10.0),
        (20, 20.0),
        (30, 30.0),
    ]
    assert {p.options.plugin.seed for p in plan.points} == {1}
    assert plan.points[0].settings == {"users": 10, "spawn_rate": 10.0}
    assert "users" not in plan.fixed and "spawn_rate" not in plan.fixed
    assert plan.fixed["duration"] == 3.0 and plan.fixed["techniques"] == [] and plan.fixed["seed"] == 1
    json.dumps(plan.fixed)  # JSON as it is
    kept = plan_sweep("users=10,20", base(tmp_path), spawn_all=False)
    assert kept.points[0].settings == {"users": 10} and kept.fixed["spawn_rate"] == 100.0


def test_exit_model_parameters_tune_the_model_given(tmp_path: Path) -> None:
    plan = plan_sweep("dwell-scale=10,60", base(tmp_path, exit_model="MIX:outbound_prob=0.6,scale=5"))
    assert [p.value for p in plan.points] == [10.0, 60.0]
    assert [p.options.plugin.exit_model for p in plan.points] == [
        "mix:outbound_prob=0.6,scale=10",
        "mix:outbound_prob=0.6,scale=60",
    ]
    plan = plan_sweep("outbound-share=0,1", base(tmp_path))
    assert [p.settings for p in plan.points] == [
        {"exit_model": "mix:outbound_prob=0"},
        {"exit_model": "mix:outbound_prob=1"},
    ]
    whole = plan_sweep("exit-model=mix;fixed:0.35@5;mix:scale=60,outbound_prob=0.2", base(tmp_path))
    assert whole.values == ["mix", "fixed:0.35@5", "mix:scale=60,outbound_prob=0.2"]
    assert whole.points[2].dir_name == "3-exit-model-mix_scale=60_outbound_prob=0.2"
    assert plan_sweep("profile=cable,3g", base(tmp_path)).values == ["Cable", "3G"]


# --------------------------------------------------------------------------------------------- findings


def figures(
    loss: float, ci: tuple[float, float], departure: Departure | None, predicted: float | None = 0.05
) -> SweepTechnique:
    band = None if predicted is None else (predicted - 0.005, predicted + 0.005)
    return SweepTechnique(
        sent=1000, lost=int(loss * 1000), loss=loss, ci95=ci, predicted_loss=predicted, predicted_ci95=band,
        departure=departure,
    )  # fmt: skip


WITHIN = figures(0.05, (0.04, 0.06), "within")
ABOVE = figures(0.2, (0.17, 0.23), "above")
BELOW = figures(0.01, (0.005, 0.02), "below")


def collector(p99: float | None, utilisation: float | None) -> CollectorFigures:
    return CollectorFigures(
        processes=1,
        service_time="2ms",
        service_workers=1,
        utilisation=utilisation,
        answer_seconds={"event": AnswerTimes(count=100, p50=0.002, p90=None, p99=p99)},
    )


def swept(
    rows: list[tuple[int | str, float, dict[str, SweepTechnique], CollectorFigures | None]],
    parameter: str = "users",
    missing: list[int | str] | None = None,
) -> SweepDocument:
    points = [
        SweepPoint(
            value=value, run_dir=f"p{value}", options={}, sent=int(rate * 10), load_seconds=10.0,
            events_per_second=rate, techniques=techniques, collector=c, warnings=[],
        )
        for value, rate, techniques, c in rows
    ]  # fmt: skip
    return SweepDocument(
        parameter=parameter,
        option=f"--{parameter}",
        scale="categorical" if parameter == "profile" else "numeric",
        values=[p.value for p in points] + list(missing or []),
        fixed={},
        points=points,
        missing=list(missing or []),
        state="complete" if not missing else "interrupted",
        stopped=None if not missing else "interrupted during point 3 of 3 (users=80)",
        findings=[],
    )


def test_findings_name_where_a_technique_leaves_its_prediction() -> None:
    doc = swept(
        [  # run out of order: the findings read the points by value
            (40, 400.0, {"ajax": ABOVE, "pixel": WITHIN, "pixel-keepalive": WITHIN}, collector(0.18, 0.97)),
            (10, 100.0, {"ajax": WITHIN, "pixel": WITHIN, "pixel-keepalive": WITHIN, "beacon": BELOW}, None),
            (20, 200.0, {"ajax": WITHIN, "pixel": ABOVE, "pixel-keepalive": WITHIN}, collector(0.004, None)),
            (80, 800.0, {"ajax": ABOVE, "pixel": WITHIN, "pixel-keepalive": WITHIN}, collector(0.6, 1.0)),
        ]
    )
    found = {(f.technique, f.kind): f for f in findings(doc)}
    rises = found[("ajax", "rises_above")]
    assert rises.at == 40
    assert rises.text == (
        "ajax rises above the model from 400 events/s (users=40): the collector's p99 answer time is 180 ms "
        "(utilisation 97%)"
    )
    assert found[("pixel", "above")].text == (
        "pixel is above the model at 200 events/s (users=20), and back within it after: the collector's p99 "
        "answer time is 4 ms"
    )
    assert (
        found[("pixel-keepalive", "within")].text
        == "pixel-keepalive stays within its prediction at every point"
    )
    assert found[("beacon", "below")].text == "beacon is below the model at 100 events/s (users=10)"
    assert [f.technique for f in findings(doc)] == ["ajax", "pixel", "pixel-keepalive", "beacon"]


def test_findings_without_the_collector_figures_or_a_prediction_and_with_points_missing() -> None:
    no_model = figures(0.1, (0.08, 0.12), None, predicted=None)
    doc = swept(
        [
            (10, 100.0, {"ajax": ABOVE, "pixel": no_model}, None),
            (20, 110.0, {"ajax": WITHIN, "pixel": no_model}, None),
            (40, 120.0, {"ajax": ABOVE, "pixel": no_model}, None),
        ],
        missing=[80],
    )
    texts = [f.text for f in findings(doc)]
    assert texts == [
        "ajax rises above the model from 120 events/s (users=40) (above it at 100 events/s (users=10) too)",
        "pixel has no prediction at any point to compare with (run.json lacks the model)",
        "1 of 4 points have no result (users=80): interrupted during point 3 of 3 (users=80)",
    ]


def test_a_categorical_sweep_lists_its_points_and_says_no_from() -> None:
    doc = swept(
        [
            ("Cable", 100.0, {"ajax": WITHIN, "pixel": WITHIN}, None),
            ("2G", 100.0, {"ajax": ABOVE, "pixel": WITHIN}, None),
            ("3G", 100.0, {"ajax": ABOVE, "pixel": WITHIN}, None),
        ],
        parameter="profile",
    )
    assert [f.text for f in findings(doc)] == [
        "ajax is above the model at profile=2G, profile=3G",
        "pixel stays within its prediction at every point",
    ]


# ------------------------------------------------------------------------------------ the orchestration


def fake_runs(
    stored: Summary, stop_at: int | None = None, error: BaseException | None = None
) -> tuple[list[RunOptions], Callable[..., RunResult]]:
    """``run_measured`` as if each point ran and gave the stored summary; ``error`` raised at point
    ``stop_at``. Before the first point, sweep.json already says that every point is to run."""
    calls: list[RunOptions] = []

    def run_measured(options: RunOptions, say: Callable[[str], None]) -> RunResult:
        calls.append(options)
        if len(calls) == 1:
            early = load_sweep(options.out / "sweep.json")
            assert early.state == "running" and early.points == [] and early.missing == early.values
        if len(calls) == stop_at:
            assert error is not None
            raise error
        run_dir = options.out / options.run_id
        run_dir.mkdir(parents=True)
        say(f"lossbench run {options.run_id}")
        return RunResult(run_dir, stored, 6.0, None)

    return calls, run_measured


def test_a_sweep_runs_each_point_into_its_directory_and_writes_its_report(
    tmp_path: Path, stored: Summary, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls, fake = fake_runs(stored)
    monkeypatch.setattr(sweep_module, "run_measured", fake)
    said: list[str] = []
    result = run_sweep(plan_sweep("users=10,20,30", base(tmp_path)), say=said.append)
    folder = tmp_path / "s"
    assert result.folder == folder and len(result.summaries) == 3
    assert [(c.out, c.run_id, c.users) for c in calls] == [
        (folder, "1-users-10", 10),
        (folder, "2-users-20", 20),
        (folder, "3-users-30", 30),
    ]
    document = load_sweep(folder / "sweep.json")
    assert document == result.document and document.state == "complete" and document.missing == []
    sent = sum(t.sent for t in stored.techniques.values())
    assert document.points[1].run_dir == "2-users-20"
    assert document.points[1].events_per_second == pytest.approx(sent / stored.run["duration"])
    assert document.points[0].techniques["ajax"].departure == "within"
    assert any(line.startswith("== point 2 of 3: users=20 ==") for line in said)
    assert any(
        line.startswith("point 2 of 3, users=20: 66 events/s; ajax 10.8% (model 7.9%)") for line in said
    )
    assert "pixel-keepalive stays within its prediction at every point" in "\n".join(said)
    assert said[-1] == f"report: {folder / 'sweep.html'}"
    assert (folder / "sweep.md").is_file() and (folder / "charts" / "sweep.png").is_file()
    assert not list(folder.glob(".sweep.json.*"))


@pytest.mark.parametrize(
    ("error", "state", "stopped"),
    [
        (KeyboardInterrupt(), "interrupted", "interrupted during point 2 of 3 (users=20)"),
        (
            RunError("Locust exited with 3\nits log"),
            "failed",
            "point 2 of 3 (users=20) failed: Locust exited with 3",
        ),
    ],
)
def test_a_stopped_sweep_keeps_its_finished_points_and_says_which_are_missing(
    tmp_path: Path,
    stored: Summary,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    state: str,
    stopped: str,
) -> None:
    _, fake = fake_runs(stored, stop_at=2, error=error)
    monkeypatch.setattr(sweep_module, "run_measured", fake)
    with pytest.raises(type(error)):
        run_sweep(plan_sweep("users=10,20,30", base(tmp_path)), say=lambda _: None)
    folder = tmp_path / "s"
    document = load_sweep(folder / "sweep.json")
    assert (document.state, document.stopped) == (state, stopped)
    assert [p.value for p in document.points] == [10] and document.missing == [20, 30]
    assert document.findings[-1].text == f"2 of 3 points have no result (users=20, users=30): {stopped}"
    page = (folder / "sweep.html").read_text()
    assert f"The sweep is {state}: {stopped}. Points missing: 20, 30." in page


def test_report_renders_a_sweep_directory(
    tmp_path: Path, stored: Summary, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, fake = fake_runs(stored)
    monkeypatch.setattr(sweep_module, "run_measured", fake)
    run_sweep(plan_sweep("abort=unload,drop", base(tmp_path)), say=lambda _: None)
    folder = tmp_path / "s"
    (folder / "sweep.html").unlink()
    assert cli.main(["report", str(folder)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"report: {folder / 'sweep.html'}"
    page = (folder / "sweep.html").read_text()
    assert '<a href="1-abort-unload/report.html">' in page and '<a href="2-abort-drop/report.html">' in page
    assert cli.main(["report", str(folder), "--recompare"]) == 2
    assert "is a sweep: --recompare works on each point's run directory" in capsys.readouterr().err


def test_a_finding_at_a_point_where_the_generator_lagged_says_so_first() -> None:
    doc = swept(
        [
            ("Cable", 3800.0, {"ajax": ABOVE}, collector(0.0019, None)),
            ("DSL", 3400.0, {"ajax": WITHIN}, None),
        ],
        parameter="profile",
    )
    lagging = msgspec.structs.replace(doc.points[0], timing_p90=0.026, timing_flagged=True)
    doc = msgspec.structs.replace(doc, points=[lagging, doc.points[1]])
    [above] = [f for f in findings(doc) if f.kind == "above"]
    assert above.text == (
        "ajax is above the model at profile=Cable: the load generator lagged there (p90 timing error 26 ms); "
        "the collector's p99 answer time is 1.9 ms"
    )
