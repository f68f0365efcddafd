"""compare: join a run's sent and received ledgers into ``summary.json`` (schema "lossbench.summary/1").

This module is the authoritative writer of that document (docs/FORMATS.md shows its shape); every table,
chart and page renders from it, so everything a reader needs to judge a number is in it: counts, 95%
intervals, the model's prediction, significance against a reference, the generator's timing error and
warnings that say what looks wrong and what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lossbench import TECHNIQUES
from lossbench.ledger import Ledgers, Match, match_received, read_ledgers
from lossbench.stats import ALPHA, format_pct, ratio, ratio_text, two_proportion_test, wilson_interval
from lossbench.summary_text import evaluate_fail_if, summary_to_text

__all__ = ["SCHEMA", "compare", "evaluate_fail_if", "summary_to_text", "write_summary"]

SCHEMA = "lossbench.summary/1"
QUANTILES = [round(i * 0.05, 2) for i in range(21)]
"""Points of the time-to-written CDF kept in the summary (enough for a chart, small enough to read)."""

TECH_STAGES: dict[str, tuple[str, ...]] = {
    "ajax": ("dns", "connect", "preflight", "headers", "body"),
    "pixel": ("dns", "connect", "request"),
    "pixel-prewarm": ("dns", "connect", "request"),
    "pixel-keepalive": ("request", "connect"),
}
"""Stages each technique's by-stage tables always show, in order; others (tls) appear when seen."""


def compare(
    run_dir: str | os.PathLike[str], *, reference: str = "ajax", predict_events: int = 200_000
) -> dict:
    """Build the summary document of a run directory (raises LedgerError when its ledgers can't be read).

    ``reference`` is the technique every other is compared against; when it is not in the run, the
    technique with the highest loss is used. ``predict_events`` is the Monte Carlo size of the prediction.
    """
    run_dir = Path(run_dir)
    ledgers = read_ledgers(run_dir)
    warnings = _ledger_warnings(ledgers)
    run = _read_run(run_dir, warnings)
    match = match_received(ledgers)
    got = match.copies > 0
    sent, names = ledgers.sent, ledgers.techniques
    codes = [int(c) for c in np.unique(sent["tech"])]
    conn_seconds = _conn_seconds(ledgers.collector_stats)
    techniques = {names[c]: _technique(ledgers, match, got, c, conn_seconds) for c in codes}
    if not techniques:
        warnings.append("no events in the sent ledgers: nothing to measure — did the load run long enough?")
    for name in run.get("techniques") or []:
        if name not in techniques:
            warnings.append(f"{name}: listed in run.json but no event of it was sent")
    _add_predictions(techniques, run, predict_events, warnings)
    if reference not in techniques and techniques:
        if reference not in TECHNIQUES:
            warnings.append(f"reference {reference!r} is not a technique; comparing against the highest loss")
        reference = max(techniques, key=lambda t: techniques[t]["loss"])
    timing = _timing(sent, got, techniques, names)
    warnings += _match_warnings(ledgers, match, techniques)
    warnings += _timing_warnings(timing, sent)
    return {
        "schema": SCHEMA,
        "run": run,
        "reference": reference,
        "techniques": techniques,
        "phantoms": match.phantom_ids,
        "comparisons": _comparisons(techniques, reference),
        "timing": timing,
        "ledgers": [info.as_dict() for info in ledgers.files],
        "warnings": warnings,
    }


def write_summary(summary: dict, run_dir: str | os.PathLike[str]) -> Path:
    """Write ``<run_dir>/summary.json`` (strict JSON: a NaN would be a bug, so it raises)."""
    path = Path(run_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    return path


def _quantiles(x: np.ndarray, q: list[float]) -> list[float] | None:
    return [float(v) for v in np.quantile(x, q)] if x.size else None


def _stage_keys(tech: str, seen: list[str]) -> list[str]:
    keys = list(TECH_STAGES.get(tech, ()))
    for stage in seen:
        if stage in keys or stage == "done":
            continue
        if stage == "tls" and "connect" in keys:
            keys.insert(keys.index("connect") + 1, stage)
        else:
            keys.append(stage)
    return [*keys, "done"]


def _technique(ledgers: Ledgers, match: Match, got: np.ndarray, code: int, conn_seconds: dict) -> dict:
    """One technique's entry: counts, interval, stages at the cut, time to written, cost."""
    s = ledgers.sent
    name = ledgers.techniques[code]
    mine = s["tech"] == code
    n = int(mine.sum())
    received = int((got & mine).sum())
    lost = n - received
    stage_names = ledgers.vocabs.stage.names
    cut = np.bincount(s["stage"][mine], minlength=len(stage_names))
    lost_cut = np.bincount(s["stage"][mine & ~got], minlength=len(stage_names))
    keys = _stage_keys(name, [stage_names[i] for i in np.flatnonzero(cut)])
    index = {stage: i for i, stage in enumerate(stage_names)}

    def by(counts: np.ndarray) -> dict[str, int]:
        return {k: int(counts[index[k]]) if k in index else 0 for k in keys}

    written = s["written"] & mine
    tw = s["t_written"][written]
    tw = tw[np.isfinite(tw)]
    pct = _quantiles(tw, [0.5, 0.9, 0.99])
    requests = int(s["requests"][mine].sum()) + ledgers.ping_requests.get(name, 0)
    connections = int(s["connections"][mine].sum()) + ledgers.ping_connections.get(name, 0)
    cs = conn_seconds.get(name)

    def per_delivered(total: float | None) -> float | None:
        return None if total is None or received == 0 else total / received

    return {
        "sent": n,
        "received": received,
        "lost": lost,
        "loss": lost / n,
        "ci95": list(wilson_interval(lost, n)),
        "predicted_loss": None,
        "predicted_ci95": None,
        "duplicates": int((match.copies[mine] - 1).clip(min=0).sum()),
        "by_stage": by(lost_cut),
        "cut_by_stage": by(cut),
        "written_lost": int((written & ~got).sum()),
        "unwritten_received": int((~s["written"] & mine & got).sum()),
        "time_to_written": {
            "p50": pct[0] if pct else None,
            "p90": pct[1] if pct else None,
            "p99": pct[2] if pct else None,
            "quantiles": {"q": QUANTILES, "t": _quantiles(tw, QUANTILES)},
        },
        "cost": {
            "requests": requests,
            "connections": connections,
            "conn_seconds": cs,
            "requests_per_delivered": per_delivered(requests),
            "connections_per_delivered": per_delivered(connections),
            "conn_seconds_per_delivered": per_delivered(cs),
        },
    }


def _conn_seconds(stats: list[dict]) -> dict[str, float]:
    """Connection-seconds per technique summed over collector processes (absent: no cost figure)."""
    total: dict[str, float] = {}
    for doc in stats:
        per_tech = doc.get("conn_seconds")
        if isinstance(per_tech, dict):
            for tech, secs in per_tech.items():
                if isinstance(secs, int | float):
                    total[tech] = total.get(tech, 0.0) + float(secs)
    return total


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


def _add_predictions(techniques: dict[str, dict], run: dict, events: int, warnings: list[str]) -> None:
    """Predicted loss from the run's model (lossbench.predict), and where measurement disagrees with it."""
    if not run or not techniques:
        return
    missing = [k for k in ("profile", "exit_model", "abort", "seed") if k not in run]
    if missing:
        warnings.append(f"run.json lacks {', '.join(missing)}: no predicted loss")
        return
    try:
        from lossbench.models import get_exit_model, get_profile
        from lossbench.predict import predict_loss

        predictions = predict_loss(
            get_profile(run["profile"]),
            get_exit_model(run["exit_model"]),
            run["abort"],
            list(techniques),
            seed=int(run["seed"]),
            events=events,
        )
    except (ImportError, ValueError, KeyError) as e:
        warnings.append(f"predicted loss not computed: {e}")
        return
    for name, entry in techniques.items():
        pred = predictions.get(name)
        if pred is None:
            continue
        entry["predicted_loss"] = float(pred.loss)
        entry["predicted_ci95"] = [float(x) for x in pred.ci95]
        (lo, hi), (plo, phi) = entry["ci95"], entry["predicted_ci95"]
        if lo <= phi and plo <= hi:
            continue
        side = (
            "more than the model explains; look at collector saturation, keep-alive races or port exhaustion"
            if lo > phi
            else "less than the model predicts; check that the load generator really cuts at the exit time "
            "and that run.json names the profile and exit model that ran"
        )
        warnings.append(
            f"{name}: measured loss {format_pct(entry['loss'])} {_pct_interval(entry['ci95'])} vs predicted "
            f"{format_pct(entry['predicted_loss'])} {_pct_interval(entry['predicted_ci95'])}: {side}"
        )


def _pct_interval(ci: list[float]) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _comparisons(techniques: dict[str, dict], reference: str) -> list[dict]:
    """Every technique against the reference: ratio of losses, two-sided p-value, the sentence."""
    if reference not in techniques:
        return []
    ref = techniques[reference]
    out = []
    for name, entry in techniques.items():
        if name == reference:
            continue
        p = two_proportion_test(entry["lost"], entry["sent"], ref["lost"], ref["sent"])
        factor, direction = ratio(entry["loss"], ref["loss"])
        out.append(
            {
                "technique": name,
                "reference": reference,
                "ratio": factor,
                "direction": direction,
                "p_value": p,
                "significant": p < ALPHA,
                "text": ratio_text(name, reference, entry["loss"], ref["loss"], p),
            }
        )
    return out


LAG_FLAG_SHARE = 0.1  # p90 lag above this share of the median RTT distorts the schedule the collector sees


def _timing(
    sent: dict[str, np.ndarray], got: np.ndarray, techniques: dict[str, dict], names: list[str]
) -> dict:
    """The generator's timing error (real − plan at the last stage reached) and what it could have cost.

    The client decides every stage on its intended timeline (deadlines, kernel-stamped preflight answers),
    so oversleeping does not change which events are delivered. What it changes is the real schedule: the
    collector sees bytes later than intended. ``loss_shift`` is what an emulator deciding on real time
    would have added to each loss (delivered events whose bytes reached the wire after their page had
    gone); ``flagged`` says the lag is large against stage times, so the collector's view (arrival
    pattern, connection-seconds) is distorted.
    """
    error = sent["timing_error"]
    finite = error[np.isfinite(error)]
    pct = _quantiles(finite, [0.5, 0.9, 0.99])
    shifts: dict[str, float] = {}
    with np.errstate(invalid="ignore"):
        late = got & sent["written"] & (sent["t_written"] + np.nan_to_num(error) >= sent["A"])
    for name, entry in techniques.items():
        shifts[name] = int((late & (sent["tech"] == names.index(name))).sum()) / max(entry["sent"], 1)
    rtt = sent["rtt"][np.isfinite(sent["rtt"])]
    median_rtt = float(np.median(rtt)) if rtt.size else 0.0
    flagged = bool(pct and median_rtt > 0 and pct[1] > LAG_FLAG_SHARE * median_rtt)
    return {
        "p50": pct[0] if pct else None,
        "p90": pct[1] if pct else None,
        "p99": pct[2] if pct else None,
        "decided_on": "intended",
        "max_loss_shift": max(shifts.values(), default=0.0),
        "loss_shift": shifts,
        "flagged": flagged,
    }


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms" if abs(seconds) >= 0.01 else f"{1000 * seconds:.1f} ms"


def _timing_warnings(timing: dict, sent: dict[str, np.ndarray]) -> list[str]:
    if not timing["flagged"]:
        return []
    rtt = sent["rtt"][np.isfinite(sent["rtt"])]
    return [
        f"load generator lagging: p90 timing error {_ms(timing['p90'])} against stage times of "
        f"~{_ms(float(np.median(rtt)))}. Losses are decided on the intended timeline and stand (deciding "
        f"on real time would have added up to {100 * timing['max_loss_shift']:.1f} points), but the "
        "collector saw a late schedule, so its cost figures are distorted; lower --users or add --processes"
    ]


def _ledger_warnings(ledgers: Ledgers) -> list[str]:
    """Files that were not closed cleanly or whose footer disagrees with what was read."""
    out = []
    for info in ledgers.files:
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


def _match_warnings(ledgers: Ledgers, match: Match, techniques: dict[str, dict]) -> list[str]:
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
        if n := entry["duplicates"]:
            out.append(
                f"{name}: {n} duplicate receipt{'s' if n > 1 else ''} (an id received more than once) — "
                "a client retry after a cut connection, or a collector writing twice; counted once"
            )
    if match.repeated_sent_ids:
        out.append(
            f"{match.repeated_sent_ids} sent event ids repeat: two load-generating processes shared an id "
            "salt; the repeats count as lost — give each process its own salt"
        )
    hit = match.received_index >= 0
    wrong = int((ledgers.received["tech"][hit] != ledgers.sent["tech"][match.received_index[hit]]).sum())
    if wrong:
        out.append(
            f"{wrong} received lines name another technique than their sent event: the client labels "
            "events wrongly or the collector parses the label wrongly"
        )
    return out
