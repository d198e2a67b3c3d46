"""The adapter's CFM account: positions in contracts, funding read off the product's
listing, computed by hand."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from perpsbot.domain import OrderType, ProductType, Side
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
        self.positions: list[dict[str, Any]] = []
        self.product_reads: list[str] = []

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
        return {"balance_summary": {"total_usd_balance": amount("10000"), "unrealized_pnl": amount("0")}}

    async def cfm_positions(self) -> Any:
        return {"positions": copy.deepcopy(self.positions)}


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
