"""The adapter's CFM account: positions in contracts, funding read off the product's
listing and settled at noon and midnight UTC, computed by hand; the venue's margin in the
window in force."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from perpsbot.domain import FundingSettlement, MarginRates, OrderType, ProductType, Side, Sweep
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.coinbase import CoinbaseExchange
from perpsbot.exchange.coinbase.mapping import Obj
from perpsbot.exchange.port import InvalidOrder, OrderRequest
from tests.coinbasekit import amount, cfm_future, cfm_perp

D = Decimal
BIP, DATED = "BIP-20DEC30-CDE", "BIT-24APR26-CDE"


class ScriptedRest:
    """The few Advanced Trade calls a CFM account read makes, answered from a script."""

    base_url = "http://127.0.0.1:1"
    signer = None

    def __init__(self) -> None:
        self.listing = {BIP: cfm_perp(BIP, "90000"), DATED: cfm_future(DATED, "50100")}
        self.listing[BIP]["future_product_details"].update(
            intraday_margin_rate={"long_margin_rate": "0.1", "short_margin_rate": "0.12"},
            overnight_margin_rate={"long_margin_rate": "0.25", "short_margin_rate": "0.3"})
        self.positions: list[dict[str, Any]] = []
        self.product_reads: list[str] = []
        self.window = ("FCM_MARGIN_WINDOW_TYPE_OVERNIGHT", "2026-12-04T13:00:00Z")
        self.setting = "INTRADAY_MARGIN_SETTING_INTRADAY"
        self.window_reads = 0
        self.sweeps: list[dict[str, Any]] = []

    def list_at(self, funding_time: str, rate: str) -> None:
        details = self.listing[BIP]["future_product_details"]
        details["funding_time"], details["funding_rate"] = funding_time, rate

    def hold(self, product_id: str, side: str, contracts: str, price: str) -> None:
        self.positions = [p for p in self.positions if p["product_id"] != product_id]
        self.positions.append({"product_id": product_id, "expiration_time": "2030-12-20T16:00:00Z", "side": side,
                               "number_of_contracts": contracts, "current_price": price,
                               "avg_entry_price": "90000", "unrealized_pnl": "0", "daily_realized_pnl": "0"})

    async def list_products(self, **_: Any) -> Any:
        return {"products": [copy.deepcopy(p) for p in self.listing.values()]}

    async def get_product(self, product_id: str) -> Any:
        self.product_reads.append(product_id)
        return copy.deepcopy(self.listing[product_id])

    async def accounts(self) -> AsyncIterator[Obj]:
        yield Obj({"currency": "USD", "available_balance": amount("1000")}, "accounts[0]")

    async def cfm_balance_summary(self) -> Any:
        def measure(kind: str, initial: str, maintenance: str) -> dict[str, str]:
            return {"margin_window_type": f"FCM_MARGIN_WINDOW_TYPE_{kind}", "margin_level": "MARGIN_LEVEL_TYPE_BASE",
                    "initial_margin": initial, "maintenance_margin": maintenance, "liquidation_buffer": "0",
                    "total_hold": "0", "futures_buying_power": "0"}
        return {"balance_summary": {
            "total_usd_balance": amount("10000"), "unrealized_pnl": amount("0"),
            "futures_buying_power": amount("5500"), "initial_margin": amount("4500"),
            "liquidation_threshold": amount("2250"), "liquidation_buffer_amount": amount("7750"),
            "liquidation_buffer_percentage": "77.5",
            "intraday_margin_window_measure": measure("INTRADAY", "1800", "900"),
            "overnight_margin_window_measure": measure("OVERNIGHT", "4500", "2250"),
        }}

    async def cfm_positions(self) -> Any:
        return {"positions": copy.deepcopy(self.positions)}

    async def cfm_margin_window(self) -> Any:
        self.window_reads += 1
        kind, ends = self.window
        return {"margin_window": {"margin_window_type": kind, "end_time": ends},
                "is_intraday_margin_killswitch_enabled": False,
                "is_intraday_margin_enrollment_killswitch_enabled": False}

    async def cfm_margin_setting(self) -> Any:
        return {"setting": self.setting}

    async def cfm_sweeps(self) -> Any:
        return {"sweeps": copy.deepcopy(self.sweeps)}


async def test_funding_on_a_cfm_position_is_counted_each_time_the_listing_settles_one():
    rest = ScriptedRest()
    clock = ManualClock(datetime(2026, 12, 4, 2, 30, tzinfo=UTC))
    exchange = CoinbaseExchange(rest, clock)  # type: ignore[arg-type]
    rest.hold(BIP, "LONG", "20", "90000")
    rest.hold(DATED, "SHORT", "5", "50100")
    rest.list_at("2026-12-04T03:00:00Z", "0.0004")
    first = (await exchange.account()).positions
    assert first[BIP].size == 20 and first[BIP].contract_size == D("0.01") and first[BIP].funding == 0
    assert first[DATED].size == -5 and first[DATED].funding == 0
    assert (await exchange.account()).positions[BIP].funding == 0  # the same interval: nothing settled

    clock.advance(3600)  # an hour on: the listing is read again (at most every minute)
    rest.list_at("2026-12-04T04:00:00Z", "0.0005")  # settled at 0.0005: 20 x 0.01 BTC x 90 000 x 0.0005 paid
    assert (await exchange.account()).positions[BIP].funding == D("-9.00")
    rest.hold(BIP, "LONG", "20", "91000")
    clock.advance(3600)
    rest.list_at("2026-12-04T05:00:00Z", "-0.0002")  # received: 20 x 0.01 x 91 000 x 0.0002 = 3.64
    account = await exchange.account()
    assert account.positions[BIP].funding == D("-5.36")
    assert account.positions[DATED].funding == 0  # a dated future has no funding
    assert account.equity == D(10000)


async def test_the_listing_is_read_for_funding_once_a_minute_not_on_every_account_poll():
    rest = ScriptedRest()
    clock = ManualClock(datetime(2026, 12, 4, 2, 30, tzinfo=UTC))
    exchange = CoinbaseExchange(rest, clock)  # type: ignore[arg-type]
    await exchange.products()  # the catalog knows the dated future is not a perpetual
    rest.hold(BIP, "LONG", "20", "90000")
    rest.hold(DATED, "SHORT", "5", "50100")
    rest.list_at("2026-12-04T03:00:00Z", "0.0004")
    for _ in range(5):
        await exchange.account()
    assert rest.product_reads == [BIP]  # once, and never for the dated future
    clock.advance(60)
    await exchange.account()
    assert rest.product_reads == [BIP, BIP]


async def test_an_order_on_an_expired_dated_future_is_refused_before_it_is_sent():
    rest = ScriptedRest()
    clock = ManualClock(datetime(2026, 4, 24, 14, 59, tzinfo=UTC))  # a minute before BIT-24APR26-CDE expires
    exchange = CoinbaseExchange(rest, clock)  # type: ignore[arg-type]
    listed = {p.symbol: p for p in await exchange.products()}
    assert listed[DATED].type is ProductType.FUTURE and listed[DATED].expiry == datetime(2026, 4, 24, 15, tzinfo=UTC)
    buy = OrderRequest("pb-1", DATED, Side.BUY, OrderType.MARKET, D(2), leverage=D(2))
    assert (await exchange.new_order(buy)).product_id == DATED  # still trading
    clock.advance(60)
    with pytest.raises(InvalidOrder, match=r"order pb-1: BIT-24APR26-CDE expired at 2026-04-24T15:00:00\+00:00; "
                                           r"it no longer trades") as info:
        await exchange.place_order(buy)  # ScriptedRest has no submit_order: nothing reached the exchange
    assert info.value.reason == "PRODUCT_EXPIRED"
    assert (await exchange.new_order(OrderRequest("pb-2", BIP, Side.BUY, OrderType.MARKET, D(1)))).product_id == BIP


async def test_funding_counted_since_the_last_settlement_is_settled_at_noon_to_the_cent_and_starts_again():
    rest = ScriptedRest()
    clock = ManualClock(datetime(2026, 12, 4, 10, 30, tzinfo=UTC))
    exchange = CoinbaseExchange(rest, clock)  # type: ignore[arg-type]
    rest.hold(BIP, "LONG", "3", "90001")
    rest.list_at("2026-12-04T11:00:00Z", "0.0001")
    await exchange.account()
    clock.advance(3600)  # 11:30: the interval to 11:00 counted: 3 x 0.01 x 90 001 x 0.0001 = 0.270003 paid
    rest.list_at("2026-12-04T12:00:00Z", "0.0001")
    account = await exchange.account()
    assert account.positions[BIP].funding == D("-0.270003") and account.funding_settled == ()
    clock.advance(3600)  # 12:30: the interval to noon counted, and settled with the other
    rest.list_at("2026-12-04T13:00:00Z", "0.0001")
    account = await exchange.account()
    noon = datetime(2026, 12, 4, 12, tzinfo=UTC)
    assert account.funding_settled == (FundingSettlement(BIP, noon, D("-0.54")),)  # -0.540006 to the cent
    assert account.positions[BIP].funding == 0  # only what is counted since noon
    clock.advance(3600)  # 13:30: counting again from noon, the noon settlement still reported
    rest.list_at("2026-12-04T14:00:00Z", "0.0001")
    account = await exchange.account()
    assert account.positions[BIP].funding == D("-0.270003")
    assert account.funding_settled == (FundingSettlement(BIP, noon, D("-0.54")),)
    rest.positions = []  # closed at 13:40: what was counted is settled at midnight, as the venue does
    clock.advance(600)
    assert BIP not in (await exchange.account()).positions
    clock.advance(timedelta(hours=10, minutes=20).total_seconds())  # midnight
    account = await exchange.account()
    midnight = datetime(2026, 12, 5, tzinfo=UTC)
    assert account.funding_settled == (FundingSettlement(BIP, noon, D("-0.54")),
                                       FundingSettlement(BIP, midnight, D("-0.27")))
    assert exchange._accruals == {}  # nothing is kept for a product no longer held
    clock.advance(timedelta(hours=12, minutes=1).total_seconds())
    assert (await exchange.account()).funding_settled == (FundingSettlement(BIP, midnight, D("-0.27")),)


async def test_the_account_carries_the_venues_margin_in_the_window_in_force():
    rest = ScriptedRest()
    rest.sweeps = [{"id": "sw-1", "requested_amount": amount("250"), "should_sweep_all": False,
                    "status": "PENDING", "scheduled_time": "2026-12-05T00:00:00Z"}]
    clock = ManualClock(datetime(2026, 12, 4, 12, 59, tzinfo=UTC))  # 07:59 in New York: overnight
    exchange = CoinbaseExchange(rest, clock)  # type: ignore[arg-type]
    rest.hold(BIP, "LONG", "20", "90000")
    margin = (await exchange.account()).margin
    assert margin is not None and margin.window == "overnight"
    assert margin.window_ends == datetime(2026, 12, 4, 13, tzinfo=UTC)
    assert (margin.total_balance, margin.buying_power, margin.liquidation_buffer) == (D(10000), D(5500), D(7750))
    assert (margin.initial_margin, margin.maintenance_margin) == (D(4500), D(2250))  # the overnight measure
    assert margin.liquidation_threshold == D(2250) and margin.liquidation_buffer_pct == D("77.5")
    assert margin.rates == {BIP: MarginRates(D("0.25"), D("0.3"))}  # the dated future lists none
    assert margin.maintenance_rate(BIP, long=True) == D("0.125")  # the listed rate x maintenance / initial
    assert margin.maintenance_rate(BIP, long=False) == D("0.15")
    assert margin.sweeps == (Sweep("sw-1", "PENDING", D(250), datetime(2026, 12, 5, tzinfo=UTC)),)
    await exchange.account()
    assert rest.window_reads == 1  # not on every poll
    rest.window = ("FCM_MARGIN_WINDOW_TYPE_INTRADAY", "2026-12-04T21:00:00Z")
    clock.advance(60)  # 13:00: the window ended, so it is read again
    margin = (await exchange.account()).margin
    assert margin is not None and margin.window == "intraday" and rest.window_reads == 2
    assert (margin.initial_margin, margin.maintenance_margin) == (D(1800), D(900))
    assert margin.rates == {BIP: MarginRates(D("0.1"), D("0.12"))}
    rest.setting = "INTRADAY_MARGIN_SETTING_STANDARD"
    clock.advance(60)
    margin = (await exchange.account()).margin
    assert margin is not None and margin.rates == {BIP: MarginRates(D("0.25"), D("0.3"))}  # not enrolled


async def test_a_strategy_reads_a_perpetuals_listed_funding_and_its_next_settlement():
    rest = ScriptedRest()
    clock = ManualClock(datetime(2026, 12, 4, 10, 30, tzinfo=UTC))
    exchange = CoinbaseExchange(rest, clock)  # type: ignore[arg-type]
    rest.list_at("2026-12-04T11:00:00Z", "0.0001")
    await exchange.products()
    assert exchange.capabilities.funding
    assert exchange.funding_now(BIP) == (D("0.0001"), datetime(2026, 12, 4, 11, tzinfo=UTC))
    clock.advance(3600)  # 11:30, the listing not read again: the next settlement an interval on
    assert exchange.funding_now(BIP) == (D("0.0001"), datetime(2026, 12, 4, 12, tzinfo=UTC))
    assert exchange.funding_now(DATED) is None  # a dated future exchanges no funding
    assert exchange.funding_now("XYZ-USD") is None  # not listed
