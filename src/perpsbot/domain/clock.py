"""Clocks: the wall clock for paper and live, a manual clock for tests and backtests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """Time moves only when ``advance`` is called; sleepers wake once it passes their deadline."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._waiters: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        still_waiting = []
        for deadline, future in self._waiters:
            if future.done():
                continue
            if deadline <= self._now:
                future.set_result(None)
            else:
                still_waiting.append((deadline, future))
        self._waiters = still_waiting

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + timedelta(seconds=seconds)
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((deadline, future))
        await future


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the one epoch: every other module imports it


class SimulatedClock:
    """Backtest time: set by the replay loop, read by everyone else.

    ``epoch`` (seconds since the Unix epoch) is what the loop sets, once per candle —
    a plain attribute, so a candle no one looks at costs one write; ``now()`` builds
    the datetime only when someone asks. ``sleep`` never blocks: simulated time moves
    only when the replay moves it, and nothing in a backtest waits on a timer.
    """

    __slots__ = ("epoch", "_now", "_now_epoch")

    def __init__(self, epoch: float = 0.0) -> None:
        self.epoch = float(epoch)
        self._now: datetime | None = None
        self._now_epoch = -1.0

    def set(self, epoch: float) -> None:
        """Move to ``epoch``; never backwards."""
        if epoch < self.epoch:
            raise ValueError("simulated time never goes backwards")
        self.epoch = epoch

    def now(self) -> datetime:
        if self._now_epoch != self.epoch or self._now is None:
            self._now = EPOCH + timedelta(seconds=self.epoch)
            self._now_epoch = self.epoch
        return self._now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)
