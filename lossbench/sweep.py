"""``lossbench sweep``: one measured run per value of one parameter, into one sweep directory.

Every point is ``runner.run_measured`` with the options of ``lossbench run``, one of them changed
(``PARAMETERS``): the same seed, techniques and everything else, so the points differ in that parameter
only. Every value is checked before the first point runs. Each point gets a run directory of its own, which
``lossbench compare`` and ``lossbench report`` read as any run's; ``sweep.json`` (a ``SweepDocument``,
``lossbench.contract.sweep``) is rewritten after each point, so a sweep stopped half way still holds its
finished points and says which are missing. The findings say, per technique, where the measured loss
leaves the model's prediction and what the collector reported there.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from lossbench.contract.latency import ANSWER_EVENT
from lossbench.contract.summary import Summary
from lossbench.contract.sweep import (
    COLLECTOR_PARAMETERS,
    Finding,
    Scale,
    State,
    SweepDocument,
    SweepPoint,
    SweepTechnique,
    Value,
    departure,
    ordered_points,
    sweep_json,
    technique_names,
    value_text,
    varies_load,
    where,
)
from lossbench.contract.techniques import ABORTS
from lossbench.loadgen.locust.options import OPTIONS
from lossbench.model.exits import EXIT_MODELS, get_exit_model
from lossbench.model.profiles import get_profile
from lossbench.runner import RunError, RunOptions, RunResult, Say, run_measured, say_result, validate

Settings = dict[str, Any]
"""Fields of ``RunOptions`` or of its ``PluginOptions`` a value sets, by name."""


# ------------------------------------------------------------------------------------------ parameters


def _whole(text: str, minimum: int = 1) -> int:
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"not a whole number (expected {minimum} or more)") from None
    if number < minimum:
        raise ValueError(f"must be {minimum} or more")
    return number


def _number(text: str, low: float, high: float = math.inf, *, low_open: bool = False) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(number) or number < low or number > high or (low_open and number == low):
        if high < math.inf:
            raise ValueError(f"must be between {low:g} and {high:g}")
        raise ValueError(f"must be more than {low:g}" if low_open else f"must be {low:g} or more")
    return number


def _tuned(base: str, field: str, value: float) -> str:
    """The exit model ``base`` with ``field`` set to ``value``, as a spec ``get_exit_model`` reads (the
    base's other parameters kept): ``mix`` and scale 60 give ``mix:scale=60``."""
    model = get_exit_model(base)  # the base itself is valid: run's validation said so
    if field not in {f.name for f in dataclasses.fields(model)}:
        having = ", ".join(n for n, m in EXIT_MODELS.items() if hasattr(m, field))
        raise ValueError(f"the exit model {base} has no {field}: choose --exit-model {having}")
    name, _, params = base.strip().partition(":")
    kept = [p.strip() for p in params.split(",") if p.strip() and p.partition("=")[0].strip() != field]
    return f"{name.strip().lower()}:{','.join([*kept, f'{field}={value:.12g}'])}"


def _users(text: str, base: RunOptions) -> tuple[Value, Settings]:
    users = _whole(text)
    return users, {"users": users}


def _profile(text: str, base: RunOptions) -> tuple[Value, Settings]:
    name = get_profile(text).name
    return name, {"network_profile": name}


def _exit_model(text: str, base: RunOptions) -> tuple[Value, Settings]:
    get_exit_model(text)
    return text.strip(), {"exit_model": text.strip()}


Parse = Callable[[str, RunOptions], tuple[Value, Settings]]
"""Reads one value's text (given run's options): the value and the options it sets; ValueError saying why
the text is not a value."""


def _exit_field(field: str, low: float, high: float, low_open: bool) -> Parse:
    def parse(text: str, base: RunOptions) -> tuple[Value, Settings]:
        spec = _tuned(base.plugin.exit_model, field, _number(text, low, high, low_open=low_open))
        model = get_exit_model(spec)  # validates the tuned model as a whole
        return float(getattr(model, field)), {"exit_model": spec}

    return parse


def _abort(text: str, base: RunOptions) -> tuple[Value, Settings]:
    if text not in ABORTS:
        raise ValueError(f"choose from {', '.join(ABORTS)}")
    return text, {"abort": text}


def _service_time(text: str, base: RunOptions) -> tuple[Value, Settings]:
    # The spec's grammar is the collector's; it reads it when the point's collector starts.
    if not text or any(c.isspace() for c in text):
        raise ValueError("expected a --service-time spec without spaces")
    return text, {"service_time": text}


def _service_workers(text: str, base: RunOptions) -> tuple[Value, Settings]:
    workers = _whole(text)
    return workers, {"service_workers": workers}


def _collector_processes(text: str, base: RunOptions) -> tuple[Value, Settings]:
    processes = _whole(text)
    return processes, {"collector_processes": processes}


@dataclass(frozen=True)
class Parameter:
    """What ``--vary NAME=...`` changes, and how one of its values is read."""

    name: str
    option: str  # the run option it stands for
    scale: Scale
    parse: Parse
    help: str
    example: str

    @property
    def reference_only(self) -> bool:
        """A setting of the reference collector: no sense against another target."""
        return self.name in COLLECTOR_PARAMETERS


PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in (
        Parameter("users", "--users", "numeric", _users, "browser tabs (the load)", "users=100,200,400"),
        Parameter(
            "profile",
            "--profile",
            "categorical",
            _profile,
            "network profile (lossbench models lists them)",
            "profile=Cable,3G,2G",
        ),
        Parameter(
            "exit-model",
            "--exit-model",
            "categorical",
            _exit_model,
            "whole exit model specs; separate them with ';' when one holds a comma",
            "'exit-model=mix;dwell;mix:scale=60,outbound_prob=0.2'",
        ),
        Parameter(
            "dwell-scale",
            "--exit-model",
            "numeric",
            _exit_field("scale", 0.0, math.inf, True),
            "the exit model's Weibull dwell scale in seconds (mix, dwell, none)",
            "dwell-scale=10,30,90",
        ),
        Parameter(
            "outbound-share",
            "--exit-model",
            "numeric",
            _exit_field("outbound_prob", 0.0, 1.0, False),
            "the exit model's share of visits ending in an outbound click (mix, none)",
            "outbound-share=0,0.4,0.8",
        ),
        Parameter(
            "abort", "--abort", "categorical", _abort, "abort kind: unload or drop", "abort=unload,drop"
        ),
        Parameter(
            "service-time",
            "--service-time",
            "categorical",
            _service_time,
            "the reference collector's service time per answer (its --service-time spec, read by the "
            "collector when the point starts)",
            "'service-time=1ms;2ms;lognormal:2ms,0.5'",
        ),
        Parameter(
            "service-workers",
            "--service-workers",
            "numeric",
            _service_workers,
            "the reference collector's workers serving that time",
            "service-workers=1,2,4",
        ),
        Parameter(
            "collector-processes",
            "--collector-processes",
            "numeric",
            _collector_processes,
            "reference collector processes sharing the port",
            "collector-processes=1,2",
        ),
    )
}
"""The parameters ``--vary`` takes, by name."""


# -------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Point:
    """One point to run: its value, the options it sets, its run options and its directory's name."""

    index: int  # from 1
    value: Value
    settings: Settings
    options: RunOptions
    dir_name: str


@dataclass(frozen=True)
class Plan:
    """A sweep checked in full, ready to run: every point's options are valid run options."""

    parameter: Parameter
    base: RunOptions
    points: tuple[Point, ...]
    folder: Path
    fixed: dict[str, Any]

    @property
    def values(self) -> list[Value]:
        return [p.value for p in self.points]


def split_vary(vary: str) -> tuple[Parameter, list[str]]:
    """``PARAM=V1,V2,...`` as the parameter and the values' texts (split on ';' when the list has one)."""
    name, eq, listed = vary.partition("=")
    key = name.strip().lower().replace("_", "-")
    if not eq or not key:
        raise RunError(f"--vary {vary!r}: expected PARAM=V1,V2,..., e.g. --vary users=100,200,400")
    if key not in PARAMETERS:
        raise RunError(f"--vary: unknown parameter {name.strip()!r}; choose from {', '.join(PARAMETERS)}")
    texts = [t.strip() for t in listed.split(";" if ";" in listed else ",")]
    if not any(texts):
        raise RunError(f"--vary {key}: no values; e.g. --vary {PARAMETERS[key].example.strip(chr(39))}")
    if "" in texts:
        raise RunError(f"--vary {key}: an empty value in {listed!r}")
    return PARAMETERS[key], texts


def apply(base: RunOptions, settings: Settings) -> RunOptions:
    """``base`` with the settings of a value: fields of ``RunOptions`` or of its ``PluginOptions``."""
    run_fields = {f.name for f in dataclasses.fields(RunOptions)}
    plugin = {k: v for k, v in settings.items() if k not in run_fields}
    run = {k: v for k, v in settings.items() if k in run_fields}
    return dataclasses.replace(base, **run, plugin=dataclasses.replace(base.plugin, **plugin))


def plan_sweep(vary: str, base: RunOptions, *, spawn_all: bool = True) -> Plan:
    """Check every value of ``--vary`` (and the run options of its point) before anything runs; RunError
    with a one-line message naming the first bad value. ``spawn_all``: start each point's users at once
    (run's default, no --spawn-rate given)."""
    parameter, texts = split_vary(vary)
    validate(base)
    if parameter.reference_only and base.target != "reference":
        raise RunError(f"--vary {parameter.name} sets the reference collector: it needs --target reference")
    points: list[Point] = []
    seen: dict[Value, str] = {}
    width = len(str(len(texts)))
    for index, text in enumerate(texts, start=1):
        try:
            value, settings = parameter.parse(text, base)
        except ValueError as exc:
            raise RunError(f"--vary {parameter.name}: bad value {text!r}: {exc}") from None
        if value in seen:
            raise RunError(f"--vary {parameter.name}: {text!r} is the same value as {seen[value]!r}")
        seen[value] = text
        if "users" in settings and spawn_all:
            settings["spawn_rate"] = float(settings["users"])
        options = apply(base, settings)
        try:
            validate(options)
        except RunError as exc:
            raise RunError(f"--vary {parameter.name}: bad value {text!r}: {exc}") from None
        name = f"{index:0{width}d}-{parameter.name}-{_slug(value_text(value))}"
        points.append(Point(index, value, settings, options, name))
    folder = base.out / (base.run_id or datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise RunError(f"{folder} exists and is not empty; choose another --run-id or remove it")
    changed = {k for p in points for k in p.settings}
    return Plan(parameter, base, tuple(points), folder, fixed_options(base, changed))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=@+-]+", "_", text).strip("_")[:60] or "value"


def fixed_options(base: RunOptions, changed: set[str]) -> dict[str, Any]:
    """The run options every point shares (those the sweep changes left out), named as their fields."""
    run = {
        f.name: getattr(base, f.name)
        for f in dataclasses.fields(RunOptions)
        if f.name not in ("out", "run_id", "plugin", "live")  # live: how progress shows, not the run
    }
    plugin = {o.name: getattr(base.plugin, o.name) for o in OPTIONS if not o.locust_only}
    plugin["techniques"] = list(base.plugin.chosen_techniques())  # [] is every technique of the scenario
    fixed = {**run, **plugin}
    fixed["scenario"] = None if base.scenario is None else str(base.scenario)
    return {k: v for k, v in fixed.items() if k not in changed}


# ----------------------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class SweepResult:
    folder: Path
    document: SweepDocument
    summaries: list[Summary]  # the finished points', in the order run


def run_sweep(plan: Plan, say: Say = print) -> SweepResult:
    """Run every point of ``plan`` into ``plan.folder``, rewriting ``sweep.json`` after each; then render
    the sweep's report. A point that fails, or Ctrl-C, stops the sweep: ``sweep.json`` (and the report,
    when a point finished) then say which points are missing and why, and the exception goes on."""
    from lossbench.report.sweep import point_line, render_sweep_report, sweep_text

    folder, parameter, n = plan.folder, plan.parameter, len(plan.points)
    folder.mkdir(parents=True, exist_ok=True)
    values = ", ".join(value_text(v) for v in plan.values)
    say(f"lossbench sweep {folder.name}: {parameter.name} = {values} ({n} points) into {folder}")
    finished: list[tuple[Point, RunResult]] = []
    write_document(plan, finished, "running", None)
    point = plan.points[0]
    try:
        for point in plan.points:
            say(f"== point {point.index} of {n}: {parameter.name}={value_text(point.value)} ==")
            options = dataclasses.replace(point.options, out=folder, run_id=point.dir_name)
            finished.append((point, run_measured(options, say)))
            document = write_document(plan, finished, "complete" if point.index == n else "running", None)
            say(point_line(document, document.points[-1]))
    except BaseException as exc:
        at = f"point {point.index} of {n} ({parameter.name}={value_text(point.value)})"
        state: State = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        stopped = f"interrupted during {at}" if state == "interrupted" else f"{at} failed: {said}"
        document = write_document(plan, finished, state, stopped)
        if finished:
            try:
                render_sweep_report(folder, document)
            except Exception as render_error:  # the sweep's own failure is the one to report
                say(f"the report of the finished points could not be rendered: {render_error}")
        raise
    paths = render_sweep_report(folder, document)
    say_result(say, sweep_text(document), paths.html)
    return SweepResult(folder, document, [result.summary for _, result in finished])


def write_document(
    plan: Plan, finished: Sequence[tuple[Point, RunResult]], state: State, stopped: str | None
) -> SweepDocument:
    """Build the document of the points finished so far and write it as ``sweep.json`` (replacing the
    previous one in one rename: a reader never sees half a file)."""
    document = sweep_document(plan, finished, state, stopped)
    path = plan.folder / "sweep.json"
    partial = path.with_name(f".sweep.json.{os.getpid()}")
    partial.write_text(sweep_json(document), encoding="utf-8")
    partial.replace(path)
    return document


def sweep_document(
    plan: Plan, finished: Sequence[tuple[Point, RunResult]], state: State, stopped: str | None
) -> SweepDocument:
    """The document of ``plan`` with the finished points, their findings included."""
    points = [sweep_point(point, result, plan.folder) for point, result in finished]
    done = {point.value for point, _ in finished}
    document = SweepDocument(
        parameter=plan.parameter.name,
        option=plan.parameter.option,
        scale=plan.parameter.scale,
        values=plan.values,
        fixed=plan.fixed,
        points=points,
        missing=[v for v in plan.values if v not in done],
        state=state,
        stopped=stopped,
        findings=[],
    )
    return msgspec.structs.replace(document, findings=findings(document))


def sweep_point(point: Point, result: RunResult, folder: Path) -> SweepPoint:
    """A finished point, from its run's summary and the seconds its users ran."""
    summary = result.summary
    techniques = {
        name: SweepTechnique(
            sent=t.sent,
            lost=t.lost,
            loss=t.loss,
            ci95=t.ci95,
            predicted_loss=t.predicted_loss,
            predicted_ci95=t.predicted_ci95,
            departure=departure(t),
        )
        for name, t in summary.techniques.items()
    }
    sent = sum(t.sent for t in summary.techniques.values())
    seconds = result.load_duration()
    return SweepPoint(
        value=point.value,
        run_dir=os.path.relpath(result.run_dir, folder),
        options=point.settings,
        sent=sent,
        load_seconds=seconds,
        events_per_second=sent / seconds if seconds > 0 else 0.0,
        techniques=techniques,
        collector=summary.collector,
        warnings=summary.warnings,
        timing_p90=summary.timing.p90,
        timing_flagged=summary.timing.flagged,
    )


# ------------------------------------------------------------------------------------------- findings


def _ms(seconds: float) -> str:
    ms = 1000 * seconds
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.2g} ms"


def collector_clause(point: SweepPoint) -> str:
    """What the collector reported at a point: its p99 answer time to events and its utilisation, as far
    as the summary has them; "" when it has neither."""
    lagged = ""
    if point.timing_flagged and point.timing_p90 is not None:  # the likeliest cause comes first
        lagged = f"the load generator lagged there (p90 timing error {_ms(point.timing_p90)})"
    collector = point.collector
    if collector is None:
        return lagged
    answers = collector.answer_seconds.get(ANSWER_EVENT)
    p99 = None if answers is None else answers.p99
    utilisation = collector.utilisation
    said = ""
    if p99 is not None:
        said = f"the collector's p99 answer time is {_ms(p99)}"
        said = said if utilisation is None else f"{said} (utilisation {100 * utilisation:.0f}%)"
    elif utilisation is not None:
        said = f"the collector's utilisation is {100 * utilisation:.0f}%"
    return "; ".join(part for part in (lagged, said) if part)


def _listed(document: SweepDocument, points: Sequence[SweepPoint], load: bool) -> str:
    return ", ".join(where(document, p, load) for p in points)


def findings(document: SweepDocument) -> list[Finding]:
    """Per technique, where its measured loss leaves the model's prediction beyond both intervals: from
    which point on it stays above (a numeric parameter), at which points it is above or below, or that it
    stays within at every point; then the points missing. Each with the collector's figures where known."""
    points, load = ordered_points(document), varies_load(document)
    out: list[Finding] = []
    for name in technique_names(document):
        rows = [(p, p.techniques[name]) for p in points if name in p.techniques and p.techniques[name].sent]
        judged = [(p, t.departure) for p, t in rows if t.departure is not None]
        if not judged:
            text = f"{name} has no prediction at any point to compare with (run.json lacks the model)"
            out.append(Finding(kind="no_prediction", technique=name, at=None, text=text))
            continue
        above = [p for p, d in judged if d == "above"]
        below = [p for p, d in judged if d == "below"]
        streak = len(judged)
        while streak > 0 and judged[streak - 1][1] == "above":
            streak -= 1
        if document.scale == "numeric" and streak < len(judged):
            start = judged[streak][0]
            text = (
                f"{name} is above the model at every point"
                if streak == 0
                else f"{name} rises above the model from {where(document, start, load)}"
            )
            if clause := collector_clause(start):
                text += f": {clause}" + (" at the first" if streak == 0 else "")
            if earlier := [p for p, _ in judged[:streak] if p in above]:
                text += f" (above it at {_listed(document, earlier, load)} too)"
            out.append(Finding(kind="rises_above", technique=name, at=start.value, text=text))
        elif above:
            text = f"{name} is above the model at {_listed(document, above, load)}"
            if document.scale == "numeric":
                last = max(i for i, (_, d) in enumerate(judged) if d == "above")
                after = {d for _, d in judged[last + 1 :]}
                text += ", and back within it after" if after == {"within"} else ", and not above it after"
            if clause := collector_clause(above[0]):
                at = ":" if len(above) == 1 else f"; at {where(document, above[0], load)}"
                text += f"{at} {clause}"
            out.append(Finding(kind="above", technique=name, at=above[0].value, text=text))
        if below:
            text = f"{name} is below the model at {_listed(document, below, load)}"
            out.append(Finding(kind="below", technique=name, at=below[0].value, text=text))
        if not above and not below:
            text = f"{name} stays within its prediction at every point"
            if len(judged) < len(rows):
                text += f" with a prediction ({len(judged)} of {len(rows)})"
            out.append(Finding(kind="within", technique=name, at=None, text=text))
    if document.missing:
        names = ", ".join(f"{document.parameter}={value_text(v)}" for v in document.missing)
        why = (
            document.stopped
            if document.stopped
            else "still to run when this was written (or the sweep was killed)"
        )
        text = f"{len(document.missing)} of {len(document.values)} points have no result ({names}): {why}"
        out.append(Finding(kind="missing", technique=None, at=None, text=text))
    return out
