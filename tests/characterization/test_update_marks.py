from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

from perpsbot.domain import Quote


async def test_update_marks_appends_a_mark_per_symbol_with_its_update_time(make_bot, clock):
    bot = await make_bot()
    md = bot.registry.market_data
    report = await md.update_marks()
    assert set(report.updated) == {"BIP-20DEC30-CDE", "ETP-20DEC30-CDE"}
    assert md.mark("BIP-20DEC30-CDE") == D(100)
    assert md.last_update["ETP-20DEC30-CDE"] == clock.now()
    assert report.elapsed_ms >= 0


async def test_windows_are_trimmed_to_what_the_strategy_needs(make_bot, clock, exchange):
    bot = await make_bot()
    md = bot.registry.market_data
    for i in range(50):
        exchange.prices["BIP-20DEC30-CDE"] = D(100 + i)
        await md.update_marks()
        clock.advance(1)
    window = md.windows["BIP-20DEC30-CDE"]
    # trimmed to what the strategy (long window + 1) and the volatility breaker (vol_window + 1) need
    assert bot.registry.strategy.strategy.required_bars == 5
    assert len(window.bars) == bot.config.vol_window + 1 == 6
    assert len(window.marks) == md.spec.max_marks < 50
    assert window.marks[-1].price == D(149)


async def test_a_failing_symbol_does_not_stop_the_others(make_bot, exchange, clock):
    bot = await make_bot()
    exchange.failing.add("BIP-20DEC30-CDE")
    report = await bot.registry.market_data.update_marks()
    assert report.updated == ("ETP-20DEC30-CDE",)
    assert "feed down" in report.failed["BIP-20DEC30-CDE"]
    assert bot.registry.market_data.error_counts["BIP-20DEC30-CDE"] == 1
    assert bot.registry.events.query(kind="mark_error")[0].symbol == "BIP-20DEC30-CDE"


async def test_bad_quotes_are_rejected_per_symbol(make_bot, exchange, clock):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE", "ETP-20DEC30-CDE", "SOL-USD"))
    exchange.bad["BIP-20DEC30-CDE"] = {"bid": "1", "ask": "2"}
    exchange.bad["ETP-20DEC30-CDE"] = Quote("SOL-USD", D(1), D(2), clock.now())
    exchange.bad["SOL-USD"] = Quote("SOL-USD", D(1), D(2), clock.now() + timedelta(minutes=5))
    report = await bot.registry.market_data.update_marks()
    assert report.updated == ()
    assert "expected a quote" in report.failed["BIP-20DEC30-CDE"]
    assert "got a quote for SOL-USD" in report.failed["ETP-20DEC30-CDE"]
    assert "ahead of the clock" in report.failed["SOL-USD"]
    assert all(bot.registry.market_data.mark(s) is None for s in bot.config.symbols)
