"""Candle files read as columns: pyarrow parses CSV and Parquet in C, numpy checks them.

The rules are those listed in ``perpsbot.backtest.data``; only the way is new. Each
check is one pass over a whole column, and the first row that fails any of them is
the one named — the same row and words as reading the file line by line would give,
the checks of one row in the order they were made then: field count, time, open,
high, low, close, volume, prices > 0, volume >= 0, high / low around open and close.

A file is read the fast way first (numbers as float64 by pyarrow, ISO times cast in
one go); what that way cannot read (spaces around a number, ``1_000``, mixed time
zones) is read again cell by cell with Python's ``float`` and ``fromisoformat``, so
the same files load as before. Line numbers are only needed for an error: they come
from the csv module then (blank lines and quoted line breaks counted as it counts them).
"""

from __future__ import annotations

import csv
import functools
import math
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints
import pyarrow.compute as pc  # type: ignore[import-untyped]  # pyarrow ships no type hints
import pyarrow.csv as pacsv  # type: ignore[import-untyped]  # pyarrow ships no type hints

from perpsbot.backtest.data import (
    LAST_SECOND,
    MAX_BAR_SECONDS,
    MAX_CANDLES,
    MIN_BAR_SECONDS,
    PRICE_COLUMNS,
    TIME_COLUMNS,
    UNIX_UNITS,
    CandleSeries,
    DataError,
    DataReport,
    describe_timeframe,
    iso,
    unix_unit,
)
from perpsbot.domain.clock import EPOCH

NUMBERS = ("open", "high", "low", "close", "volume")
# scale -> (lowest, highest exclusive) magnitude of a timestamp in that unit
UNIT_RANGE = {
    scale: (low, ([math.inf] + [u[0] for u in UNIX_UNITS])[i]) for i, (low, scale, _) in enumerate(UNIX_UNITS)
}

LineOf = Callable[[int], int]  # a row's index among the data rows -> its line in the file


@dataclass
class Rows:
    """A file's data rows in file order as float64 columns, each row checked on its own
    (numbers, prices > 0, volume >= 0, high / low around open / close): what the
    parse cache keeps. ``note``: how its times were read."""

    has_volume: bool
    note: str
    start: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return len(self.start)


# ----- reading -------------------------------------------------------------------------


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def read_rows(path: Path, *, strict: bool) -> Rows:
    """Read and check ``path``'s rows; a DataError names the first bad row."""
    try:
        return _read_parquet(path, strict) if is_parquet(path) else _read_csv(path, strict)
    finally:
        # pyarrow's allocator keeps what the table freed (~75 MB for 500k rows) for pyarrow;
        # numpy and the replay allocate elsewhere: hand it back before they run
        pa.default_memory_pool().release_unused()


def line_numbers(path: Path) -> LineOf:
    """Where each data row is in the file: a Parquet row's number, a CSV record's line."""
    if is_parquet(path):
        return lambda index: index + 1
    return _csv_lines(path)


def find_columns(path: Path, header: Sequence[str], strict: bool) -> dict[str, int]:
    """Which column holds what; a missing one is refused naming what the file has (and,
    with ``strict``, a missing volume column)."""
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
        raise no_volume(path)
    return found


def no_volume(path: Path) -> DataError:
    return DataError(f"{path}: no volume column (strict)")


def _read_csv(path: Path, strict: bool) -> Rows:
    header = _csv_header(path)
    columns = find_columns(path, header, strict)
    names = [f"c{i}" for i in range(len(header))]  # by position: header names may repeat or differ in case
    skipped: list[object] = []

    def on_invalid(row: object) -> str:  # a record with another number of fields than the header
        skipped.append(row)
        return "skip"  # named below if no row before it is refused first

    def read(number_type: pa.DataType) -> pa.Table:
        types = {names[i]: (pa.string() if key == "time" else number_type) for key, i in columns.items()}
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=[names[i] for i in sorted(set(columns.values()))],
                null_values=[""], strings_can_be_null=False,
            ),
        )

    try:
        try:
            table = read(pa.float64())
        except pa.ArrowInvalid:  # a number pyarrow does not read (or a bad one): all of them as text
            skipped.clear()
            table = read(pa.string())
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    cells = {key: table.column(names[i]) for key, i in columns.items()}
    first_invalid = _first_invalid_record(path, len(header), columns) if skipped else None
    written = {key: _csv_cell(path, i) for key, i in columns.items()}
    return _rows(path, cells, _csv_lines(path), first_invalid, written)


def _csv_header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return next(csv.reader(handle))
    except StopIteration:
        raise DataError(f"{path}: the file is empty") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror})") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None


def _csv_lines(path: Path) -> LineOf:
    """The lines of the records pyarrow kept (not blank, as many fields as the header),
    counted by the csv module; read from the file when an error first needs one."""

    @functools.cache
    def lines() -> list[int]:
        return [line for line, _ in _csv_records(path)]

    return lambda index: lines()[index]


def _csv_cell(path: Path, column: int) -> Callable[[int], str]:
    """A data row's cell as written in the file (for an error: read up to that row)."""
    return lambda index: next(row[column] for i, (_, row) in enumerate(_csv_records(path)) if i == index)


def _csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of each record pyarrow keeps: not blank, as many fields as the header."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        width = len(next(reader))
        yield from ((line, row) for line, row in enumerate(reader, start=2) if len(row) == width)


def _first_invalid_record(path: Path, width: int, columns: dict[str, int]) -> tuple[int, str]:
    """(line, problem) of the first record whose field count is not the header's."""
    need = max(columns.values()) + 1
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        next(reader)
        for line, row in enumerate(reader, start=2):
            if row and len(row) != width:
                shown = f"the header has at least {need}" if len(row) < need else f"the header has {width}"
                return line, f"{path} line {line}: {len(row)} fields, {shown}"
    return 0, f"{path}: a record that pyarrow reads with another number of fields than the header"


def _read_parquet(path: Path, strict: bool) -> Rows:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]  # pyarrow ships no type hints

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds; all mean "unreadable"
        raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    header = [str(name) for name in table.column_names]
    columns = find_columns(path, header, strict)
    cells = {key: table.column(i) for key, i in columns.items()}
    return _rows(path, cells, line_numbers(path), None, {})


# ----- checking rows -------------------------------------------------------------------


class _FirstProblem:
    """The first failing row over all checks: the lowest row, and of its checks the one
    made first (checks are offered in that order)."""

    def __init__(self) -> None:
        self.best: tuple[int, int, Callable[[], str]] | None = None
        self.order = 0

    def offer(self, mask: np.ndarray | None, message: Callable[[int], str]) -> None:
        self.order += 1
        if mask is None or not mask.any():
            return
        index = int(np.argmax(mask))
        if self.best is None or (index, self.order) < self.best[:2]:
            self.best = (index, self.order, lambda: message(index))


def _rows(path: Path, cells: dict[str, pa.ChunkedArray], lines: LineOf, first_invalid: tuple[int, str] | None,
          written: dict[str, Callable[[int], str]]) -> Rows:
    """Check each row; ``written``: a cell as the file has it, where the column was read
    as numbers (for the error, which quotes it)."""
    n = len(cells["time"])
    problems = _FirstProblem()
    at = functools.partial(_at, path, lines)
    if n == 0:
        values = {name: np.zeros(0) for name in ("start", *NUMBERS)}
        note = ""
    else:
        values, note = _times(path, cells["time"], problems, at)
        for name in NUMBERS:
            if name in cells:
                values[name] = _numbers(cells[name], name, problems, at, written.get(name))
            else:
                values[name] = np.zeros(n)
        _check_values(values, problems, at)
    if n > MAX_CANDLES:
        mask = np.zeros(n, dtype=bool)
        mask[MAX_CANDLES] = True
        problems.offer(mask, lambda i: f"{at(i)}: more than {MAX_CANDLES:,} candles; a backtest takes at most that")
    if first_invalid is not None and (problems.best is None or first_invalid[0] < lines(problems.best[0])):
        raise DataError(first_invalid[1])  # a record with too few or too many fields comes first
    if problems.best is not None:
        raise DataError(problems.best[2]())
    return Rows("volume" in cells, note, values["start"], values["open"], values["high"], values["low"],
                values["close"], values["volume"])


def _at(path: Path, lines: LineOf, index: int) -> str:
    return f"{path} line {lines(index)}"


def _texts(cells: pa.ChunkedArray) -> list[str]:
    """A column as the text each cell would have in a CSV file (errors only)."""
    return [_cell(value) for value in cells.to_pylist()]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


def _python_floats(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(values, unreadable) cell by cell with Python's float: NaN where unreadable."""
    values = np.empty(len(texts))
    bad = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        try:
            values[i] = float(text)
        except ValueError:
            values[i] = math.nan
            bad[i] = True
    return values, bad


def _as_floats(cells: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None, Callable[[int], str]]:
    """(values, unreadable or None, text of a cell) of a column of numbers or of text."""
    kind = cells.type
    if pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        values = pc.cast(cells, pa.float64()).to_numpy(zero_copy_only=False)  # nulls become NaN
        missing = cells.is_null().to_numpy(zero_copy_only=False) if cells.null_count else None
        return values, missing, lambda i: _cell(cells[i].as_py())
    if (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and not cells.null_count:
        try:
            return pc.cast(cells, pa.float64()).to_numpy(zero_copy_only=False), None, lambda i: cells[i].as_py()
        except pa.ArrowInvalid:
            pass
    texts = _texts(cells)
    values, bad = _python_floats(texts)
    return values, bad, texts.__getitem__


def _numbers(cells: pa.ChunkedArray, name: str, problems: _FirstProblem, at: Callable[[int], str],
             written: Callable[[int], str] | None) -> np.ndarray:
    values, unreadable, text = _as_floats(cells)
    text = written or text
    not_finite = ~np.isfinite(values)

    def message(i: int) -> str:
        if unreadable is not None and unreadable[i]:
            shown = text(i) if text(i).strip() else "empty"
            return f"{at(i)}: {name} is '{shown}', not a number"
        return f"{at(i)}: {name} is {text(i).strip()} (NaN or infinite)"

    problems.offer(not_finite, message)
    return values


def _check_values(values: dict[str, np.ndarray], problems: _FirstProblem, at: Callable[[int], str]) -> None:
    o, h, lo, c, v = (values[k] for k in NUMBERS)

    def row(i: int) -> str:
        return f"open {o[i]} high {h[i]} low {lo[i]} close {c[i]}"

    with np.errstate(invalid="ignore"):  # NaNs compare False; their rows are refused already
        problems.offer(np.minimum(np.minimum(o, h), np.minimum(lo, c)) <= 0,
                       lambda i: f"{at(i)}: prices must be > 0, got {row(i)}")
        problems.offer(v < 0, lambda i: f"{at(i)}: volume {v[i]} is negative")
        problems.offer((h < np.maximum(np.maximum(o, c), lo)) | (lo > np.minimum(o, c)),
                       lambda i: f"{at(i)}: high {h[i]} / low {lo[i]} do not contain open {o[i]} and close {c[i]}")


def _times(path: Path, cells: pa.ChunkedArray, problems: _FirstProblem,
           at: Callable[[int], str]) -> tuple[dict[str, np.ndarray], str]:
    """Epoch seconds of the time column, its unit decided from the first row."""
    kind = cells.type
    if (pa.types.is_timestamp(kind) or pa.types.is_date(kind)) and not cells.null_count:
        naive = pa.types.is_date(kind) or kind.tz is None
        micros = pc.cast(cells, pa.timestamp("us"), safe=False).cast(pa.int64()).to_numpy(zero_copy_only=False)
        note = "Parquet timestamps" + (", no time zone: taken as UTC" if naive else "")
        return {"start": micros / 1e6}, note
    first = _cell(cells[0].as_py())
    try:
        scale, note = time_kind(first)
    except ValueError:
        problems.offer(np.arange(len(cells)) == 0,
                       lambda i: f"{at(i)}: time '{first}' is neither unix time nor ISO 8601")
        return {"start": np.full(len(cells), math.nan)}, ""
    if scale is None:
        return {"start": _iso_times(cells, problems, at)}, note
    return {"start": _unix_times(cells, scale, problems, at)}, note


def time_kind(sample: str) -> tuple[float | None, str]:
    """How a file's timestamps are read, from the first: (scale to seconds, unit), or
    (None, ...) for ISO 8601; ValueError for neither."""
    text = sample.strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        return unix_unit(number)
    parsed = datetime.fromisoformat(text)
    return None, "ISO 8601" + (", no time zone: taken as UTC" if parsed.tzinfo is None else "")


def _unix_times(cells: pa.ChunkedArray, scale: float, problems: _FirstProblem, at: Callable[[int], str]) -> np.ndarray:
    numbers, unreadable, text = _as_floats(cells)
    low, high = UNIT_RANGE[scale]
    with np.errstate(invalid="ignore", over="ignore"):
        magnitude = np.abs(numbers)
        finite = np.isfinite(numbers)
        other_unit = finite & ~((low <= magnitude) & (magnitude < high))
        seconds = numbers * scale
        out_of_range = finite & ~((seconds >= 0) & (seconds <= LAST_SECOND))
    before = next(name for _, known, name in UNIX_UNITS if known == scale)

    def message(i: int) -> str:
        shown = text(i)
        if unreadable is not None and unreadable[i]:
            return f"{at(i)}: time '{shown}' is not a number like the rows before it"
        if not finite[i]:
            return f"{at(i)}: time '{shown}' is not a finite number"
        if other_unit[i]:
            return f"{at(i)}: time '{shown.strip()}' is in {unix_unit(numbers[i])[1]}, the rows before it in {before}"
        return f"{at(i)}: time '{shown.strip()}' is before 1970 or after 9999"

    problems.offer(~finite | other_unit | out_of_range, message)
    return seconds


def _iso_times(cells: pa.ChunkedArray, problems: _FirstProblem, at: Callable[[int], str]) -> np.ndarray:
    """ISO 8601 times: cast in one go when every row has a zone or none has; else, and
    for what pyarrow does not read, each with ``datetime.fromisoformat`` (no zone: UTC)."""
    if pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type):
        for kind in (pa.timestamp("us", "UTC"), pa.timestamp("us")):
            try:
                micros = pc.cast(cells, kind).cast(pa.int64()).to_numpy(zero_copy_only=False)
            except pa.ArrowInvalid:
                continue
            return micros / 1e6
    texts = _texts(cells)
    seconds = np.empty(len(texts))
    bad = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        try:
            ts = datetime.fromisoformat(text.strip())
        except ValueError:
            bad[i] = True
            continue
        seconds[i] = ((ts if ts.tzinfo else ts.replace(tzinfo=UTC)) - EPOCH).total_seconds()
    problems.offer(bad, lambda i: f"{at(i)}: time '{texts[i]}' is not ISO 8601 like the rows before it")
    return seconds


# ----- the series ----------------------------------------------------------------------


def assemble(path: Path, rows: Rows, lines: LineOf, symbol: str, report: DataReport, strict: bool) -> CandleSeries:
    """Rows in time order on one grid: sorted, exact repeats dropped and gaps filled
    (each a listed repair), or refused."""
    n = len(rows)
    if n < 2:
        raise DataError(f"{path}: {n} candle{'s' if n != 1 else ''}; a backtest needs at least 2")
    start = rows.start
    values = [rows.open, rows.high, rows.low, rows.close, rows.volume]
    index = np.arange(n)  # each row's place in the file, for its line
    # Order.
    backwards = start[1:] < start[:-1]
    out_of_order = int(backwards.sum())
    if out_of_order:
        if strict:
            raise DataError(f"{path} line {lines(int(np.argmax(backwards)) + 1)}: time goes backwards "
                            "(strict: rows must be sorted)")
        order = np.argsort(start, kind="stable")  # stable: rows of one time stay in file order
        start, index, values = start[order], index[order], [v[order] for v in values]
        report.repairs.append(
            f"sorted by time: {out_of_order} row{'s were' if out_of_order > 1 else ' was'} out of order"
        )
    # Repeats.
    repeat = np.concatenate(([False], start[1:] == start[:-1]))
    repeated = int(repeat.sum())
    if repeated:
        group = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(start))))  # the first row of each time
        differs = repeat & functools.reduce(np.logical_or, [v != v[group] for v in values])
        if differs.any():
            k = int(np.argmax(differs))
            raise DataError(f"{path} lines {lines(int(index[group[k]]))} and {lines(int(index[k]))}: "
                            f"two different candles for {iso(start[k])}")
        if strict:
            raise DataError(f"{path}: {repeated} repeated row{'s' if repeated > 1 else ''} (strict)")
        report.repairs.append(f"dropped {repeated} exact repeat{'s' if repeated > 1 else ''} of a row")
        keep = ~repeat
        start, index, values = start[keep], index[keep], [v[keep] for v in values]
    if len(start) < 2:
        raise DataError(f"{path}: only one distinct candle; a backtest needs at least 2")
    # Grid.
    gaps_s = np.diff(start)
    steps = np.round(gaps_s).astype(np.int64)
    step = int(steps.min())
    if (np.abs(gaps_s - steps) > 1e-6).any():
        raise DataError(f"{path}: timestamps are not whole seconds apart")
    off_grid = steps % step != 0 if step > 0 else np.zeros(len(steps), dtype=bool)
    if off_grid.any():
        off = int(np.argmax(off_grid)) + 1
        raise DataError(f"{path} line {lines(int(index[off]))}: {iso(start[off])} is off the "
                        f"{describe_timeframe(step)} grid the data starts on")
    if not MIN_BAR_SECONDS <= step <= MAX_BAR_SECONDS or step % 60:
        raise DataError(f"{path}: candles are {step} s apart; supported are whole minutes from 1m to 1d")
    # Gaps.
    per_row = np.append(steps // step, 1)  # candles from each row to the next, itself included
    gap = per_row > 1
    gaps = int(gap.sum())
    if gaps and strict:
        k = int(np.argmax(gap))
        raise DataError(
            f"{path}: {gaps} gap{'s' if gaps > 1 else ''} in the data, the first after {iso(start[k])} "
            f"({int(per_row[k]) - 1} candles missing) (strict)"
        )
    total = int(per_row.sum())
    if total > MAX_CANDLES:
        i = int(np.argmax(steps))
        raise DataError(
            f"{path} line {lines(int(index[i + 1]))}: {iso(start[i + 1])} is {int(steps[i]) // step - 1:,} candles "
            f"after the row before it ({iso(start[i])}); filled, the data would be {total:,} candles, more than the "
            f"{MAX_CANDLES:,} a backtest takes"
        )
    series = CandleSeries(symbol, step)
    if gaps:
        source = np.repeat(np.arange(len(start)), per_row)  # the row each candle comes from
        offset = np.arange(total) - np.repeat(np.cumsum(per_row) - per_row, per_row)
        filled = offset > 0  # flat at the row's close, no volume
        widest = int(np.argmax(per_row))
        widest_after = iso(start[widest])
        start = start[source] + offset * step
        values = [v[source] for v in values]
        for v in values[:4]:
            v[filled] = values[3][filled]
        values[4][filled] = 0.0
        report.filled = total - len(per_row)
        report.repairs.append(
            f"filled {gaps} gap{'s' if gaps > 1 else ''} "
            f"({report.filled} missing candle{'s' if report.filled > 1 else ''}) "
            f"with flat candles at the previous close and no volume; widest: {int(per_row[widest]) - 1} after "
            f"{widest_after}"
        )
    for name, column in zip(("start", "open", "high", "low", "close", "volume"), (start, *values), strict=True):
        setattr(series, name, _array(column))
    return series


def _array(column: np.ndarray) -> array:
    out = array("d")
    out.frombytes(np.ascontiguousarray(column, dtype=np.float64).data.cast("B"))
    return out
