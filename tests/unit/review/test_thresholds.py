"""When a metric's change counts as drift: direction, the 5 % rule, floors, alerts."""

from __future__ import annotations

import pytest

from perpsbot.review.runmetrics import METRIC_FIELDS
from perpsbot.review.thresholds import CODE, PRODUCTION, MetricSpec, evaluate, rule_text

LATENCY = next(s for s in PRODUCTION if s.field == "order_latency_p99_ms")
FREQUENCY = next(s for s in PRODUCTION if s.field == "mark_update_frequency_hz")
CPU = next(s for s in PRODUCTION if s.field == "cpu_p95_pct")
TESTS = next(s for s in CODE if s.field == "tests")


def test_every_recorded_metric_has_a_threshold_in_the_seed_order():
    assert [s.field for s in PRODUCTION] == list(METRIC_FIELDS)


@pytest.mark.parametrize(
    ("baseline", "current", "status"),
    [
        (100.0, 100.0, "stable"),
        (100.0, 104.9, "stable"),  # under 5 %
        (100.0, 126.0, "degraded"),  # 26 % and 26 ms > the 25 ms floor
        (100.0, 124.0, "stable"),  # 24 %, but within the 25 ms floor
        (2.0, 20.0, "stable"),  # +900 % of a tiny baseline is still inside the floor
        (2.0, 30.0, "degraded"),
        (140.0, 100.0, "improved"),
        (140.0, 151.0, "alert"),  # past the seed's 150 ms alert, whatever the change
    ],
)
def test_order_latency_lower_is_better(baseline, current, status):
    verdict = evaluate(LATENCY, baseline, current)
    assert verdict.status == status
    assert verdict.flagged == (status in ("degraded", "alert"))
    assert verdict.delta == pytest.approx(current - baseline)


def test_frequency_higher_is_better():
    assert evaluate(FREQUENCY, 2.0, 1.8).status == "degraded"  # -10 %
    assert evaluate(FREQUENCY, 2.0, 1.95).status == "stable"  # -2.5 %
    assert evaluate(FREQUENCY, 2.0, 2.5).status == "improved"
    assert evaluate(FREQUENCY, 0.5, 0.46).status == "stable"  # -8 % but 0.04 Hz is inside the floor


def test_cpu_noise_floor_and_alert():
    assert evaluate(CPU, 2.0, 3.0).status == "stable"  # +50 %, one point
    assert evaluate(CPU, 2.0, 13.0).status == "degraded"
    assert evaluate(CPU, 30.0, 30.0).status == "alert"  # over 25 % is flagged even unchanged


def test_missing_data_is_not_compared_but_an_alert_still_shows():
    assert evaluate(LATENCY, None, 10.0).status == "no data"
    assert evaluate(LATENCY, 10.0, None).status == "no data"
    assert evaluate(LATENCY, None, None).flagged is False
    verdict = evaluate(LATENCY, None, 200.0)
    assert verdict.status == "alert" and verdict.delta is None


def test_a_zero_baseline_has_no_percent_and_uses_the_floor():
    rate = next(s for s in PRODUCTION if s.field == "order_failure_rate_pct")
    assert evaluate(rate, 0.0, 0.5).status == "stable"
    verdict = evaluate(rate, 0.0, 5.0)
    assert verdict.status == "degraded" and verdict.delta_pct is None


def test_any_lost_test_is_flagged():
    assert evaluate(TESTS, 52, 51).status == "degraded"
    assert evaluate(TESTS, 52, 52).status == "stable"
    assert evaluate(TESTS, 38, 52).status == "improved"


def test_custom_relative_threshold():
    spec = MetricSpec("x", "X", "ms", False, floor=0, relative=0.5)
    assert evaluate(spec, 10, 14).status == "stable"
    assert evaluate(spec, 10, 16).status == "degraded"


def test_rule_text_lists_every_metric_floor_and_alert():
    text = rule_text()
    for spec in PRODUCTION:
        assert f"| {spec.label} |" in text
    assert "> 150 ms" in text and "> 25 %" in text and "| 10 pp |" in text
