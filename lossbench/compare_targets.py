"""``lossbench targets``: the same load and the same draws against each target in turn, side by side.

Each target gets a run of its own (``runner.run_measured``: same seed, techniques, profile, exit model,
users and duration, so the visits and exit times drawn are the same), in ``<dir>/<target>/``; the runs'
summaries and the targets' CPU time become one ``TargetsDocument`` (``targets.json``), which the table,
the chart and the page render from. The comparison that matters is collector-side loss: events the
client wrote in full that the target did not log, which the reference collector never loses by
construction, so any a target shows is its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from lossbench.analysis.stats import collector_loss_text
from lossbench.contract.summary import Summary
from lossbench.contract.targets import (
    TargetComparison,
    TargetResult,
    TargetsDocument,
    TargetTechnique,
    targets_json,
)
from lossbench.runner import RunError, RunOptions, RunResult, Say, run_measured, say_result, validate
from lossbench.stats import ALPHA, ratio, two_proportion_test, wilson_interval
from lossbench.targets import KINDS

DEFAULT_TARGETS: tuple[str, ...] = KINDS
"""reference, nginx, aiohttp: the reference first, as the others are compared with it."""


def run_targets(options: RunOptions, targets: Sequence[str] = DEFAULT_TARGETS, say: Say = print) -> Path:
    """Run ``options`` against each target into ``<out>/<run-id>/<target>/``, write ``targets.json`` and
    its report there; returns that directory. The first target is the reference of the comparisons."""
    if not targets:
        raise RunError("no target to run: give --targets, e.g. reference,nginx,aiohttp")
    for kind in targets:
        validate(dataclasses.replace(options, target=kind))
    if len(set(targets)) != len(targets):
        raise RunError(f"--targets names a target twice: {','.join(targets)}")
    folder = options.out / (options.run_id or datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
    if (folder / "targets.json").exists():
        raise RunError(f"{folder} already holds a targets comparison; choose another --run-id or remove it")
    results: dict[str, RunResult] = {}
    for kind in targets:
        say(f"== target {kind} ==")
        results[kind] = run_measured(dataclasses.replace(options, out=folder, run_id=kind, target=kind), say)
    document = targets_document(results, folder)
    (folder / "targets.json").write_text(targets_json(document), encoding="utf-8")
    from lossbench.report.targets import render_targets_report, targets_text

    paths = render_targets_report(folder, document)
    say_result(say, targets_text(document), paths.html)
    return folder


def targets_document(results: dict[str, RunResult], folder: Path) -> TargetsDocument:
    """The document of finished runs, the first one the reference."""
    entries = [_result(kind, r, folder) for kind, r in results.items()]
    reference = entries[0]
    comparisons = [c for entry in entries[1:] for c in _comparisons(entry, reference)]
    first = next(iter(results.values())).summary.run
    load = {
        k: first.get(k) for k in ("seed", "techniques", "profile", "exit_model", "abort", "users", "duration")
    }
    warnings = [
        f"{entry.target}: {kind} differs from {reference.target}'s: the runs did not get the same load"
        for entry, r in zip(entries[1:], list(results.values())[1:], strict=True)
        for kind in load
        if r.summary.run.get(kind) != load[kind]
    ]
    return TargetsDocument(
        load=load, reference=reference.target, targets=entries, comparisons=comparisons, warnings=warnings
    )


def _technique(figures: Summary, name: str) -> TargetTechnique:
    t = figures.techniques[name]
    written = t.cut_by_stage.get("done", 0)
    return TargetTechnique(
        sent=t.sent,
        lost=t.lost,
        loss=t.loss,
        ci95=t.ci95,
        written=written,
        written_lost=t.written_lost,
        collector_loss=t.written_lost / written if written else 0.0,
        collector_ci95=wilson_interval(t.written_lost, written),
    )


def _result(kind: str, result: RunResult, folder: Path) -> TargetResult:
    summary = result.summary
    techniques = {name: _technique(summary, name) for name in summary.techniques}
    sent = sum(t.sent for t in techniques.values())
    received = sum(t.received for t in summary.techniques.values())
    written = sum(t.written for t in techniques.values())
    written_lost = sum(t.written_lost for t in techniques.values())
    cpu = result.cpu_seconds or 0.0
    return TargetResult(
        target=kind,
        run_dir=str(result.run_dir.relative_to(folder)),
        received_from=summary.received_from,
        sent=sent,
        received=received,
        written=written,
        written_lost=written_lost,
        collector_loss=written_lost / written if written else 0.0,
        collector_ci95=wilson_interval(written_lost, written),
        load_seconds=result.load_seconds,
        throughput=sent / result.load_duration(),
        cpu_seconds=cpu,
        cpu_per_event_us=1e6 * cpu / received if received else None,
        skipped_lines=summary.skipped_lines,
        techniques=techniques,
        warnings=summary.warnings,
    )


def _comparison(
    target: str, reference: str, technique: str | None, k: int, n: int, ref_k: int, ref_n: int
) -> TargetComparison:
    p = two_proportion_test(k, n, ref_k, ref_n)
    loss, ref_loss = (k / n if n else 0.0), (ref_k / ref_n if ref_n else 0.0)
    return TargetComparison(
        target=target,
        reference=reference,
        technique=technique,
        collector_loss=loss,
        reference_collector_loss=ref_loss,
        direction=ratio(loss, ref_loss)[1],
        p_value=p,
        significant=p < ALPHA,
        text=collector_loss_text(target, reference, technique, loss, ref_loss, p),
    )


def _comparisons(entry: TargetResult, reference: TargetResult) -> list[TargetComparison]:
    """All techniques together, then each technique both targets ran."""
    out = [
        _comparison(
            entry.target,
            reference.target,
            None,
            entry.written_lost,
            entry.written,
            reference.written_lost,
            reference.written,
        )
    ]
    for name, t in entry.techniques.items():
        ref = reference.techniques.get(name)
        if ref is not None:
            out.append(
                _comparison(
                    entry.target,
                    reference.target,
                    name,
                    t.written_lost,
                    t.written,
                    ref.written_lost,
                    ref.written,
                )
            )
    return out
