"""RunMetricsRecorder: sampled and collected run metrics, None where there is no data."""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from perpsbot.domain.clock import ManualClock
from perpsbot.market.streaming import LagHistogram
from perpsbot.review.runmetrics import METRIC_FIELDS, MIB, RunMetricsRecorder, percentile
from perpsbot.store import EventStore
from tests.conftest import T0


class FakeProcess:
    def __init__(self) -> None:
        self.rss = 100 * MIB
        self.cpu = 0.0

    def memory_info(self):
        return SimpleNamespace(rss=self.rss)

    def cpu_times(self):
        return SimpleNamespace(user=self.cpu * 0.75, system=self.cpu * 0.25)


class FakeMarket:
    def __init__(self, symbols=("A-USD", "B-USD")) -> None:
        self.symbols = symbols
        self.updates_total = 40  # before the run began: not counted
        self.streamed_total = 0
        self.ages: dict[str, float | None] = {s: None for s in symbols}

    def mark_age(self, symbol: str) -> float | None:
        return self.ages[symbol]


@pytest.fixture
def events(tmp_path: Path):
    store = EventStore(tmp_path / "events.db")
    yield store
    store.close()


def make(events, clock, market=None, streaming=None):
    process, now = FakeProcess(), [1000.0]
    execution = SimpleNamespace(placed=0, failed=0, latencies_ms=deque())
    market = market or FakeMarket()
    recorder = RunMetricsRecorder(clock, events, market, execution, streaming, process=process,
                                  monotonic=lambda: now[0])
    return recorder, process, now, execution, market


def test_no_data_is_none_not_zero(events, clock):
    recorder, *_ = make(events, clock)
    events.start_run(clock.now(), "paper", {})
    assert recorder.figures() == {name: None for name in METRIC_FIELDS}  # not begun: nothing measured


def test_figures_from_samples_and_services(events, clock):
    events.start_run(clock.now(), "paper", {})
    recorder, process, now, execution, market = make(events, clock)
    recorder.begin()
    for second in range(1, 11):
        clock.advance(1)
        now[0] += 1
        process.cpu += 0.05 if second != 10 else 0.5  # 5 % a second, one 50 % spike
        process.rss = (100 + second) * MIB
        market.updates_total += 2  # two symbols, two updates each a second: polled ...
        market.streamed_total += 2  # ... and streamed
        market.ages = {"A-USD": 0.1 * second, "B-USD": None}
        recorder.sample()
    execution.placed, execution.failed = 3, 1
    execution.latencies_ms.extend([5.0, 7.0, 120.0])
    figures = recorder.figures()
    assert figures["mark_update_frequency_hz"] == 2.0
    assert figures["memory_rss_avg_mb"] == 105.5
    assert figures["cpu_p95_pct"] == pytest.approx(50.0, rel=0.05)  # the spike: p95 of ten samples
    assert figures["mark_freshness_p95_ms"] == pytest.approx(1000.0, rel=0.05)
    assert figures["order_failure_rate_pct"] == 25.0
    assert figures["order_latency_p99_ms"] == 120.0
    assert figures["stream_heartbeat_lag_p95_ms"] is None and figures["ws_message_lag_p99_ms"] is None
    assert figures["backup_duration_avg_s"] is None


def test_a_short_cpu_window_is_left_out(events, clock):
    recorder, process, now, *_ = make(events, clock)
    recorder.begin()
    now[0] += 0.01
    process.cpu += 0.01  # 100 % for 10 ms: shutdown work, not load
    recorder.sample()
    assert recorder.figures()["cpu_p95_pct"] is None
    assert recorder.figures()["memory_rss_avg_mb"] == 100.0


def test_streaming_lag_quantiles(events, clock):
    lag = LagHistogram()
    for ms in range(1, 101):
        lag.record(ms / 1000)
    recorder, *_ = make(events, clock, streaming=SimpleNamespace(lag=lag))
    figures = recorder.figures()
    assert figures["stream_heartbeat_lag_p95_ms"] == pytest.approx(95.0, rel=0.05)
    assert figures["ws_message_lag_p99_ms"] == pytest.approx(99.0, rel=0.05)


def test_backup_durations_of_this_run_and_on_demand_ones_during_it(events, clock):
    events.append(clock.now() - timedelta(hours=1), "backup_completed", None, duration_seconds=100.0)  # before
    events.start_run(clock.now() - timedelta(hours=2), "paper", {})
    events.append(clock.now(), "backup_completed", None, duration_seconds=50.0)  # an earlier run's
    run = events.start_run(clock.now(), "paper", {})
    recorder, *_ = make(events, clock)
    recorder.begin()
    clock.advance(5)
    events.append(clock.now(), "backup_completed", None, duration_seconds=2.0)
    events.append(clock.now(), "backup_completed", None, duration_seconds="oops")  # not a number: ignored
    events.run_id = None  # `perpsbot backup` from another process records no run
    events.append(clock.now(), "backup_completed", None, duration_seconds=4.0)
    events.run_id = run
    assert recorder.figures()["backup_duration_avg_s"] == 3.0


def test_percentile_nearest_rank():
    assert percentile([], 99) is None
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([3.0], 50) == 3.0


async def test_the_loop_samples_on_the_clock(events):
    clock = ManualClock(T0)
    recorder, *_ = make(events, clock)
    recorder.begin()
    task = asyncio.create_task(recorder.loop())
    await asyncio.sleep(0)
    for _ in range(3):
        clock.advance(recorder.sample_seconds)
        await asyncio.sleep(0)
    task.cancel()
    assert recorder.rss_samples == 3


async def test_the_sampling_task_survives_the_os_refusing_a_sample_and_logs_it_rate_limited(events, clock, caplog):
    import errno
    import logging

    events.start_run(clock.now(), "paper", {})
    recorder, process, now, *_ = make(events, clock)
    real = process.memory_info

    def out_of_descriptors():
        raise OSError(errno.EMFILE, "Too many open files")

    process.memory_info = out_of_descriptors
    recorder.begin()
    task = asyncio.create_task(recorder.loop())
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            clock.advance(1)
            now[0] += 1
            await asyncio.sleep(0)
        assert not task.done(), task.exception() if task.done() else None
        process.memory_info = real  # descriptors again: sampling goes on
        for _ in range(3):
            clock.advance(1)
            now[0] += 1
            await asyncio.sleep(0)
    task.cancel()
    assert recorder.rss_samples == 3
    lines = [r.getMessage() for r in caplog.records if "Too many open files" in r.getMessage()]
    assert lines == ["run metrics: sample skipped: [Errno 24] Too many open files"]
