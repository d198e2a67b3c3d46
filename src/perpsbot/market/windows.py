"""Per-symbol mark windows and the closed bars built from them."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from perpsbot.domain.clock import EPOCH


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
    volume: Decimal | None = None  # None: not known (a bar built from marks; a quote has no volume)


_UNKNOWN = float("nan")  # the volume of a bar built from marks


def _dec(value: float) -> Decimal:
    # repr() is the shortest string that reads back as the same float: 101.25 stays "101.25".
    return Decimal(repr(value))


class MarkWindow:
    """The last ``max_marks`` marks and the last ``max_bars`` closed bars of ``bar_seconds``.

    Marks come in two ways, both ending in the same closed bars:

    * live, ``append(mark)`` or ``push(epoch, price)`` (the stream's, no ``datetime``
      made until ``last`` is read): a bar closes when the first mark of a later bar arrives,
      so a strategy only ever sees finished bars;
    * from candles, ``append_bar(start, o, h, l, c)``: a bar that is already closed
      (a backtest, or a candle feed); its close becomes the mark, stamped at the
      bar's end.

    Closed bars are kept as float rows (start, open, high, low, close, volume; volume
    NaN where unknown) — they feed indicators — with ``bars`` giving them back as
    ``Bar`` values. The mark itself stays a ``Decimal`` (``last``).
    Counters: ``bars_closed`` counts bars closed here (not warm-up seeds);
    ``appended`` counts every bar that entered the window, seeds included, so a
    reader keeping incremental state knows how many it has not seen yet.
    """

    def __init__(self, max_marks: int, max_bars: int, bar_seconds: int) -> None:
        # (exchange time as epoch seconds, price): a ``Mark`` is built only for the one read (``last``).
        self._marks: deque[tuple[float, Decimal]] = deque(maxlen=max_marks)
        self._last_mark: Mark | None = None
        self._rows: deque[tuple[float, float, float, float, float, float]] = deque(maxlen=max_bars)
        self.bar_seconds = bar_seconds
        self._bucket: int | None = None
        self._open = self._high = self._low = self._close = Decimal(0)
        self.bars_closed = 0
        self.appended = 0
        self.last_close = 0.0  # close of the newest closed bar
        self.price: float | None = None  # the latest mark, as a float (for indicators)
        self.price_ts = float("-inf")  # its exchange time, epoch seconds
        self._stale_last = False  # the latest mark came from a candle and has no Mark yet

    def resize(self, max_marks: int, max_bars: int) -> None:
        self._marks = deque(self._marks, maxlen=max_marks)
        self._rows = deque(self._rows, maxlen=max_bars)

    @property
    def max_bars(self) -> int:
        return self._rows.maxlen or 0

    @property
    def last(self) -> Mark | None:
        if self._stale_last:
            assert self.price is not None
            fresh = Mark(EPOCH + timedelta(seconds=self.price_ts), _dec(self.price))
            self._marks.append((self.price_ts, fresh.price))
            self._last_mark = fresh
            self._stale_last = False
        mark = self._last_mark
        if mark is None and self._marks:
            epoch, price = self._marks[-1]
            mark = self._last_mark = Mark(datetime.fromtimestamp(epoch, UTC), price)
        return mark

    @property
    def marks(self) -> list[Mark]:
        """The marks held (at most ``max_marks``), oldest first."""
        self.last  # noqa: B018 - a candle's mark included
        return [Mark(datetime.fromtimestamp(epoch, UTC), price) for epoch, price in self._marks]

    @property
    def bars(self) -> list[Bar]:
        """The closed bars, oldest first."""
        return [
            Bar(EPOCH + timedelta(seconds=s), _dec(o), _dec(h), _dec(lo), _dec(c), None if v != v else _dec(v))
            for s, o, h, lo, c, v in self._rows
        ]

    @property
    def rows(self) -> deque[tuple[float, float, float, float, float, float]]:
        """The closed bars as they are kept (float rows, oldest first): read, never change."""
        return self._rows

    def closes(self) -> list[float]:
        return [row[4] for row in self._rows]

    def last_closes(self, count: int) -> list[float]:
        """The closes of the newest ``count`` bars (fewer if the window holds fewer), oldest first."""
        rows = self._rows
        count = min(count, len(rows))
        return [rows[-k][4] for k in range(count, 0, -1)]

    @property
    def bar_count(self) -> int:
        return len(self._rows)

    def append(self, mark: Mark) -> bool:
        """Add a mark; True when it closed a bar. Marks older than the last are ignored."""
        ts = mark.ts.timestamp()
        if ts < self.price_ts:
            return False
        closed = self.push(ts, mark.price)
        self._last_mark = mark  # read back as given
        return closed

    def push(self, ts: float, price: Decimal) -> bool:
        """``append`` for a mark given as its exchange time (epoch seconds) and price: the
        stream's path, with no ``datetime`` made. True when it closed a bar."""
        if ts < self.price_ts:
            return False
        if self._stale_last:
            self.last  # noqa: B018 - materialize the candle's mark so the marks stay in time order
        self._marks.append((ts, price))
        self._last_mark = None
        self.price = float(price)
        self.price_ts = ts
        bucket = int(ts) // self.bar_seconds
        if bucket == self._bucket:
            if price > self._high:
                self._high = price
            elif price < self._low:
                self._low = price
            self._close = price
            return False
        if self._bucket is None:
            self._start_bar(bucket, price)
            return False
        self.last_close = float(self._close)
        self._rows.append(
            (float(self._bucket * self.bar_seconds), float(self._open), float(self._high), float(self._low),
             self.last_close, _UNKNOWN)
        )
        self.bars_closed += 1
        self.appended += 1
        self._start_bar(bucket, price)
        return True

    def append_bar(
        self, start: float, open_: float, high: float, low: float, close: float, volume: float = _UNKNOWN
    ) -> None:
        """Add a bar that is already closed (a candle starting at ``start``, epoch
        seconds). Its close is the mark, stamped at the bar's end. The caller feeds
        candles in time order."""
        self._rows.append((start, open_, high, low, close, volume))
        self.last_close = close
        self.bars_closed += 1
        self.appended += 1
        self.price = close
        self.price_ts = start + self.bar_seconds
        self._stale_last = True
        self._bucket = None

    def seed_bars(self, bars: list[Bar]) -> None:
        """Pre-fill closed bars (from exchange candles) so the strategy need not wait."""
        for bar in bars:
            self.last_close = float(bar.close)
            self._rows.append(
                (bar.start.timestamp(), float(bar.open), float(bar.high), float(bar.low), self.last_close,
                 _UNKNOWN if bar.volume is None else float(bar.volume))
            )
            self.appended += 1
        if bars:
            last_bucket = int(bars[-1].start.timestamp()) // self.bar_seconds
            if self._bucket is None or self._bucket <= last_bucket:
                self._bucket = None

    def _start_bar(self, bucket: int, price: Decimal) -> None:
        self._bucket = bucket
        self._open = self._high = self._low = self._close = price

