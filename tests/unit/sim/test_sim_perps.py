"""Perpetual funding and liquidation in the simulator core."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from perpsbot.domain import Liquidity, OrderStatus, Position, Product, ProductType, Side, TimeInForce
from perpsbot.exchange.port import OrderRejected
from perpsbot.exchange.sim import MarketParams, SimCore, SimProduct
from tests.unit.sim.simkit import T0, at, build_core, flat_underlying, request, sim_perp, sim_spot

D = Decimal
START = D(100_000)
PERP = "TST-PERP"


def funded_core(premium: float, seed: int = 1) -> SimCore:
    """A perp whose premium sits at ``premium`` (no noise), funding every 10 s."""
    return build_core(
        sim_spot(), sim_perp(premium_mean=premium, premium_std=0.0), seed=seed, funding_interval_seconds=10.0
    )


@pytest.mark.parametrize("premium", [0.001, -0.001])
@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_funding_is_paid_every_interval_with_the_right_sign(premium, side):
    core = funded_core(premium)
    core.place_order(request("p", PERP, side, "10", leverage="2"), at(1))
    assert core.funding_log == []
    core.advance_to(at(9.9))
    cash_before = core.account().balances["USD"].available
    assert core.funding_log == []
    core.advance_to(at(10))
    (event,) = core.funding_log
    assert event.ts == at(10) and event.symbol == PERP
    # rate: the (constant) premium, quoted per 8 h, scaled to the 10 s interval
    assert float(event.rate) == pytest.approx(premium * 10 / 28_800, rel=1e-6)
    size = D(10) * side.sign
    assert event.position_size == size and event.mark == core.market(PERP).mid
    assert event.payment == -size * event.mark * event.rate
    # longs pay shorts when the rate is positive
    pays = (premium > 0) == (side is Side.BUY)
    assert (event.payment < 0) == pays
    acct = core.account()
    assert acct.balances["USD"].available == cash_before  # accrued: settled in cash at 00:00 / 12:00 UTC
    assert core.accrued_funding(PERP) == event.payment
    assert acct.positions[PERP].funding == event.payment

    core.advance_to(at(35))
    events = core.funding_log
    assert [e.ts for e in events] == [at(10), at(20), at(30)]
    assert core.account().positions[PERP].funding == sum(e.payment for e in events) == core.accrued_funding(PERP)


def test_no_funding_without_a_position():
    core = funded_core(0.001)
    core.place_order(request("o", PERP, Side.BUY, "3", leverage="2"), at(1))
    core.place_order(request("c", PERP, Side.SELL, "3", leverage="2"), at(5))
    core.advance_to(at(60))
    assert core.funding_log == []
    assert core.account().positions[PERP].funding == 0
    # the market still publishes its rates
    assert len(core.market(PERP).funding) >= 6


def test_funding_rate_follows_the_premium_process():
    core = build_core(sim_spot(), sim_perp(premium_mean=0.0, premium_std=0.001, premium_half_life_s=5.0),
                      funding_interval_seconds=10.0)
    core.advance_to(at(600))
    rates = [t.rate for t in core.market(PERP).funding]
    assert len(rates) >= 60
    assert any(r > 0 for r in rates) and any(r < 0 for r in rates)
    assert all(abs(r) <= D("0.0075") * 10 / 28_800 for r in rates)


def _liquidation_run(side: Side, drift: float):
    und = flat_underlying("TSTP", 100.0, 0.0005, drift_per_sec=drift)
    core = build_core(sim_spot(), sim_perp(underlying=und, depth=20.0), seed=2)
    snap = core.place_order(request("p", PERP, side, "10", leverage="10"), T0)
    return core, snap


@pytest.mark.parametrize(("side", "drift"), [(Side.BUY, -0.002), (Side.SELL, 0.002)])
def test_liquidation_when_the_mark_crosses_the_liquidation_price(side, drift):
    core, snap = _liquidation_run(side, drift)
    pos = core.account().positions[PERP]
    liq = pos.liquidation_price(D("0.05"))
    assert liq is not None
    margin = core.margin(PERP)
    cash = core.account().balances["USD"].available
    liquidated = None
    for k in range(1, 121):
        core.advance_to(at(k))
        fills = [f for f in core.fills_since(0)[0] if f.liquidity is Liquidity.LIQUIDATION]
        if fills:
            (liquidated,) = fills
            break
    assert liquidated is not None, "the drift should have liquidated the position"
    # it happened at the first grid tick where the mark crossed
    replica, _ = _liquidation_run(side, drift)
    replica.advance_to(liquidated.ts)
    mark = replica.market(PERP).mid_float()
    assert (mark <= liq) if side is Side.BUY else (mark >= liq)
    replica, _ = _liquidation_run(side, drift)
    replica.advance_to(liquidated.ts - (at(0.1) - T0))
    prev = replica.market(PERP).mid_float()
    assert (prev > liq) if side is Side.BUY else (prev < liq)

    assert liquidated.side is side.opposite and liquidated.size == 10
    assert liquidated.price == replica.market(PERP).product.quantize_price(D(mark))
    assert liquidated.fee == liquidated.price * 10 * D("0.005")  # 50 bps liquidation fee
    order = core.get_order(liquidated.client_order_id)
    assert order.status is OrderStatus.FILLED and order.fills == (liquidated,)
    acct = core.account()
    after = acct.positions[PERP]
    assert after.is_flat and core.margin(PERP) == 0
    realized = (liquidated.price - pos.entry_price) * pos.size
    returned = max(D(0), margin + realized - liquidated.fee)
    assert abs(acct.balances["USD"].available - (cash + returned)) < D("1e-15")
    # close to maintenance: what is left is the maintenance margin minus the fee (a few % of notional)
    assert 0 <= returned < margin * D("0.6")
    assert acct.equity == acct.balances["USD"].available
    # nothing more happens afterwards
    core.advance_to(at(200))
    assert len(core.fills_since(0)[0]) == len(snap.fills) + 1


def test_liquidation_cancels_resting_reduce_only_orders():
    core, _ = _liquidation_run(Side.BUY, -0.002)
    tp = core.quote(PERP).ask * 2
    core.place_order(request("tp", PERP, Side.SELL, "10", limit=tp, tif=TimeInForce.GTC, reduce_only=True), T0)
    core.advance_to(at(120))
    assert core.account().positions[PERP].is_flat
    assert core.get_order("tp").status is OrderStatus.CANCELLED


def test_low_leverage_long_is_never_liquidated():
    und = flat_underlying("TSTP", 100.0, 0.0005, drift_per_sec=-0.002)
    core = build_core(sim_spot(), sim_perp(underlying=und, depth=20.0), seed=2)
    core.place_order(request("p", PERP, Side.BUY, "10", leverage="1"), T0)
    assert Position(PERP, D(10), D(100), D(1)).liquidation_price(D("0.05")) == 0
    core.advance_to(at(120))
    assert core.account().positions[PERP].size == 10
    assert core.market(PERP).mid < 85  # it fell a lot, but 1x cannot be liquidated


def test_cfm_funding_accrues_every_interval_and_settles_in_cash_at_noon_and_midnight_utc():
    cfm = Product("TST-20DEC30-CDE", "TST", "USD", ProductType.PERPETUAL, D(1), D("0.01"), D(1),
                  max_leverage=D(10), contract_size=D("0.1"))
    und = flat_underlying("TSTC", 100.0)
    listed = SimProduct(cfm, MarketParams(und, top_depth=50.0, mean_trade_size=2.0, premium_mean=0.001,
                                          premium_std=0.0))
    core = build_core(listed, tick_seconds=5.0, funding_interval_seconds=3 * 3600.0)
    core.place_order(request("o", cfm.symbol, Side.BUY, "10", leverage="2"), at(1))
    cash = core.account().balances["USD"].available
    core.advance_to(at(9 * 3600 + 1))  # 03:00, 06:00 and 09:00: counted, not paid
    accrued = [e.payment for e in core.funding_log]
    assert len(accrued) == 3 and all(p < 0 for p in accrued)  # a long pays a positive rate
    assert all(e.payment == -10 * D("0.1") * e.mark * e.rate for e in core.funding_log)  # contracts x 0.1
    account = core.account()
    assert account.balances["USD"].available == cash
    assert account.positions[cfm.symbol].funding == sum(accrued) == core.accrued_funding(cfm.symbol)
    core.place_order(request("c", cfm.symbol, Side.SELL, "10", reduce_only=True), at(10 * 3600))
    after_close = core.account()
    assert after_close.positions[cfm.symbol].size == 0 and core.accrued_funding(cfm.symbol) == sum(accrued)
    freed = after_close.balances["USD"].available
    core.advance_to(at(12 * 3600 + 1))  # noon: settled to the cent, though flat by now
    assert len(core.funding_log) == 3 and core.accrued_funding(cfm.symbol) == 0
    settled = sum(accrued).quantize(D("0.01"))
    assert core.account().balances["USD"].available == freed + settled
    assert core.equity() == after_close.equity - sum(accrued) + settled  # the accrued funding moved into cash


def _dated_and_perp(expiry: datetime) -> tuple[SimProduct, SimProduct]:
    """A dated future and a perpetual-style one on one index, with a premium (which funds the perpetual)."""
    und = flat_underlying("TSTD", 100.0)
    market = MarketParams(und, top_depth=50.0, mean_trade_size=2.0, premium_mean=0.001, premium_std=0.0)
    dated = Product("TSD-26MAR27-CDE", "TST", "USD", ProductType.FUTURE, D(1), D("0.01"), D(1),
                    max_leverage=D(10), contract_size=D("0.1"), expiry=expiry)
    perp = Product("TSP-20DEC30-CDE", "TST", "USD", ProductType.PERPETUAL, D(1), D("0.01"), D(1),
                   max_leverage=D(10), contract_size=D("0.1"))
    return SimProduct(dated, market), SimProduct(perp, market)


def test_a_dated_future_is_margined_like_a_perpetual_and_accrues_no_funding():
    dated, perp = _dated_and_perp(T0 + timedelta(days=30))
    core = build_core(dated, perp, funding_interval_seconds=10.0)
    cash = core.account().balances["USD"].available
    core.place_order(request("d", dated.symbol, Side.SELL, "10", leverage="2"), at(1))  # short: it is margined
    core.place_order(request("p", perp.symbol, Side.SELL, "10", leverage="2"), at(1))
    core.advance_to(at(35))
    assert {e.symbol for e in core.funding_log} == {perp.symbol}  # three intervals, on the perpetual only
    account = core.account()
    held = account.positions[dated.symbol]
    assert held.size == -10 and held.funding == 0 and core.accrued_funding(dated.symbol) == 0
    notional = 10 * D("0.1") * held.entry_price  # contracts x 0.1 TST
    assert core.margin(dated.symbol) == notional / 2
    assert "TST" not in account.balances  # no asset bought: a future holds none
    assert account.balances["USD"].available < cash - notional / 2  # both margins and the fees


def test_an_order_on_an_expired_dated_future_is_refused_with_the_reason():
    dated, perp = _dated_and_perp(at(60))
    core = build_core(dated, perp)
    core.place_order(request("before", dated.symbol, Side.BUY, "1", leverage="2"), at(59))
    with pytest.raises(OrderRejected, match=r"after: TSD-26MAR27-CDE expired at 2026-01-01T00:01:00\+00:00; "
                                            r"it no longer trades") as info:
        core.place_order(request("after", dated.symbol, Side.SELL, "1", reduce_only=True), at(60))
    assert info.value.reason == "product_expired"
    assert core.get_order("after").status is OrderStatus.REJECTED and core.get_order("after").reject_reason == \
        "product_expired"
    assert core.place_order(request("perp", perp.symbol, Side.BUY, "1"), at(61)).status is OrderStatus.FILLED
