"""Candle files: every problem is one clear line or a listed repair, never a silent change."""

from __future__ import annotations

from pathlib import Path

import pytest

from perpsbot.backtest.data import (
    DataError,
    load_candles,
    parse_timeframe,
    resample,
    synthetic_candles,
    write_csv,
)

HEADER = "date,open,high,low,close,volume\n"


def rows(*lines: str) -> str:
    return HEADER + "".join(line + "\n" for line in lines)


def minute(i: int) -> str:
    return f"2026-01-01T00:{i:02d}:00Z"


def good(n: int = 5) -> list[str]:
    return [f"{minute(i)},{100 + i},{101 + i},{99 + i},{100.5 + i},{10 + i}" for i in range(n)]


def write(tmp_path: Path, text: str, name: str = "c.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, **kw):
    return load_candles(path, symbol="BTC-USD", **kw)


def one_line_error(path: Path, **kw) -> str:
    with pytest.raises(DataError) as info:
        load(path, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_clean_file_loads_as_is_with_nothing_repaired(tmp_path):
    series, report = load(write(tmp_path, rows(*good())))
    assert len(series) == 5 and series.bar_seconds == 60
    assert list(series.open) == [100, 101, 102, 103, 104]
    assert list(series.close) == [100.5, 101.5, 102.5, 103.5, 104.5]
    assert series.start[1] - series.start[0] == 60
    assert series.first.isoformat() == "2026-01-01T00:00:00+00:00"
    assert report.repairs == [] and report.rows == 5 and report.candles == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("date,open,high,low,volume\n" + minute(0) + ",1,1,1,1\n", "missing column close"),
        ("open,high,low,close,volume\n1,1,1,1,1\n", "missing column date (or timestamp)"),
        ("foo,bar\n1,2\n", "missing columns date (or timestamp), open, high, low, close"),
        (rows(*good(2), f"{minute(2)},100,nan,99,100,1"), "line 4: high is nan (NaN or infinite)"),
        (rows(*good(2), f"{minute(2)},100,101,99,,1"), "line 4: close is 'empty', not a number"),
        (rows(*good(2), f"{minute(2)},100,101,99,abc,1"), "line 4: close is 'abc', not a number"),
        (rows(*good(2), f"{minute(2)},100,101,99,inf,1"), "close is inf (NaN or infinite)"),
        (rows(*good(2), f"{minute(2)},0,101,99,100,1"), "line 4: prices must be > 0"),
        (rows(*good(2), f"{minute(2)},100,101,99,100,-5"), "line 4: volume -5.0 is negative"),
        (rows(*good(2), f"{minute(2)},100,99.5,99,100,1"), "line 4: high 99.5 / low 99.0 do not contain open"),
        (rows(*good(2), f"{minute(2)},100,101"), "line 4: 3 fields, the header has at least"),
        (rows(*good(2), "yesterday,100,101,99,100,1"), "line 4: time 'yesterday' is not ISO 8601"),
        (rows("someday,100,101,99,100,1"), "line 2: time 'someday' is neither unix time nor ISO 8601"),
        (rows(good(1)[0]), "1 candle; a backtest needs at least 2"),
        (HEADER, "0 candles; a backtest needs at least 2"),
        ("", "the file is empty"),
        (rows(minute(0) + ",1,1,1,1,1", minute(0) + ",2,2,2,2,1"), "lines 2 and 3: two different candles for"),
        (
            rows(minute(0) + ",1,1,1,1,1", minute(1) + ",1,1,1,1,1", "2026-01-01T00:03:30Z,1,1,1,1,1"),
            "line 4: 2026-01-01T00:03:30Z is off the 1m grid the data starts on",
        ),
        (rows(minute(0) + ",1,1,1,1,1", "2026-01-01T00:01:30Z,1,1,1,1,1"), "90 s apart; supported are whole minutes"),
        (
            rows("2026-01-01T00:00:00Z,1,1,1,1,1", "2026-01-01T00:00:30Z,1,1,1,1,1"),
            "30 s apart; supported are whole minutes from 1m to 1d",
        ),
    ],
)
def test_bad_files_are_refused_with_one_clear_line(tmp_path, text, expected):
    message = one_line_error(write(tmp_path, text))
    assert expected in message, message
    assert str(tmp_path / "c.csv") in message


def test_missing_and_folder_paths_are_refused(tmp_path):
    assert "no such file" in one_line_error(tmp_path / "nope.csv")
    assert "is a folder" in one_line_error(tmp_path)


def test_gaps_are_filled_with_flat_candles_and_reported(tmp_path):
    lines = good(10)
    del lines[3:6]  # 00:03, 00:04, 00:05 missing
    del lines[-1]  # and 00:09 is simply the end
    series, report = load(write(tmp_path, rows(*lines)))
    assert len(series) == 9 and report.filled == 3
    # The filled candles are flat at the close before the gap, without volume.
    assert [series.close[i] for i in (2, 3, 4, 5, 6)] == [102.5, 102.5, 102.5, 102.5, 106.5]
    assert [series.volume[i] for i in (3, 4, 5)] == [0, 0, 0]
    assert series.high[4] == series.low[4] == series.open[4] == 102.5
    assert report.repairs == [
        "filled 1 gap (3 missing candles) with flat candles at the previous close and no volume; "
        "widest: 3 after 2026-01-01T00:02:00Z"
    ]


def test_strict_mode_refuses_what_it_would_otherwise_repair(tmp_path):
    lines = good(6)
    gap = write(tmp_path, rows(*(lines[:2] + lines[3:])), "gap.csv")
    assert "1 gap in the data, the first after 2026-01-01T00:01:00Z (1 candles missing) (strict)" in one_line_error(
        gap, strict=True
    )
    unsorted = write(tmp_path, rows(lines[1], lines[0], *lines[2:]), "unsorted.csv")
    assert "line 3: time goes backwards (strict" in one_line_error(unsorted, strict=True)
    repeated = write(tmp_path, rows(*lines, lines[-1]), "repeated.csv")
    assert "1 repeated row (strict)" in one_line_error(repeated, strict=True)
    novolume = write(tmp_path, "date,open,high,low,close\n" + minute(0) + ",1,1,1,1\n" + minute(1) + ",1,1,1,1\n",
                     "novolume.csv")
    assert "no volume column (strict)" in one_line_error(novolume, strict=True)


def test_unsorted_rows_and_exact_repeats_are_repaired_and_reported(tmp_path):
    lines = good(6)
    shuffled = [lines[2], lines[0], lines[1], lines[1], lines[5], lines[3], lines[4]]
    series, report = load(write(tmp_path, rows(*shuffled)))
    assert list(series.open) == [100, 101, 102, 103, 104, 105]
    assert report.repairs == [
        "sorted by time: 2 rows were out of order",
        "dropped 1 exact repeat of a row",
    ]


def test_timestamps_in_unix_seconds_and_milliseconds_and_naive_iso(tmp_path):
    seconds = "timestamp,open,high,low,close,volume\n1767225600,1,2,1,1.5,3\n1767225660,1.5,2,1,1,3\n"
    series, report = load(write(tmp_path, seconds, "s.csv"))
    assert series.start[0] == 1767225600 and "timestamps read as unix seconds" in report.notes
    millis = "Timestamp,Open,High,Low,Close,Volume\n1767225600000,1,2,1,1.5,3\n1767225660000,1.5,2,1,1,3\n"
    series, report = load(write(tmp_path, millis, "ms.csv"))
    assert series.start[0] == 1767225600 and "timestamps read as unix milliseconds" in report.notes
    naive = "date,open,high,low,close,volume\n2026-01-01 00:00:00,1,2,1,1.5,3\n2026-01-01 00:01:00,1.5,2,1,1,3\n"
    series, report = load(write(tmp_path, naive, "naive.csv"))
    assert series.start[0] == 1767225600
    assert "timestamps read as ISO 8601, no time zone: taken as UTC" in report.notes


@pytest.mark.parametrize(("scale", "unit"), [(10**6, "microseconds"), (10**9, "nanoseconds")])
def test_timestamps_in_unix_microseconds_and_nanoseconds(tmp_path, scale, unit):
    text = "timestamp,open,high,low,close,volume\n" + "".join(
        f"{(1767225600 + 60 * i) * scale},1,2,1,1.5,3\n" for i in range(3)
    )
    series, report = load(write(tmp_path, text))
    assert list(series.start) == [1767225600, 1767225660, 1767225720]
    assert f"timestamps read as unix {unit}" in report.notes


def test_a_file_that_changes_timestamp_unit_is_refused_at_the_line_that_does(tmp_path):
    header = "timestamp,open,high,low,close,volume\n"
    mixed = header + "1767225600,1,2,1,1.5,3\n1767225660,1.5,2,1,1,3\n1767225720000,1,2,1,1.5,3\n"
    assert one_line_error(write(tmp_path, mixed, "mixed.csv")).endswith(
        "mixed.csv line 4: time '1767225720000' is in unix milliseconds, the rows before it in unix seconds"
    )
    backwards = header + "1767225600000,1,2,1,1.5,3\n1767225660,1.5,2,1,1,3\n"
    assert "line 3: time '1767225660' is in unix seconds, the rows before it in unix milliseconds" in one_line_error(
        write(tmp_path, backwards, "back.csv")
    )
    assert "line 2: time '-1767225600' is before 1970 or after 9999" in one_line_error(
        write(tmp_path, header + "-1767225600,1,2,1,1.5,3\n-1767225540,1,2,1,1.5,3\n", "neg.csv")
    )


def test_a_gap_that_would_fill_more_than_the_maximum_of_candles_is_refused_not_filled(tmp_path):
    far = rows(*good(3), "2046-01-01T00:00:00Z,100,101,99,100.5,10")  # twenty years of minutes later
    message = one_line_error(write(tmp_path, far))
    assert "c.csv line 5: 2046-01-01T00:00:00Z is 10,519,197 candles after the row before it" in message
    assert "more than the 10,000,000 a backtest takes" in message  # the documented maximum
    with pytest.raises(DataError, match="--synthetic takes at most 10,000,000 candles, got 100,000,000,000,000"):
        synthetic_candles(100_000_000_000_000, seed=1)


def test_a_missing_volume_column_is_a_reported_repair(tmp_path):
    text = "date,open,high,low,close\n" + minute(0) + ",1,1,1,1\n" + minute(1) + ",1,1,1,1\n"
    series, report = load(write(tmp_path, text))
    assert list(series.volume) == [0, 0]
    assert report.repairs == ["no volume column: volume taken as 0"]


def test_timeframe_aggregates_finer_data_and_refuses_finer_than_the_data(tmp_path):
    lines = [f"2026-01-01T00:{i:02d}:00Z,{10 + i},{12 + i},{9 + i},{11 + i},1" for i in range(12)]
    path = write(tmp_path, rows(*lines))
    series, report = load(path, timeframe=300)
    # 00:00-00:04 and 00:05-00:09 are whole; 00:10-00:11 is not and is dropped.
    assert series.bar_seconds == 300 and len(series) == 2
    assert (series.open[0], series.high[0], series.low[0], series.close[0], series.volume[0]) == (10, 16, 9, 15, 5)
    assert (series.open[1], series.close[1]) == (15, 20)
    assert any("aggregated 1m candles into 5m ones" in r for r in report.repairs)
    five = write(tmp_path, rows(*[f"2026-01-01T00:{5 * i:02d}:00Z,1,1,1,1,1" for i in range(3)]), "5m.csv")
    assert "the data is 5m candles; --timeframe 1m must be the same or a multiple of it" in one_line_error(
        five, timeframe=60
    )
    assert "--timeframe 7m" not in one_line_error(five, timeframe=420)  # named in seconds: not a multiple


def test_parse_timeframe():
    assert [parse_timeframe(t) for t in ("1m", "5m", "1H", "1d", "900", "3600s")] == [60, 300, 3600, 86400, 900, 3600]
    for bad in ("1s", "2d", "soon"):
        with pytest.raises(DataError):
            parse_timeframe(bad)


def test_synthetic_candles_are_seeded_valid_and_round_trip_through_csv(tmp_path):
    a = synthetic_candles(3000, seed=4)
    b = synthetic_candles(3000, seed=4)
    c = synthetic_candles(3000, seed=5)
    assert list(a.close) == list(b.close) and list(a.close) != list(c.close)
    for o, h, lo, cl in zip(a.open, a.high, a.low, a.close, strict=True):
        assert lo <= min(o, cl) <= max(o, cl) <= h and lo > 0
    assert all(a.open[i + 1] == a.close[i] for i in range(len(a) - 1))
    path = tmp_path / "synthetic.csv"
    write_csv(a, path)
    back, report = load(path)
    assert report.repairs == []
    assert list(back.close) == list(a.close) and list(back.start) == list(a.start)


def test_resample_drops_incomplete_buckets():
    series = synthetic_candles(130, seed=1, start=synthetic_candles(2, seed=1).first.replace(minute=58))
    hourly = resample(series, 3600)
    # starts at 00:58: 00:58-00:59 is incomplete, then 01:00..01:59 and 02:00..02:59 are whole, 03:00..03:07 is not
    assert len(hourly) == 2 and hourly.start[0] % 3600 == 0


def test_parquet_files_load_like_csv_with_typed_times_and_name_a_bad_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_series, _ = load(write(tmp_path, rows(*good(4))))
    starts = [int(s) for s in csv_series.start]
    prices = {k: list(getattr(csv_series, k)) for k in ("open", "high", "low", "close", "volume")}
    for name, times in [("aware.parquet", pa.array(starts, pa.timestamp("s", "UTC"))),
                        ("naive.parquet", pa.array([s * 10**9 for s in starts], pa.timestamp("ns"))),
                        ("millis.parquet", pa.array([s * 1000 for s in starts], pa.int64()))]:
        pq.write_table(pa.table({"Timestamp": times, **prices}), tmp_path / name)
        series, report = load(tmp_path / name)
        assert list(series.start) == list(csv_series.start) and list(series.close) == prices["close"], name
        assert report.repairs == [] and report.rows == 4
    assert "timestamps read as unix milliseconds" in report.notes
    holes = {**prices, "close": [100.5, 101.5, None, 103.5]}
    pq.write_table(pa.table({"date": pa.array(starts, pa.timestamp("s", "UTC")), **holes}), tmp_path / "c.parquet")
    assert one_line_error(tmp_path / "c.parquet").endswith("c.parquet line 3: close is 'empty', not a number")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    assert "not a readable Parquet file" in one_line_error(tmp_path / "junk.parquet")


def test_cells_pyarrow_does_not_read_itself_still_load_as_before(tmp_path):
    # spaces around numbers and times, digit separators, quoted cells, unix seconds as text,
    # and ISO times with and without a zone in one file: each read cell by cell instead
    text = ("date,open,high,low,close,volume\n"
            ' 2026-01-01T00:00:00Z , 100 ,"101",99,100.5,1_000\n'
            "2026-01-01 00:01:00,101,102,100,101.5, 7\n"
            "2026-01-01T01:02:00+01:00,102,103,101,102.5,7\n")
    series, report = load(write(tmp_path, text))
    assert list(series.open) == [100, 101, 102] and list(series.volume) == [1000, 7, 7]
    assert series.start[2] - series.start[0] == 120 and report.repairs == []


def test_a_bad_row_after_blank_lines_is_named_by_its_line_in_the_file(tmp_path):
    text = rows(*good(3)).replace("\n", "\n\n", 2) + f"{minute(3)},100,101,99,-1,1\n"
    assert "c.csv line 7: prices must be > 0" in one_line_error(write(tmp_path, text))
    # the first problem in the file wins, whichever check finds it
    text = rows(*good(2), f"{minute(2)},100,101", f"{minute(3)},100,101,99,abc,1")
    assert "c.csv line 4: 3 fields, the header has at least 6" in one_line_error(write(tmp_path, text))
    text = rows(*good(2), f"{minute(2)},100,101,99,abc,1", f"{minute(3)},100,101")
    assert "c.csv line 4: close is 'abc', not a number" in one_line_error(write(tmp_path, text))
    text = rows(*good(2), f"{minute(2)},100,99,99,100,1", f"{minute(3)},100,101,99,nan,1")
    assert "c.csv line 4: high 99.0 / low 99.0 do not contain open 100.0" in one_line_error(write(tmp_path, text))


def test_a_row_with_more_fields_than_the_header_is_refused(tmp_path):
    # read line by line it was taken, the extra field dropped: perhaps a shifted row
    message = one_line_error(write(tmp_path, rows(*good(2), f"{minute(2)},100,101,99,100.5,12,7")))
    assert message.endswith("c.csv line 4: 7 fields, the header has 6")
