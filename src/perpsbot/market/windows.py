"""Per-symbol mark windows and the closed bars built from them."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Mark:
    ts: datetime  # exchange time of the quote the mark came from
    price: Decimal


@dataclass(frozen=True, slots=True)
class Bar:
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


class MarkWindow:
    """The last ``max_marks`` marks and the last ``max_bars`` closed bars of ``bar_seconds``.

    A bar closes when the first mark of a later bar arrives, so a strategy reading
    ``bars`` only ever sees finished bars.
    """

    def __init__(self, max_marks: int, max_bars: int, bar_seconds: int) -> None:
        self.marks: deque[Mark] = deque(maxlen=max_marks)
        self.bars: deque[Bar] = deque(maxlen=max_bars)
        self.bar_seconds = bar_seconds
        self._bucket: int | None = None
        self._open = self._high = self._low = self._close = Decimal(0)
        self.bars_closed = 0

    def resize(self, max_marks: int, max_bars: int) -> None:
        self.marks = deque(self.marks, maxlen=max_marks)
        self.bars = deque(self.bars, maxlen=max_bars)

    @property
    def last(self) -> Mark | None:
        return self.marks[-1] if self.marks else None

    def append(self, mark: Mark) -> bool:
        """Add a mark; True when it closed a bar. Marks older than the last are ignored."""
        last = self.last
        if last is not None and mark.ts < last.ts:
            return False
        self.marks.append(mark)
        bucket = int(mark.ts.timestamp()) // self.bar_seconds
        price = mark.price
        if self._bucket is None:
            self._start_bar(bucket, price)
            return False
        if bucket == self._bucket:
            self._high = max(self._high, price)
            self._low = min(self._low, price)
            self._close = price
            return False
        self.bars.append(self._current_bar())
        self.bars_closed += 1
        self._start_bar(bucket, price)
        return True

    def seed_bars(self, bars: list[Bar]) -> None:
        """Pre-fill closed bars (from exchange candles) so the strategy need not wait."""
        for bar in bars:
            self.bars.append(bar)
        if bars:
            last_bucket = int(bars[-1].start.timestamp()) // self.bar_seconds
            if self._bucket is None or self._bucket <= last_bucket:
                self._bucket = None

    def _start_bar(self, bucket: int, price: Decimal) -> None:
        self._bucket = bucket
        self._open = self._high = self._low = self._close = price

    def _current_bar(self) -> Bar:
        start = datetime.fromtimestamp((self._bucket or 0) * self.bar_seconds, tz=UTC)
        return Bar(start, self._open, self._high, self._low, self._close)
