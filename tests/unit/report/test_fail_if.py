"""``--fail-if`` over a stored summary: the language, and errors that say what is wrong."""

from __future__ import annotations

import msgspec
import pytest

from lossbench.contract.summary import Summary
from lossbench.report.fail_if import evaluate_fail_if


@pytest.fixture(scope="module")
def summary(stored: Summary) -> Summary:
    """The stored run (ajax 10.8%, pixel 4.8%, pixel-keepalive 0%) without pixel-prewarm, with one phantom
    and no prediction for pixel."""
    techniques = {k: v for k, v in stored.techniques.items() if k != "pixel-prewarm"}
    techniques["pixel"] = msgspec.structs.replace(
        techniques["pixel"], predicted_loss=None, predicted_ci95=None
    )
    return msgspec.structs.replace(stored, techniques=techniques, phantoms=1)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("pixel.loss > 0.02", True),
        ("pixel.loss > 0.5", False),
        ("ajax.ci95[1] >= 0.19", True),
        ("ajax.ci95[0] >= 0.1", False),
        ("ajax.ci95[-1] > ajax.ci95[0]", True),
        ("phantoms > 0", True),
        ("phantoms > 0 and pixel.loss > 0.5", False),
        ("phantoms > 5 or pixel.loss > 0.02", True),
        ("not phantoms", False),
        ("pixel-keepalive.loss > 0.02", False),
        ("pixel-keepalive.loss < 0.02", True),
        ("pixel-keepalive.loss>0.05 or ajax.loss - pixel.loss > 0.05", True),
        ("pixel.by_stage['connect'] == 3", True),
        ("pixel.cost.requests_per_delivered * 2 == 2", True),
        ("timing.flagged", False),
        ("pixel.predicted_loss == None", True),
        ("0.01 < pixel.loss < 0.1", True),
        ("-pixel.loss < 0", True),
    ],
)
def test_fail_if(summary: Summary, expr: str, expected: bool) -> None:
    assert evaluate_fail_if(summary, expr) is expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("pixl.loss > 0", "unknown name 'pixl'; use a technique"),
        ("pixel-prewarm.loss > 0", "technique 'pixel-prewarm' is not in this run"),
        ("foo-bar.loss > 0", "unknown name 'foo-bar'"),
        ("pixel.los > 0", "pixel has no field 'los'"),
        ("ajax.ci95[2] > 0", r"ajax.ci95\[2\] does not exist"),
        ("__import__('os').system('true')", "Call is not allowed"),
        ("pixel.loss > ", "not a valid expression"),
        ("pixel.predicted_loss > 0.1", "cannot compare None with 0.1"),
        ("pixel", "not a condition"),
        ("[1] == [1]", "List is not allowed"),
        ("pixel.loss.__class__", "has no field '__class__'"),
        ("pixel.loss / 0 > 1", "division by zero"),
        ("timing.flagged + 1 > 0", "timing.flagged is False, not a number"),
    ],
)
def test_fail_if_errors(summary: Summary, expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_fail_if(summary, expr)
