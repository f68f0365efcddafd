"""The report renders summaries into valid PNGs, a self-contained escaped HTML page and Markdown, from
templates, with the content the renderer before issue 10 wrote."""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path
from statistics import NormalDist

import msgspec
import pytest
from markupsafe import escape

from lossbench.contract.summary import (
    SCHEMA,
    Comparison,
    Cost,
    FoundFigures,
    LedgerFile,
    Summary,
    TechniqueFigures,
    TimeQuantiles,
    TimeToWritten,
    Timing,
)
from lossbench.contract.techniques import ALL_TECHNIQUES
from lossbench.report.charts import TECH_COLORS, render_charts
from lossbench.report.html import ReportPaths, render_report, summary_html
from lossbench.report.markdown import summary_markdown
from lossbench.stats import wilson_interval

MALICIOUS = '<script>alert("x")</script><img src=https://evil.example/x.png>'
BEFORE = Path(__file__).parents[2] / "data" / "run-before"


def _time_to_written(median_s: float, spread: float) -> TimeToWritten:
    """Log-normal quantile function on a grid, as compare would write it."""
    qs = [0.01, 0.05, *[i / 20 for i in range(2, 19)], 0.95, 0.99]
    ts = [round(median_s * math.exp(spread * NormalDist().inv_cdf(q)), 6) for q in qs]
    p = {q: ts[qs.index(q)] for q in (0.5, 0.9, 0.99)}
    return TimeToWritten(p50=p[0.5], p90=p[0.9], p99=p[0.99], quantiles=TimeQuantiles(q=qs, t=ts))


NOT_WRITTEN = TimeToWritten(p50=None, p90=None, p99=None, quantiles=TimeQuantiles(q=[0.0, 1.0], t=None))


def _cost(requests: float | None, connections: float | None, conn_seconds: float | None) -> Cost:
    return Cost(
        requests=0,
        connections=0,
        conn_seconds=None,
        requests_per_delivered=requests,
        connections_per_delivered=connections,
        conn_seconds_per_delivered=conn_seconds,
    )


def _tech(
    sent: int,
    lost: int,
    ci: tuple[float, float],
    pred: float | None,
    by_stage: dict[str, int],
    ttw: TimeToWritten,
    cost: Cost,
    duplicates: int = 0,
) -> TechniqueFigures:
    received = sent - lost
    return TechniqueFigures(
        sent=sent,
        received=received,
        lost=lost,
        loss=lost / sent if sent else 0.0,
        ci95=ci,
        predicted_loss=pred,
        predicted_ci95=None if pred is None else (pred * 0.93, pred * 1.07),
        duplicates=duplicates,
        by_stage=by_stage,
        cut_by_stage={**by_stage, "done": received},
        written_lost=by_stage.get("done", 0),
        unwritten_received=0,
        time_to_written=ttw,
        cost=cost,
    )


def _found(technique: TechniqueFigures, **kinds: tuple[int, int]) -> dict[str, FoundFigures]:
    """``found`` of a technique from (sent, lost) per kind."""
    return {
        kind: FoundFigures(
            sent=n, share=n / technique.sent, lost=lost, loss=lost / n, ci95=wilson_interval(lost, n)
        )
        for kind, (n, lost) in kinds.items()
    }


def _pooled(technique: TechniqueFigures, preflights: tuple[int, int], held: float, **kinds: tuple[int, int]):
    """The technique as a pooling browser's run has it: what its events found, preflights, held seconds."""
    sent, cached = preflights
    return msgspec.structs.replace(
        technique,
        found=_found(technique, **kinds),
        preflights_sent=sent,
        preflights_cached=cached,
        preflights_per_delivered=sent / technique.received,
        predicted_held_seconds=held,
    )


def _comparison(technique: str, ratio: float, p: float, text: str) -> Comparison:
    return Comparison(
        technique=technique,
        reference="ajax",
        ratio=ratio,
        direction="less",
        p_value=p,
        significant=p < 0.05,
        text=text,
    )


def make_summary() -> Summary:
    """Four techniques on a slow mobile profile, played as Chromium; prewarm has no prediction, keepalive
    sent nothing; ajax found warm and cold connections and cached some preflights."""
    summary = _make_summary()
    ajax, pixel = summary.techniques["ajax"], summary.techniques["pixel"]
    techniques = {
        **summary.techniques,
        "ajax": _pooled(ajax, (3047, 2345), 4.25, warm=(7680, 8), cold=(4200, 2100), stale=(120, 64)),
        "pixel": _pooled(pixel, (0, 0), 2.5, warm=(2000, 101), cold=(10000, 1000)),
    }
    return msgspec.structs.replace(summary, techniques=techniques)


def _make_summary() -> Summary:
    return Summary(
        schema=SCHEMA,
        run={
            "run_id": "20251127-154500-demo",
            "scenario": "all",
            "techniques": ["ajax", "pixel", "pixel-prewarm", "pixel-keepalive"],
            "profile": "mobileSlow4G",
            "exit_model": "visit-mix",
            "abort": "unload",
            "seed": 42,
            "users": 200,
            "duration": 120,
            "started": 1764258300.0,
            "ended": 1764258420.5,
            "host": "bench-1",
            "versions": {"lossbench": "0.1.0", "python": "3.11.2", "locust": "2.31.0"},
            "collector": {"processes": 2, "port": 8089},
            "browser": "chromium",
        },
        browser="chromium",
        reference="ajax",
        techniques={
            "ajax": _tech(
                12000,
                2172,
                (0.1742, 0.1880),
                0.175,
                {"dns": 610, "connect": 540, "preflight": 820, "headers": 130, "body": 60, "done": 12},
                _time_to_written(0.62, 0.55),
                _cost(2.0, 1.0, 0.81),
            ),
            "pixel": _tech(
                12000,
                1101,
                (0.0867, 0.0970),
                0.088,
                {"dns": 600, "connect": 480, "request": 21},
                _time_to_written(0.31, 0.6),
                _cost(1.0, 1.0, 0.35),
                duplicates=3,
            ),
            "pixel-prewarm": _tech(
                12000,
                701,
                (0.0543, 0.0625),
                None,
                {"connect": 690, "request": 11},
                _time_to_written(0.16, 0.5),
                _cost(1.42, 1.0, None),
            ),
            "pixel-keepalive": _tech(0, 0, (0.0, 1.0), 0.031, {}, NOT_WRITTEN, _cost(None, None, None)),
        },
        phantoms=0,
        comparisons=[
            _comparison("pixel", 1.97, 1e-40, "pixel loses 1.97× less than ajax (p < 0.001)"),
            _comparison(
                "pixel-prewarm", 3.1, 0.21, "pixel-prewarm vs ajax: no significant difference (p = 0.21)"
            ),
        ],
        timing=Timing(
            p50=0.0008,
            p90=0.003,
            p99=0.019,
            decided_on="intended",
            max_loss_shift=0.0012,
            loss_shift={"ajax": 0.0012},
            flagged=False,
        ),
        ledgers=[
            LedgerFile(
                path="sent/bench-1-101.jsonl",
                kind="sent",
                lines=36002,
                complete=True,
                truncated_last_line=False,
            ),
            LedgerFile(
                path="received/bench-1-201.0.jsonl",
                kind="received",
                lines=34028,
                complete=False,
                truncated_last_line=True,
            ),
        ],
        warnings=[
            "received/bench-1-201.0.jsonl has no footer: the collector was not closed cleanly",
            "pixel-keepalive: no events sent",
            MALICIOUS,
        ],
    )


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


Rendered = tuple[ReportPaths, Summary]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    summary = make_summary()
    return render_report(tmp_path_factory.mktemp("run"), summary), summary


def test_charts_are_valid_pngs_of_sensible_size(rendered: Rendered) -> None:
    paths, _ = rendered
    assert set(paths.charts) == {"loss", "stages", "time_to_written", "cost"}
    for name, path in paths.charts.items():
        assert path == paths.html.parent / "charts" / f"{name}.png"
        width, height = png_size(path)
        assert 900 <= width <= 2000 and 400 <= height <= 1500, (name, width, height)
        assert path.stat().st_size > 10_000


def test_charts_render_from_a_stored_summary(tmp_path: Path, stored: Summary) -> None:
    charts = render_charts(stored, tmp_path)
    assert list(charts) == ["loss", "stages", "time_to_written", "cost"]
    for path in charts.values():
        png_size(path)


def test_html_is_self_contained_and_complete(rendered: Rendered) -> None:
    paths, summary = rendered
    page = paths.html.read_text(encoding="utf-8")
    assert "20251127-154500-demo" in page
    for tech in summary.techniques:
        assert f"<tr><td>{tech}</td>" in page
    assert "<td>12,000</td><td>9,828</td><td>2,172</td><td>18.1% [17.4%, 18.8%]</td>" in page
    assert "no events sent" in page
    for comparison in summary.comparisons:
        assert escape(comparison.text) in page
    assert "<span class=sig>(not significant)</span>" in page
    assert "has no footer" in page and "INCOMPLETE" in page
    assert "mobileSlow4G" in page and "visit-mix" in page and "locust 2.31.0" in page
    assert page.count("data:image/png;base64,") == 4
    own = page.replace(escape(MALICIOUS), "")  # the escaped warning text names a URL, harmlessly
    assert "http://" not in own and "https://" not in own
    assert not re.search(r"""(src|href)=(?!["']?data:)""", own), "only data: URIs may be referenced"


def test_strings_from_the_summary_are_escaped(rendered: Rendered) -> None:
    paths, _ = rendered
    page = paths.html.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert escape(MALICIOUS) in page
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert "<script" not in markdown and "&lt;script&gt;" in markdown


def test_markdown_has_table_sentences_warnings_and_chart_links(rendered: Rendered) -> None:
    paths, summary = rendered
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert markdown == summary_markdown(summary, charts=paths.charts)
    assert "| pixel | 12,000 | 10,899 | 1,101 | 9.18% [8.67%, 9.70%] | 8.80% [8.18%, 9.42%] | 3 |" in markdown
    assert "- pixel loses 1.97× less than ajax (p &lt; 0.001) (significant)" in markdown
    assert "](charts/loss.png)" in markdown and "](charts/time_to_written.png)" in markdown
    assert "has no footer" in markdown and "mobileSlow4G" in markdown


def test_markdown_values_cannot_break_the_table(tmp_path: Path) -> None:
    summary = make_summary()
    summary = msgspec.structs.replace(summary, run={**summary.run, "host": "a | b *c* [x](y)"})
    markdown = summary_markdown(summary)
    assert "| host | a \\| b \\*c\\* [x\\](y) |" in markdown


def test_rendering_is_deterministic(tmp_path: Path, rendered: Rendered) -> None:
    first, summary = rendered
    again = render_report(tmp_path, summary)
    for name, path in first.charts.items():
        assert again.charts[name].read_bytes() == path.read_bytes(), name
    assert again.html.read_bytes() == first.html.read_bytes()


def test_the_templates_write_what_the_renderer_before_them_wrote(stored: Summary) -> None:
    """The stored run's page and Markdown, as the string-built renderer before issue 10 wrote them (the
    page without charts): the same bytes, but for how an apostrophe is escaped (markupsafe writes &#39;,
    html.escape wrote &#x27;; a browser shows both as '), and the summary's version the page names."""
    before = (
        (BEFORE / "report.before.html").read_text(encoding="utf-8").replace("lossbench.summary/1", SCHEMA)
    )
    # /5 names the browser preset (seed: the run.json of the stored run names none) in the meta line and
    # the parameters, and the cost chart's caption says what a pooling browser's chart adds
    seed = "<tr><td>browser preset</td><td>seed</td></tr>\n"
    before = before.replace("abort: unload</p>", "abort: unload · browser: seed</p>")
    before = before.replace(
        "<tr><td>seed</td><td>11</td></tr>\n", "<tr><td>seed</td><td>11</td></tr>\n" + seed
    )
    assert summary_html(stored, {}) == before.replace("&#x27;", "&#39;").replace("&quot;", "&#34;")
    charts = ["loss", "stages", "time_to_written", "cost"]
    markdown = (BEFORE / "report.before.md").read_text(encoding="utf-8")
    markdown = markdown.replace("| seed | 11 |\n", "| seed | 11 |\n| browser preset | seed |\n")
    markdown = markdown.replace(
        "per delivered event.](charts/cost.png)",
        "per delivered event; with a pooling browser, the model's connection-seconds held open per event "
        "beside them.](charts/cost.png)",
    )
    assert summary_markdown(stored, charts=charts) == markdown


def test_sparse_summary_renders_what_it_can(tmp_path: Path) -> None:
    """No cost figure, written event, comparison, ledger, warning or run id: what is there is drawn."""
    summary = make_summary()
    techniques = {
        name: msgspec.structs.replace(
            t, cost=_cost(None, None, None), time_to_written=NOT_WRITTEN, predicted_held_seconds=None
        )
        for name, t in summary.techniques.items()
    }
    techniques["pixel"] = msgspec.structs.replace(
        techniques["pixel"], predicted_loss=None, predicted_ci95=None, by_stage={}
    )
    run = {k: v for k, v in summary.run.items() if k != "run_id"}
    summary = msgspec.structs.replace(
        summary, run=run, techniques=techniques, comparisons=[], ledgers=[], warnings=[]
    )
    paths = render_report(tmp_path / "sparse-run", summary)
    assert set(paths.charts) == {"loss", "stages"}
    assert not (tmp_path / "sparse-run" / "charts" / "cost.png").exists()
    page = paths.html.read_text(encoding="utf-8")
    assert "run sparse-run" in page and page.count("data:image/png;base64,") == 2
    assert "<h2>Ledgers</h2>" not in page and "Warnings" not in page and "Comparisons" not in page
    assert "charts/cost.png" not in paths.markdown.read_text(encoding="utf-8")


def test_empty_summary_does_not_crash(tmp_path: Path) -> None:
    timing = Timing(
        p50=None, p90=None, p99=None, decided_on="intended", max_loss_shift=0.0, loss_shift={}, flagged=True
    )
    summary = Summary(
        schema=SCHEMA,
        run={},
        browser="seed",
        reference="ajax",
        techniques={},
        phantoms=0,
        comparisons=[],
        timing=timing,
        ledgers=[],
        warnings=[],
    )
    paths = render_report(tmp_path, summary)
    assert paths.charts == {}
    page = paths.html.read_text(encoding="utf-8")
    assert "Stage timing error unknown" in page and "load generator lagging" in page
    assert summary_markdown(summary).startswith("# lossbench report — run unknown")


AJAX_CONNECTIONS = (
    "warm 64% (loss 0.1% [0.1, 0.2]) · cold 35% (50.0% [48.5, 51.5]) · stale 1% (53.3% [44.4, 62.0]); "
    "preflights per delivered event 0.31 (2,345 cached); held connection-seconds per event (model) 4.25"
)


def test_the_report_says_what_the_events_found_and_names_the_browser(rendered: Rendered) -> None:
    """Per technique with a pool: each kind of connection found with its share and loss, the preflights
    per delivered event and the model's held connection-seconds; a technique that sent nothing has no line."""
    paths, _ = rendered
    page = paths.html.read_text(encoding="utf-8")
    assert "<h2>Connections (browser preset: chromium)</h2>" in page
    assert f"<li><b>ajax</b>: {escape(AJAX_CONNECTIONS)}</li>" in page
    assert "abort: unload · browser: chromium</p>" in page
    markdown = paths.markdown.read_text(encoding="utf-8")
    assert f"- ajax: {AJAX_CONNECTIONS}\n" in markdown
    assert (
        "- pixel: warm 17% (loss 5.1% [4.2, 6.1]) · cold 83% (10.0% [9.4, 10.6]); held connection-seconds "
        "per event (model) 2.5\n"
    ) in markdown
    assert "\n- pixel-prewarm:" not in markdown and "\n- pixel-keepalive:" not in markdown
    assert "| browser preset | chromium |" in markdown


def test_a_run_without_a_pool_has_no_connections_section(stored: Summary) -> None:
    """The seed preset's events asked no pool (``none``): nothing to say but the preset's name."""
    markdown = summary_markdown(stored)
    assert "Connections" not in markdown and "| browser preset | seed |" in markdown


def test_the_cost_chart_draws_the_models_held_seconds_alone(tmp_path: Path) -> None:
    """Without measured costs (no collector stats), the model's held connection-seconds still make a chart."""
    summary = make_summary()
    techniques = {
        name: msgspec.structs.replace(t, cost=_cost(None, None, None))
        for name, t in summary.techniques.items()
    }
    charts = render_charts(msgspec.structs.replace(summary, techniques=techniques), tmp_path)
    assert "cost" in charts
    png_size(charts["cost"])


def test_every_technique_has_a_colour_of_its_own() -> None:
    assert set(TECH_COLORS) == set(ALL_TECHNIQUES)
    assert len(set(TECH_COLORS.values())) == len(TECH_COLORS)
