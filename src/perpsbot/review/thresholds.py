"""Which way each metric is bad, and when a change counts as drift.

A row is flagged when

* the current value is past the metric's alert threshold (the seed review's alerts:
  order latency p99 > 150 ms, streaming lag p95 > 100 ms, memory > 300 MB, CPU p95 >
  25 %, no mark update for > 60 s), or
* it moved in the metric's bad direction by more than ``RELATIVE`` (5 %) of the
  baseline *and* by more than the metric's absolute floor. The floors keep sampling
  noise (CPU, memory, mark age, a millisecond of scheduling) from flagging two runs
  of the same code; they are the smallest change worth a look.

A move as large the other way is "improved"; anything else is "stable". A metric
without data on either side is not compared.
"""

from __future__ import annotations

from dataclasses import dataclass

RELATIVE = 0.05


@dataclass(frozen=True)
class MetricSpec:
    field: str  # the run_metrics field (or a code-level key)
    label: str  # the seed's name for it
    unit: str  # shown after values: "ms", "s", "%", "MB", "Hz", "" (a count)
    higher_is_better: bool
    floor: float  # absolute change below which nothing is flagged
    alert: float | None = None  # the seed's alert threshold (bad side), if it gives one
    relative: float = RELATIVE


@dataclass(frozen=True)
class Verdict:
    status: str  # degraded | alert | improved | stable | no data
    delta: float | None  # current - baseline
    delta_pct: float | None  # of the baseline; None when the baseline is 0 or missing

    @property
    def flagged(self) -> bool:
        return self.status in ("degraded", "alert")


# The seed's production metrics, in its order (drift summary, then performance).
PRODUCTION: tuple[MetricSpec, ...] = (
    MetricSpec("mark_update_frequency_hz", "Mark update frequency", "Hz", True, floor=0.05),
    MetricSpec("stream_heartbeat_lag_p95_ms", "Streaming heartbeat lag (p95)", "ms", False, floor=10, alert=100),
    MetricSpec("mark_freshness_p95_ms", "Risk manager mark freshness (mark age p95)", "ms", False,
               floor=1000, alert=60_000),
    MetricSpec("order_failure_rate_pct", "Order placement failure rate", "%", False, floor=1),
    MetricSpec("order_latency_p99_ms", "Order latency (p99)", "ms", False, floor=25, alert=150),
    MetricSpec("ws_message_lag_p99_ms", "WS message lag (p99)", "ms", False, floor=10),
    MetricSpec("backup_duration_avg_s", "Backup duration (avg)", "s", False, floor=1),
    MetricSpec("memory_rss_avg_mb", "Memory usage (avg RSS)", "MB", False, floor=16, alert=300),
    MetricSpec("cpu_p95_pct", "CPU usage (p95)", "%", False, floor=10, alert=25),
)
DRIFT_SUMMARY = PRODUCTION[:4]
PERFORMANCE = PRODUCTION[4:]

# Code-level rows from JUnit reports: fewer tests or any new failure is flagged.
CODE: tuple[MetricSpec, ...] = (
    MetricSpec("tests", "Test count", "", True, floor=0, relative=0),
    MetricSpec("passed", "Tests passed", "", True, floor=0, relative=0),
    MetricSpec("failed", "Failures + errors", "", False, floor=0, relative=0),
    MetricSpec("skipped", "Tests skipped", "", False, floor=0, relative=0),
    MetricSpec("success_rate_pct", "Test success rate", "%", True, floor=0, relative=0),
    MetricSpec("seconds", "Test runtime (total)", "s", False, floor=1),
    MetricSpec("slowest_seconds", "Slowest test", "s", False, floor=0.5),
)


def evaluate(spec: MetricSpec, baseline: float | None, current: float | None) -> Verdict:
    if current is not None and spec.alert is not None:
        over = current < spec.alert if spec.higher_is_better else current > spec.alert
        if over:
            return Verdict("alert", *_delta(baseline, current))
    if baseline is None or current is None:
        return Verdict("no data", None, None)
    delta, pct = _delta(baseline, current)
    assert delta is not None
    worse = -delta if spec.higher_is_better else delta
    margin = max(spec.relative * abs(baseline), spec.floor)
    if worse > margin:
        return Verdict("degraded", delta, pct)
    if -worse > margin:
        return Verdict("improved", delta, pct)
    return Verdict("stable", delta, pct)


def _delta(baseline: float | None, current: float | None) -> tuple[float | None, float | None]:
    if baseline is None or current is None:
        return None, None
    delta = current - baseline
    return delta, (100 * delta / abs(baseline) if baseline else None)


def rule_text() -> str:
    """The thresholds as the report and the README state them."""
    lines = [
        f"A row is flagged when the current value moved the bad way by more than {RELATIVE:.0%} of the "
        "baseline and by more than the metric's floor, or when it is past the metric's alert threshold "
        "(from the seed review). Floors keep sampling noise from flagging two runs of the same code.",
        "",
        "| Metric | Bad direction | Floor | Alert threshold |",
        "|--------|---------------|-------|-----------------|",
    ]
    for spec in PRODUCTION:
        direction = "lower" if spec.higher_is_better else "higher"
        alert = "-" if spec.alert is None else f"{'<' if spec.higher_is_better else '>'} {_num(spec.alert)} {spec.unit}"
        floor_unit = "pp" if spec.unit == "%" else spec.unit
        lines.append(f"| {spec.label} | {direction} | {_num(spec.floor)} {floor_unit} | {alert} |")
    return "\n".join(lines)


def _num(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:,.0f}"
