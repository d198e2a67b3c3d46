"""PnL from our fill ledger agrees with the simulator's own books after a flip and funding."""

from __future__ import annotations

from decimal import Decimal

from perpsbot.bot import PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.domain import Side
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.sim import SimExchange
from perpsbot.execution.pnl import collateral_equity, pnl_from_fills
from tests.unit.sim.simkit import T0, build_core

D = Decimal
PERP = "TST-PERP"


async def test_pnl_matches_the_exchange_after_a_flip_and_a_funding_settlement(tmp_path):
    clock = ManualClock(T0)
    core = build_core(seed=11, funding_interval_seconds=60.0)
    config = BotConfig(symbols=(PERP,), data_dir=tmp_path, bar_seconds=1, short_window=2, long_window=4, leverage=D(3))
    bot = await PerpsBotBuilder(config).with_clock(clock).with_exchange(SimExchange(core, clock)).build()
    await bot.start()
    ex = bot.registry.execution
    product = bot.registry.products[PERP]
    try:
        for side, size, wait in (
            (Side.BUY, "0.5", 5),
            (Side.SELL, "1.2", 70),
            (Side.BUY, "0.3", 65),
            (Side.SELL, "0.1", 3),
        ):
            order = ex.new_order(product, side, D(size), D(100), closing=False)
            result = await ex._place(order, "test", 0.0)
            assert result.outcome == "placed" and result.order.filled_size == D(size)
            clock.advance(wait)
        await ex.sync_orders()
        await ex.refresh_account()
        funding_log = core.funding_log
        assert len(funding_log) >= 2  # settled on the short the flip left
        mark = core.market(PERP).mid
        report = ex.pnl({PERP: mark})
        theirs = core.account().positions[PERP]
        mine = report.positions[PERP]
        assert mine.size == theirs.size == D("-0.5")  # flipped short
        assert mine.entry_price == theirs.entry_price
        assert mine.realized == theirs.realized_pnl != 0
        assert mine.fees == theirs.fees == sum(f.fee for f in core.fills)
        assert mine.funding == theirs.funding == sum(e.payment for e in funding_log) != 0
        assert mine.unrealized == theirs.unrealized_pnl(mark)
        assert report.equity(config.sim_starting_cash) == core.equity()
        assert report.net == core.equity() - config.sim_starting_cash
        # equity from the balances: cash (on hold too) + the position's margin + its unrealized PnL,
        # and the funding accrued since the last 00:00 / 12:00 UTC settlement (not in a balance yet)
        balances = collateral_equity(core.account(), {PERP: mark}, bot.registry.products)
        assert core.accrued_funding(PERP) == mine.funding
        assert balances + core.accrued_funding(PERP) == core.equity()
        # without the exchange's funding figure the books are off by exactly the funding
        plain = pnl_from_fills(bot.registry.orders.fills(), {PERP: mark})
        assert plain.equity(config.sim_starting_cash) == core.equity() - mine.funding
    finally:
        await bot.shutdown()
