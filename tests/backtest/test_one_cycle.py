"""The backtest against the bot as it runs: the same candles through ``run_backtest`` and
through ``PerpsBot.run_cycle`` in paper mode on a simulated clock give the same orders and
fills.

The paper bot is built by the same builder on the same candle market (``ReplayExchange``,
the one ``SimCore``), with the orchestrator, risk manager, coordinator, reconciliation,
order commands and alert rules of a live run; only the clock and the market feed differ.
It takes its marks by polling quotes, as a live bot without a stream does, two cycles per
candle: just before the candle's end (the mark is its close) and at the end (the bar
closes; the decision is taken and sent, to fill at the next candle's open like the
backtest's). Its bars are built from marks, so they carry closes only: the strategies here
read closes.
"""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest

from perpsbot.backtest.data import synthetic_candles
from perpsbot.backtest.runner import BacktestSpec, backtest_config, product_for, run_backtest
from perpsbot.bot import PerpsBotBuilder
from perpsbot.domain.clock import SimulatedClock
from perpsbot.exchange.sim.replay import ReplayCosts, ReplayExchange
from perpsbot.store.memory import MemoryEventStore, MemoryOrdersStore
from perpsbot.strategy import loading


async def paper_run(series, spec: BacktestSpec, data_dir: Path):
    config = backtest_config(spec, series.bar_seconds, data_dir)
    clock = SimulatedClock(series.start[0])
    replay = ReplayExchange(product_for(series.symbol), clock, bar_seconds=series.bar_seconds,
                            starting_cash=config.sim_starting_cash, costs=spec.costs)
    events, orders = MemoryEventStore(), MemoryOrdersStore()
    builder = PerpsBotBuilder(config).with_clock(clock).with_exchange(replay)
    builder = builder.with_strategy(loading.build(config, timed=False))
    bot = await builder.with_stores(events, orders).build()  # type: ignore[arg-type]  # no store protocol yet
    orders.run_id = events.start_run(clock.now(), "paper", config.model_dump(mode="json"))
    lane = replay.lanes[series.symbol]
    g = series.bar_seconds
    cycles = 0
    for i in range(len(series)):
        start, close = series.start[i], series.close[i]
        clock.epoch = start + g - 0.001  # the candle's last moment: its close is the mark
        if lane.busy:
            lane.on_bar(start, series.open[i], series.high[i], series.low[i], close)
        else:
            lane.price = close
        await bot.run_cycle()
        clock.epoch = start + g  # the bar closes: the decision
        report = await bot.run_cycle()
        assert not report.errors, report.errors
        cycles += 2
    return replay, orders.orders(run_id=orders.run_id), cycles


@pytest.mark.parametrize(("symbol", "strategy", "params", "funding"), [
    ("BTC-USD", "ma_crossover", {"short_window": 10, "long_window": 40, "trailing_stop_pct": 0}, "0"),
    ("BIP-20DEC30-CDE", "rsi_reversion", {}, "0.0001"),
])
async def test_backtest_and_paper_cycles_send_the_same_orders_and_get_the_same_fills(
    tmp_path, symbol, strategy, params, funding
):
    from perpsbot.backtest.runner import typical_price

    series = synthetic_candles(2_500, seed=21, symbol=symbol, start_price=typical_price(symbol))
    spec = BacktestSpec(symbol, ReplayCosts(fee_bps=D(5), slippage_bps=D(1), funding_rate=D(funding)),
                        params, strategy=strategy)
    backtest = await run_backtest(series, spec, data_dir=tmp_path / "bt")
    replay, paper_orders, cycles = await paper_run(series, spec, tmp_path / "paper")

    def fills(listed):
        return [(f.symbol, f.ts, f.side, f.price, f.size, f.fee, f.liquidity) for f in listed]

    def orders(listed):
        return [(o.symbol, o.side, o.type, o.size, o.status, o.filled_size) for o in listed]

    assert len(backtest.fills) > 20  # enough trading to compare
    assert fills(replay.fills) == fills(backtest.fills)
    assert orders(paper_orders) == orders(backtest.orders)
    assert bool(backtest.funding) == (funding != "0")
    assert [(p.ts, p.payment) for p in replay.funding] == [(p.ts, p.payment) for p in backtest.funding]
    assert (await replay.account()).equity == backtest.end_equity
    assert cycles == 2 * len(series)
