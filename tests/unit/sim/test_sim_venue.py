"""SimVenue: the Coinbase order semantics the server adds on top of SimCore."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from perpsbot.domain import Liquidity
from perpsbot.exchange.sim import SimConfig, SimCore, default_products
from perpsbot.exchange.sim.margin import margin_window
from perpsbot.exchange.sim.venue import ApiError, OrderFailure, SimVenue

from .simkit import at, sim_perp

INC = Decimal("0.01")


def make_venue(seed: int = 5) -> SimVenue:
    venue = SimVenue(SimCore(default_products(), SimConfig(seed=seed)))
    venue.sync(at(0))
    return venue


def order_body(coid: str, product: str, side: str, key: str, **config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"client_order_id": coid, "product_id": product, "side": side,
                            "order_configuration": {key: {k: v for k, v in config.items() if k != "leverage"}}}
    if "leverage" in config:
        body["leverage"] = config["leverage"]
    return body


def last(venue: SimVenue, symbol: str) -> Decimal:
    return venue.core.market(symbol).last_trade


def test_a_stop_limit_waits_for_its_stop_then_goes_to_the_core():
    venue = make_venue()
    stop = (last(venue, "BTC-USD") * Decimal("1.001")).quantize(INC)
    body = order_body("stop-1", "BTC-USD", "BUY", "stop_limit_stop_limit_gtc", base_size="0.01",
                      limit_price=str((stop * Decimal("1.002")).quantize(INC)), stop_price=str(stop),
                      stop_direction="STOP_DIRECTION_STOP_UP")
    order, created = venue.create_order(body, at(0))
    assert created
    view = venue.view(order)
    assert (view.status, view.trigger_status, view.outstanding_hold) == ("OPEN", "STOP_PENDING", 0)
    assert order.legs == [] and venue.core.open_orders() == []

    t = 0
    while not order.triggered:
        assert last(venue, "BTC-USD") < stop  # never fired early
        t += 1
        assert t < 3600, "the stop was never reached"
        venue.sync(at(t))
    assert last(venue, "BTC-USD") >= stop
    view = venue.view(order)
    assert view.trigger_status == "STOP_TRIGGERED" and len(order.legs) == 1
    assert view.status in ("OPEN", "FILLED")
    assert venue.core.get_order(order.legs[0]).status.value in ("OPEN", "PARTIALLY_FILLED", "FILLED")


def test_a_stop_that_cannot_be_paid_for_fails_when_it_fires():
    venue = make_venue()
    stop = (last(venue, "ETH-USD") * Decimal("0.999")).quantize(INC)
    body = order_body("stop-2", "ETH-USD", "SELL", "stop_limit_stop_limit_gtc", base_size="5",
                      limit_price=str((stop * Decimal("0.99")).quantize(INC)), stop_price=str(stop),
                      stop_direction="STOP_DIRECTION_STOP_DOWN")
    order, _ = venue.create_order(body, at(0))  # accepted: nothing is held before the trigger
    t = 0
    while not order.triggered and t < 3600:
        t += 1
        venue.sync(at(t))
    view = venue.view(order)
    assert order.triggered and view.status == "FAILED"
    assert order.reject_reason == "INSUFFICIENT_FUND"


def test_stop_limit_needs_a_direction():
    venue = make_venue()
    body = order_body("stop-3", "BTC-USD", "BUY", "stop_limit_stop_limit_gtc", base_size="0.01",
                      limit_price="100000", stop_price="99000")
    with pytest.raises(OrderFailure) as info:
        venue.create_order(body, at(0))
    assert info.value.preview_reason == "PREVIEW_INVALID_STOP_PRICE"
    assert venue.orders() == []


def test_gtd_orders_expire_at_their_end_time_and_release_the_hold():
    venue = make_venue()
    price = (last(venue, "BTC-USD") * Decimal("0.9")).quantize(INC)
    body = order_body("gtd-1", "BTC-USD", "BUY", "limit_limit_gtd", base_size="0.1", limit_price=str(price),
                      end_time="2026-01-01T00:00:30.000Z")
    order, _ = venue.create_order(body, at(0))
    venue.sync(at(29))
    assert venue.view(order).status == "OPEN"
    assert venue.account().balances["USD"].hold > 0
    venue.sync(at(31))
    view = venue.view(order)
    assert view.status == "EXPIRED" and order.cancel_message
    usd = venue.account().balances["USD"]
    assert (usd.available, usd.hold) == (Decimal(100_000), 0)


def test_expiry_is_applied_at_the_end_time_even_when_the_venue_is_synced_late():
    venue = make_venue()
    price = (last(venue, "BTC-USD") * Decimal("0.9995")).quantize(INC)  # close enough to fill eventually
    body = order_body("gtd-2", "BTC-USD", "BUY", "limit_limit_gtd", base_size="0.05", limit_price=str(price),
                      end_time="2026-01-01T00:00:02Z")
    order, _ = venue.create_order(body, at(0))
    venue.sync(at(7200))  # one jump far past the end time
    view = venue.view(order)
    assert all(f.ts <= at(2) for f in view.fills)
    assert view.status in ("EXPIRED", "FILLED")


def test_gtd_end_time_must_be_in_the_future():
    venue = make_venue()
    body = order_body("gtd-3", "BTC-USD", "BUY", "limit_limit_gtd", base_size="0.1", limit_price="1000",
                      end_time="2025-12-31T23:59:00Z")
    with pytest.raises(OrderFailure):
        venue.create_order(body, at(0))


def test_a_bracket_takes_profit_or_stops_out_with_the_rest():
    venue = make_venue()
    venue.create_order(order_body("buy", "BTC-USD", "BUY", "market_market_ioc", base_size="0.1"), at(0))
    held = venue.account().balances["BTC"].available
    assert held == Decimal("0.1")
    px = last(venue, "BTC-USD")
    with pytest.raises(OrderFailure):  # a SELL bracket's stop must be below its limit
        venue.create_order(order_body("bad", "BTC-USD", "SELL", "trigger_bracket_gtc", base_size="0.1",
                                      limit_price=str((px * Decimal("0.99")).quantize(INC)),
                                      stop_trigger_price=str(px.quantize(INC))), at(0))
    body = order_body("bracket", "BTC-USD", "SELL", "trigger_bracket_gtc", base_size="0.1",
                      limit_price=str((px * Decimal("1.05")).quantize(INC)),
                      stop_trigger_price=str((px * Decimal("0.999")).quantize(INC)))
    order, _ = venue.create_order(body, at(0))
    view = venue.view(order)
    assert (view.status, view.trigger_status, len(order.legs)) == ("OPEN", "STOP_PENDING", 1)
    t = 0
    while not order.triggered:
        t += 1
        assert t < 3600, "the stop was never reached"
        venue.sync(at(t))
    view = venue.view(order)
    assert view.trigger_status == "STOP_TRIGGERED" and len(order.legs) == 2
    assert view.status == "FILLED" and view.filled_size == Decimal("0.1")
    assert venue.account().balances["BTC"].available == 0


def test_editing_a_resting_limit_keeps_the_order_id():
    venue = make_venue()
    price = (last(venue, "ETH-USD") * Decimal("0.8")).quantize(INC)
    order, _ = venue.create_order(order_body("edit-1", "ETH-USD", "BUY", "limit_limit_gtc", base_size="1",
                                             limit_price=str(price)), at(0))
    new_price = price + 1
    assert venue.edit(order.order_id, str(new_price), "2", at(1), dry_run=True) == []
    assert order.spec.size == 1  # a preview changes nothing
    assert venue.edit(order.order_id, str(new_price), "2", at(1)) == []
    view = venue.view(order)
    assert (view.status, order.spec.limit_price, order.spec.size) == ("OPEN", new_price, Decimal(2))
    assert len(order.edit_history) == 1
    working = venue.core.open_orders()
    assert [(o.size, o.client_order_id.startswith(order.order_id)) for o in working] == [(Decimal(2), True)]
    assert venue.account().balances["USD"].hold == pytest.approx(2 * new_price * Decimal("1.00025"))

    assert venue.edit(order.order_id, str(new_price), "2", at(2)) == ["EDIT_REQUEST_EQUAL_TO_ORIGINAL_REQUEST"]
    assert venue.edit(order.order_id, "0.001", None, at(2)) == ["INVALID_EDITED_PRICE"]
    assert venue.edit("nope", "1", "1", at(2)) == ["ORDER_NOT_FOUND"]
    venue.cancel(order.order_id, at(3))
    assert venue.edit(order.order_id, "1", "1", at(4)) == ["ONLY_OPEN_ORDERS_CAN_BE_EDITED"]
    market, _ = venue.create_order(order_body("m", "ETH-USD", "BUY", "market_market_ioc", base_size="0.1"), at(5))
    assert venue.edit(market.order_id, "1", "1", at(5)) == ["ONLY_LIMIT_ORDER_EDITS_SUPPORTED"]


def test_changed_orders_are_reported_once():
    venue = make_venue()
    price = (last(venue, "SOL-USD") * Decimal("0.8")).quantize(INC)
    order, _ = venue.create_order(order_body("c-1", "SOL-USD", "BUY", "limit_limit_gtc", base_size="1",
                                             limit_price=str(price)), at(0))
    assert [v.order.order_id for v in venue.drain_changed_orders()] == [order.order_id]
    venue.sync(at(1))
    assert venue.drain_changed_orders() == []
    venue.cancel(order.order_id, at(2))
    changed = venue.drain_changed_orders()
    assert [(v.order.order_id, v.status) for v in changed] == [(order.order_id, "CANCELLED")]
    assert venue.drain_changed_orders() == []


def test_market_trades_are_sampled_newest_first():
    venue = make_venue()
    before = venue.core.market("ETH-USD").total_volume
    for t in range(1, 31):
        venue.sync(at(t))
    trades = venue.market_trades("ETH-USD", 1000)
    assert trades and [t.time for t in trades] == sorted((t.time for t in trades), reverse=True)
    assert sum(t.size for t in trades) == venue.core.market("ETH-USD").total_volume - before
    assert {t.side for t in trades} <= {"BUY", "SELL"}
    assert venue.market_trades("ETH-USD", 3) == trades[:3]


def test_quote_size_market_buys_never_spend_more_than_asked():
    venue = make_venue()
    order, _ = venue.create_order(order_body("q", "ETH-USD", "BUY", "market_market_ioc", quote_size="5000"), at(0))
    view = venue.view(order)
    assert view.status == "FILLED"
    assert Decimal("4990") < view.filled_value <= Decimal("5000")


def test_malformed_orders_are_api_errors():
    venue = make_venue()
    with pytest.raises(ApiError):
        venue.create_order({"product_id": "BTC-USD", "side": "BUY", "order_configuration": {}}, at(0))
    with pytest.raises(ApiError):
        venue.create_order(order_body("x", "BTC-USD", "BUY", "market_market_ioc", base_size="abc"), at(0))
    with pytest.raises(ApiError):  # both sizes
        venue.create_order(order_body("x", "BTC-USD", "BUY", "market_market_ioc", base_size="1", quote_size="1"), at(0))


def test_a_liquidation_becomes_an_order_with_its_fill():
    venue = SimVenue(SimCore([sim_perp(vol=0.004)], SimConfig(seed=3)))
    venue.sync(at(0))
    opened, _ = venue.create_order(order_body("lev", "TST-PERP", "BUY", "market_market_ioc", base_size="1",
                                              leverage="10"), at(0))
    t = 0
    while not any(f.liquidity is Liquidity.LIQUIDATION for f, _ in venue.fills()):
        t += 1
        assert t < 7200, "never liquidated"
        venue.sync(at(t))
    fill, order_id = venue.fills()[-1]
    liquidation = venue.order(order_id)
    assert liquidation.is_liquidation and liquidation.order_id != opened.order_id
    assert venue.view(liquidation).status == "FILLED" and fill.size == 1


@pytest.mark.parametrize(("now", "kind", "ends"), [
    ("2026-12-04T14:00:00+00:00", "INTRADAY", "2026-12-04T21:00:00+00:00"),  # Friday 9 am New York
    ("2026-12-04T21:00:00+00:00", "OVERNIGHT", "2026-12-07T13:00:00+00:00"),  # Friday 4 pm: until Monday
    ("2026-12-05T14:00:00+00:00", "OVERNIGHT", "2026-12-07T13:00:00+00:00"),  # Saturday
    ("2026-07-01T12:30:00+00:00", "INTRADAY", "2026-07-01T20:00:00+00:00"),  # summer time: 8:30 am EDT
    ("2026-07-01T11:00:00+00:00", "OVERNIGHT", "2026-07-01T12:00:00+00:00"),
])
def test_the_cfm_margin_window_is_intraday_on_weekdays_from_8_to_4_new_york_time(now: str, kind: str, ends: str):
    window, end = margin_window(datetime.fromisoformat(now))
    assert window == f"FCM_MARGIN_WINDOW_TYPE_{kind}" and end == datetime.fromisoformat(ends)


def test_an_order_on_the_dated_future_after_its_expiry_fails_with_order_entry_disabled():
    venue = SimVenue(SimCore(default_products(), SimConfig(seed=5, warmup_seconds=5.0)))
    expired = datetime(2027, 3, 26, 16, 0, 1, tzinfo=UTC)  # BIT-26MAR27-CDE expired a second ago
    venue.sync(expired)
    with pytest.raises(OrderFailure) as info:
        venue.create_order(order_body("late", "BIT-26MAR27-CDE", "BUY", "market_market_ioc", base_size="1"), expired)
    assert info.value.error == "ORDER_ENTRY_DISABLED"
    assert "BIT-26MAR27-CDE expired at 2027-03-26T16:00:00+00:00; it no longer trades" in info.value.message
    order, created = venue.create_order(order_body("ok", "BIP-20DEC30-CDE", "BUY", "market_market_ioc",
                                                   base_size="1"), expired)
    assert created and venue.view(order).status == "FILLED"
