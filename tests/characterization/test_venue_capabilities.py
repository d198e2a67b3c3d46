"""The bot asks the venue's capabilities (``Exchange.capabilities``), not its type or name:
what it streams, whether the account outlives the process, which orders it may send."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from perpsbot.bot import BotError, PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.domain import Position, TimeInForce
from perpsbot.strategy.base import Decision, Target
from tests.fakes import FAKE_CAPABILITIES, FakeExchange, perp

D = Decimal
FUTURE = "BIP-20DEC30-CDE"


def config(tmp_path: Path, **overrides) -> BotConfig:
    values = dict(symbols=(FUTURE,), data_dir=tmp_path / "data", interval=1.0, bar_seconds=1, short_window=2,
                  long_window=4)
    values.update(overrides)
    return BotConfig(**values)


def venue(clock, **capabilities) -> FakeExchange:
    return FakeExchange(clock, [perp(FUTURE)], prices={FUTURE: D(100)},
                        capabilities=dataclasses.replace(FAKE_CAPABILITIES, **capabilities))


class StreamingVenue(FakeExchange):
    """A venue with a market stream: never opened here (the bot is built, not started)."""

    book_source = None

    def market_stream(self, **options):
        raise AssertionError("not opened by build()")


@pytest.mark.parametrize("persists", [True, False])
async def test_whether_the_account_outlives_the_run_is_the_venues_word(clock, tmp_path, persists):
    bot = await PerpsBotBuilder(config(tmp_path)).with_clock(clock).with_exchange(
        venue(clock, account_persists=persists)).build()
    try:
        assert bot.registry.risk.account_persists is persists
        assert bot.registry.execution.fresh_venue is not persists
    finally:
        await bot.shutdown()


@pytest.mark.parametrize(("stream", "book"), [(True, True), (True, False), (False, False)])
async def test_a_stream_is_kept_only_where_the_venue_declares_one(clock, tmp_path, stream, book):
    exchange = StreamingVenue(clock, [perp(FUTURE)], prices={FUTURE: D(100)}, capabilities=dataclasses.replace(
        FAKE_CAPABILITIES, market_stream=stream, book_from_stream=book))
    bot = await PerpsBotBuilder(config(tmp_path)).with_clock(clock).with_exchange(exchange).build()
    try:
        streaming = bot.registry.streaming
        assert (streaming is not None) is stream
        assert exchange.book_source == (streaming.order_book if book else None)
    finally:
        await bot.shutdown()


async def test_a_limit_setting_the_venue_cannot_take_stops_the_build(clock, tmp_path):
    exchange = venue(clock, times_in_force=frozenset({TimeInForce.GTC}))
    with pytest.raises(BotError) as caught:
        await PerpsBotBuilder(config(tmp_path, order_type="limit", time_in_force="IOC")).with_clock(clock) \
            .with_exchange(exchange).build()
    assert str(caught.value) == "order_type = limit, time_in_force = IOC: fake takes no IOC limit orders (it takes GTC)"
    assert exchange.closed


async def test_an_order_the_venue_cannot_take_is_refused_before_anything_is_sent(clock, tmp_path):
    exchange = venue(clock, reduce_only=False)
    exchange._positions[FUTURE] = Position(FUTURE, size=D(2), entry_price=D(100))
    bot = await PerpsBotBuilder(config(tmp_path)).with_clock(clock).with_exchange(exchange).build()
    try:
        ex = bot.registry.execution
        await ex.refresh_account()
        results = await ex.execute_decision(Decision(FUTURE, Target.FLAT, "test", D(100)))  # a reduce-only close
        assert [(r.outcome, r.detail) for r in results] == [("skipped", "fake takes no reduce-only orders")]
        assert exchange.requests == [] and bot.registry.orders.orders() == []  # not sent, nothing written ahead
        assert [e.data["detail"] for e in bot.registry.events.query(kind="order_skipped")] == [
            "fake takes no reduce-only orders"]
    finally:
        await bot.shutdown()


async def test_bot_started_records_what_the_venue_can_do(clock, tmp_path):
    bot = await PerpsBotBuilder(config(tmp_path, http_port="off")).with_clock(clock).with_exchange(
        venue(clock)).build()
    await bot.start()
    try:
        (started,) = bot.registry.events.query(kind="bot_started")
        assert started.data["venue"] == {
            "order_types": ["LIMIT", "MARKET"], "times_in_force": ["FOK", "GTC", "IOC"],
            "margin_types": ["cross", "isolated"], "post_only": False, "reduce_only": True, "funding": False,
            "market_stream": False, "user_stream": False, "account_persists": True, "book_from_stream": False,
        }
    finally:
        await bot.shutdown()
