"""Orders and account pushed over the authenticated ``user`` and ``futures_balance_summary``
channels, with the bot on the Coinbase adapter against the simulator server: a pushed
fill is applied once (the poll that sees it later adds nothing), an order cancelled at the
venue settles from the push, polling takes over while the stream is down and the push
resumes after it, and frames the bot cannot read are counted and refused."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from perpsbot.bot import PerpsBot, PerpsBotBuilder
from perpsbot.domain import Order, OrderStatus, Side
from perpsbot.exchange.sim.keys import generate_key, write_key_file
from perpsbot.exchange.sim.server import SimServer
from perpsbot.strategy.base import Decision, MarketView, Target

from .test_bot_on_coinbase import coinbase_config

BTC = "BTC-USD"
BIP = "BIP-20DEC30-CDE"


class Hold:
    name = "hold"
    required_bars = 2

    def decide(self, view: MarketView) -> Decision:
        return Decision(view.symbol, Target.HOLD, "test: hold", view.mark)

    def forget(self, symbol: str) -> None:
        return None


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[SimServer, PerpsBot]]:
    key = generate_key("ecdsa")
    key_file = write_key_file(tmp_path / "cdp_api_key.json", key)
    async with SimServer(seed=9, trust=[key]) as server:
        config = coinbase_config(server, tmp_path, api_key_file=key_file, symbols=(BTC, BIP), stream_level="off",
                                 interval=30.0, stream_quiet_seconds=2.0, order_type="limit", time_in_force="GTC")
        bot = await PerpsBotBuilder(config).with_strategy(Hold()).build()
        try:
            await bot.start()
            await until(lambda: bot.registry.execution.pushed.healthy)
            yield server, bot
        finally:
            await bot.shutdown()


async def resting_buy(bot: PerpsBot, symbol: str = BTC, size: str = "0.001") -> Order:
    """A GTC buy of ours far under the market, placed through the coordinator's own path."""
    execution = bot.registry.execution
    product = bot.registry.products[symbol]
    mark = (await bot.registry.exchange.quote(symbol)).mid
    order = execution.new_order(product, Side.BUY, Decimal(size), mark, closing=False)
    order.limit_price = product.quantize_price(mark / 2)
    result = await execution._place(order, "test: resting", time.perf_counter())
    assert result.outcome == "placed" and result.order.status is OrderStatus.OPEN, result
    return result.order


def fill_at_venue(server: SimServer, order: Order) -> None:
    """Move the resting order through the book (an edit that crosses), then publish."""
    venue_order = server.venue.order(order.exchange_order_id)
    ask = server.core.quote(order.symbol).ask
    price = (ask * 2).quantize(venue_order.spec.product.price_increment)
    assert server.venue.edit(order.exchange_order_id, str(price), None, server.clock.now()) == []
    server.step()


def pushed_status(bot: PerpsBot, order: Order) -> OrderStatus | None:
    update = bot.registry.execution.pushed.pending.get(order.client_order_id)
    return None if update is None else update.status


def fill_events(bot: PerpsBot, client_order_id: str) -> list[dict]:
    return [e.data for e in bot.registry.events.query(kind="fill") if e.data["client_order_id"] == client_order_id]


async def test_a_pushed_fill_is_applied_between_polls_and_only_once(rig):
    server, bot = rig
    execution = bot.registry.execution
    order = await resting_buy(bot)
    run = asyncio.create_task(bot.run(duration=20))
    try:
        await until(lambda: bot.cycles == 1)  # the next poll is 30 s away
        began = time.perf_counter()
        fill_at_venue(server, order)
        await until(lambda: execution.orders.get(order.client_order_id).status is OrderStatus.FILLED)
        latency = time.perf_counter() - began
    finally:
        bot.stop()
        await run
    assert bot.cycles == 1 and latency < 1.0, latency  # 55-65 ms measured on 2026-12-04; the poll: 30 s
    assert execution.pushed.applied["push"] == 1
    fills = bot.registry.orders.fills()
    assert len(fills) == 1 and fills[0].size == order.size
    await execution.sync_orders()  # the poll sees the same fill: nothing more is recorded
    await execution.reconciler.reconcile()
    assert len(bot.registry.orders.fills()) == 1 and len(fill_events(bot, order.client_order_id)) == 1
    assert execution.fill_ledger[BTC] == order.size
    assert execution.orders.get(order.client_order_id).filled_size == order.size
    text = bot.metrics.render().decode()
    assert 'perpsbot_order_updates_total{source="push"} 1.0' in text
    assert "perpsbot_push_healthy 1.0" in text


async def test_an_order_cancelled_at_the_venue_settles_from_the_push(rig):
    server, bot = rig
    execution = bot.registry.execution
    order = await resting_buy(bot)
    asked = []
    get_order = bot.registry.exchange.get_order

    async def counted(client_order_id: str):
        asked.append(client_order_id)
        return await get_order(client_order_id)

    bot.registry.exchange.get_order = counted
    ok, reason = server.venue.cancel(order.exchange_order_id, server.clock.now())
    assert ok, reason
    server.step()
    await until(lambda: pushed_status(bot, order) is OrderStatus.CANCELLED)
    assert await execution.pushed.apply() == 1
    assert execution.orders.get(order.client_order_id).status is OrderStatus.CANCELLED
    assert asked == []  # a terminal status with nothing more filled needs no request
    assert bot.registry.orders.working(BTC) is None


async def test_polling_takes_over_while_the_stream_is_down_and_the_push_resumes(rig):
    server, bot = rig
    execution = bot.registry.execution
    pushed = execution.pushed
    listings = []
    fills_since = bot.registry.exchange.fills_since

    async def counted(cursor: int):
        listings.append(cursor)
        return await fills_since(cursor)

    bot.registry.exchange.fills_since = counted
    first = await resting_buy(bot)
    await bot.run_cycle()
    await bot.run_cycle()  # caught up: the stream is trusted from here on
    polled_before = len(listings)
    await bot.run_cycle()
    assert len(listings) == polled_before  # no fill listing while the push is healthy

    server.faults.set("ws_disconnect", 1.0)  # every user-stream message drops the connection
    server.step()
    await until(lambda: not pushed.healthy)
    fill_at_venue(server, first)
    await bot.run_cycle()
    assert execution.orders.get(first.client_order_id).status is OrderStatus.FILLED
    assert pushed.applied["poll"] >= 1 and pushed.applied["push"] == 0
    assert [e.data["reason"] for e in bot.registry.events.query(kind="push_fallback")] == ["down"]

    server.faults.disable("ws_disconnect")
    await until(lambda: pushed.healthy, timeout=10)
    await bot.run_cycle()  # one poll catches up with what the outage may have hidden
    await bot.run_cycle()
    assert bot.registry.events.query(kind="push_recovered")
    second = await resting_buy(bot)
    polled_before = len(listings)
    fill_at_venue(server, second)
    await until(lambda: pushed_status(bot, second) is OrderStatus.FILLED)
    await bot.run_cycle()
    assert execution.orders.get(second.client_order_id).status is OrderStatus.FILLED
    assert pushed.applied["push"] >= 1 and len(listings) == polled_before
    assert len(bot.registry.orders.fills()) == 2


async def test_frames_the_bot_cannot_read_are_counted_refused_and_survived(rig):
    server, bot = rig
    execution = bot.registry.execution
    pushed = execution.pushed
    (conn,) = [c for c in server._conns if c.wants("user")]
    await conn.ws.send_str("{not json")
    conn.push("user", [{"type": "update", "orders": [{"order_id": "x", "status": "BOGUS", "product_id": BTC,
                                                      "order_side": "BUY"}]}], server.clock.now())
    conn.queue.put_nowait(("", None, ["an", "array"]))
    await until(lambda: sum(pushed.rejected.values()) >= 3)
    assert pushed.rejected["not_json"] == 1 and pushed.rejected["bad_field"] >= 2
    reasons = {e.data["code"]: e.data["reason"] for e in bot.registry.events.query(kind="push_rejected")}
    assert reasons["not_json"] == "not JSON" and "BOGUS" in reasons["bad_field"]
    report = await bot.run_cycle()  # a rejected frame may have held an update: this cycle polls
    assert not report.errors, report.errors
    await until(lambda: pushed.healthy, timeout=10)
    order = await resting_buy(bot)
    fill_at_venue(server, order)
    await until(lambda: pushed_status(bot, order) is OrderStatus.FILLED)
    await pushed.apply()
    assert execution.orders.get(order.client_order_id).status is OrderStatus.FILLED
    text = bot.metrics.render().decode()
    assert 'perpsbot_push_rejected_total{code="not_json"} 1.0' in text


async def test_the_futures_balance_pushed_moves_equity_and_margin_between_polls(rig):
    server, bot = rig
    execution = bot.registry.execution
    pushed = execution.pushed
    await execution.refresh_account()
    order = await resting_buy(bot, BIP, "1")
    fill_at_venue(server, order)
    await until(lambda: pushed_status(bot, order) is OrderStatus.FILLED)
    await pushed.apply()  # the fill, and the account polled with it
    execution.account = dataclasses.replace(execution.account, equity=Decimal(0))
    await until(lambda: execution.account.equity != 0)  # a push alone moves it: no cycle, no poll
    venue = server.venue.futures_summary()
    assert pushed.margin.initial_margin == server.core.cfm_margin().initial_margin > 0  # at the window's rate
    assert pushed.margin.equity == execution.account.equity
    assert abs(execution.account.equity - venue["total"]) < venue["total"] * Decimal("0.001")
    text = bot.metrics.render().decode()
    assert "perpsbot_futures_buying_power " in text and "perpsbot_futures_liquidation_buffer " in text
