"""Candles for a backtest: loaded from CSV or Parquet and checked, or made up (seeded).

A file is read into columns of floats (``CandleSeries``). What is wrong with it is
either refused — one line naming the file, the row and the problem — or repaired,
and every repair is listed in the ``DataReport`` that ends up in the backtest
report; nothing is changed silently:

* refused: a missing column, an unreadable or NaN/infinite value, a price <= 0,
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
"""

from __future__ import annotations

import csv
import math
import random
from array import array
from collections.abc import Iterable, Iterator, Sequence
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


def load_candles(
    path: Path, *, symbol: str, timeframe: int | None = None, strict: bool = False
) -> tuple[CandleSeries, DataReport]:
    """Read ``path`` (CSV, or Parquet by its suffix), check it and repair what can be repaired."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a candle file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        header, rows = _read_parquet(path)
    else:
        header, rows = _read_csv(path)
    report = DataReport(source=str(path))
    columns = _columns(path, header, report, strict)
    parsed = _parse_rows(path, rows, columns, report)
    series = _assemble(path, parsed, symbol, timeframe, report, strict)
    report.candles = len(series)
    return series, report


def _read_csv(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror})") from None
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        handle.close()
        raise DataError(f"{path}: the file is empty") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        handle.close()
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None

    def rows() -> Iterator[tuple[int, list[str]]]:
        try:
            for line, row in enumerate(reader, start=2):
                if row:
                    yield line, row
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path} line {reader.line_num}: not readable CSV ({exc})") from None
        finally:
            handle.close()

    return header, rows()


def _read_parquet(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found]  # the parquet extra is optional
    except ImportError:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow, an optional extra: pip install 'perpsbot[parquet]' "
            "(or convert the file to CSV)"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds; all mean "unreadable"
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    header = [str(name) for name in table.column_names]
    data = table.to_pydict()

    def rows() -> Iterator[tuple[int, list[str]]]:
        columns = [data[name] for name in table.column_names]
        for index in range(table.num_rows):
            yield index + 1, [_cell(col[index]) for col in columns]

    return header, rows()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


def _columns(path: Path, header: Sequence[str], report: DataReport, strict: bool) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    found: dict[str, int] = {}
    for want in TIME_COLUMNS:
        if want in names:
            found["time"] = names.index(want)
            break
    missing = [] if "time" in found else ["date (or timestamp)"]
    for want in PRICE_COLUMNS:
        if want in names:
            found[want] = names.index(want)
        else:
            missing.append(want)
    if missing:
        raise DataError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(found: {', '.join(h.strip() for h in header) or 'none'}); "
            "expected date/timestamp, open, high, low, close, volume"
        )
    if "volume" in names:
        found["volume"] = names.index("volume")
    elif strict:
        raise DataError(f"{path}: no volume column (strict)")
    else:
        report.repairs.append("no volume column: volume taken as 0")
    return found


# Unix timestamps by their size: (smallest, scale to seconds, unit); seconds reach 1e11 in 5138.
UNIX_UNITS = ((1e17, 1e-9, "unix nanoseconds"), (1e14, 1e-6, "unix microseconds"),
              (1e11, 1e-3, "unix milliseconds"), (0.0, 1.0, "unix seconds"))
# scale -> (lowest, highest exclusive) magnitude of a timestamp in that unit: one comparison per row
_UNIT_RANGE = {
    scale: (low, ([math.inf] + [u[0] for u in UNIX_UNITS])[i]) for i, (low, scale, _) in enumerate(UNIX_UNITS)
}
LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z, the last time a datetime holds


def _unix_unit(number: float) -> tuple[float, str]:
    """(scale to seconds, unit) of a unix timestamp of this size."""
    return next((scale, unit) for smallest, scale, unit in UNIX_UNITS if abs(number) >= smallest)


def _time_parser(path: Path, line: int, sample: str) -> tuple[object, str]:
    """How to read this file's timestamps, decided from the first one."""
    text = sample.strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        return _unix_unit(number)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise DataError(f"{path} line {line}: time '{sample}' is neither unix time nor ISO 8601") from None
    return "iso", "ISO 8601" + (", no time zone: taken as UTC" if parsed.tzinfo is None else "")


def _parse_time(path: Path, line: int, text: str, how: object) -> float:
    if how == "iso":
        try:
            ts = datetime.fromisoformat(text.strip())
        except ValueError:
            raise DataError(f"{path} line {line}: time '{text}' is not ISO 8601 like the rows before it") from None
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        return (ts - EPOCH).total_seconds()
    try:
        number = float(text)
    except ValueError:
        raise DataError(f"{path} line {line}: time '{text}' is not a number like the rows before it") from None
    if not math.isfinite(number):
        raise DataError(f"{path} line {line}: time '{text}' is not a finite number")
    assert isinstance(how, float)  # the scale _time_parser chose
    low, high = _UNIT_RANGE[how]
    if not low <= abs(number) < high:
        unit = _unix_unit(number)[1]
        before = next(name for _, known, name in UNIX_UNITS if known == how)
        raise DataError(f"{path} line {line}: time '{text.strip()}' is in {unit}, the rows before it in {before}")
    value = number * how
    if not 0 <= value <= LAST_SECOND:
        raise DataError(f"{path} line {line}: time '{text.strip()}' is before 1970 or after 9999")
    return value


def _number(path: Path, line: int, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        shown = text if text.strip() else "empty"
        raise DataError(f"{path} line {line}: {name} is '{shown}', not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path} line {line}: {name} is {text.strip()} (NaN or infinite)")
    return value


def _parse_rows(
    path: Path, rows: Iterable[tuple[int, list[str]]], columns: dict[str, int], report: DataReport
) -> list[tuple[float, float, float, float, float, float, int]]:
    out: list[tuple[float, float, float, float, float, float, int]] = []
    t_i, o_i, h_i, l_i, c_i = (columns[k] for k in ("time", "open", "high", "low", "close"))
    v_i = columns.get("volume")
    width = max(columns.values()) + 1
    how: object = None
    for line, row in rows:
        if len(row) < width:
            raise DataError(f"{path} line {line}: {len(row)} fields, the header has at least {width}")
        if how is None:
            how, kind = _time_parser(path, line, row[t_i])
            report.notes.append(f"timestamps read as {kind}")
        ts = _parse_time(path, line, row[t_i], how)
        o = _number(path, line, "open", row[o_i])
        h = _number(path, line, "high", row[h_i])
        lo = _number(path, line, "low", row[l_i])
        c = _number(path, line, "close", row[c_i])
        v = _number(path, line, "volume", row[v_i]) if v_i is not None else 0.0
        if min(o, h, lo, c) <= 0:
            raise DataError(f"{path} line {line}: prices must be > 0, got open {o} high {h} low {lo} close {c}")
        if v < 0:
            raise DataError(f"{path} line {line}: volume {v} is negative")
        if h < max(o, c, lo) or lo > min(o, c):
            raise DataError(
                f"{path} line {line}: high {h} / low {lo} do not contain open {o} and close {c}"
            )
        out.append((ts, o, h, lo, c, v, line))
        if len(out) > MAX_CANDLES:
            raise DataError(f"{path} line {line}: more than {MAX_CANDLES:,} candles; a backtest takes at most that")
    report.rows = len(out)
    return out


def _assemble(
    path: Path,
    rows: list[tuple[float, float, float, float, float, float, int]],
    symbol: str,
    timeframe: int | None,
    report: DataReport,
    strict: bool,
) -> CandleSeries:
    if len(rows) < 2:
        raise DataError(f"{path}: {len(rows)} candle{'s' if len(rows) != 1 else ''}; a backtest needs at least 2")
    # Order.
    out_of_order = sum(1 for a, b in zip(rows, rows[1:], strict=False) if b[0] < a[0])
    if out_of_order:
        if strict:
            first = next(b for a, b in zip(rows, rows[1:], strict=False) if b[0] < a[0])
            raise DataError(f"{path} line {first[6]}: time goes backwards (strict: rows must be sorted)")
        rows = sorted(rows, key=lambda r: (r[0], r[6]))
        report.repairs.append(
            f"sorted by time: {out_of_order} row{'s were' if out_of_order > 1 else ' was'} out of order"
        )
    # Repeats.
    unique = [rows[0]]
    repeated = 0
    for row in rows[1:]:
        last = unique[-1]
        if row[0] == last[0]:
            if row[1:6] != last[1:6]:
                raise DataError(
                    f"{path} lines {last[6]} and {row[6]}: two different candles for {iso(row[0])}"
                )
            repeated += 1
            continue
        unique.append(row)
    if repeated:
        if strict:
            raise DataError(f"{path}: {repeated} repeated row{'s' if repeated > 1 else ''} (strict)")
        report.repairs.append(f"dropped {repeated} exact repeat{'s' if repeated > 1 else ''} of a row")
    rows = unique
    if len(rows) < 2:
        raise DataError(f"{path}: only one distinct candle; a backtest needs at least 2")
    # Grid.
    steps = [int(round(b[0] - a[0])) for a, b in zip(rows, rows[1:], strict=False)]
    step = min(steps)
    if any(abs((b[0] - a[0]) - s) > 1e-6 for a, b, s in zip(rows, rows[1:], steps, strict=False)):
        raise DataError(f"{path}: timestamps are not whole seconds apart")
    off = next((r for r, s in zip(rows[1:], steps, strict=False) if s % step), None)
    if off is not None:
        raise DataError(
            f"{path} line {off[6]}: {iso(off[0])} is off the {describe_timeframe(step)} grid the data starts on"
        )
    if not MIN_BAR_SECONDS <= step <= MAX_BAR_SECONDS or step % 60:
        raise DataError(f"{path}: candles are {step} s apart; supported are whole minutes from 1m to 1d")
    # Gaps.
    gaps = [(a, s) for a, s in zip(rows, steps, strict=False) if s > step]
    series = CandleSeries(symbol, step)
    if gaps and strict:
        a, s = gaps[0]
        raise DataError(
            f"{path}: {len(gaps)} gap{'s' if len(gaps) > 1 else ''} in the data, the first after {iso(a[0])} "
            f"({s // step - 1} candles missing) (strict)"
        )
    total = 1 + sum(s // step for s in steps)
    if total > MAX_CANDLES:
        i = max(range(len(steps)), key=steps.__getitem__)
        raise DataError(
            f"{path} line {rows[i + 1][6]}: {iso(rows[i + 1][0])} is {steps[i] // step - 1:,} candles after the row "
            f"before it ({iso(rows[i][0])}); filled, the data would be {total:,} candles, more than the "
            f"{MAX_CANDLES:,} a backtest takes"
        )
    filled = 0
    for row, s in zip(rows, [*steps, step], strict=True):
        series.append(*row[:6])
        if s > step:
            ts, close = row[0], row[4]
            for k in range(1, s // step):
                series.append(ts + k * step, close, close, close, close, 0.0)
                filled += 1
    if gaps:
        widest = max(gaps, key=lambda g: g[1])
        report.filled = filled
        report.repairs.append(
            f"filled {len(gaps)} gap{'s' if len(gaps) > 1 else ''} "
            f"({filled} missing candle{'s' if filled > 1 else ''}) "
            f"with flat candles at the previous close and no volume; widest: {widest[1] // step - 1} after "
            f"{iso(widest[0][0])}"
        )
    # Timeframe.
    if timeframe is not None and timeframe != step:
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
