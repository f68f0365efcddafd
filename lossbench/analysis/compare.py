"""compare: join a run's sent and received ledgers into a ``Summary``, written as ``summary.json``.

The document's shape is ``lossbench.contract.summary`` (docs/FORMATS.md lists its fields); this module
fills it. Every table, chart and page renders from it, so everything a reader needs to judge a number is
in it: counts, 95% intervals, the model's prediction, significance against a reference, the generator's
timing error and warnings that say what looks wrong and what to do.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import numpy.typing as npt

from lossbench.analysis.adapters import SKIP_CATEGORIES, file_infos, read_received, received_columns
from lossbench.analysis.join import Match, chunks, match_received
from lossbench.analysis.read import Ledgers, read_ledgers
from lossbench.analysis.stats import ratio_text
from lossbench.contract.latency import (
    ANSWER_KINDS,
    ANSWER_PREFLIGHT,
    LatencyHistogram,
    check_layout,
    merge_all,
    percentiles,
)
from lossbench.contract.summary import (
    SCHEMA,
    AnswerTimes,
    CollectorFigures,
    Comparison,
    Cost,
    FoundFigures,
    LedgerFile,
    Summary,
    TechniqueFigures,
    TimeQuantiles,
    TimeToWritten,
    Timing,
    format_pct,
    format_pct_interval,
    summary_json,
)
from lossbench.contract.techniques import ALL_TECHNIQUES, SEED_TECHNIQUES, STAGES, SURVIVES_UNLOAD
from lossbench.contract.timing import lagging
from lossbench.model.browser import run_browser
from lossbench.stats import ALPHA, beside, ratio, two_proportion_test, wilson_interval

if TYPE_CHECKING:
    from lossbench.model.predict import Prediction

__all__ = ["compare", "write_summary"]

QUANTILES = [round(i * 0.05, 2) for i in range(21)]
"""Points of the time-to-written CDF kept in the summary (enough for a chart, small enough to read)."""

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


def compare(
    run_dir: str | os.PathLike[str],
    *,
    reference: str = "ajax",
    predict_events: int = 200_000,
    strict: bool = False,
    received_from: str | None = None,
) -> Summary:
    """Build the summary of a run directory (raises LedgerError when its ledgers can't be read).

    ``reference`` is the technique every other is compared against; when it is not in the run, the
    technique with the highest loss is used. ``predict_events`` is the Monte Carlo size of the prediction.
    ``strict``: a damaged ledger line stops it (LedgerError) instead of being skipped with a warning.
    ``received_from``: an adapter spec (``KIND:PATH[:OPTIONS]``, relative paths from the current
    directory) for a run against another target; by default run.json's ``received_from`` (relative to
    the run directory), which ``lossbench run --target`` writes; without either, the received ledger.
    Raises AdapterError when that log cannot be read.
    """
    run_dir = Path(run_dir)
    warnings: list[str] = []
    run = _read_run(run_dir, warnings)
    base: Path | None = None
    if received_from is None and isinstance(run.get("received_from"), str):
        received_from, base = run["received_from"], run_dir
    ledgers = read_ledgers(run_dir, strict=strict, received=received_from is None)
    skipped: dict[str, int] = {}
    if received_from is not None:
        log = read_received(received_from, base)
        ledgers.received, ledgers.received_keys = received_columns(log.rows, ledgers.vocabs)
        ledgers.files += file_infos(log, run_dir)
        skipped = {category: log.skipped[category] for category in SKIP_CATEGORIES}
        warnings += log.warnings()
    warnings[:0] = _ledger_warnings(ledgers)
    names = ledgers.techniques
    collector, answers = (
        _collector_figures(ledgers.collector_stats, warnings) if received_from is None else (None, {})
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # the join runs beside what needs the sent ledgers only (numpy lets go of the GIL): on two cores,
        # the quantiles and the prediction of a large run then cost little more than the join itself
        joining = pool.submit(match_received, ledgers)
        figures = _SentFigures.of(ledgers)
        # the model predicts the socket client's four techniques; the browser-only ones have no prediction
        modelled = [names[c] for c in figures.codes if modelled_by(names[c], run)]
        prediction = _predict(run, modelled, predict_events, answers.get(ANSWER_PREFLIGHT), run_dir / "sent")
        match = joining.result()
    finished = frozenset(
        c
        for c, name in enumerate(names)
        if name in SURVIVES_UNLOAD and run.get("abort", "unload") == "unload"
    )
    counts = _Counts.of(ledgers, match, finished)
    conn_seconds = _conn_seconds(list(ledgers.collector_stats.values()))
    techniques = {names[c]: _technique(ledgers, figures, counts, c, conn_seconds) for c in figures.codes}
    if not techniques:
        warnings.append("no events in the sent ledgers: nothing to measure — did the load run long enough?")
    for name in run.get("techniques") or []:
        if name not in techniques:
            warnings.append(f"{name}: listed in run.json but no event of it was sent")
    techniques = _add_predictions(techniques, prediction, warnings)
    if reference not in techniques and techniques:
        if reference not in ALL_TECHNIQUES:
            warnings.append(f"reference {reference!r} is not a technique; comparing against the highest loss")
        reference = max(techniques, key=lambda t: techniques[t].loss)
    timing = _timing(figures, counts, techniques, names, lag_stopped=bool(run.get("lag_stopped")))
    warnings += _match_warnings(ledgers, match, techniques)
    warnings += _timing_warnings(timing, figures.median_rtt, run.get("client") == "chromium")
    warnings += _lag_stop_warnings(run)
    warnings += _precision_warnings(run, techniques)
    return Summary(
        schema=SCHEMA,
        run=run,
        browser=run_browser(run),
        reference=reference,
        techniques=techniques,
        phantoms=match.phantom_ids,
        comparisons=_comparisons(techniques, reference),
        timing=timing,
        received_from=received_from,
        skipped_lines=skipped,
        ledgers=[
            LedgerFile(
                path=info.path,
                kind="sent" if info.kind == "sent" else "received",
                lines=info.lines,
                complete=info.complete,
                truncated_last_line=info.truncated_last_line,
                damaged_lines=info.damaged_lines,
            )
            for info in ledgers.files
        ],
        warnings=warnings,
        collector=collector,
    )


def write_summary(summary: Summary, run_dir: str | os.PathLike[str]) -> Path:
    """Write ``<run_dir>/summary.json`` (strict JSON: a NaN would be a bug, so it raises)."""
    path = Path(run_dir) / "summary.json"
    path.write_text(summary_json(summary), encoding="utf-8")
    return path


def _quantiles(x: Floats, q: list[float], *, scratch: bool = False) -> list[float] | None:
    """Quantiles of ``x``; ``scratch``: x is a temporary that may be reordered (saves numpy's copy)."""
    return [float(v) for v in np.quantile(x, q, overwrite_input=scratch)] if x.size else None


TIME_TO_WRITTEN = [0.5, 0.9, 0.99, *QUANTILES]  # one partition for all: the same values as one call each


@dataclasses.dataclass
class _SentFigures:
    """What the sent ledgers say without the join, per technique code (so it is worked out while the join
    runs).

    Working technique by technique walks every column of ten million events a dozen times per technique;
    here each column is read once, a million rows at a time (``join.chunks``: small scratch arrays, which
    malloc reuses), and counted with bincount: the same integers, for a fraction of the time and memory.
    """

    codes: list[int]  # techniques with sent events, in code order
    requests: list[int]
    connections: list[int]
    preflights: list[list[int]]  # per technique: events whose preflight was sent, and found cached
    time_to_written: list[list[float] | None]  # per technique: TIME_TO_WRITTEN of its written events
    timing: list[float] | None  # p50, p90, p99 of the timing error
    median_rtt: float

    @classmethod
    def of(cls, ledgers: Ledgers) -> _SentFigures:
        s = ledgers.sent
        n_codes = len(ledgers.techniques)
        events = np.zeros(n_codes, np.int64)
        sums = [[0] * n_codes for _ in range(4)]
        times: list[list[Floats]] = [[] for _ in range(n_codes)]
        preflight = ledgers.vocabs.preflight.codes
        stage_codes = ledgers.vocabs.stage.codes
        # a preflight the event needed went out unless the cut came before it (in the lookup or the connect)
        before = [stage_codes[k] for k in ("dns", "connect", "tls", "unsent") if k in stage_codes]
        for part in chunks(len(s["tech"])):
            tech = s["tech"][part]
            events += np.bincount(tech, minlength=n_codes)
            state = s["preflight"][part]
            _add_sums(
                sums,
                tech,
                (
                    s["requests"][part],
                    s["connections"][part],
                    (state == preflight["sent"]) & ~np.isin(s["stage"][part], before),
                    state == preflight["cached"],
                ),
            )
            timed = s["written"][part] & np.isfinite(s["t_written"][part])
            t_written, timed_tech = s["t_written"][part][timed], tech[timed]
            for c in np.flatnonzero(np.bincount(timed_tech, minlength=n_codes)).tolist():
                times[c].append(t_written[timed_tech == c])
        error, rtt = s["timing_error"], s["rtt"]
        rtt = rtt[np.isfinite(rtt)]
        return cls(
            codes=np.flatnonzero(events).tolist(),
            requests=sums[0],
            connections=sums[1],
            preflights=[[sent, cached] for sent, cached in zip(sums[2], sums[3], strict=True)],
            time_to_written=[_quantiles(_joined(t), TIME_TO_WRITTEN, scratch=True) for t in times],
            timing=_quantiles(error[np.isfinite(error)], [0.5, 0.9, 0.99], scratch=True),
            median_rtt=float(np.median(rtt, overwrite_input=True)) if rtt.size else 0.0,
        )


@dataclasses.dataclass
class _Counts:
    """What the join adds, per technique code, counted as ``_SentFigures`` are."""

    by: Ints  # events by (technique, written, received, stage at the cut)
    found: Ints  # events by (technique, what they found for a connection, received)
    copies: list[int]  # received lines per technique (duplicates included)
    late: list[int]  # delivered events whose bytes reached the wire after their page had gone (real time)

    @classmethod
    def of(cls, ledgers: Ledgers, match: Match, finished: frozenset[int] = frozenset()) -> _Counts:
        """``finished``: codes of techniques the browser finishes after the page is gone (never late)."""
        s = ledgers.sent
        n_codes, n_stages = len(ledgers.techniques), len(ledgers.vocabs.stage.names)
        n_conns = len(ledgers.vocabs.conn.names)
        by = np.zeros(n_codes * 4 * n_stages, np.int64)
        found = np.zeros(n_codes * n_conns * 2, np.int64)
        sums = [[0] * n_codes for _ in range(2)]
        for part in chunks(len(s["tech"])):
            tech, copies, written = s["tech"][part], match.copies[part], s["written"][part]
            got = copies > 0
            key = tech.astype(np.intp)
            for column, size in ((written, 2), (got, 2), (s["stage"][part], n_stages)):
                key *= size
                key += column
            by += np.bincount(key, minlength=len(by))
            key = tech.astype(np.intp) * n_conns
            key += s["conn"][part]
            key *= 2
            key += got
            found += np.bincount(key, minlength=len(found))
            with np.errstate(invalid="ignore"):
                late = s["t_written"][part] + np.nan_to_num(s["timing_error"][part]) >= s["A"][part]
            late &= got & written
            if finished:
                late &= ~np.isin(tech, list(finished))
            _add_sums(sums, tech, (copies, late))
        return cls(
            by=by.reshape(n_codes, 2, 2, n_stages),
            found=found.reshape(n_codes, n_conns, 2),
            copies=sums[0],
            late=sums[1],
        )


def _joined(parts: list[Floats]) -> Floats:
    return np.concatenate(parts) if parts else np.empty(0)


def _add_sums(sums: list[list[int]], codes: npt.NDArray[Any], columns: tuple[npt.NDArray[Any], ...]) -> None:
    """Add each column's sum per code to ``sums``. bincount adds in floating point: exact for a chunk
    (2**20 values below 2**31), and chunks add as Python ints."""
    for total, column in zip(sums, columns, strict=True):
        for c, x in enumerate(np.bincount(codes, weights=column, minlength=len(total)).tolist()):
            total[c] += int(x)


def _stage_keys(tech: str, seen: list[str]) -> list[str]:
    keys = list(STAGES.get(tech, ()))
    for stage in seen:
        if stage in keys or stage == "done":
            continue
        if stage == "tls" and "connect" in keys:
            keys.insert(keys.index("connect") + 1, stage)
        else:
            keys.append(stage)
    return [*keys, "done"]


def _technique(
    ledgers: Ledgers, figures: _SentFigures, counts: _Counts, code: int, conn_seconds: dict[str, float]
) -> TechniqueFigures:
    """One technique's entry, without its prediction: counts, interval, stages at the cut, time to
    written, cost."""
    name = ledgers.techniques[code]
    by = counts.by[code]  # (written, received, stage)
    cut = by.sum(axis=(0, 1))
    lost_cut = by[:, 0].sum(axis=0)
    n = int(cut.sum())
    written, written_lost = int(by[1].sum()), int(by[1, 0].sum())
    received = int(by[:, 1].sum())
    lost = n - received
    stage_names = ledgers.vocabs.stage.names
    keys = _stage_keys(name, [stage_names[i] for i in np.flatnonzero(cut)])
    index = {stage: i for i, stage in enumerate(stage_names)}

    def by_stage(counts: Ints) -> dict[str, int]:
        return {k: int(counts[index[k]]) if k in index else 0 for k in keys}

    pcts = figures.time_to_written[code]
    requests = figures.requests[code] + ledgers.ping_requests.get(name, 0)
    connections = figures.connections[code] + ledgers.ping_connections.get(name, 0)
    cs = conn_seconds.get(name)

    def per_delivered(total: float | None) -> float | None:
        return None if total is None or received == 0 else total / received

    preflights_sent, preflights_cached = figures.preflights[code]

    return TechniqueFigures(
        sent=n,
        received=received,
        lost=lost,
        loss=lost / n,
        ci95=wilson_interval(lost, n),
        predicted_loss=None,
        predicted_ci95=None,
        duplicates=counts.copies[code] - received,  # every copy of a received event but its first
        by_stage=by_stage(lost_cut),
        cut_by_stage=by_stage(cut),
        written_lost=written_lost,
        written_lost_ci95=wilson_interval(written_lost, written),
        unwritten_received=int(by[0, 1].sum()),
        time_to_written=TimeToWritten(
            p50=pcts[0] if pcts else None,
            p90=pcts[1] if pcts else None,
            p99=pcts[2] if pcts else None,
            quantiles=TimeQuantiles(q=QUANTILES, t=pcts[3:] if pcts else None),
        ),
        cost=Cost(
            requests=requests,
            connections=connections,
            conn_seconds=cs,
            requests_per_delivered=per_delivered(requests),
            connections_per_delivered=per_delivered(connections),
            conn_seconds_per_delivered=per_delivered(cs),
        ),
        found=_found(counts.found[code], ledgers.vocabs.conn.names, n),
        preflights_sent=preflights_sent,
        preflights_cached=preflights_cached,
        preflights_per_delivered=per_delivered(preflights_sent),
    )


def _found(counts: Ints, kinds: list[str], sent: int) -> dict[str, FoundFigures]:
    """A technique's events by what they found for a connection (``counts``: by kind, then [lost,
    received]), kinds with events only, in the vocabulary's order."""
    out = {}
    for kind, (lost, got) in zip(kinds, counts.tolist(), strict=True):
        n = lost + got
        if n:
            out[kind] = FoundFigures(
                sent=n, share=n / sent, lost=lost, loss=lost / n, ci95=wilson_interval(lost, n)
            )
    return out


def _conn_seconds(stats: list[dict[str, Any]]) -> dict[str, float]:
    """Connection-seconds per technique summed over collector processes (absent: no cost figure)."""
    total: dict[str, float] = {}
    for doc in stats:
        per_tech = doc.get("conn_seconds")
        if isinstance(per_tech, dict):
            for tech, secs in per_tech.items():
                if isinstance(secs, int | float):
                    total[tech] = total.get(tech, 0.0) + float(secs)
    return total


SATURATED = 0.9
"""Utilisation of the collector's workers from which answers mostly wait in its queue (a warning)."""


def _collector_figures(
    stats: Mapping[str, Mapping[str, object]], warnings: list[str]
) -> tuple[CollectorFigures | None, dict[str, LatencyHistogram]]:
    """The reference collector's own figures from its stats files (None without any), and its answer-time
    histograms merged over its processes, by kind (kinds with answers only).

    Utilisation is the busy worker-seconds of all processes over their workers × seconds served: None
    without a service time, or when a file does not report it (a collector older than its ``service``
    object). A damaged histogram is left out with a warning naming its file, and so are a file's histograms
    in another bucket layout than this lossbench's (``check_layout``; a file without one is in this one).
    """
    if not stats:
        return None, {}
    specs: list[str | None] = []
    workers: list[int] = []
    started: list[str] = []  # how each file's collector was started, for a warning if they differ
    busy = capacity = 0.0
    reported = True
    histograms: dict[str, list[LatencyHistogram]] = {kind: [] for kind in ANSWER_KINDS}
    for path, doc in stats.items():
        service = doc.get("service")
        reading = _service_figures(service) if isinstance(service, Mapping) else None
        if reading is None:
            reported = False
            if service is not None:
                warnings.append(
                    f"{path}: damaged service figures ({service!r}), so no utilisation: put back the file "
                    "as the collector wrote it at shutdown, or run again to get one"
                )
        else:
            spec, n, busy_seconds, elapsed = reading
            specs.append(spec)
            workers.append(n)
            started.append(f"{path}: {spec}, {n} worker(s)")
            busy += busy_seconds
            capacity += n * elapsed
        answers = doc.get("answers")
        if not isinstance(answers, Mapping):
            continue
        try:
            check_layout(answers.get("layout"))
        except ValueError as e:
            warnings.append(
                f"{path}: answer times left out: {e}; compare this run with the lossbench version that "
                "wrote it"
            )
            continue
        for kind in ANSWER_KINDS:
            if kind not in answers:
                continue
            try:
                histograms[kind].append(LatencyHistogram.from_dict(answers[kind]))
            except ValueError as e:
                warnings.append(f"{path}: damaged {kind} answer-time histogram ({e}); left out")
    if len(set(specs)) > 1 or len(set(workers)) > 1:
        warnings.append(
            f"collector processes report different service times or workers ({sorted(set(map(str, specs)))}, "
            f"{sorted(set(workers))}): the figures show the first; these stats files come from collectors "
            f"started differently ({'; '.join(started)}): keep one collector's stats files and ledgers in "
            "received/ and move the others out, or run again with one collector (--collector-processes N "
            "for several processes)"
        )
    spec = specs[0] if specs else None
    merged = {kind: merge_all(hs) for kind, hs in histograms.items()}
    merged = {kind: h for kind, h in merged.items() if h.total}
    utilisation = busy / capacity if reported and spec is not None and capacity > 0 else None
    if utilisation is not None and utilisation >= SATURATED:
        answered = merged.get(ANSWER_PREFLIGHT)
        preflight = "-" if answered is None else _ms(percentiles(answered)["p99"] or 0.0)
        warnings.append(
            f"collector workers busy {100 * utilisation:.0f}% of the time (--service-time {spec}, "
            f"{workers[0]} worker(s) per process): answers waited in its queue (preflight p99 "
            f"{preflight}), so the measured loss includes queueing; the prediction has it for ajax's "
            "preflight only (a kept-alive pixel's next event also waits for its previous answer, which the "
            "model leaves out); for a point below saturation lower --users or add --service-workers"
        )
    answer_seconds = {kind: AnswerTimes(count=h.total, **percentiles(h)) for kind, h in merged.items()}
    figures = CollectorFigures(
        processes=len(stats),
        service_time=spec,
        service_workers=workers[0] if workers else 1,
        utilisation=utilisation,
        answer_seconds=answer_seconds,
    )
    return figures, merged


def _service_figures(service: Mapping[str, object]) -> tuple[str | None, int, float, float] | None:
    """(spec, workers, busy seconds, elapsed seconds) of a stats file's ``service``; None when damaged."""
    spec, workers = service.get("spec"), service.get("workers")
    busy, elapsed = service.get("busy_seconds"), service.get("elapsed_seconds")
    if not (spec is None or isinstance(spec, str)) or type(workers) is not int or workers < 1:
        return None
    if not (isinstance(busy, int | float) and isinstance(elapsed, int | float)):
        return None
    return spec, workers, float(busy), float(elapsed)


def _read_run(run_dir: Path, warnings: list[str]) -> dict[str, Any]:
    path = run_dir / "run.json"
    try:
        run = json.loads(path.read_bytes())
    except FileNotFoundError:
        warnings.append("run.json: not found, so no predicted loss — runs made by `lossbench run` have one")
        return {}
    except (OSError, ValueError) as e:
        warnings.append(f"run.json: unreadable ({e}), so no predicted loss")
        return {}
    if not isinstance(run, dict):
        warnings.append("run.json: not a JSON object, so no predicted loss")
        return {}
    return run


def modelled_by(technique: str, run: Mapping[str, Any]) -> bool:
    """Whether the run's browser preset models ``technique`` (the seed's has only its four)."""
    from lossbench.model.browser import get_browser, run_browser

    if technique not in ALL_TECHNIQUES:
        return False
    try:
        return get_browser(run_browser(run)).pool or technique in SEED_TECHNIQUES
    except ValueError:
        return False


def _predict(
    run: Mapping[str, Any],
    names: list[str],
    events: int,
    preflight_answers: LatencyHistogram | None = None,
    sent_dir: Path | None = None,
) -> dict[str, Prediction] | str | None:
    """The run model's predicted loss per technique (model.predict); a warning when it cannot be had;
    None when there is nothing to predict. ``preflight_answers``: the collector's answer times to
    preflights measured in this run, drawn per event into ajax's preflight (None: answers take no time).
    With ``sent_dir`` holding ledgers that name each event's visit, the prediction is on the visits the
    run played (``lossbench.analysis.played``: paired with the measurement); else on ``events`` events
    drawn from the run's seed."""
    if not run or not names:
        return None
    missing = [k for k in ("profile", "exit_model", "abort", "seed") if k not in run]
    if missing:
        return f"run.json lacks {', '.join(missing)}: no predicted loss"
    try:
        from lossbench.analysis.played import played_visits
        from lossbench.model.browser import run_browser, run_server_hints
        from lossbench.model.exits import get_exit_model
        from lossbench.model.predict import predict_batch, predict_loss
        from lossbench.model.profiles import get_profile
        from lossbench.model.visits import VisitBatch

        profile = get_profile(run["profile"])
        visits = None if sent_dir is None else played_visits(sent_dir, names[0], profile)
        if visits:
            batch = VisitBatch.of(visits)
            answers = None
            if preflight_answers is not None and preflight_answers.total:
                answers = preflight_answers.sample(np.random.default_rng(int(run["seed"])), batch.events)
            return predict_batch(
                batch, names, preflight_answer=answers, browser=run_browser(run), server=run_server_hints(run)
            )
        return predict_loss(
            get_profile(run["profile"]),
            get_exit_model(run["exit_model"]),
            run["abort"],
            names,
            seed=int(run["seed"]),
            events=events,
            preflight_answers=preflight_answers,
            browser=run_browser(run),
            server=run_server_hints(run),
        )
    except (ImportError, ValueError, KeyError) as e:
        return f"predicted loss not computed: {e}"


def _add_predictions(
    techniques: dict[str, TechniqueFigures],
    predictions: dict[str, Prediction] | str | None,
    warnings: list[str],
) -> dict[str, TechniqueFigures]:
    """The predicted loss beside the measured one, and where measurement disagrees with it."""
    if predictions is None or isinstance(predictions, str):
        warnings += [predictions] if predictions else []
        return techniques
    out = dict(techniques)
    for name, entry in techniques.items():
        pred = predictions.get(name)
        if pred is None:
            continue
        plo, phi = (float(x) for x in pred.ci95)
        held = pred.held_seconds_per_event
        entry = out[name] = msgspec.structs.replace(
            entry,
            predicted_loss=float(pred.loss),
            predicted_ci95=(plo, phi),
            predicted_held_seconds=None if held is None else float(held),
        )
        where = beside(entry.ci95, (plo, phi))
        if where == "within":
            continue
        side = (
            "more than the model explains; look at collector saturation, keep-alive races or port exhaustion"
            if where == "above"
            else "less than the model predicts; check that the load generator really cuts at the exit time "
            "and that run.json names the profile and exit model that ran"
        )
        warnings.append(
            f"{name}: measured loss {format_pct(entry.loss)} {format_pct_interval(entry.ci95)} vs predicted "
            f"{format_pct(pred.loss)} {format_pct_interval((plo, phi))}: {side}"
        )
    return out


def _comparisons(techniques: dict[str, TechniqueFigures], reference: str) -> list[Comparison]:
    """Every technique against the reference: ratio of losses, two-sided p-value, the sentence."""
    if reference not in techniques:
        return []
    ref = techniques[reference]
    out = []
    for name, entry in techniques.items():
        if name == reference:
            continue
        p = two_proportion_test(entry.lost, entry.sent, ref.lost, ref.sent)
        factor, direction = ratio(entry.loss, ref.loss)
        out.append(
            Comparison(
                technique=name,
                reference=reference,
                ratio=factor,
                direction=direction,
                p_value=p,
                significant=p < ALPHA,
                text=ratio_text(name, reference, entry.loss, ref.loss, p),
            )
        )
    return out


def _timing(
    figures: _SentFigures,
    counts: _Counts,
    techniques: dict[str, TechniqueFigures],
    names: list[str],
    lag_stopped: bool = False,
) -> Timing:
    """The generator's timing error (real − plan at the last stage reached) and what it could have cost.

    The client decides every stage on its intended timeline (deadlines, kernel-stamped preflight answers),
    so oversleeping does not change which events are delivered. What it changes is the real schedule: the
    collector sees bytes later than intended. ``loss_shift`` is what an emulator deciding on real time
    would have added to each loss (delivered events whose bytes reached the wire after their page had
    gone); ``flagged`` says the lag is large against stage times, so the collector's view (arrival
    pattern, connection-seconds) is distorted (the rule is ``lossbench.contract.timing.lagging``, which
    the plugin's lag guard and the sizing of ``lossbench run`` share); a run the lag guard stopped
    (``lag_stopped``) is flagged too, whatever the whole run's p90.
    """
    pct, median_rtt = figures.timing, figures.median_rtt
    shifts = {name: counts.late[names.index(name)] / max(entry.sent, 1) for name, entry in techniques.items()}
    flagged = lagging(pct[1] if pct else None, median_rtt) or lag_stopped
    return Timing(
        p50=pct[0] if pct else None,
        p90=pct[1] if pct else None,
        p99=pct[2] if pct else None,
        decided_on="intended",
        max_loss_shift=max(shifts.values(), default=0.0),
        loss_shift=shifts,
        flagged=flagged,
    )


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms" if abs(seconds) >= 0.01 else f"{1000 * seconds:.1f} ms"


def _precision_warnings(run: Mapping[str, Any], techniques: Mapping[str, TechniqueFigures]) -> list[str]:
    """A ``--precision`` goal the ledgers' intervals miss: not reached within --duration, or reached on
    the client's count of cut events while the target lost more after they were written."""
    goal = run.get("precision")
    if not isinstance(goal, int | float) or goal <= 0:
        return []
    wide = {
        name: 100 * (t.ci95[1] - t.ci95[0]) / 2
        for name, t in techniques.items()
        if 100 * (t.ci95[1] - t.ci95[0]) / 2 > goal + 1e-9
    }
    if not wide:
        return []
    listed = ", ".join(f"{name} ±{half:.2f}" for name, half in wide.items())
    if run.get("precision_reached") is None:
        why = f"the goal was not reached within --duration {run.get('duration')}; lengthen --duration"
    else:
        why = (
            "the run stopped on the client's count of events cut before they were written, and the target "
            "lost more after that; rerun with a longer --duration and no --precision"
        )
    return [f"--precision {goal:g} points: the ledgers' intervals are wider: {listed} points ({why})"]


def _timing_warnings(timing: Timing, median_rtt: float, browser: bool = False) -> list[str]:
    if timing.p90 is None or not lagging(timing.p90, median_rtt):
        return []
    if browser:  # the page went away late: its requests had that much more time, and that is not undone
        return [
            f"Chromium lagging: its pages went away {_ms(timing.p90)} (p90) after the planned exit, against "
            f"stage times of ~{_ms(median_rtt)}, which gives their requests that much more time (deciding on "
            f"the planned exit would change the loss by up to {100 * timing.max_loss_shift:.1f} points); "
            "run it on an idle machine or with fewer --workers"
        ]
    return [
        f"load generator lagging: p90 timing error {_ms(timing.p90)} against stage times of "
        f"~{_ms(median_rtt)}. Losses are decided on the intended timeline and stand (deciding "
        f"on real time would have added up to {100 * timing.max_loss_shift:.1f} points), but the "
        "collector saw a late schedule, so its cost figures are distorted; lower --users or add --processes"
    ]


def _lag_stop_warnings(run: Mapping[str, Any]) -> list[str]:
    """The Locust plugin stopped the run because its load generator lagged (run.json's lag_stopped)."""
    stopped = run.get("lag_stopped")
    if not isinstance(stopped, Mapping):
        return []
    message = stopped.get("message") or "the load generator lagged"
    return [f"stopped early: {message}"]


def _ledger_warnings(ledgers: Ledgers) -> list[str]:
    """Files that were not closed cleanly, had damaged lines, or whose footer disagrees with what was read."""
    out = []
    for info in ledgers.files:
        if info.damaged_lines:
            n = info.damaged_lines
            out.append(
                f"{info.path}: {n} damaged line{'s' if n > 1 else ''} skipped ({'; '.join(info.damage)}"
                f"{'; ...' if n > len(info.damage) else ''}) — their events are left out; repair or delete "
                "them, or run compare --strict to stop on them"
            )
        if not info.complete:
            why = "no footer"
            if info.truncated_last_line:
                why += "; its last line was cut short and skipped"
            effect = (
                "events fired after its last whole line are unaccounted for (they may show up as phantoms)"
                if info.kind == "sent"
                else "the collector process was killed; every event it answered is still in the file"
            )
            out.append(f"{info.path}: incomplete ledger ({why}) — {effect}")
        elif info.footer_events is not None and info.footer_events != info.body_lines:
            out.append(
                f"{info.path}: footer says {info.footer_events} lines were written but {info.body_lines} "
                "were found — lines went missing or were added; treat this file's counts with care"
            )
    return out + ledgers.problems


def _match_warnings(ledgers: Ledgers, match: Match, techniques: dict[str, TechniqueFigures]) -> list[str]:
    out = []
    if match.phantom_ids:
        incomplete = [i.path for i in ledgers.files if i.kind == "sent" and not i.complete]
        cause = (
            f"the incomplete sent ledger{'s' if len(incomplete) > 1 else ''} {', '.join(incomplete)} may "
            "explain them"
            if incomplete
            else "a sent ledger is missing from sent/, or something else posts to this collector"
        )
        ids, lines = match.phantom_ids, match.phantom_lines
        out.append(
            f"{ids} received event id{'s' if ids > 1 else ''} ({lines} line{'s' if lines > 1 else ''}) "
            f"never sent: {cause}; not counted as delivered"
        )
    for name, entry in techniques.items():
        if n := entry.duplicates:
            out.append(
                f"{name}: {n} duplicate receipt{'s' if n > 1 else ''} (an id received more than once) — "
                "a client retry after a cut connection, or a collector writing twice; counted once"
            )
    if match.repeated_sent_ids:
        out.append(
            f"{match.repeated_sent_ids} sent event ids repeat: two load-generating processes shared an id "
            "salt; the repeats count as lost — give each process its own salt"
        )
    wrong = 0
    for part in chunks(len(match.received_index)):  # a million rows at a time: see _SentFigures
        index = match.received_index[part]
        hit = index >= 0
        labels = ledgers.received["tech"][part][hit]
        wrong += int(np.count_nonzero(labels != ledgers.sent["tech"][index[hit]]))
    if wrong:
        out.append(
            f"{wrong} received lines name another technique than their sent event: the client labels "
            "events wrongly or the collector parses the label wrongly"
        )
    return out
