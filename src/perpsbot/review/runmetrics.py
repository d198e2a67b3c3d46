"""The production metrics of one run, recorded in its store for drift reviews.

``RunMetricsRecorder`` samples what nobody else measures — the process's resident
memory and CPU, and every symbol's mark age as the risk manager's staleness guard
reads it — every ``SAMPLE_SECONDS``, and reads the rest from the services that
already measure it: mark updates from ``MarketDataService``, order latencies and
outcomes from ``ExecutionCoordinator``, the streaming lag histogram from
``StreamingService`` and backup durations from ``backup_completed`` events. At
shutdown the bot writes the figures as one ``run_metrics`` event and into the run's
summary. A metric without data (no stream on the in-process simulator, no order, no
backup) is ``None``, never 0.

Sampled series are kept in fixed-size log histograms (``LagHistogram``), so memory
stays flat however long the bot runs.

Process figures come from psutil: current RSS and CPU times the same way on Linux,
macOS and Windows (``/proc`` is Linux-only, and the standard library has no current
RSS).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import psutil

from perpsbot.logs import RateLimitedLog
from perpsbot.market.streaming import LagHistogram

if TYPE_CHECKING:
    from perpsbot.domain.clock import Clock
    from perpsbot.execution.coordinator import ExecutionCoordinator
    from perpsbot.market.data import MarketDataService
    from perpsbot.market.streaming import StreamingService
    from perpsbot.store import EventStore

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 1.0
MIB = 1024 * 1024

# The run_metrics fields, in the seed's order: (field, what it measures).
METRIC_FIELDS: dict[str, str] = {
    "mark_update_frequency_hz": "mark updates (polled + streamed) per second per symbol",
    "stream_heartbeat_lag_p95_ms": "streaming lag p95: exchange time of a message to its mark (stream_heartbeat)",
    "mark_freshness_p95_ms": "p95 of sampled mark ages, as the risk manager's staleness guard reads them",
    "order_failure_rate_pct": "orders failed or rejected by the exchange / orders sent, percent",
    "order_latency_p99_ms": "p99 of decision to exchange acknowledgement, per placed order",
    "ws_message_lag_p99_ms": "p99 of the same streaming lag (every WebSocket message that moved or confirmed a mark)",
    "backup_duration_avg_s": "mean duration_seconds of backup_completed events during the run",
    "memory_rss_avg_mb": "mean sampled resident set size of the bot process, MiB",
    "cpu_p95_pct": "p95 of sampled process CPU (user + system) over each sample interval, percent of one core",
}


def percentile(samples: Iterable[float], pct: float) -> float | None:
    """Nearest-rank percentile of the samples, rounded to 3 places; None when empty."""
    ordered = sorted(samples)
    if not ordered:
        return None
    rank = max(0, math.ceil(pct / 100 * len(ordered)) - 1)
    return round(ordered[rank], 3)


def _round(value: float | None, places: int = 3) -> float | None:
    return None if value is None else round(value, places)


class RunMetricsRecorder:
    def __init__(
        self,
        clock: Clock,
        events: EventStore,
        market_data: MarketDataService,
        execution: ExecutionCoordinator,
        streaming: StreamingService | None = None,
        *,
        sample_seconds: float = SAMPLE_SECONDS,
        process: psutil.Process | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.events = events
        self.market_data = market_data
        self.execution = execution
        self.streaming = streaming
        self.sample_seconds = sample_seconds
        self._process = process or psutil.Process()
        self._monotonic = monotonic
        self.mark_ages = LagHistogram()  # seconds
        self.cpu = LagHistogram()  # percent of one core, stored as plain numbers
        self.rss_sum = 0.0
        self.rss_samples = 0
        self.began: datetime | None = None
        self._marks_at_start = 0
        self._cpu_at: tuple[float, float] | None = None  # (monotonic, process CPU seconds) at the last sample
        self._sample_failed = RateLimitedLog(log, monotonic=monotonic)

    def begin(self) -> None:
        """The run starts now: counters are taken from here."""
        self.began = self.clock.now()
        self._marks_at_start = self._marks_total()
        self._cpu_at = (self._monotonic(), self._cpu_seconds())

    def _marks_total(self) -> int:
        return self.market_data.updates_total + self.market_data.streamed_total

    def _cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    async def loop(self) -> None:
        while True:
            await self.clock.sleep(self.sample_seconds)
            self.sample()

    def sample(self) -> None:
        """One sample of memory, CPU since the previous sample, and every mark's age.

        A sample the OS refuses (out of file descriptors: psutil reads ``/proc``) is left
        out and logged, rate-limited: the recorder, and the run, go on.
        A CPU window shorter than half the sample interval (the last sample, taken at
        shutdown) is left out: a few milliseconds of work would read as a spike."""
        try:
            self._sample()
        except (OSError, psutil.Error) as exc:
            self._sample_failed(logging.WARNING, "run metrics: sample skipped: %s", exc)

    def _sample(self) -> None:
        self.rss_sum += self._process.memory_info().rss / MIB
        self.rss_samples += 1
        now, cpu = self._monotonic(), self._cpu_seconds()
        if self._cpu_at is not None and now - self._cpu_at[0] >= self.sample_seconds / 2:
            self.cpu.record(max(0.0, 100 * (cpu - self._cpu_at[1]) / (now - self._cpu_at[0])))
            self._cpu_at = (now, cpu)
        for symbol in self.market_data.symbols:
            age = self.market_data.mark_age(symbol)
            if age is not None:
                self.mark_ages.record(age)

    def figures(self) -> dict[str, float | None]:
        """The metrics so far, by ``METRIC_FIELDS`` name (None: no data)."""
        execution = self.execution
        sent = execution.placed + execution.failed
        stream_lag = self.streaming.lag if self.streaming is not None else None
        return {
            "mark_update_frequency_hz": self._mark_frequency(),
            "stream_heartbeat_lag_p95_ms": _ms(stream_lag.quantile(0.95)) if stream_lag else None,
            "mark_freshness_p95_ms": _ms(self.mark_ages.quantile(0.95)),
            "order_failure_rate_pct": round(100 * execution.failed / sent, 3) if sent else None,
            "order_latency_p99_ms": percentile(execution.latencies_ms, 99),
            "ws_message_lag_p99_ms": _ms(stream_lag.quantile(0.99)) if stream_lag else None,
            "backup_duration_avg_s": self._backup_average(),
            "memory_rss_avg_mb": round(self.rss_sum / self.rss_samples, 1) if self.rss_samples else None,
            "cpu_p95_pct": _round(self.cpu.quantile(0.95), 1),
        }

    def _mark_frequency(self) -> float | None:
        symbols = len(self.market_data.symbols)
        if self.began is None or not symbols:
            return None
        seconds = (self.clock.now() - self.began).total_seconds()
        if seconds <= 0:
            return None
        return round((self._marks_total() - self._marks_at_start) / seconds / symbols, 3)

    def _backup_average(self) -> float | None:
        """Backups this run made, and on-demand ones (no run) finished while it ran."""
        if self.began is None:
            return None
        began = self.began.isoformat()
        durations = [
            float(e.data["duration_seconds"])
            for e in self.events.query(kind="backup_completed")
            if isinstance(e.data.get("duration_seconds"), int | float)
            and (e.run_id == self.events.run_id or (e.run_id is None and e.ts >= began))
        ]
        return round(sum(durations) / len(durations), 3) if durations else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
