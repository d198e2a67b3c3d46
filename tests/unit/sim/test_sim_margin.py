"""CFM margin in the simulator: rates per window, initial / maintenance from them, and
liquidation by the venue's rule (the account under maintenance), not the isolated one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from perpsbot.domain import Liquidity, Product, ProductType, Side
from perpsbot.exchange.port import OrderRejected
from perpsbot.exchange.sim import MarketParams, SimConfig, SimCore, SimProduct
from perpsbot.exchange.sim import protocol as P
from perpsbot.exchange.sim.venue import SimVenue

from .simkit import flat_underlying, request

D = Decimal
CFM = "TST-20DEC30-CDE"
# Friday 2 January 2026, 15:58 in New York (EST): two minutes of the intraday window left.
BEFORE_FOUR = datetime(2026, 1, 2, 20, 58, tzinfo=UTC)


def cfm_core(cash: str = "1000", drift: float = 0.0) -> SimCore:
    product = Product(CFM, "TST", "USD", ProductType.PERPETUAL, D(1), D("0.01"), D(1), max_leverage=D(10),
                      contract_size=D("0.1"))
    underlying = flat_underlying("TSTC", 100.0, vol=0.00001, drift_per_sec=drift)
    listed = SimProduct(product, MarketParams(underlying, top_depth=2000.0, mean_trade_size=2.0, premium_std=0.0))
    core = SimCore([listed], SimConfig(seed=3, starting_cash=D(cash), tick_seconds=1.0, warmup_seconds=5.0),
                   start=BEFORE_FOUR)
    core.intraday_margin = True
    return core


def test_a_position_at_the_intraday_maximum_is_liquidated_when_the_overnight_rates_start():
    core = cfm_core()
    core.place_order(request("o", CFM, Side.BUY, "900", leverage="10"), BEFORE_FOUR)  # 9 000 USD at 10x
    held = core.account().positions[CFM]
    assert held.size == 900
    # isolated at 10x with 5 % maintenance it would last to a 5.3 % fall: the price barely moves here
    assert held.liquidation_price(D("0.05")) < core.market(CFM).mid * D("0.95")
    core.advance_to(BEFORE_FOUR + timedelta(seconds=119))  # 15:59:59: intraday maintenance 5 % (450 USD)
    assert core.account().positions[CFM].size == 900
    core.advance_to(BEFORE_FOUR + timedelta(seconds=121))  # 16:00: overnight maintenance 12.5 % (1 125 USD)
    assert core.account().positions[CFM].size == 0
    (liquidation,) = [f for f in core.fills if f.liquidity is Liquidity.LIQUIDATION]
    assert liquidation.ts == BEFORE_FOUR + timedelta(seconds=120) and liquidation.size == 900


def test_an_account_not_enrolled_in_intraday_margin_pays_the_overnight_rates_all_day():
    core = cfm_core()
    core.intraday_margin = False
    with pytest.raises(OrderRejected, match=r"needs 2250\.00 USD of initial margin") as refused:
        core.place_order(request("o", CFM, Side.BUY, "900", leverage="10"), BEFORE_FOUR)  # 25 % of 9 000 USD
    assert refused.value.reason == "insufficient_funds"
    assert core.place_order(request("p", CFM, Side.BUY, "390", leverage="10"), BEFORE_FOUR).filled_size == 390
    with pytest.raises(OrderRejected, match="of initial margin"):  # 975 of the 1 000 USD backs the 390 contracts
        core.place_order(request("q", CFM, Side.BUY, "20", leverage="10"), BEFORE_FOUR)


def test_the_balance_summary_reports_margin_at_the_rates_of_the_window_in_force():
    venue = SimVenue(cfm_core(cash="100000"), seed=3)
    core = venue.core
    core.place_order(request("o", CFM, Side.BUY, "100", leverage="2"), BEFORE_FOUR)
    mark = core.market(CFM).mid
    notional = 100 * D("0.1") * mark
    summary = P.fcm_balance_summary(venue, as_amounts=False)
    total = D(summary["total_usd_balance"])
    assert D(summary["initial_margin"]) == notional * D("0.1")
    assert D(summary["liquidation_threshold"]) == notional * D("0.05")
    assert D(summary["liquidation_buffer_amount"]) == total - notional * D("0.05")
    assert D(summary["futures_buying_power"]) == total - notional * D("0.1")
    overnight = summary["overnight_margin_window_measure"]
    assert D(overnight["initial_margin"]) == notional * D("0.25")
    assert D(overnight["maintenance_margin"]) == notional * D("0.125")
    core.advance_to(BEFORE_FOUR + timedelta(seconds=121))
    mark = core.market(CFM).mid
    later = P.fcm_balance_summary(venue, as_amounts=False)
    assert D(later["liquidation_threshold"]) == 100 * D("0.1") * mark * D("0.125")
    listing = P.cfm_details_json(core.product(CFM), venue.stats(CFM), venue)
    assert listing["intraday_margin_rate"] == {"long_margin_rate": "0.1", "short_margin_rate": "0.1"}
    assert listing["overnight_margin_rate"] == {"long_margin_rate": "0.25", "short_margin_rate": "0.25"}


def test_a_cross_margined_loss_beyond_the_posted_margin_is_paid_from_the_accounts_cash():
    core = cfm_core(cash="3000", drift=-0.001)  # the price falls ~10 % a minute and a half
    core.intraday_margin = False
    core.place_order(request("o", CFM, Side.BUY, "1000", leverage="10"), BEFORE_FOUR)  # 1 000 USD posted
    core.advance_to(BEFORE_FOUR + timedelta(seconds=600))
    (liquidation,) = [f for f in core.fills if f.liquidity is Liquidity.LIQUIDATION]
    held = core.account().positions[CFM]
    assert held.size == 0 and held.realized_pnl < -1000  # it lost more than the margin it posted
    # the loss came out of the account's cash, down to what its total margin was worth then
    assert core.account().balances["USD"].available == D(3000) + held.realized_pnl - held.fees
    assert liquidation.price < 81  # under 12.5 % maintenance only after a ~20 % fall


def test_the_in_process_front_states_the_margin_the_servers_balance_summary_does():
    venue = SimVenue(cfm_core(cash="100000"), seed=3)
    core = venue.core
    core.place_order(request("o", CFM, Side.BUY, "100", leverage="2"), BEFORE_FOUR)
    margin = core.cfm_margin()
    summary = P.fcm_balance_summary(venue, as_amounts=False)
    assert margin is not None and margin.window == "intraday"
    assert margin.window_ends == BEFORE_FOUR + timedelta(minutes=2)
    assert margin.total_balance == D(summary["total_usd_balance"])
    assert margin.initial_margin == D(summary["initial_margin"])
    assert margin.liquidation_threshold == margin.maintenance_margin == D(summary["liquidation_threshold"])
    assert margin.liquidation_buffer == D(summary["liquidation_buffer_amount"])
    assert margin.buying_power == D(summary["futures_buying_power"])
    assert margin.maintenance_rate(CFM, long=True) == D("0.05")  # intraday: half the listed 10 %
    core.advance_to(BEFORE_FOUR + timedelta(seconds=121))
    later = core.cfm_margin()
    assert later is not None and later.window == "overnight" and later.maintenance_rate(CFM, long=True) == D("0.125")
