"""One engine: the same orders on the in-process simulator (seeded ticks) and on the candle
replay, at the same prices, give the same fills, fees, margin and funding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from perpsbot.domain import OrderType, Side
from perpsbot.domain.clock import EPOCH, SimulatedClock
from perpsbot.exchange.port import OrderRequest
from perpsbot.exchange.sim import SimConfig, SimCore, SimExchange, default_products
from perpsbot.exchange.sim.replay import ReplayCosts, ReplayExchange

START = datetime(2026, 1, 1, 0, 40, tzinfo=UTC)  # funding at 01:00 (a CFM future settles it at 12:00)


def order(cid: str, symbol: str, side: Side, size: str, leverage: str = "1", reduce_only: bool = False):
    return OrderRequest(cid, symbol, side, OrderType.MARKET, D(size), leverage=D(leverage), reduce_only=reduce_only)


def state(core: SimCore, symbol: str) -> tuple:
    account = core.account()
    pos = account.positions.get(symbol)
    figures = (pos.size, pos.entry_price, pos.leverage, pos.realized_pnl, pos.fees, pos.funding) if pos else ()
    balances = {c: (b.available, b.hold) for c, b in account.balances.items() if b.total}
    margin = core.margin(symbol) if core.product(symbol).is_perpetual else None
    return balances, figures, margin, core.accrued_funding(symbol)


async def on_ticks(symbol: str, orders: dict[int, OrderRequest]) -> tuple[SimCore, list[tuple], dict, dict]:
    """The orders (minute after START -> request) on the seeded tick market: the core, the
    account after each order, each minute's mid and each order's fill price."""
    spec = next(s for s in default_products() if s.symbol == symbol)
    core = SimCore([spec], SimConfig(seed=3, starting_cash=D(10_000)), start=START)
    clock = SimulatedClock((START - EPOCH).total_seconds())
    exchange = SimExchange(core, clock)
    states, mids, fills = [], {}, {}
    for minute in range(51):
        clock.set((START - EPOCH).total_seconds() + 60 * minute)
        await exchange.account()  # the market moves up to now: funding counted at 01:00's mid
        mids[minute] = core.market(symbol).mid
        if minute in orders:
            snap = await exchange.place_order(orders[minute])
            assert len(snap.fills) == 1  # one level of the book: one price, as a candle's open has
            fills[minute] = snap.fills[0].price
            states.append(state(core, symbol))
    return core, states, mids, fills


async def on_candles(symbol: str, orders: dict[int, OrderRequest], mids: dict, fills: dict, funding_rate: D):
    """The same orders on the replay: each placed on the close of the candle that ends at its
    minute (at that minute's mid), filled at the next candle's open, which is the price the
    tick market filled it at."""
    spec = next(s for s in default_products() if s.symbol == symbol)
    first = (START - EPOCH).total_seconds() - 60
    clock = SimulatedClock(first)
    replay = ReplayExchange(spec.product, clock, bar_seconds=60, starting_cash=D(10_000),
                            costs=ReplayCosts(fee_bps=D(5), maker_fee_bps=D("2.5"), funding_rate=funding_rate))
    states = []
    for minute in range(51):
        start = first + 60 * minute  # the candle that ends at this minute
        clock.set(start + 60)
        close = float(mids[minute])
        opened = float(fills.get(minute - 1, mids[max(minute - 1, 0)]))
        if replay.lanes[symbol].busy:
            replay.lanes[symbol].on_bar(start, opened, max(opened, close), min(opened, close), close)
        else:
            replay.lanes[symbol].price = close
        if minute - 1 in orders:
            states.append(state(replay.core, symbol))
        if minute in orders:
            await replay.place_order(orders[minute])
    return replay, states


def trades(core: SimCore) -> list[tuple]:
    return [(f.ts, f.side, f.price, f.size, f.fee, f.liquidity) for f in core.fills]


async def test_a_cfm_future_accounts_alike_on_ticks_and_on_candles():
    sym = "BIP-20DEC30-CDE"
    orders = {
        0: order("o1", sym, Side.BUY, "3", "2"),
        5: order("o2", sym, Side.BUY, "1", "2"),  # adds at the same leverage
        10: order("o3", sym, Side.BUY, "1", "3"),  # adds at another: the position's leverage is blended
        30: order("o4", sym, Side.SELL, "8", "2"),  # through flat to short 3
        40: order("o5", sym, Side.BUY, "3", "2", reduce_only=True),
    }
    ticks, tick_states, mids, fills = await on_ticks(sym, orders)
    (funding,) = ticks.funding_log  # 01:00, on the long, at that minute's mid: the candle's close
    assert funding.ts == START + timedelta(minutes=20) and funding.mark == mids[20]
    replay, candle_states = await on_candles(sym, orders, mids, fills, funding_rate=funding.rate * 8)  # per 8 h
    assert trades(replay.core) == trades(ticks) and len(trades(ticks)) == 5
    assert candle_states == tick_states
    assert [(f.rate, f.mark, f.position_size, f.payment) for f in replay.funding] == [
        (funding.rate, funding.mark, funding.position_size, funding.payment)]
    assert replay.core.accrued_funding(sym) == ticks.accrued_funding(sym) == funding.payment != 0  # not yet settled


async def test_spot_accounts_alike_on_ticks_and_on_candles():
    sym = "BTC-USD"
    orders = {0: order("s1", sym, Side.BUY, "0.05"), 12: order("s2", sym, Side.BUY, "0.02"),
              25: order("s3", sym, Side.SELL, "0.06")}
    ticks, tick_states, mids, fills = await on_ticks(sym, orders)
    replay, candle_states = await on_candles(sym, orders, mids, fills, funding_rate=D(0))
    assert trades(replay.core) == trades(ticks) and len(trades(ticks)) == 3
    assert candle_states == tick_states
