"""A slow exchange never holds back the running controls, the kill switch or stop.

The exchange here answers chosen calls seconds late (``SlowExchange.delays``), like the
simulator server's ``slow`` fault; the bot runs on the wall clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal as D

import pytest

from perpsbot.bot import PerpsBot, PerpsBotBuilder
from perpsbot.domain.clock import WallClock
from perpsbot.exchange.port import OrderRequest, OrderSnapshot
from perpsbot.execution import calls
from perpsbot.market import data
from perpsbot.risk.manager import kill_file_path
from perpsbot.strategy.base import Decision, MarketView, Target
from tests.fakes import FakeExchange, perp


@dataclass
class SlowExchange(FakeExchange):
    """Answers ``account``, ``fills_since``, ``open_orders``, ``candles`` and ``place_order``
    ``delays[name]`` seconds late. An order is processed at once and only its answer is late
    (the exchange has it either way)."""

    delays: dict[str, float] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)

    async def _late(self, name: str) -> None:
        delay = self.delays.get(name)
        if not delay:
            return
        self.in_flight.add(name)
        try:
            await asyncio.sleep(delay)
        finally:
            self.in_flight.discard(name)

    async def account(self):
        await self._late("account")
        return await super().account()

    async def fills_since(self, cursor: int):
        await self._late("fills_since")
        return await super().fills_since(cursor)

    async def open_orders(self):
        await self._late("open_orders")
        return await super().open_orders()

    async def candles(self, symbol: str, granularity_seconds: int, limit: int):
        await self._late("candles")
        return await super().candles(symbol, granularity_seconds, limit)

    async def place_order(self, request: OrderRequest) -> OrderSnapshot:
        snapshot = await super().place_order(request)
        await self._late("place_order")
        return snapshot


class GoLong:
    """Wants a long position in every symbol, every cycle."""

    name = "go-long"
    required_bars = 1

    def decide(self, view: MarketView) -> Decision:
        return Decision(view.symbol, Target.LONG, "test: long", view.mark)

    def forget(self, symbol: str) -> None:
        pass


async def until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.01)


@pytest.fixture
def slow_exchange() -> SlowExchange:
    return SlowExchange(
        WallClock(), [perp("BIP-20DEC30-CDE"), perp("ETP-20DEC30-CDE")],
        prices={"BIP-20DEC30-CDE": D(100), "ETP-20DEC30-CDE": D(50)},
    )


@pytest.fixture
async def slow_bot(slow_exchange, make_config):
    bots: list[PerpsBot] = []

    async def make(**overrides) -> PerpsBot:
        builder = PerpsBotBuilder(make_config(**overrides)).with_clock(slow_exchange.clock)
        bot = await builder.with_exchange(slow_exchange).with_strategy(GoLong()).build()
        await bot.start()
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        with contextlib.suppress(Exception):  # the ones a test already shut down
            await bot.shutdown()


async def test_the_kill_file_is_honoured_while_a_slow_call_holds_the_cycle(slow_bot, slow_exchange):
    bot = await slow_bot(interval=1.0)
    slow_exchange.delays["account"] = 3.0
    runner = asyncio.create_task(bot.run())
    await until(lambda: "account" in slow_exchange.in_flight, timeout=2)
    kill_file_path(bot.config).write_text(json.dumps({"reason": "test"}))
    await until(lambda: bot.registry.risk.killed, timeout=1.0)
    assert "account" in slow_exchange.in_flight  # seen while the slow call still runs
    changes = [e.data["change"] for e in bot.registry.events.query(kind="risk_mode")]
    assert "kill on: kill_file" in changes
    bot.stop()
    await asyncio.wait_for(runner, timeout=1.0)


async def test_a_kill_during_an_order_in_flight_refuses_the_next_order_and_flatten_proceeds(slow_bot, slow_exchange):
    bot = await slow_bot(interval=0.5)
    slow_exchange.delays["place_order"] = 1.5
    runner = asyncio.create_task(bot.run())
    await until(lambda: "place_order" in slow_exchange.in_flight, timeout=2)  # BTC's opening order
    kill_file_path(bot.config).write_text(json.dumps({"reason": "test", "flatten": True}))
    await until(lambda: bot.registry.risk.killed, timeout=1.0)
    assert "place_order" in slow_exchange.in_flight
    del slow_exchange.delays["place_order"]  # the one in flight stays slow
    await until(lambda: len(slow_exchange.requests) >= 2, timeout=3)  # the flatten order, next cycle
    bot.stop()
    await asyncio.wait_for(runner, timeout=1.0)
    opening, closing = slow_exchange.requests[:2]
    assert (opening.symbol, opening.side.value) == ("BIP-20DEC30-CDE", "BUY")
    assert (closing.symbol, closing.side.value, closing.reduce_only) == ("BIP-20DEC30-CDE", "SELL", True)
    assert all(r.symbol != "ETP-20DEC30-CDE" for r in slow_exchange.requests)  # refused: the bot was killed
    refused = bot.registry.events.query(kind="risk_rejected", symbol="ETP-20DEC30-CDE")
    assert refused and refused[0].data["code"] == "kill_switch"


async def test_duration_ends_the_run_on_time_while_a_call_hangs(slow_bot, slow_exchange):
    bot = await slow_bot(interval=1.0)
    slow_exchange.delays["account"] = 3.0
    started = time.monotonic()
    await bot.run(duration=1)
    assert time.monotonic() - started < 1.8
    assert slow_exchange.in_flight == set()  # the hung call was cancelled


async def test_stop_ends_the_run_within_a_second_while_a_call_hangs(slow_bot, slow_exchange):
    bot = await slow_bot(interval=1.0)
    slow_exchange.delays["account"] = 3.0
    runner = asyncio.create_task(bot.run())
    await until(lambda: "account" in slow_exchange.in_flight, timeout=2)
    stopped = time.monotonic()
    bot.stop()
    await asyncio.wait_for(runner, timeout=1.0)
    await bot.shutdown()
    assert time.monotonic() - stopped < 1.5
    assert slow_exchange.in_flight == set()


async def test_an_order_in_flight_at_stop_stays_pending_and_the_next_start_adopts_it(
    slow_bot, slow_exchange, make_config
):
    bot = await slow_bot(interval=1.0, symbols=("BIP-20DEC30-CDE",))
    slow_exchange.delays["place_order"] = 3.0
    runner = asyncio.create_task(bot.run())
    await until(lambda: "place_order" in slow_exchange.in_flight, timeout=2)
    bot.stop()
    await asyncio.wait_for(runner, timeout=1.0)
    await bot.shutdown()
    [request] = slow_exchange.requests  # the exchange has the order and filled it
    conn = sqlite3.connect(make_config().store_dir / "orders.db")
    status = conn.execute(
        "SELECT status FROM orders WHERE client_order_id = ?", (request.client_order_id,)
    ).fetchone()
    conn.close()
    assert status == ("PENDING",)  # recorded, fate unknown: never lost, never guessed
    unknown = bot_events(make_config(), "order_unknown")
    assert [(e["client_order_id"], e["lookup"]) for e in unknown] == [
        (request.client_order_id, "not looked up: the bot stopped")
    ]
    slow_exchange.delays.clear()
    again = await slow_bot(interval=1.0, symbols=("BIP-20DEC30-CDE",))  # start-up looks it up
    order = again.registry.orders.get(request.client_order_id)
    assert order is not None and order.status.value == "FILLED" and order.filled_size == request.size
    assert [f.client_order_id for f in again.registry.orders.fills()] == [request.client_order_id]


def bot_events(config, kind: str) -> list[dict]:
    conn = sqlite3.connect(config.store_dir / "events.db")
    rows = conn.execute("SELECT data FROM events WHERE kind = ? ORDER BY id", (kind,)).fetchall()
    conn.close()
    return [json.loads(row[0]) for row in rows]


@pytest.mark.parametrize("call", ["account", "fills_since"])
async def test_a_hung_account_or_fills_call_times_out_and_the_cycle_goes_on(slow_bot, slow_exchange, monkeypatch, call):
    bot = await slow_bot(interval=1.0)
    monkeypatch.setattr(calls, "CALL_TIMEOUT_SECONDS", 0.2)
    slow_exchange.delays[call] = 3.0
    report = await asyncio.wait_for(bot.run_cycle(), timeout=1.0)
    assert report.errors["account"] == "TimeoutError: the exchange did not answer in time"
    assert set(report.decisions) == {"BIP-20DEC30-CDE", "ETP-20DEC30-CDE"}  # the symbols' steps ran


async def test_hung_candles_time_out_at_warm_up(slow_exchange, make_config, monkeypatch):
    monkeypatch.setattr(data, "CANDLES_TIMEOUT_SECONDS", 0.2, raising=False)
    slow_exchange.delays["candles"] = 3.0
    bot = await PerpsBotBuilder(make_config()).with_clock(slow_exchange.clock).with_exchange(slow_exchange).build()
    try:
        await asyncio.wait_for(bot.start(), timeout=1.5)
        failed = bot.registry.events.query(kind="warmup_failed")
        assert [(e.symbol, e.data["error"]) for e in failed] == [
            ("BIP-20DEC30-CDE", "no candles within 0.2 s"), ("ETP-20DEC30-CDE", "no candles within 0.2 s"),
        ]
    finally:
        await bot.shutdown()


async def test_a_hung_listing_in_a_reconciliation_times_out_and_the_next_cycle_goes_on(
        slow_bot, slow_exchange, monkeypatch):
    bot = await slow_bot(interval=1.0)
    monkeypatch.setattr(calls, "CALL_TIMEOUT_SECONDS", 0.2)
    slow_exchange.delays["open_orders"] = 3.0
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await bot.registry.execution.reconciler.reconcile()
    assert time.monotonic() - started < 1.0  # the call's bound, not the exchange's delay
    del slow_exchange.delays["open_orders"]
    assert (await bot.registry.execution.reconciler.reconcile()).matched
