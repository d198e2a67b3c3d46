"""``data download`` against local servers: paging by 350, resuming, gaps, retries.

Nothing here leaves 127.0.0.1: a tiny aiohttp server in the test serves
Coinbase-shaped candles, and the simulator's own Coinbase server serves real ones."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from perpsbot.backtest.data import load_candles
from perpsbot.backtest.download import (
    MAX_CANDLES_PER_REQUEST,
    DownloadError,
    Gap,
    download_candles,
    parse_granularity,
    parse_time,
)
from tests.backtest.candle_server import T0, CandleServer, G, serving


@pytest.fixture
async def server() -> AsyncIterator[CandleServer]:
    async with serving() as srv:
        yield srv


def now_after(minutes: int):
    return lambda: T0 + minutes * G + 30  # half-way through the next bucket


async def fetch(server: CandleServer, path: Path, start: int, end: int, **kw):
    kw.setdefault("now", now_after(1000))
    return await download_candles("BTC-USD", start, end, "ONE_MINUTE", path, base_url=server.url,
                                  requests_per_second=0, backoff=0, **kw)


def read(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


async def test_pages_hold_at_most_350_candles_and_the_file_has_every_one(server, tmp_path):
    path = tmp_path / "btc.csv"
    result = await fetch(server, path, T0, T0 + 1000 * G)
    assert result.requests == 3 and result.written == 1000 and result.gaps == []
    spans = [(int(r["start"]), int(r["end"])) for r in server.requests]
    assert spans[0][0] == T0 and all((e - s) // G < MAX_CANDLES_PER_REQUEST for s, e in spans)
    assert all(r["granularity"] == "ONE_MINUTE" and r["limit"] == "350" for r in server.requests)
    rows = read(path)
    assert rows[0] == ["date", "open", "high", "low", "close", "volume"]
    assert rows[1] == ["2026-01-01T00:00:00Z", "100", "101", "99.5", "100.25", "1.5"]
    assert len(rows) == 1001 and rows[-1][0] == "2026-01-01T16:39:00Z"
    series, report = load_candles(path, symbol="BTC-USD")
    assert len(series) == 1000 and report.repairs == []


async def test_only_closed_candles_are_written(server, tmp_path):
    path = tmp_path / "btc.csv"
    result = await fetch(server, path, T0, T0 + 5000 * G, now=now_after(400))
    assert result.written == 400  # the bucket at minute 400 is still running
    assert read(path)[-1][0] == "2026-01-01T06:39:00Z"


async def test_rerunning_continues_after_the_last_candle_in_the_file(server, tmp_path):
    path = tmp_path / "btc.csv"
    first = await fetch(server, path, T0, T0 + 500 * G)
    assert (first.written, first.resumed_from) == (500, None)
    server.requests.clear()
    second = await fetch(server, path, T0, T0 + 1000 * G)
    assert second.resumed_from == T0 + 500 * G and second.written == 500
    assert int(server.requests[0]["start"]) == T0 + 500 * G and second.requests == 2
    starts = [row[0] for row in read(path)[1:]]
    assert len(starts) == len(set(starts)) == 1000
    server.requests.clear()
    third = await fetch(server, path, T0, T0 + 1000 * G)
    assert third.requests == 0 and server.requests == []  # nothing left to fetch


async def test_an_interrupted_download_keeps_its_pages_and_resumes(server, tmp_path):
    path = tmp_path / "btc.csv"
    server.fail_after = 2
    with pytest.raises(DownloadError, match=r"answered HTTP 500: boom"):
        await fetch(server, path, T0, T0 + 1000 * G, max_retries=1)
    assert len(read(path)) == 1 + 700  # two whole pages
    with path.open("a") as f:  # and a line cut in the middle by the interruption
        f.write("2026-01-01T11:40:00Z,800,80")
    server.fail_after = None
    result = await fetch(server, path, T0, T0 + 1000 * G)
    assert result.dropped_partial_line and result.resumed_from == T0 + 700 * G and result.written == 300
    series, report = load_candles(path, symbol="BTC-USD")
    assert len(series) == 1000 and report.repairs == []


async def test_gaps_are_reported_and_left_for_the_loader_to_fill(server, tmp_path):
    server.buckets -= {T0 + G * i for i in (*range(10, 15), 349, 350, 999)}
    path = tmp_path / "btc.csv"
    result = await fetch(server, path, T0, T0 + 1000 * G)
    assert result.gaps == [Gap(T0 + 10 * G, 5), Gap(T0 + 349 * G, 2), Gap(T0 + 999 * G, 1)]
    assert result.missing == 8 and result.written == 992
    assert result.gaps[1].describe(G) == "2026-01-01T05:49:00Z .. 2026-01-01T05:50:00Z (2 candles)"
    series, report = load_candles(path, symbol="BTC-USD")
    assert len(series) == 999 and report.filled == 7  # the missing last one is simply the end


async def test_rate_limits_are_waited_out_and_other_errors_stop_with_the_servers_message(server, tmp_path):
    server.too_many = 2
    result = await fetch(server, tmp_path / "a.csv", T0, T0 + 100 * G)
    assert result.retries == 2 and result.written == 100
    with pytest.raises(DownloadError, match="answered HTTP 404: product not found"):
        await download_candles("NOPE-USD", T0, T0 + 100 * G, "ONE_MINUTE", tmp_path / "b.csv", base_url=server.url,
                               now=now_after(1000), requests_per_second=0)
    (tmp_path / "other.csv").write_text("time,price\n1,2\n")
    with pytest.raises(DownloadError, match="is not a candle file written by this command"):
        await fetch(server, tmp_path / "other.csv", T0, T0 + 100 * G)


async def test_nothing_listening_is_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match=r"cannot reach http://127\.0\.0\.1:9/"):
        await download_candles("BTC-USD", T0, T0 + 100 * G, "ONE_MINUTE", tmp_path / "a.csv",
                               base_url="http://127.0.0.1:9", now=now_after(1000), max_retries=0)


def test_granularity_and_time_arguments():
    assert parse_granularity("1m") == ("ONE_MINUTE", 60)
    assert parse_granularity("six_hour") == ("SIX_HOUR", 21600)
    assert parse_time("2026-01-01", "--start") == T0
    assert parse_time("2026-01-01T00:01:00Z", "--start") == T0 + 60
    assert parse_time(str(T0), "--start") == T0
    with pytest.raises(DownloadError, match="granularity '7m' is not one of"):
        parse_granularity("7m")
    with pytest.raises(DownloadError, match="--end 'soon' is neither unix seconds nor an ISO date"):
        parse_time("soon", "--end")


async def test_against_the_simulators_coinbase_server(tmp_path):
    from perpsbot.domain.clock import ManualClock
    from perpsbot.exchange.sim import SimConfig, default_products
    from perpsbot.exchange.sim.server import SimServer

    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    btc = [p for p in default_products() if p.symbol == "BTC-USD"]
    config = SimConfig(seed=3, tick_seconds=1.0, warmup_seconds=8 * 3600)
    async with SimServer(seed=3, plain_port=0, clock=ManualClock(now), products=btc, sim_config=config) as srv:
        start = int((now - timedelta(hours=7)).timestamp())
        path = tmp_path / "sim.csv"
        result = await download_candles("BTC-USD", start, int(now.timestamp()), "1m", path,
                                        base_url=srv.plain_rest_url, now=now.timestamp, requests_per_second=0)
        expected = srv.core.candles("BTC-USD", 60, 420)
    assert result.requests == 2 and result.written == 420 and result.gaps == []
    rows = read(path)[1:]
    assert [r[0] for r in rows] == [c.start.strftime("%Y-%m-%dT%H:%M:%SZ") for c in expected]
    assert [Decimal(r[4]) for r in rows] == [c.close for c in expected]
    assert [Decimal(r[2]) for r in rows] == [c.high for c in expected]
