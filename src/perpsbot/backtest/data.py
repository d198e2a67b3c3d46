"""Candles for a backtest: loaded from CSV or Parquet and checked, or made up (seeded).

A file is read into columns of floats (``CandleSeries``). What is wrong with it is
either refused — one line naming the file, the row and the problem — or repaired,
and every repair is listed in the ``DataReport`` that ends up in the backtest
report; nothing is changed silently:

* refused: a missing column, a row with more or fewer fields than the header, an
  unreadable or NaN/infinite value, a price <= 0,
  negative volume, a high below the open/close or a low above them, two rows for
  one time with different prices, unix timestamps that change unit (seconds, then
  milliseconds), timestamps off the candle grid, fewer than two candles or more than
  ``MAX_CANDLES`` (gaps filled included: one absurd gap would fill the memory), a
  ``--timeframe`` finer than the data or not a multiple of it;
* repaired (refused too with ``strict``): rows out of order (sorted), rows repeated
  exactly (dropped), missing candles (filled with flat candles at the previous
  close and no volume — Coinbase publishes no candle for a minute without trades),
  a file without a volume column (volume 0), and data finer than ``--timeframe``
  (aggregated).

The reading is in ``columns`` (pyarrow and numpy, a column at a time), the parse
cache beside the file in ``cache``.
"""

from __future__ import annotations

import csv
import math
import random
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from perpsbot.domain.clock import EPOCH

TIME_COLUMNS = ("date", "timestamp", "time", "datetime", "start")
PRICE_COLUMNS = ("open", "high", "low", "close")
MIN_BAR_SECONDS = 60
MAX_BAR_SECONDS = 86_400
# The most candles a backtest takes, from a file (gaps filled) or --synthetic: 19 years
# of minute candles, about 0.5 GB as columns.
MAX_CANDLES = 10_000_000
TIMEFRAMES = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "4h": 14_400, "6h": 21_600,
              "12h": 43_200, "1d": 86_400}


class DataError(ValueError):
    """Candle data that cannot be used, worded in one line."""


@dataclass
class CandleSeries:
    """Candles in time order as columns of floats; ``start`` in epoch seconds."""

    symbol: str
    bar_seconds: int
    start: array = field(default_factory=lambda: array("d"))
    open: array = field(default_factory=lambda: array("d"))
    high: array = field(default_factory=lambda: array("d"))
    low: array = field(default_factory=lambda: array("d"))
    close: array = field(default_factory=lambda: array("d"))
    volume: array = field(default_factory=lambda: array("d"))

    def __len__(self) -> int:
        return len(self.start)

    def append(self, start: float, o: float, h: float, lo: float, c: float, v: float) -> None:
        self.start.append(start)
        self.open.append(o)
        self.high.append(h)
        self.low.append(lo)
        self.close.append(c)
        self.volume.append(v)

    @property
    def first(self) -> datetime:
        return EPOCH + timedelta(seconds=self.start[0])

    @property
    def end(self) -> datetime:
        """When the last candle closed."""
        return EPOCH + timedelta(seconds=self.start[-1] + self.bar_seconds)


@dataclass
class DataReport:
    source: str
    rows: int = 0  # data rows read
    candles: int = 0  # candles in the series handed to the backtest
    repairs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    filled: int = 0  # candles added to fill gaps
    # about this load, not the data (a damaged parse cache): printed, not in the report,
    # which stays the same whether or not the cache was used
    warnings: list[str] = field(default_factory=list)


def parse_timeframe(text: str) -> int:
    """'1m', '5m', '1h', '1d' or seconds ('300'): the candle length in seconds."""
    value = text.strip().lower()
    seconds = TIMEFRAMES.get(value)
    if seconds is None:
        try:
            seconds = int(value.removesuffix("s"))
        except ValueError:
            raise DataError(
                f"timeframe '{text}' is not one of {', '.join(TIMEFRAMES)} or a number of seconds"
            ) from None
    if not MIN_BAR_SECONDS <= seconds <= MAX_BAR_SECONDS:
        raise DataError(f"timeframe '{text}' must be between 1m and 1d")
    return seconds


def describe_timeframe(seconds: int) -> str:
    for name, value in TIMEFRAMES.items():
        if value == seconds:
            return name
    return f"{seconds}s"


def iso(epoch: float) -> str:
    """UNIX seconds as the ISO 8601 UTC text candle files use."""
    return (EPOCH + timedelta(seconds=epoch)).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----- reading -------------------------------------------------------------------------

# Unix timestamps by their size: (smallest, scale to seconds, unit); seconds reach 1e11 in 5138.
UNIX_UNITS = ((1e17, 1e-9, "unix nanoseconds"), (1e14, 1e-6, "unix microseconds"),
              (1e11, 1e-3, "unix milliseconds"), (0.0, 1.0, "unix seconds"))
LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z, the last time a datetime holds


def unix_unit(number: float) -> tuple[float, str]:
    """(scale to seconds, unit) of a unix timestamp of this size."""
    return next((scale, unit) for smallest, scale, unit in UNIX_UNITS if abs(number) >= smallest)


def load_candles(
    path: Path, *, symbol: str, timeframe: int | None = None, strict: bool = False
) -> tuple[CandleSeries, DataReport]:
    """Read ``path`` (CSV, or Parquet by its suffix), check it and repair what can be repaired.

    The rows as parsed are kept in the parse cache beside the file and read from
    there next time while the file is unchanged (``perpsbot.backtest.cache``); the
    checks that depend on ``strict`` and ``timeframe`` run on every load."""
    # pyarrow and numpy load here, not with this module: every CLI command imports it
    from perpsbot.backtest import cache, columns

    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a candle file")
    report = DataReport(source=str(path))
    rows = cache.load(path, report.warnings)
    if rows is None:
        stamp = cache.stamp(path)
        rows = columns.read_rows(path, strict=strict)
        cache.store(path, stamp, rows, report.warnings)
    if not rows.has_volume:
        if strict:
            raise columns.no_volume(path)
        report.repairs.append("no volume column: volume taken as 0")
    report.rows = len(rows)
    if rows.note:
        report.notes.append(f"timestamps read as {rows.note}")
    series = columns.assemble(path, rows, columns.line_numbers(path), symbol, report, strict)
    if timeframe is not None and timeframe != series.bar_seconds:
        series = _coarser(path, series, timeframe, report)
    report.candles = len(series)
    return series, report


def _coarser(path: Path, series: CandleSeries, timeframe: int, report: DataReport) -> CandleSeries:
    step = series.bar_seconds
    if timeframe < step or timeframe % step:
        raise DataError(
            f"{path}: the data is {describe_timeframe(step)} candles; --timeframe {describe_timeframe(timeframe)} "
            "must be the same or a multiple of it"
        )
    series = resample(series, timeframe)
    report.repairs.append(
        f"aggregated {describe_timeframe(step)} candles into {describe_timeframe(timeframe)} ones "
        "(on the UTC grid; an incomplete first or last one is dropped)"
    )
    if len(series) < 2:
        raise DataError(f"{path}: fewer than 2 whole {describe_timeframe(timeframe)} candles in the data")
    return series


def resample(series: CandleSeries, seconds: int) -> CandleSeries:
    """Aggregate gap-free candles into longer ones on the UTC grid; a bucket missing
    any of its candles (the first or last) is dropped."""
    out = CandleSeries(series.symbol, seconds)
    per = seconds // series.bar_seconds
    i, n = 0, len(series)
    while i < n:
        bucket = math.floor(series.start[i] / seconds) * seconds
        j = i
        while j < n and series.start[j] < bucket + seconds:
            j += 1
        if j - i == per:
            out.append(
                bucket, series.open[i], max(series.high[i:j]), min(series.low[i:j]), series.close[j - 1],
                math.fsum(series.volume[i:j]),
            )
        i = j
    return out


# ----- writing -------------------------------------------------------------------------


def write_csv(series: CandleSeries, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["date", "open", "high", "low", "close", "volume"])
        for s, o, h, lo, c, v in zip(series.start, series.open, series.high, series.low, series.close,
                                     series.volume, strict=True):
            writer.writerow([iso(s), repr(o), repr(h), repr(lo), repr(c), repr(v)])


# ----- synthetic -----------------------------------------------------------------------

SYNTHETIC_START = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic_candles(
    count: int,
    *,
    seed: int,
    symbol: str = "BTC-USD",
    bar_seconds: int = 60,
    start: datetime = SYNTHETIC_START,
    start_price: float = 90_000.0,
    volatility: float = 0.0012,
) -> CandleSeries:
    """A seeded random walk of ``count`` candles: the log price moves by a normal
    draw of ``volatility`` (per 1-minute candle, scaled by sqrt of the length) times
    a slowly switching regime (calm / normal / stormy); prices on a cent grid, each
    candle opening at the previous close. One seed, one series, on any machine."""
    if count < 2:
        raise DataError(f"--synthetic needs at least 2 candles, got {count}")
    if count > MAX_CANDLES:
        raise DataError(f"--synthetic takes at most {MAX_CANDLES:,} candles, got {count:,}")
    rng = random.Random(seed)
    gauss, rand = rng.gauss, rng.random
    sigma = volatility * math.sqrt(bar_seconds / 60)
    regimes = (0.5, 1.0, 2.5)
    regime = 1
    series = CandleSeries(symbol, bar_seconds)
    t = (start - EPOCH).total_seconds()
    t -= t % bar_seconds
    price = round(start_price, 2)
    s_app, o_app, h_app, l_app, c_app, v_app = (
        series.start.append, series.open.append, series.high.append, series.low.append, series.close.append,
        series.volume.append,
    )
    for _ in range(count):
        if rand() < 0.002:
            regime = rng.randrange(3)
        step = sigma * regimes[regime]
        open_ = price
        close = round(open_ * math.exp(gauss(0.0, step)), 2)
        if close < 0.01:
            close = 0.01
        wick_up = abs(gauss(0.0, step)) * 0.5
        wick_down = abs(gauss(0.0, step)) * 0.5
        high = math.ceil(max(open_, close) * (1 + wick_up) * 100) / 100
        low = max(0.01, math.floor(min(open_, close) * (1 - wick_down) * 100) / 100)
        s_app(t)
        o_app(open_)
        h_app(high)
        l_app(low)
        c_app(close)
        v_app(round(rand() * 10, 4))
        price = close
        t += bar_seconds
    return series
