"""The parse cache: used while the file is unchanged, never when it changed or is damaged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from perpsbot.backtest import cache, columns
from perpsbot.backtest.data import DataError, load_candles, synthetic_candles, write_csv


@pytest.fixture
def parses(monkeypatch) -> list[Path]:
    """The files parsed (not read from the cache), in order."""
    seen: list[Path] = []
    real = columns.read_rows

    def counting(path: Path, *, strict: bool) -> columns.Rows:
        seen.append(path)
        return real(path, strict=strict)

    monkeypatch.setattr(columns, "read_rows", counting)
    return seen


def candles(tmp_path: Path, seed: int = 1, name: str = "btc.csv") -> Path:
    path = tmp_path / name
    write_csv(synthetic_candles(500, seed=seed), path)
    return path


def load(path: Path, **kw):
    return load_candles(path, symbol="BTC-USD", **kw)


def same(a, b) -> bool:
    return all(list(getattr(a, k)) == list(getattr(b, k)) for k in ("start", "open", "high", "low", "close", "volume"))


def test_a_second_load_reads_the_cache_and_gives_the_same_series_and_report(tmp_path, parses):
    path = candles(tmp_path)
    first, first_report = load(path)
    second, second_report = load(path)
    assert parses == [path]  # parsed once
    assert cache.cache_path(path).is_file() and cache.cache_path(path).parent == tmp_path / ".perpsbot-cache"
    assert same(first, second) and first.bar_seconds == second.bar_seconds
    assert first_report == second_report and second_report.warnings == []
    # --timeframe and --strict apply to cached rows as to parsed ones
    hourly, report = load(path, timeframe=3600)
    assert parses == [path] and hourly.bar_seconds == 3600 and report.repairs[0].startswith("aggregated 1m")


def test_the_flags_refuse_cached_rows_as_they_refuse_the_file(tmp_path, parses):
    text = "date,open,high,low,close\n2026-01-01T00:01:00Z,1,1,1,1\n2026-01-01T00:00:00Z,1,1,1,1\n"
    path = tmp_path / "c.csv"
    path.write_text(text)
    series, report = load(path)  # repaired: sorted, volume 0
    assert report.repairs == ["no volume column: volume taken as 0", "sorted by time: 1 row was out of order"]
    with pytest.raises(DataError, match=r"no volume column \(strict\)"):
        load(path, strict=True)
    path.write_text(text.replace("close\n", "close,volume\n").replace(",1\n", ",1,1\n"))
    load(path)
    with pytest.raises(DataError, match=r"c\.csv line 3: time goes backwards"):
        load(path, strict=True)
    assert len(parses) == 2  # each version of the file parsed once


def test_a_changed_file_is_parsed_again_even_with_its_size_and_mtime_kept(tmp_path, parses):
    path = candles(tmp_path, seed=1)
    load(path)
    # another series, written over the file: other size, other time
    write_csv(synthetic_candles(700, seed=2), path)
    series, _ = load(path)
    assert len(parses) == 2 and same(series, synthetic_candles(700, seed=2))
    # the same size and modification time as the cached one (a rewrite within the file
    # system's timestamp resolution): the file changed just before its cache was
    # written, so the cache also holds its checksum
    before = path.stat()
    data = path.read_bytes()
    changed = data.replace(b",", b";", 0)[:-40] + data[-40:].replace(b"1", b"2")
    assert len(changed) == len(data) and changed != data
    path.write_bytes(changed)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    series, _ = load(path)
    assert len(parses) == 3 and not same(series, synthetic_candles(700, seed=2))
    # changed long after its last change (size and time kept): only the stamp decides
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns - 10**10))
    load(path)
    load(path)
    assert len(parses) == 4


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "empty", "not arrow"])
def test_a_damaged_cache_is_not_trusted_the_file_is_parsed_again_and_the_cache_mended(tmp_path, parses, damage):
    path = candles(tmp_path)
    expected, _ = load(path)
    target = cache.cache_path(path)
    data = bytearray(target.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0x40  # inside the columns: only the checksums can tell
    elif damage == "truncate":
        del data[len(data) // 3:]
    elif damage == "empty":
        data.clear()
    else:
        data[:] = b"date,open,high,low,close,volume\n"
    target.write_bytes(bytes(data))
    series, report = load(path)
    assert same(series, expected) and len(parses) == 2
    assert len(report.warnings) == 1 and f"the parse cache {target} is damaged" in report.warnings[0]
    assert "btc.csv was parsed again" in report.warnings[0] and "\n" not in report.warnings[0]
    _, report = load(path)  # mended: read from the cache again, no warning
    assert len(parses) == 2 and report.warnings == []


def test_a_cache_folder_that_cannot_be_made_costs_a_warning_not_the_load(tmp_path, parses):
    path = candles(tmp_path)
    (tmp_path / ".perpsbot-cache").write_text("a file where the folder would be")
    series, report = load(path)
    assert len(series) == 500
    assert len(report.warnings) == 1 and report.warnings[0].startswith("could not write the parse cache")
    assert report.warnings[0].endswith("the next load parses btc.csv again")
    load(path)
    assert len(parses) == 2
