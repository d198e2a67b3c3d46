"""The replay exchange: fills at the next candle's open, fees, slippage, funding, liquidation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from perpsbot.domain import Liquidity, OrderStatus, OrderType, Product, ProductType, Side, TimeInForce
from perpsbot.domain.clock import SimulatedClock
from perpsbot.exchange.port import OrderRejected, OrderRequest
from perpsbot.exchange.sim import default_products
from perpsbot.exchange.sim.replay import Lane, ReplayCosts, ReplayExchange

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
SPOT = Product("TST-USD", "TST", "USD", ProductType.SPOT, D("0.001"), D("0.01"), D("0.001"))
PERP = Product("TST-PERP", "TST", "USD", ProductType.PERPETUAL, D("0.001"), D("0.01"), D("0.001"), D(10),
               maintenance_margin_rate=D("0.05"))


def make(product=SPOT, cash="10000", **costs) -> tuple[ReplayExchange, SimulatedClock]:
    clock = SimulatedClock(T0)
    costs = {k: D(str(v)) for k, v in costs.items()}
    return ReplayExchange(product, clock, bar_seconds=60, starting_cash=D(cash), costs=ReplayCosts(**costs)), clock


def only(ex: ReplayExchange) -> Lane:
    """The replay's one product's lane."""
    (lane,) = ex.lanes.values()
    return lane


def bar(ex: ReplayExchange, clock: SimulatedClock, i: int, o: float, h: float, lo: float, c: float) -> None:
    """Candle i (start T0 + 60 i) as the backtest loop feeds it."""
    start = T0 + 60 * i
    clock.set(start + 60)
    if only(ex).busy:
        only(ex).on_bar(start, o, h, lo, c)
    else:
        only(ex).price = c


async def cash(ex: ReplayExchange) -> D:
    return (await ex.account()).balances["USD"].available


def market(side: Side, size: str, cid: str = "c1", **kw) -> OrderRequest:
    return OrderRequest(cid, kw.pop("symbol", SPOT.symbol), side, OrderType.MARKET, D(size), **kw)


async def test_a_market_order_fills_at_the_next_open_with_slippage_and_the_taker_fee():
    ex, clock = make(fee_bps=10, slippage_bps=20)
    bar(ex, clock, 0, 100, 101, 99, 100)
    snap = await ex.place_order(market(Side.BUY, "2"))
    assert snap.status is OrderStatus.OPEN and snap.fills == ()  # nothing at the decision's close
    assert (await cash(ex)) == D(10000)
    bar(ex, clock, 1, 101, 103, 100, 102)
    (fill,) = (await ex.get_order("c1")).fills
    # 101 x 1.002 = 101.202 -> 101.21 (rounded up: against the buyer)
    assert fill.price == D("101.21") and fill.size == D(2) and fill.liquidity is Liquidity.TAKER
    assert fill.fee == D("101.21") * 2 * D("0.001")
    assert fill.ts == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)  # the open of candle 1
    assert (await cash(ex)) == D(10000) - D("202.42") - fill.fee
    account = await ex.account()
    assert account.balances["TST"].total == D(2)
    assert account.equity == (await cash(ex)) + 2 * D(102)  # valued at the close
    assert ex.changed
    # Selling: 102 x 0.998 = 101.796 -> 101.79 (rounded down: against the seller)
    await ex.place_order(market(Side.SELL, "2", "c2"))
    bar(ex, clock, 2, 102, 102, 101, 101.5)
    (sell,) = (await ex.get_order("c2")).fills
    assert sell.price == D("101.79") and sell.fee == D("101.79") * 2 * D("0.001")
    assert (await cash(ex)) == D(10000) - D("202.42") - fill.fee + D("203.58") - sell.fee
    assert (await ex.account()).equity == (await cash(ex))


async def test_the_equity_line_matches_the_decimal_account_at_any_close():
    ex, clock = make(fee_bps=5)
    bar(ex, clock, 0, 100, 100, 100, 100)
    await ex.place_order(market(Side.BUY, "3"))
    bar(ex, clock, 1, 100.5, 101, 100, 100.75)
    for close in (100.75, 90.0, 123.45):
        only(ex).price = close
        assert ex.equity_a + only(ex).b * close == pytest.approx(float((await ex.account()).equity), abs=1e-9)


async def test_an_order_the_cash_cannot_cover_at_the_open_is_cancelled_with_the_reason():
    # The simulator core's rule (one engine): an order is met whole or refused; the
    # replay used to cut it to what the cash paid for (8 of 9.9 here).
    ex, clock = make(cash="1000", fee_bps=0)
    bar(ex, clock, 0, 100, 100, 100, 100)
    await ex.place_order(market(Side.BUY, "9.9"))  # ~990 at the close: accepted
    bar(ex, clock, 1, 125, 125, 125, 125)  # gaps up: 9.9 x 125 = 1237.5 > 1000
    snap = await ex.get_order("c1")
    assert snap.filled_size == 0 and snap.status is OrderStatus.CANCELLED
    assert snap.reject_reason == "insufficient_funds" and (await cash(ex)) == D(1000) and ex.changed


async def test_orders_are_refused_up_front_when_they_cannot_be_met():
    ex, clock = make(cash="1000")
    bar(ex, clock, 0, 100, 100, 100, 100)
    with pytest.raises(OrderRejected) as info:
        await ex.place_order(market(Side.BUY, "20"))
    assert info.value.reason == "insufficient_funds"
    with pytest.raises(OrderRejected) as info:
        await ex.place_order(market(Side.SELL, "1", "c2"))
    assert info.value.reason == "insufficient_funds"
    with pytest.raises(OrderRejected) as info:
        await ex.place_order(market(Side.BUY, "0.0005", "c3"))
    assert info.value.reason == "invalid_size"
    assert (await ex.get_order("c1")).status is OrderStatus.REJECTED
    # The same client id again returns the same order, never a second one.
    assert (await ex.get_order("c1")).status is (await ex.place_order(market(Side.BUY, "1"))).status


async def test_an_order_on_the_last_candle_stays_open():
    ex, clock = make()
    bar(ex, clock, 0, 100, 100, 100, 100)
    await ex.place_order(market(Side.BUY, "1"))
    assert [o.client_order_id for o in await ex.open_orders()] == ["c1"]
    assert (await ex.fills_since(0)) == ([], 0)


async def test_limit_orders_fill_when_a_later_candle_reaches_them():
    ex, clock = make(fee_bps=10, maker_fee_bps=2)
    bar(ex, clock, 0, 100, 100, 100, 100)
    request = OrderRequest("L1", SPOT.symbol, Side.BUY, OrderType.LIMIT, D(1), D("98"), TimeInForce.GTC)
    await ex.place_order(request)
    bar(ex, clock, 1, 100, 101, 99, 100)  # not reached: waits (GTC)
    assert (await ex.get_order("L1")).status is OrderStatus.OPEN
    bar(ex, clock, 2, 99, 99.5, 97, 98.5)  # reached: at the limit, maker fee
    (fill,) = (await ex.get_order("L1")).fills
    assert (fill.price, fill.liquidity, fill.fee) == (D(98), Liquidity.MAKER, D(98) * D("0.0002"))
    ioc = OrderRequest("L2", SPOT.symbol, Side.SELL, OrderType.LIMIT, D(1), D("110"), TimeInForce.IOC)
    await ex.place_order(ioc)
    bar(ex, clock, 3, 99, 100, 98, 99)  # not reached: an IOC gets one candle
    assert (await ex.get_order("L2")).status is OrderStatus.CANCELLED
    gap = OrderRequest("L3", SPOT.symbol, Side.SELL, OrderType.LIMIT, D(1), D("97"), TimeInForce.IOC)
    await ex.place_order(gap)
    bar(ex, clock, 4, 99.5, 100, 99, 99.5)  # opens through the limit: taker at the open
    (fill,) = (await ex.get_order("L3")).fills
    assert (fill.price, fill.liquidity) == (D("99.5"), Liquidity.TAKER)


async def test_perp_funding_is_charged_every_hour_on_the_held_position():
    ex, clock = make(PERP, fee_bps=0, funding_rate="0.0008")  # 0.01 % an hour
    # Candle 58 (00:58) closes at 00:59; buy 2 at leverage 2, filled at 00:59's open.
    bar(ex, clock, 58, 100, 100, 100, 100)
    await ex.place_order(market(Side.BUY, "2", symbol=PERP.symbol, leverage=D(2)))
    bar(ex, clock, 59, 100, 100, 100, 100)  # filled at 00:59; the candle ends at 01:00: funding
    assert [(p.ts.hour, p.payment) for p in ex.funding] == [(1, D("-0.02"))]  # 2 x 100 x 0.0001, a long pays
    # counted into the position (and equity) at once, settled in cash at 00:00 / 12:00 UTC
    assert ex.core.margin(PERP.symbol) == D(100) and (await cash(ex)) == D(9900)
    assert ex.core.accrued_funding(PERP.symbol) == D("-0.02")
    for i in range(60, 120):
        bar(ex, clock, i, 110, 110, 110, 110)
    assert [p.payment for p in ex.funding] == [D("-0.02"), D("-0.022")]  # 02:00 at 110
    assert (await cash(ex)) == D(9900) and ex.core.account().positions[PERP.symbol].funding == D("-0.042")
    # Flat: no more funding.
    await ex.place_order(market(Side.SELL, "2", "c2", symbol=PERP.symbol, reduce_only=True, leverage=D(2)))
    for i in range(120, 200):
        bar(ex, clock, i, 110, 110, 110, 110)
    assert len(ex.funding) == 2 and only(ex).busy  # flat: no more funding; what accrued awaits 12:00's settlement
    assert (await ex.account()).equity == D(10000) - D("0.042") + 2 * D(10)


async def test_a_perp_that_trades_through_its_liquidation_price_is_liquidated():
    ex, clock = make(PERP, fee_bps=0)
    bar(ex, clock, 0, 100, 100, 100, 100)
    await ex.place_order(market(Side.BUY, "10", symbol=PERP.symbol, leverage=D(5)))
    bar(ex, clock, 1, 100, 100, 100, 100)
    assert ex.core.margin(PERP.symbol) == D(200)
    # long at 100, 5x, maintenance 5 %: liquidation at 100 x 0.8 / 0.95 = 84.21...
    bar(ex, clock, 2, 95, 96, 80, 85)
    assert ex.liquidations == 1 and ex.core.account().positions[PERP.symbol].size == 0
    assert ex.core.margin(PERP.symbol) == 0
    fill = ex.fills[-1]
    assert fill.liquidity is Liquidity.LIQUIDATION and fill.price == D("84.21")
    assert (await cash(ex)) < D(10000) - D(150)  # most of the margin is gone


async def test_reduce_only_may_not_open():
    ex, clock = make(PERP)
    bar(ex, clock, 0, 100, 100, 100, 100)
    with pytest.raises(OrderRejected) as info:
        await ex.place_order(market(Side.SELL, "1", symbol=PERP.symbol, reduce_only=True))
    assert info.value.reason == "reduce_only_would_increase"


async def test_limits_follow_the_core_rules_a_resting_limit_fills_at_its_price_an_ioc_gets_the_open():
    # The simulator core's rules (one engine); the replay used to fill the gapped GTC
    # at the open as a taker, and give the IOC the whole candle.
    ex, clock = make(fee_bps=10, maker_fee_bps=2)
    bar(ex, clock, 0, 100, 100, 100, 100)
    await ex.place_order(OrderRequest("G", SPOT.symbol, Side.BUY, OrderType.LIMIT, D(1), D(98), TimeInForce.GTC))
    bar(ex, clock, 1, 100, 100, 99, 99)  # not reached: rests
    bar(ex, clock, 2, 95, 96, 94, 95)  # opens through the resting limit
    (fill,) = (await ex.get_order("G")).fills
    assert (fill.price, fill.liquidity, fill.fee) == (D(98), Liquidity.MAKER, D(98) * D("0.0002"))
    await ex.place_order(OrderRequest("I", SPOT.symbol, Side.SELL, OrderType.LIMIT, D(1), D(97), TimeInForce.IOC))
    bar(ex, clock, 3, 96, 98, 95, 96)  # the open is below the limit; the high reaches it later
    snap = await ex.get_order("I")
    assert snap.status is OrderStatus.CANCELLED and snap.fills == ()


async def test_a_cfm_future_counts_funding_hourly_and_settles_it_in_cash_at_noon():
    # The simulator core's rule for CFM futures; the replay used to pay it in cash every hour.
    bip = next(s.product for s in default_products() if s.symbol == "BIP-20DEC30-CDE")
    clock = SimulatedClock(T0 + 10 * 3600)  # 10:00
    ex = ReplayExchange(bip, clock, bar_seconds=3600, starting_cash=D(10000),
                        costs=ReplayCosts(fee_bps=D(0), funding_rate=D("0.0008")))  # 0.0001 an hour

    def hour(h: int, price: float) -> None:
        start = T0 + h * 3600
        clock.set(start + 3600)
        if only(ex).busy:
            only(ex).on_bar(start, price, price, price, price)
        else:
            only(ex).price = price

    hour(10, 100_000)  # closes at 11:00
    await ex.place_order(OrderRequest("c1", bip.symbol, Side.BUY, OrderType.MARKET, D(2), leverage=D(2)))
    hour(11, 100_000)  # filled at 11:00; 12:00: 2 x 0.01 x 100,000 x 0.0001 = 0.2 paid, settled at once
    assert (await cash(ex)) == D(10000) - D(1000) - D("0.2")
    hour(12, 100_000)  # 13:00: counted, not settled
    hour(13, 110_000)  # 14:00: at 110,000
    assert (await cash(ex)) == D("8999.8")  # 13:00 and 14:00 not yet settled
    assert ex.core.accrued_funding(bip.symbol) == D("-0.42")
    assert (await ex.account()).equity == D(10000) - D("0.62") + 2 * D("0.01") * 10_000
