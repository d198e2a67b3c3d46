"""Coinbase's official SDK (REST, over TLS) works unchanged against the simulator server."""

from __future__ import annotations

import re
import time
from decimal import Decimal

import pytest
from requests.exceptions import HTTPError

from perpsbot.exchange.sim.keys import ApiKey
from perpsbot.exchange.sim.products import default_products
from perpsbot.exchange.sim.server import SimServer

from .conftest import call, sdk

NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


async def test_sdk_reads_products_books_accounts_and_candles(server: SimServer, any_key: ApiKey):
    client = sdk(server, any_key)

    products = await call(client.get_products)
    assert products.num_products == len(default_products())
    by_id = {p.product_id: p for p in products.products}
    assert set(by_id) == {p.symbol for p in default_products()}
    assert {"BTC-USD", "ETH-USD", "SOL-USD", "BIP-20DEC30-CDE", "ETP-20DEC30-CDE"} <= set(by_id)
    assert by_id["BTC-USD"].product_type == "SPOT" and by_id["BTC-USD"].base_increment == "0.00000001"
    perp = by_id["BIP-20DEC30-CDE"]
    assert perp.product_type == "FUTURE" and perp.product_venue == "FCM"
    details = perp.future_product_details
    assert details["contract_expiry_type"] == "EXPIRING" and details["contract_size"] == "0.01"
    assert details["perpetual_details"]["max_leverage"] == "10"
    assert NUMBER.match(details["perpetual_details"]["funding_rate"])
    assert all(isinstance(p.price, str) and NUMBER.match(p.price) for p in products.products)

    spot_only = await call(client.get_products, product_type="SPOT")
    assert {p.product_id for p in spot_only.products} == {p.symbol for p in default_products()
                                                          if not p.product.is_derivative}

    single = await call(client.get_product, "ETP-20DEC30-CDE")
    assert single.product_id == "ETP-20DEC30-CDE" and single.quote_increment == "0.5"

    books = await call(client.get_best_bid_ask, ["BTC-USD", "ETP-20DEC30-CDE"])
    assert [b.product_id for b in books.pricebooks] == ["BTC-USD", "ETP-20DEC30-CDE"]
    for book in books.pricebooks:
        assert Decimal(book.bids[0].price) < Decimal(book.asks[0].price)

    full = await call(client.get_product_book, "ETH-USD", 5)
    assert len(full.pricebook.bids) == 5 and len(full.pricebook.asks) == 5
    bids = [Decimal(level.price) for level in full.pricebook.bids]
    assert bids == sorted(bids, reverse=True)
    assert Decimal(full.spread_absolute) > 0

    accounts = await call(client.get_accounts)
    balances = {a.currency: a.available_balance["value"] for a in accounts.accounts}
    assert balances == {"USD": "100000", **{p.product.base: "0" for p in default_products()}}
    one = await call(client.get_account, accounts.accounts[0].uuid)
    assert one.account.currency == "USD"

    now = int(time.time())
    candles = await call(client.get_candles, "BTC-USD", str(now - 600), str(now), "ONE_MINUTE")
    starts = [int(c.start) for c in candles.candles]
    assert 5 <= len(starts) <= 11 and starts == sorted(starts, reverse=True)  # newest first
    assert all(s % 60 == 0 and now - 600 <= s <= now for s in starts)
    for c in candles.candles:
        assert (
            Decimal(c.low)
            <= min(Decimal(c.open), Decimal(c.close))
            <= max(Decimal(c.open), Decimal(c.close))
            <= Decimal(c.high)
        )

    trades = await call(client.get_market_trades, "BTC-USD", 10)
    assert Decimal(trades.best_bid) < Decimal(trades.best_ask)


async def test_public_market_endpoints_need_no_key(server: SimServer):
    client = sdk(server, None)
    products = await call(client.get_public_products)
    assert products.num_products == len(default_products())
    product = await call(client.get_public_product, "SOL-USD")
    assert product.product_id == "SOL-USD"
    book = await call(client.get_public_product_book, "SOL-USD", 3)
    assert len(book.pricebook.asks) == 3
    now = int(time.time())
    candles = await call(client.get_public_candles, "SOL-USD", str(now - 300), str(now), "ONE_MINUTE")
    assert candles.candles
    await call(client.get_public_market_trades, "SOL-USD", 5)
    server_time = await call(client.get_unix_time)
    assert abs(int(server_time.epoch_seconds) - now) <= 5


async def test_sdk_trading_round_trip(server: SimServer, any_key: ApiKey):
    client = sdk(server, any_key)

    bought = await call(client.market_order_buy, "rt-market", "BTC-USD", quote_size="2000")
    assert bought.success is True
    market_id = bought.success_response["order_id"]
    assert bought.success_response["client_order_id"] == "rt-market"

    order = (await call(client.get_order, market_id)).order
    assert order.status == "FILLED" and order.order_type == "MARKET"
    assert order.order_configuration.market_market_ioc.quote_size == "2000"
    filled_value = Decimal(order.filled_value)
    assert Decimal("1990") < filled_value <= Decimal("2000")  # quote_size spent, never more
    assert Decimal(order.total_fees) > 0 and order.size_in_quote is True

    bid = Decimal((await call(client.get_best_bid_ask, ["ETH-USD"])).pricebooks[0].bids[0].price)
    far_below = str((bid * Decimal("0.8")).quantize(Decimal("0.01")))
    resting = await call(client.limit_order_gtc_buy, "rt-limit", "ETH-USD", base_size="0.5", limit_price=far_below)
    assert resting.success is True
    limit_id = resting.success_response["order_id"]
    got = (await call(client.get_order, limit_id)).order
    assert (got.status, got.order_type, got.time_in_force) == ("OPEN", "LIMIT", "GOOD_UNTIL_CANCELLED")
    assert Decimal(got.outstanding_hold_amount) > Decimal(far_below) * Decimal("0.5")

    listed = await call(client.list_orders)
    assert [o.order_id for o in listed.orders] == [limit_id, market_id]  # newest first
    open_only = await call(client.list_orders, order_status=["OPEN"])
    assert [o.order_id for o in open_only.orders] == [limit_id]

    usd = {a.currency: a for a in (await call(client.get_accounts)).accounts}["USD"]
    assert Decimal(usd.hold["value"]) > 0

    cancelled = await call(client.cancel_orders, [limit_id, "no-such-order"])
    assert [(r.order_id, r.success) for r in cancelled.results] == [(limit_id, True), ("no-such-order", False)]
    assert (await call(client.get_order, limit_id)).order.status == "CANCELLED"
    again = await call(client.cancel_orders, [limit_id])
    assert again.results[0].success is False

    fills = await call(client.get_fills, order_ids=[market_id])
    assert fills.fills and {f.order_id for f in fills.fills} == {market_id}
    assert all(f.size_in_quote is True for f in fills.fills)  # placed by quote_size: fill sizes in USD
    assert sum(Decimal(f.size) for f in fills.fills) == Decimal(order.filled_value)
    assert all(f.liquidity_indicator == "TAKER" and f.side == "BUY" for f in fills.fills)

    accounts = {a.currency: a for a in (await call(client.get_accounts)).accounts}
    assert Decimal(accounts["BTC"].available_balance["value"]) == Decimal(order.filled_size)
    assert Decimal(accounts["USD"].hold["value"]) == 0

    summary = await call(client.get_transaction_summary)
    assert summary.fee_tier["taker_fee_rate"] == "0.0005" and summary.total_fees > 0


async def test_create_order_with_the_generic_call_and_a_duplicate_client_order_id(server: SimServer,
                                                                                ecdsa_key: ApiKey):
    client = sdk(server, ecdsa_key)
    config = {"market_market_ioc": {"base_size": "0.01"}}
    first = await call(client.create_order, "dup-1", "SOL-USD", "BUY", config)
    fills_after_first = len(server.core.fills)
    second = await call(client.create_order, "dup-1", "SOL-USD", "BUY", config)
    assert first.success and second.success
    assert second.success_response["order_id"] == first.success_response["order_id"]
    assert len(server.core.fills) == fills_after_first  # nothing was executed twice
    assert [o.client_order_id for o in server.venue.orders()] == ["dup-1"]


async def test_order_failures_come_back_coinbase_shaped(server: SimServer, ecdsa_key: ApiKey):
    client = sdk(server, ecdsa_key)

    broke = await call(client.market_order_buy, "fail-1", "BTC-USD", base_size="100")
    assert broke.success is False
    assert broke.error_response["error"] == "INSUFFICIENT_FUND"
    assert broke.error_response["preview_failure_reason"] == "PREVIEW_INSUFFICIENT_FUND"
    assert broke.error_response["message"]

    unknown = await call(client.market_order_buy, "fail-2", "PEPE-USD", base_size="1")
    assert unknown.error_response["error"] == "INVALID_PRODUCT_ID"

    twap = await call(client.create_order, "fail-3", "BTC-USD", "BUY",
                      {"twap_limit_gtd": {"base_size": "0.01", "limit_price": "1"}})
    assert twap.error_response["error"] == "UNSUPPORTED_ORDER_CONFIGURATION"

    ask = Decimal((await call(client.get_best_bid_ask, ["ETH-USD"])).pricebooks[0].asks[0].price)
    crossing = await call(client.limit_order_gtc_buy, "fail-4", "ETH-USD", base_size="0.1",
                          limit_price=str(ask + 10), post_only=True)
    assert crossing.error_response["error"] == "INVALID_LIMIT_PRICE_POST_ONLY"

    precision = await call(client.market_order_buy, "fail-5", "SOL-USD", base_size="0.0001")
    assert precision.error_response["error"] == "INVALID_SIZE_PRECISION"

    assert server.venue.orders() == []  # failed attempts create no order...
    retry = await call(client.market_order_buy, "fail-1", "BTC-USD", base_size="0.001")
    assert retry.success is True  # ...so their client_order_id can be used again


async def test_futures_positions_through_the_cfm_views_and_the_portfolio_breakdown(server: SimServer,
                                                                                    ed25519_key: ApiKey):
    client = sdk(server, ed25519_key)
    default = next(p["uuid"] for p in (await call(client.get_portfolios)).portfolios if p["type"] == "DEFAULT")

    opened = await call(client.market_order_buy, "perp-1", "ETP-20DEC30-CDE", base_size="20", leverage="4")
    assert opened.success
    order = (await call(client.get_order, opened.success_response["order_id"])).order
    assert order.product_type == "FUTURE" and order.leverage == "4" and order.status == "FILLED"

    positions = (await call(client.list_futures_positions)).positions
    assert len(positions) == 1
    pos = positions[0]
    assert pos["product_id"] == "ETP-20DEC30-CDE" and pos["side"] == "LONG" and pos["number_of_contracts"] == "20"
    notional = 20 * Decimal("0.1") * Decimal(pos["avg_entry_price"])  # contracts x 0.1 ETH x price
    fcm = (await call(client.get_futures_balance_summary)).balance_summary
    assert Decimal(fcm["initial_margin"]["value"]) == pytest.approx(notional / 4, rel=Decimal("0.01"))
    assert Decimal(fcm["total_usd_balance"]["value"]) == pytest.approx(Decimal(100_000), rel=Decimal("0.01"))
    one = await call(client.get_futures_position, "ETP-20DEC30-CDE")
    assert one.position["number_of_contracts"] == "20"
    breakdown = (await call(client.get_portfolio_breakdown, default)).breakdown
    [held] = breakdown.futures_positions
    assert held["product_id"] == "ETP-20DEC30-CDE" and held["amount"] == "20" and held["contract_size"] == "0.1"
    assert breakdown.perp_positions == []

    closed = await call(client.close_position, "perp-close", "ETP-20DEC30-CDE")
    assert closed.success
    assert (await call(client.list_futures_positions)).positions == []

    with pytest.raises(HTTPError) as info:
        await call(client.get_portfolio_breakdown, "not-a-portfolio")
    assert info.value.response.status_code == 404


async def test_a_cfm_perpetual_style_future_through_the_sdk(server: SimServer, ed25519_key: ApiKey):
    client = sdk(server, ed25519_key)
    listed = await call(client.get_product, "BIP-20DEC30-CDE")
    assert listed.product_type == "FUTURE" and listed.product_venue == "FCM" and listed.display_name == "BTC PERP"
    assert listed.base_increment == "1" and listed.base_min_size == "1"
    details = listed.future_product_details
    assert details["contract_expiry_type"] == "EXPIRING" and details["contract_size"] == "0.01"
    assert details["contract_expiry"].startswith("2030-12-20") and details["funding_interval"] == "3600s"
    assert details["contract_root_unit"] == "BTC" and NUMBER.match(details["funding_rate"])
    expiring = await call(client.get_products, product_type="FUTURE", contract_expiry_type="EXPIRING")
    assert {p.product_id for p in expiring.products} == {"BIP-20DEC30-CDE", "ETP-20DEC30-CDE", "BIT-26MAR27-CDE"}

    opened = await call(client.market_order_buy, "cfm-1", "BIP-20DEC30-CDE", base_size="3")
    assert opened.success
    positions = (await call(client.list_futures_positions)).positions
    assert [p["product_id"] for p in positions] == ["BIP-20DEC30-CDE"]
    pos = positions[0]
    assert pos["side"] == "LONG" and pos["number_of_contracts"] == "3"
    assert pos["expiration_time"].startswith("2030-12-20")
    move = Decimal(pos["current_price"]) - Decimal(pos["avg_entry_price"])
    assert Decimal(pos["unrealized_pnl"]) == move * 3 * Decimal("0.01")  # contracts x 0.01 BTC
    one = (await call(client.get_futures_position, "BIP-20DEC30-CDE")).position
    assert one["number_of_contracts"] == "3"

    summary = (await call(client.get_futures_balance_summary)).balance_summary
    margin = Decimal(summary["initial_margin"]["value"])
    # not enrolled in intraday margin: the overnight rate (25 %) all day
    assert margin == pytest.approx(3 * Decimal("0.01") * Decimal(pos["current_price"]) / 4, rel=Decimal("0.001"))
    buffer = Decimal(summary["liquidation_buffer_amount"]["value"])
    threshold = Decimal(summary["liquidation_threshold"]["value"])
    assert buffer + threshold == Decimal(summary["total_usd_balance"]["value"])
    intraday = summary["intraday_margin_window_measure"]
    assert intraday["margin_window_type"] == "FCM_MARGIN_WINDOW_TYPE_INTRADAY"
    assert Decimal(intraday["initial_margin"]) == margin and NUMBER.match(intraday["liquidation_buffer"])

    window = await call(client.get_current_margin_window, "MARGIN_PROFILE_TYPE_RETAIL_REGULAR")
    assert window.margin_window["margin_window_type"] in ("FCM_MARGIN_WINDOW_TYPE_INTRADAY",
                                                          "FCM_MARGIN_WINDOW_TYPE_OVERNIGHT")
    assert window.is_intraday_margin_killswitch_enabled is False
    assert (await call(client.get_intraday_margin_setting)).setting == "INTRADAY_MARGIN_SETTING_STANDARD"
    await call(client.set_intraday_margin_setting, "INTRADAY_MARGIN_SETTING_INTRADAY")
    assert (await call(client.get_intraday_margin_setting)).setting == "INTRADAY_MARGIN_SETTING_INTRADAY"
    with pytest.raises(HTTPError) as bad_setting:
        await call(client.set_intraday_margin_setting, "MAXIMUM")
    assert bad_setting.value.response.status_code == 400
    assert (await call(client.list_futures_sweeps)).sweeps == []


async def test_bad_requests_are_400_and_unknown_things_404(server: SimServer, ecdsa_key: ApiKey):
    client = sdk(server, ecdsa_key)
    now = int(time.time())
    with pytest.raises(HTTPError) as too_many:
        await call(client.get_candles, "BTC-USD", str(now - 400 * 60), str(now), "ONE_MINUTE")
    assert too_many.value.response.status_code == 400
    assert too_many.value.response.json()["error"] == "INVALID_ARGUMENT"
    with pytest.raises(HTTPError) as bad_granularity:
        await call(client.get_candles, "BTC-USD", str(now - 60), str(now), "SEVEN_MINUTE")
    assert bad_granularity.value.response.status_code == 400
    with pytest.raises(HTTPError) as missing:
        await call(client.get_order, "00000000-0000-0000-0000-000000000000")
    assert missing.value.response.status_code == 404
    assert missing.value.response.json()["error"] == "NOT_FOUND"
    with pytest.raises(HTTPError) as unknown_product:
        await call(client.get_product, "NOPE-USD")
    assert unknown_product.value.response.status_code == 404
    with pytest.raises(HTTPError) as no_route:
        await call(client.get, "/api/v3/brokerage/nothing/here")
    assert no_route.value.response.status_code == 404


async def test_previews_gtd_stop_limit_and_edits_through_the_sdk(server: SimServer, ecdsa_key: ApiKey):
    client = sdk(server, ecdsa_key)
    preview = await call(client.preview_market_order_buy, "ETH-USD", base_size="0.5")
    assert preview.errs == [] and preview.base_size == "0.5"
    assert Decimal(preview.commission_total) > 0 and Decimal(preview.best_bid) < Decimal(preview.best_ask)
    too_big = await call(client.preview_market_order_buy, "BTC-USD", base_size="50")
    assert "PREVIEW_INSUFFICIENT_FUND" in too_big.errs
    assert server.venue.orders() == []  # previews place nothing

    bid = Decimal((await call(client.get_best_bid_ask, ["ETH-USD"])).pricebooks[0].bids[0].price)
    low = str((bid * Decimal("0.7")).quantize(Decimal("0.01")))
    end = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 3600))
    gtd = await call(client.limit_order_gtd_buy, "gtd", "ETH-USD", base_size="0.3", limit_price=low, end_time=end)
    gtd_order = (await call(client.get_order, gtd.success_response["order_id"])).order
    assert (gtd_order.status, gtd_order.time_in_force) == ("OPEN", "GOOD_UNTIL_DATE_TIME")
    assert gtd_order.order_configuration.limit_limit_gtd.end_time == end

    high = str((bid * Decimal("1.5")).quantize(Decimal("0.01")))
    stop = await call(client.stop_limit_order_gtc_buy, "stop", "ETH-USD", base_size="0.3", limit_price=high,
                      stop_price=high, stop_direction="STOP_DIRECTION_STOP_UP")
    stop_order = (await call(client.get_order, stop.success_response["order_id"])).order
    assert (stop_order.status, stop_order.order_type, stop_order.trigger_status) == (
        "OPEN",
        "STOP_LIMIT",
        "STOP_PENDING",
    )

    new_price = str((bid * Decimal("0.75")).quantize(Decimal("0.01")))
    check = await call(client.preview_edit_order, gtd.success_response["order_id"], size="0.4", price=new_price)
    assert check.errors == []
    edited = await call(client.edit_order, gtd.success_response["order_id"], size="0.4", price=new_price)
    assert edited.success is True
    after = (await call(client.get_order, gtd.success_response["order_id"])).order
    assert after.order_configuration.limit_limit_gtd.limit_price == new_price
    assert after.order_configuration.limit_limit_gtd.base_size == "0.4"
    assert [(e.price, e.size) for e in after.edit_history] == [(new_price, "0.4")]
    refused = await call(client.edit_order, stop.success_response["order_id"], price=new_price)
    assert refused.success is False and refused.errors[0].edit_failure_reason == "ONLY_LIMIT_ORDER_EDITS_SUPPORTED"


async def test_a_dated_future_is_listed_with_its_expiry_and_no_funding(server: SimServer, ed25519_key: ApiKey):
    client = sdk(server, ed25519_key)
    listed = await call(client.get_product, "BIT-26MAR27-CDE")
    assert listed.product_type == "FUTURE" and listed.product_venue == "FCM" and listed.display_name == "BTC 26 MAR 27"
    assert listed.base_increment == "1" and listed.base_min_size == "1"
    details = listed.future_product_details
    assert details["contract_expiry_type"] == "EXPIRING" and details["contract_size"] == "0.01"
    assert details["contract_expiry"].startswith("2027-03-26") and details["contract_expiry_name"] == "26 MAR 2027"
    assert not {"funding_rate", "funding_time", "funding_interval"} & set(details)
    assert not {"funding_rate", "funding_time"} & set(details["perpetual_details"])
    assert details["perpetual_details"]["max_leverage"] == "10"

    opened = await call(client.market_order_sell, "dated-1", "BIT-26MAR27-CDE", base_size="2", leverage="2")
    assert opened.success
    [held] = (await call(client.list_futures_positions)).positions
    assert (held["product_id"], held["side"], held["number_of_contracts"]) == ("BIT-26MAR27-CDE", "SHORT", "2")
    assert held["expiration_time"].startswith("2027-03-26")
