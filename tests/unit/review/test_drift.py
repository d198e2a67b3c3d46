"""Picking runs, and a report for runs that recorded no metrics."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from perpsbot.review.drift import ReviewError, build, markdown, resolve_run, write
from perpsbot.store import EventStore, Run


def runs(*ids: int) -> list[Run]:
    return [Run(i, "2026-03-02T12:00:00+00:00", None, "paper", {}, None) for i in ids]


def test_runs_by_id_latest_and_previous():
    recorded = runs(3, 1, 7)
    assert resolve_run(recorded, "latest", "current").id == 7
    assert resolve_run(recorded, "previous", "baseline").id == 3
    assert resolve_run(recorded, " 1 ", "baseline").id == 1


@pytest.mark.parametrize(
    ("recorded", "ref", "message"),
    [
        (runs(), "latest", "no runs recorded yet"),
        (runs(4), "previous", "--baseline previous: only one run is recorded"),
        (runs(1, 2), "5", "--baseline 5: no such run; runs recorded: 1, 2"),
        (runs(1, 2), "1.5", "--baseline '1.5' is not a run id, 'latest' or 'previous'"),
    ],
)
def test_bad_run_references(recorded, ref, message):
    with pytest.raises(ReviewError) as caught:
        resolve_run(recorded, ref, "baseline")
    assert str(caught.value) == message


def test_a_run_without_metrics_is_reported_not_compared(tmp_path: Path, clock):
    events = EventStore(tmp_path / "events.db")
    events.start_run(clock.now(), "paper", {"exchange": "sim", "symbols": ["BTC-USD"]})  # killed: no end, no metrics
    events.start_run(clock.now() + timedelta(minutes=1), "paper", {"exchange": "sim", "symbols": ["BTC-USD"]})
    events.append(clock.now(), "run_metrics", None, order_latency_p99_ms=200.0, cpu_p95_pct=None)
    events.end_run(clock.now() + timedelta(minutes=2), {})
    first, second = events.runs()
    review = build(events, first, second, now=clock.now())
    events.close()
    rows = {r.spec.field: r for r in review.rows}
    assert rows["order_latency_p99_ms"].verdict.status == "alert"  # 200 ms is past 150 ms whatever the baseline
    assert all(r.verdict.status == "no data" for f, r in rows.items() if f != "order_latency_p99_ms")
    text = markdown(review)
    assert "run 1 recorded no run_metrics" in text
    assert "ended `not recorded (no clean shutdown)`" in text
    written = write(review, tmp_path / "out" / "r.md")
    assert [p.name for p in written] == ["r.md", "order_latency_p99_ms.png"]  # a chart only where there is data


def test_junit_arguments_pick_a_side():
    from perpsbot.cli.common import UserError
    from perpsbot.cli.drift import parse_junit_args

    base, cur = parse_junit_args(["baseline=old.xml", "new.xml", "current=more.xml", "odd=name.xml"])
    assert base == [Path("old.xml")]
    assert cur == [Path("new.xml"), Path("more.xml"), Path("odd=name.xml")]  # only the two sides are prefixes
    with pytest.raises(UserError, match="--junit baseline=: a file must follow 'baseline='"):
        parse_junit_args(["baseline="])
