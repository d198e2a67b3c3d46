"""Streaming market data end to end: the bot's StreamingService on the simulator server."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from perpsbot.config.model import StreamLevel
from perpsbot.domain import Side
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.coinbase.rest import RetryPolicy
from perpsbot.exchange.sim.keys import ApiKey
from perpsbot.exchange.sim.server import SimServer
from perpsbot.risk.manager import OrderIntent

from .conftest import book_equals_server, config, start_bot, step, wait_for

SYMBOLS = ("BIP-20DEC30-CDE", "ETH-USD")


def _server_subs(server: SimServer) -> dict[str, set[str]]:
    (conn,) = [c for c in server._conns if not c.closed and "user" not in c.subs]  # the market stream
    return {channel: set(products) for channel, products in conn.subs.items()}


async def test_streamed_books_equal_the_servers_and_marks_stay_fresh_without_polling(
        server: SimServer, tmp_path: Path, key: ApiKey):
    bot = await start_bot(server, tmp_path, key)
    streaming, md = bot.registry.streaming, bot.registry.market_data
    try:
        await wait_for(lambda: all(streaming.serving(s) for s in SYMBOLS))
        for symbol in SYMBOLS:
            await wait_for(lambda s=symbol: book_equals_server(streaming.books[s], server, s))
        requests_before = bot.registry.exchange.rest.requests_sent
        polled_quotes = 0
        for _ in range(10):
            report = await bot.run_cycle()
            polled_quotes += len(report.marks.updated)
            await asyncio.sleep(0.05)
        assert polled_quotes == 0  # the stream serves every symbol: nothing is polled
        for symbol in SYMBOLS:
            assert md.mark_age(symbol) is not None and md.mark_age(symbol) < 0.5
            book = streaming.books[symbol]  # the mark is the streamed book's mid
            assert md.mark(symbol) == (Decimal(repr(book.best_bid)) + Decimal(repr(book.best_ask))) / 2
        assert md.streamed_total > 5
        # Cycles still read the account over REST, but no quote: fewer requests than with polling.
        assert bot.registry.exchange.rest.requests_sent - requests_before < 10 * 8
        # The risk check's book comes from the stream.
        streamed = await bot.registry.exchange.book("ETH-USD", 5)
        assert streamed.bids[0].price == Decimal(repr(streaming.books["ETH-USD"].best_bid))
    finally:
        summary = await bot.shutdown()
    assert summary["stream_messages"] > 0 and summary["stream_lag_p95_ms"] is not None


async def test_a_sequence_gap_resyncs_to_the_servers_book(stepped: tuple[SimServer, ManualClock], tmp_path: Path,
                                                         key: ApiKey):
    server, clock = stepped
    bot = await start_bot(server, tmp_path, key)
    streaming = bot.registry.streaming
    try:
        await wait_for(lambda: all(book_equals_server(streaming.books.get(s), server, s) for s in SYMBOLS))
        stream = streaming.stream
        snapshots_before = server.faults.injected.get("skip_sequence", 0)
        server.faults.force("skip_sequence")
        step(server, clock)
        await wait_for(lambda: stream.gaps == 1)
        assert server.faults.injected["skip_sequence"] == snapshots_before + 1
        # Resubscribed: fresh snapshots arrive, updates in between were dropped; the book matches again.
        for _ in range(5):
            step(server, clock)
            await asyncio.sleep(0.02)
        for symbol in SYMBOLS:
            await wait_for(lambda s=symbol: book_equals_server(streaming.books[s], server, s))
        assert not stream.awaiting_snapshot
        heartbeat = streaming.heartbeat()
        assert heartbeat["gaps"] == 1 and heartbeat["reconnects"] == 0
    finally:
        await bot.shutdown()


async def test_a_crossed_book_is_resynced_from_a_fresh_snapshot(stepped: tuple[SimServer, ManualClock],
                                                              tmp_path: Path, key: ApiKey):
    server, clock = stepped
    bot = await start_bot(server, tmp_path, key)
    streaming = bot.registry.streaming
    try:
        await wait_for(lambda: book_equals_server(streaming.books.get("ETH-USD"), server, "ETH-USD"))
        best_ask = streaming.books["ETH-USD"].best_ask
        (conn,) = [c for c in server._conns if "user" not in c.subs]  # the market stream
        # A bid above the best ask: this book can no longer be trusted.
        conn.push("level2", [{"type": "update", "product_id": "ETH-USD", "updates": [
            {"side": "bid", "event_time": "2026-11-26T00:00:00Z", "price_level": str(best_ask + 1),
             "new_quantity": "1"}]}], clock.now())
        await wait_for(lambda: streaming.resyncs == 1)
        assert streaming.stream.book_resyncs == 1
        await wait_for(lambda: book_equals_server(streaming.books["ETH-USD"], server, "ETH-USD"))
        step(server, clock)
        await wait_for(lambda: book_equals_server(streaming.books["ETH-USD"], server, "ETH-USD"))
        (event,) = bot.registry.events.query(kind="stream_resync")
        assert event.symbol == "ETH-USD" and "crossed" in event.data["reason"]
        assert streaming.stream.gaps == 0  # resynced alone, not through a gap
    finally:
        await bot.shutdown()


async def test_disconnect_falls_back_to_polling_and_polling_stops_on_recovery(server: SimServer, tmp_path: Path,
                                                                             key: ApiKey):
    bot = await start_bot(server, tmp_path, key)
    streaming = bot.registry.streaming
    try:
        await wait_for(lambda: all(streaming.serving(s) for s in SYMBOLS))
        assert (await bot.run_cycle()).marks.updated == ()
        server.faults.set("ws_disconnect", 1.0)  # every message drops the connection
        await wait_for(lambda: not streaming.connected)
        polled = (await bot.run_cycle()).marks.updated
        assert set(polled) == set(SYMBOLS)  # REST keeps the marks coming
        md = bot.registry.market_data
        await asyncio.sleep(0.3)
        assert set((await bot.run_cycle()).marks.updated) == set(SYMBOLS)
        assert all(md.mark_age(s) < 0.5 for s in SYMBOLS)
        server.faults.disable("ws_disconnect")
        await wait_for(lambda: all(streaming.serving(s) for s in SYMBOLS))
        assert (await bot.run_cycle()).marks.updated == ()  # polling stopped
        kinds = [e.kind for e in bot.registry.events.query() if e.kind.startswith("stream_")]
        assert "stream_fallback" in kinds and kinds[-1] == "stream_recovered"
        assert streaming.heartbeat()["reconnects"] >= 1
    finally:
        await bot.shutdown()


async def test_a_quiet_connection_is_replaced_and_marks_are_polled_meanwhile(
        stepped: tuple[SimServer, ManualClock], tmp_path: Path, key: ApiKey):
    server, _ = stepped  # never stepped: after the snapshots, silence
    slow = RetryPolicy(attempts=1_000_000, base_delay=0.6, max_delay=0.6)  # 0.3 to 0.6 s before reconnecting
    bot = await start_bot(server, tmp_path, key, stream_quiet_seconds=0.3, reconnect=slow)
    streaming = bot.registry.streaming
    try:
        await wait_for(lambda: all(streaming.serving(s) for s in SYMBOLS))
        await wait_for(lambda: streaming.stream.quiet_reconnects >= 1)
        assert not streaming.connected
        assert set((await bot.run_cycle()).marks.updated) == set(SYMBOLS)  # polled while it is replaced
        await wait_for(lambda: streaming.stream.connects >= 2)  # a new connection replaced the silent one
        await wait_for(lambda: all(streaming.serving(s) for s in SYMBOLS))  # with fresh snapshots
        assert streaming.heartbeat()["quiet_replacements"] >= 1
    finally:
        await bot.shutdown()


async def test_a_symbol_added_live_gets_marks_within_one_cycle_then_from_the_stream(
        server: SimServer, tmp_path: Path, key: ApiKey):
    bot = await start_bot(server, tmp_path, key)
    streaming, md = bot.registry.streaming, bot.registry.market_data
    try:
        await wait_for(lambda: all(streaming.serving(s) for s in SYMBOLS))
        await bot.run_cycle()
        new = config(server, tmp_path, key, symbols=(*SYMBOLS, "SOL-USD"))
        await bot.apply_config_change(new)
        await bot.run_cycle()
        assert md.mark("SOL-USD") is not None and md.mark_age("SOL-USD") < 1.0
        await wait_for(lambda: streaming.serving("SOL-USD"))
        assert "SOL-USD" in _server_subs(server)["level2"]
        assert {"SOL-USD"} <= _server_subs(server)["ticker"] & _server_subs(server)["market_trades"]
        await wait_for(lambda: book_equals_server(streaming.books["SOL-USD"], server, "SOL-USD"))
        assert (await bot.run_cycle()).marks.updated == ()
    finally:
        await bot.shutdown()


async def test_a_removed_symbol_is_unsubscribed_and_gone_everywhere(server: SimServer, tmp_path: Path, key: ApiKey):
    bot = await start_bot(server, tmp_path, key)
    reg = bot.registry
    streaming = reg.streaming
    try:
        await wait_for(lambda: all(streaming.serving(s) for s in SYMBOLS))
        await bot.run_cycle()
        await bot.apply_config_change(config(server, tmp_path, key, symbols=("BIP-20DEC30-CDE",)))
        await wait_for(lambda: all("ETH-USD" not in products for products in _server_subs(server).values()))
        await asyncio.sleep(0.2)  # messages in flight for it must not bring it back
        await bot.run_cycle()
        gone = "ETH-USD"
        assert gone not in streaming.symbols and gone not in streaming.books
        assert gone not in streaming.trades and gone not in streaming.tickers
        assert all(gone not in products for products in streaming.stream.subscriptions.values())
        for table in (reg.market_data.windows, reg.market_data.fresh, reg.market_data.last_update,
                      reg.strategy.last_decision):
            assert gone not in table
        assert reg.market_data.mark_age(gone) is None
        assert streaming.serving("BIP-20DEC30-CDE") and "BIP-20DEC30-CDE" in _server_subs(server)["level2"]
    finally:
        await bot.shutdown()


async def test_the_stream_level_changes_live(server: SimServer, tmp_path: Path, key: ApiKey):
    bot = await start_bot(server, tmp_path, key)
    streaming = bot.registry.streaming
    try:
        await wait_for(lambda: all(streaming.serving(s) for s in SYMBOLS))
        await bot.apply_config_change(config(server, tmp_path, key, stream_level="ticker"))
        await wait_for(lambda: "level2" not in _server_subs(server))
        assert streaming.level is StreamLevel.TICKER and not streaming.books
        await wait_for(lambda: all(streaming.serving(s) for s in SYMBOLS))  # marks from the ticker now
        await bot.apply_config_change(config(server, tmp_path, key, stream_level="off"))
        assert streaming.stream is None
        assert set((await bot.run_cycle()).marks.updated) == set(SYMBOLS)
        await bot.apply_config_change(config(server, tmp_path, key, stream_level="level2"))
        await wait_for(lambda: all(book_equals_server(streaming.books.get(s), server, s) for s in SYMBOLS))
    finally:
        await bot.shutdown()


async def test_heartbeat_records_channel_ages_reconnects_gaps_and_lag(server: SimServer, tmp_path: Path,
                                                                     key: ApiKey):
    bot = await start_bot(server, tmp_path, key)
    streaming = bot.registry.streaming
    try:
        await wait_for(lambda: all(streaming.serving(s) for s in SYMBOLS))
        await wait_for(lambda: streaming._feed_count.get("heartbeat", 0) >= 1, timeout=3)
        await asyncio.sleep(0.2)
        streaming.heartbeat()
        (event,) = bot.registry.events.query(kind="stream_heartbeat")
        data = event.data
        assert set(data["channels"]) == {"book", "ticker", "trades", "heartbeat"}  # the feeds
        for feed in ("book", "ticker", "heartbeat"):
            assert data["channels"][feed]["messages"] >= 1
        assert 0 <= data["channels"]["book"]["age_s"] < 0.5
        assert data["channels"]["heartbeat"]["age_s"] < 1.5
        assert data["connected"] is True and data["reconnects"] == 0 and data["gaps"] == 0
        assert data["book_resyncs"] == 0 and data["polling"] == []
        assert data["lag_samples"] > 0 and 0 < data["lag_p95_ms"] < 250
        assert data["books_synced"] == sorted(SYMBOLS)
    finally:
        summary = await bot.shutdown()
    assert summary["stream_lag_p95_ms"] is not None and summary["stream_reconnects"] == 0


async def test_staleness_guard_fires_when_stream_and_polling_both_stop(server: SimServer, tmp_path: Path,
                                                                      key: ApiKey):
    bot = await start_bot(server, tmp_path, key, mark_warn_seconds=0.3, mark_staleness_seconds=0.6)
    reg = bot.registry
    reg.exchange.rest.retry = RetryPolicy(attempts=1)  # a failed poll fails at once (retries are tested elsewhere)
    streaming = reg.streaming
    intent = OrderIntent("BIP-20DEC30-CDE", Side.BUY, Decimal(1), Decimal(90_000), Decimal(0),
                         contract_size=Decimal("0.01"))  # one contract: 0.01 BTC
    try:
        await wait_for(lambda: all(streaming.serving(s) for s in SYMBOLS))
        await asyncio.sleep(0.8)  # longer than the staleness limit: streamed marks keep the age low
        await bot.run_cycle()
        assert reg.risk.check(intent, Decimal(100_000), {}).code != "stale_mark"
        server.faults.set("ws_disconnect", 1.0)
        server.faults.set("server_error", 1.0)  # REST answers 500 to everything
        await wait_for(lambda: not streaming.connected)
        await asyncio.sleep(0.7)
        report = await bot.run_cycle()
        assert set(report.marks.failed) == set(SYMBOLS)
        verdict = reg.risk.check(intent, Decimal(100_000), {})
        assert not verdict.approved and verdict.code == "stale_mark"
    finally:
        server.faults.clear()
        await bot.shutdown()
