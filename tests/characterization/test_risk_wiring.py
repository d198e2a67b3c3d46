from __future__ import annotations

import json
from decimal import Decimal as D

from perpsbot.risk.manager import kill_file_path
from perpsbot.strategy.base import Decision, Target


async def test_kill_with_flatten_closes_every_position_through_the_cycle(make_bot, exchange, clock):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE", "ETP-20DEC30-CDE"))
    await bot.registry.market_data.update_marks()
    await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "open", D(100)))
    await bot.execute_decision(Decision("ETP-20DEC30-CDE", Target.SHORT, "open", D(50)))
    assert len(exchange.requests) == 2
    path = kill_file_path(bot.config)
    path.write_text(json.dumps({"flatten": True, "reason": "test"}))
    report = await bot.run_cycle()
    assert [r.outcome for r in report.executions["*flatten*"]] == ["placed", "placed"]
    closing = exchange.requests[2:]
    assert {(r.symbol, r.side.value, r.reduce_only) for r in closing} == {
        ("BIP-20DEC30-CDE", "SELL", True),
        ("ETP-20DEC30-CDE", "BUY", True),
    }
    assert bot.registry.execution.positions() == {}
    # killed: the strategy's own orders are refused
    results = await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "again", D(100)))
    assert results[0].outcome == "rejected_by_risk" and "kill_switch" in results[0].detail
    path.unlink()
    await bot.run_cycle()
    assert bot.registry.risk.mode == "normal"


async def test_the_cycle_feeds_the_running_controls(make_bot, exchange, clock):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE",), daily_loss_limit=D(100))
    await bot.run_cycle()
    exchange.equity = D(99_850)
    await bot.run_cycle()
    assert bot.registry.risk.reduce_only_reasons == ["daily_loss"]
    stored = bot.registry.events.get_state("risk")[0]
    assert stored["mode"] == "reduce-only" and stored["reduce_only"] == ["daily_loss"]


async def test_order_failures_feed_the_error_streak(make_bot, exchange, clock):
    from perpsbot.exchange.port import OrderRejected

    bot = await make_bot(symbols=("BIP-20DEC30-CDE",), error_streak_limit=2, error_cooldown_seconds=60)
    await bot.registry.market_data.update_marks()

    async def reject(request):
        raise OrderRejected("insufficient_funds", "no money")

    exchange.place_order = reject
    for _ in range(2):
        result = await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "try", D(100)))
        assert result[0].outcome == "rejected_by_exchange"
    result = await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "try", D(100)))
    assert result[0].outcome == "rejected_by_risk" and "error_cooldown" in result[0].detail
