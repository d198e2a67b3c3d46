from __future__ import annotations

from decimal import Decimal as D

from perpsbot.domain import OrderStatus, Side
from perpsbot.strategy.base import Decision, Target

RISE = [110, 108, 106, 104, 102, 100, 98, 120, 120]  # falling, then fast(2) jumps above slow(4)
FALL = [120, 120, 80, 80]


async def drive(bot, exchange, clock, symbol, prices):
    reports = []
    for price in prices:
        exchange.prices[symbol] = D(price)
        reports.append(await bot.run_cycle())
        clock.advance(1)
    return reports


async def test_full_cycle_goes_long_then_reverses_to_short(make_bot, exchange, clock):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE",))
    await drive(bot, exchange, clock, "BIP-20DEC30-CDE", RISE)
    assert [r.side for r in exchange.requests] == [Side.BUY]
    assert bot.registry.execution.position_size("BIP-20DEC30-CDE") > 0

    await drive(bot, exchange, clock, "BIP-20DEC30-CDE", FALL)
    sides = [(r.side, r.reduce_only) for r in exchange.requests]
    assert sides == [(Side.BUY, False), (Side.SELL, True), (Side.SELL, False)]
    assert bot.registry.execution.position_size("BIP-20DEC30-CDE") < 0

    stored = bot.registry.orders.orders(run_id=bot.registry.events.run_id)
    assert [o.status for o in stored] == [OrderStatus.FILLED] * 3
    assert {o.client_order_id for o in stored} == {r.client_order_id for r in exchange.requests}
    assert len(bot.registry.orders.fills()) == 3
    kinds = {e.kind for e in bot.registry.events.query()}
    assert {"decision", "order_submitted", "order_placed", "fill"} <= kinds


async def test_entry_size_is_an_equity_fraction_quantized_down(make_bot, exchange, clock):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE",), position_fraction=D("0.1"))
    exchange.prices["BIP-20DEC30-CDE"] = D(333)
    await bot.registry.execution.refresh_account()
    product = bot.registry.products["BIP-20DEC30-CDE"]
    # 100,000 * 0.1 / (333 * 0.01 BTC a contract) = 3003.003... -> 3003 whole contracts
    assert bot.registry.execution.entry_size(product, D(333)) == D(3003)


async def test_staleness_guard_blocks_orders_once_marks_stop(make_bot, exchange, clock):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE",), mark_staleness_seconds=5)
    await bot.registry.market_data.update_marks()
    exchange.failing.add("BIP-20DEC30-CDE")
    clock.advance(6)
    await bot.registry.market_data.update_marks()
    assert bot.registry.market_data.mark_age("BIP-20DEC30-CDE") == 6
    results = await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "test", D(100)))
    assert [r.outcome for r in results] == ["rejected_by_risk"]
    assert "stale_mark" in results[0].detail
    assert exchange.requests == []
    assert bot.registry.events.query(kind="risk_rejected")[0].data["code"] == "stale_mark"


async def test_staleness_guard_also_fires_on_a_frozen_feed(make_bot, exchange, clock):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE",), mark_staleness_seconds=5)
    exchange.frozen.add("BIP-20DEC30-CDE")
    await bot.registry.market_data.update_marks()
    clock.advance(10)
    await bot.registry.market_data.update_marks()  # the same old quote again
    results = await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "test", D(100)))
    assert "stale_mark" in results[0].detail


async def test_process_symbol_and_execute_decision_delegate_to_the_registry_services(make_bot):
    bot = await make_bot()
    calls = []

    class SpyOrchestrator:
        def process_symbol(self, symbol):
            calls.append(("process", symbol))
            return Decision(symbol, Target.HOLD, "spy")

    class SpyExecution:
        async def execute_decision(self, decision):
            calls.append(("execute", decision.symbol))
            return []

    original = bot.registry
    bot._registry = original.with_updates(strategy=SpyOrchestrator(), execution=SpyExecution())
    decision = bot.process_symbol("ETP-20DEC30-CDE")
    await bot.execute_decision(decision)
    bot._registry = original
    assert calls == [("process", "ETP-20DEC30-CDE"), ("execute", "ETP-20DEC30-CDE")]


async def test_dev_profile_records_decisions_and_places_no_order(make_bot, exchange, clock):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE",), profile="dev", dry_run=True)
    await drive(bot, exchange, clock, "BIP-20DEC30-CDE", RISE + FALL)
    assert exchange.requests == []
    assert bot.registry.orders.orders() == []
    dry = bot.registry.events.query(kind="dry_run_order")
    assert [e.data["side"] for e in dry] == ["BUY", "SELL"]


async def test_canary_profile_cannot_open_a_position(make_bot, exchange, clock):
    bot = await make_bot(
        symbols=("BIP-20DEC30-CDE",), profile="canary", reduce_only=True, leverage=1, max_leverage=1,
        time_in_force="IOC",
    )
    await drive(bot, exchange, clock, "BIP-20DEC30-CDE", RISE + FALL)
    results = await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "forced", D(100)))
    assert results[0].outcome == "rejected_by_risk" and "reduce_only_mode" in results[0].detail
    assert exchange.requests == []


async def test_one_symbol_failing_in_the_cycle_does_not_stop_the_other(make_bot, exchange, clock):
    bot = await make_bot()
    original = bot.registry.strategy.process_symbol

    def broken(symbol):
        if symbol == "BIP-20DEC30-CDE":
            raise RuntimeError("strategy bug")
        return original(symbol)

    bot.registry.strategy.process_symbol = broken
    report = await bot.run_cycle()
    assert "strategy bug" in report.errors["BIP-20DEC30-CDE"]
    assert "ETP-20DEC30-CDE" in report.decisions
    assert bot.registry.events.query(kind="error")[0].symbol == "BIP-20DEC30-CDE"
