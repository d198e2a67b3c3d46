from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from perpsbot.domain import Liquidity, MarginType, OrderStatus, ProductType, Side
from perpsbot.exchange.coinbase.mapping import (
    BracketGtc,
    BracketGtd,
    LimitFok,
    LimitGtc,
    LimitGtd,
    LimitIoc,
    MarketIoc,
    NewOrder,
    Obj,
    StopDirection,
    StopLimitGtc,
    StopLimitGtd,
    UnsupportedGranularity,
    decode_configuration,
    encode_configuration,
    granularity_enum,
    http_error,
    order_status,
    parse_balances,
    parse_best_bid_ask,
    parse_candles,
    parse_cfm_position,
    parse_cfm_summary,
    parse_fill,
    parse_order_response,
    parse_product_book,
    parse_products,
    parse_time,
    parse_transaction_summary,
)
from perpsbot.exchange.port import (
    AuthenticationError,
    BadResponse,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    InvalidRequest,
    NotFound,
    OrderNotFound,
    RateLimited,
    ServerError,
)
from tests.coinbasekit import cfm_future, cfm_perp, spot_product

D = Decimal
END = datetime(2026, 3, 31, 16, 0, tzinfo=UTC)

# (configuration, its documented JSON)
CONFIGURATIONS = [
    (MarketIoc(base_size=D("0.001")), {"market_market_ioc": {"base_size": "0.001"}}),
    (MarketIoc(quote_size=D("10.00")), {"market_market_ioc": {"quote_size": "10"}}),
    (LimitGtc(D("0.5"), D("10000.00"), post_only=True),
     {"limit_limit_gtc": {"base_size": "0.5", "limit_price": "10000", "post_only": True}}),
    (LimitGtd(D("0.5"), D("10000.5"), END),
     {"limit_limit_gtd": {"base_size": "0.5", "limit_price": "10000.5", "end_time": "2026-03-31T16:00:00Z",
                          "post_only": False}}),
    (LimitIoc(D("1E-8"), D("65000")), {"sor_limit_ioc": {"base_size": "0.00000001", "limit_price": "65000"}}),
    (LimitFok(D("2"), D("3000.25")), {"limit_limit_fok": {"base_size": "2", "limit_price": "3000.25"}}),
    (StopLimitGtc(D("0.1"), D("49000"), D("49500"), StopDirection.DOWN),
     {"stop_limit_stop_limit_gtc": {"base_size": "0.1", "limit_price": "49000", "stop_price": "49500",
                                    "stop_direction": "STOP_DIRECTION_STOP_DOWN"}}),
    (StopLimitGtd(D("0.1"), D("51000"), D("50500"), StopDirection.UP, END),
     {"stop_limit_stop_limit_gtd": {"base_size": "0.1", "limit_price": "51000", "stop_price": "50500",
                                    "stop_direction": "STOP_DIRECTION_STOP_UP", "end_time": "2026-03-31T16:00:00Z"}}),
    (BracketGtc(D("0.2"), D("55000"), D("45000")),
     {"trigger_bracket_gtc": {"base_size": "0.2", "limit_price": "55000", "stop_trigger_price": "45000"}}),
    (BracketGtd(D("0.2"), D("55000"), D("45000"), END),
     {"trigger_bracket_gtd": {"base_size": "0.2", "limit_price": "55000", "stop_trigger_price": "45000",
                              "end_time": "2026-03-31T16:00:00Z"}}),
]


@pytest.mark.parametrize("config, wire", CONFIGURATIONS, ids=[next(iter(w)) + str(i) for i, (_, w) in
                                                               enumerate(CONFIGURATIONS)])
def test_every_order_configuration_encodes_to_the_documented_json_and_back(config, wire):
    assert encode_configuration(config) == wire
    assert decode_configuration(wire) == config


def test_market_order_takes_exactly_one_size():
    with pytest.raises(ValueError):
        MarketIoc()
    with pytest.raises(ValueError):
        MarketIoc(base_size=D(1), quote_size=D(1))


def test_order_body_adds_leverage_margin_type_and_reduce_only_for_perps():
    order = NewOrder("pb-1", "BIP-20DEC30-CDE", Side.SELL, MarketIoc(base_size=D("2")), leverage=D("3"),
                     margin_type=MarginType.ISOLATED, reduce_only=True)
    assert order.body() == {
        "client_order_id": "pb-1", "product_id": "BIP-20DEC30-CDE", "side": "SELL",
        "order_configuration": {"market_market_ioc": {"base_size": "2"}},
        "leverage": "3", "margin_type": "ISOLATED", "reduce_only": True,
    }
    assert "client_order_id" not in order.body(preview=True)
    spot = NewOrder("pb-2", "BTC-USD", Side.BUY, LimitGtc(D(1), D(2)))
    assert set(spot.body()) == {"client_order_id", "product_id", "side", "order_configuration"}


def test_unknown_or_ambiguous_configuration_is_a_bad_response():
    with pytest.raises(BadResponse, match="order_configuration: expected one of"):
        decode_configuration({"twap_limit_gtd": {"base_size": "1"}})
    with pytest.raises(BadResponse, match=r"limit_limit_gtc\.limit_price: missing"):
        decode_configuration({"limit_limit_gtc": {"base_size": "1"}})


ORDER = {
    "order_id": "0000-000000-000000", "product_id": "BTC-USD", "user_id": "2222-000000-000000",
    "order_configuration": {"limit_limit_gtc": {"base_size": "0.001", "limit_price": "10000.00", "post_only": False}},
    "side": "BUY", "client_order_id": "pb-abc", "status": "OPEN", "time_in_force": "GOOD_UNTIL_CANCELLED",
    "created_time": "2021-05-31T09:59:59.123456789Z", "completion_percentage": "50", "filled_size": "0.0005",
    "average_filled_price": "10000", "fee": "", "number_of_fills": "2", "filled_value": "5",
    "pending_cancel": False, "size_in_quote": False, "total_fees": "0.03", "size_inclusive_of_fees": False,
    "total_value_after_fees": "5.03", "trigger_status": "INVALID_ORDER_TYPE", "order_type": "LIMIT",
    "reject_reason": "REJECT_REASON_UNSPECIFIED", "settled": False, "product_type": "SPOT", "reject_message": "",
    "cancel_message": "", "order_placement_source": "RETAIL_ADVANCED", "outstanding_hold_amount": "5.00",
    "is_liquidation": False, "last_fill_time": "2021-05-31T10:30:00Z", "leverage": "", "margin_type": "",
    "retail_portfolio_id": "",
}


def test_an_order_maps_to_a_snapshot_with_decimals_and_aware_utc_times():
    order = parse_order_response({"order": ORDER})
    snap = order.snapshot()
    assert snap.exchange_order_id == "0000-000000-000000" and snap.client_order_id == "pb-abc"
    assert snap.side is Side.BUY and snap.symbol == "BTC-USD"
    assert snap.size == D("0.001") and snap.filled_size == D("0.0005")
    assert snap.status is OrderStatus.PARTIALLY_FILLED
    assert snap.average_fill_price == D("10000") and snap.fees == D("0.03")
    assert snap.created_at == datetime(2021, 5, 31, 9, 59, 59, 123456, tzinfo=UTC)
    assert snap.reject_reason is None
    assert isinstance(order.configuration, LimitGtc)


@pytest.mark.parametrize(
    "raw, filled, expected",
    [
        ("PENDING", "0", OrderStatus.OPEN), ("QUEUED", "0", OrderStatus.OPEN), ("OPEN", "0", OrderStatus.OPEN),
        ("OPEN", "1", OrderStatus.PARTIALLY_FILLED), ("CANCEL_QUEUED", "0.5", OrderStatus.PARTIALLY_FILLED),
        ("FILLED", "1", OrderStatus.FILLED), ("CANCELLED", "0", OrderStatus.CANCELLED),
        ("CANCELLED", "0.5", OrderStatus.CANCELLED), ("EXPIRED", "0", OrderStatus.EXPIRED),
        ("FAILED", "0", OrderStatus.REJECTED),
    ],
)
def test_coinbase_statuses_map_onto_the_state_machine(raw, filled, expected):
    assert order_status(raw, D(filled)) is expected


def test_unknown_status_and_a_failed_order_reason():
    with pytest.raises(BadResponse, match=r"order\.status: unknown order status 'UNKNOWN_ORDER_STATUS'"):
        order_status("UNKNOWN_ORDER_STATUS", D(0))
    failed = dict(ORDER, status="FAILED", filled_size="0", reject_reason="INSUFFICIENT_FUND",
                  reject_message="Insufficient balance")
    snap = parse_order_response({"order": failed}).snapshot()
    assert snap.status is OrderStatus.REJECTED and snap.reject_reason == "Insufficient balance"
    assert snap.average_fill_price is None


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda o: o.pop("filled_size") and o.pop("status"), "order.status: missing"),
        (lambda o: o.update(created_time="yesterday"), "order.created_time: not an RFC 3339 time: 'yesterday'"),
        (lambda o: o.update(created_time="2021-05-31T09:59:59"), "order.created_time: time without a UTC offset"),
        (lambda o: o.update(filled_size="abc"), "order.filled_size: not a decimal: 'abc'"),
        (lambda o: o.update(filled_size=1.5), "order.filled_size: expected a decimal string, got 1.5"),
        (lambda o: o.update(side="HOLD"), "order.side: expected BUY or SELL, got 'HOLD'"),
        (lambda o: o.pop("order_id"), "order.order_id: missing"),
        (lambda o: o.update(filled_size="NaN"), "order.filled_size: not a finite decimal"),
    ],
)
def test_bad_or_missing_fields_name_the_field(mutate, message):
    order = copy.deepcopy(ORDER)
    mutate(order)
    with pytest.raises(BadResponse) as info:
        parse_order_response({"order": order})
    assert message in str(info.value)
    with pytest.raises(BadResponse, match=r"^order: missing$"):
        parse_order_response({})


def test_products_map_spot_perpetuals_and_dated_futures():
    listed = parse_products({"products": [spot_product("BTC-USD", "50000"), cfm_perp("BIP-20DEC30-CDE", "50010"),
                                          cfm_future("BIT-24APR26-CDE", "50100")], "num_products": 3})
    spot, perp, future = listed
    assert spot.to_domain().type is ProductType.SPOT and spot.base == "BTC" and spot.quote == "USD"
    assert spot.to_domain().price_increment == D("0.01") and spot.to_domain().min_size == D("0.00001")
    assert perp.is_perpetual and perp.is_future and perp.venue == "FCM"
    domain = perp.to_domain()
    assert domain.type is ProductType.PERPETUAL and domain.base == "BTC" and domain.max_leverage == D(1)
    assert domain.base_increment == D(1) and domain.price_increment == D(5)
    assert perp.funding_rate == D("0.000012")
    assert future.is_future and not future.is_perpetual and future.contract_size == D("0.01")
    assert future.contract_expiry == datetime(2026, 4, 24, 15, tzinfo=UTC)
    dated = future.to_domain()
    assert dated.type is ProductType.FUTURE and dated.is_derivative and not dated.is_perpetual
    assert dated.expiry == datetime(2026, 4, 24, 15, tzinfo=UTC) and dated.contract_size == D("0.01")
    assert dated.base_increment == D(1) and dated.base == "BTC" and dated.quote == "USD"
    assert dated.expired(datetime(2026, 4, 24, 15, tzinfo=UTC)) and not dated.expired(datetime(2026, 4, 24, tzinfo=UTC))
    undated = cfm_future("BIT-24APR26-CDE", "50100")
    undated["future_product_details"]["contract_expiry"] = ""
    with pytest.raises(BadResponse, match="product BIT-24APR26-CDE: a dated future without a contract_expiry"):
        parse_products({"products": [undated]})[0].to_domain()


def test_a_cfm_perpetual_style_future_is_a_perpetual_sized_in_contracts():
    listed = parse_products({"products": [cfm_perp("BIP-20DEC30-CDE", "90000"),
                                          cfm_future("BIT-24APR26-CDE", "50100")]})
    perp, dated = listed
    assert perp.is_future and perp.is_perpetual and perp.contract_expiry_type == "EXPIRING"
    assert perp.funding_rate == D("0.000012") and perp.funding_interval == "3600s"
    assert perp.funding_time == datetime(2026, 12, 4, 3, tzinfo=UTC)
    assert perp.contract_expiry == datetime(2030, 12, 20, 16, tzinfo=UTC)
    domain = perp.to_domain()
    assert domain.type is ProductType.PERPETUAL and domain.base == "BTC" and domain.quote == "USD"
    assert domain.contract_size == D("0.01") and domain.base_increment == D(1) and domain.min_size == D(1)
    assert domain.quantize_size(D("2.7")) == D(2)  # whole contracts
    assert domain.expiry == datetime(2030, 12, 20, 16, tzinfo=UTC)  # far out, but listed
    assert not dated.is_perpetual and dated.to_domain().type is ProductType.FUTURE


def test_a_future_without_details_is_refused():
    broken = cfm_perp("BIP-20DEC30-CDE", "1")
    del broken["future_product_details"]
    with pytest.raises(BadResponse, match=r"products\[0\]\.future_product_details: missing"):
        parse_products({"products": [broken]})


def test_best_bid_ask_and_product_book():
    quotes = parse_best_bid_ask({"pricebooks": [{
        "product_id": "BTC-USD", "bids": [{"price": "49999.5", "size": "1"}],
        "asks": [{"price": "50000.5", "size": "2"}], "time": "2026-03-02T12:00:00.5Z"}]})
    quote = quotes["BTC-USD"]
    assert (quote.bid, quote.ask, quote.mid) == (D("49999.5"), D("50000.5"), D(50000))
    assert quote.ts == datetime(2026, 3, 2, 12, 0, 0, 500000, tzinfo=UTC)
    with pytest.raises(BadResponse, match="crossed"):
        parse_best_bid_ask({"pricebooks": [{"product_id": "X-USD", "bids": [{"price": "2", "size": "1"}],
                                            "asks": [{"price": "1", "size": "1"}], "time": "2026-03-02T12:00:00Z"}]})
    with pytest.raises(BadResponse, match="empty side"):
        parse_best_bid_ask({"pricebooks": [{"product_id": "X-USD", "bids": [], "asks": [],
                                            "time": "2026-03-02T12:00:00Z"}]})
    book = parse_product_book({"pricebook": {
        "product_id": "BTC-USD", "bids": [{"price": "10", "size": "1"}, {"price": "9", "size": "2"}],
        "asks": [{"price": "11", "size": "3"}], "time": "2026-03-02T12:00:00Z"}})
    assert [lv.price for lv in book.bids] == [D(10), D(9)] and book.asks[0].size == D(3)
    assert book.expected_fill(Side.BUY, D(2)) == (D(11), D(2))


def test_candles_come_oldest_first_from_unix_starts():
    candles = parse_candles({"candles": [
        {"start": "1772452860", "low": "1", "high": "4", "open": "2", "close": "3", "volume": "10"},
        {"start": "1772452800", "low": "1", "high": "4", "open": "3", "close": "2", "volume": "5"},
    ]}, "BTC-USD")
    assert [c.start.timestamp() for c in candles] == [1772452800, 1772452860]
    assert candles[0].start.tzinfo is UTC and candles[1].close == D(3)
    with pytest.raises(BadResponse, match=r"candles\[0\]: .*OHLC out of range"):
        parse_candles({"candles": [{"start": "1", "low": "5", "high": "4", "open": "2", "close": "3",
                                    "volume": "1"}]}, "X")


def test_granularities_map_to_the_enum_and_others_are_refused():
    assert granularity_enum(60) == "ONE_MINUTE" and granularity_enum(86400) == "ONE_DAY"
    assert granularity_enum(21600) == "SIX_HOUR"
    with pytest.raises(UnsupportedGranularity, match="no 5 s granularity; offered \\(seconds\\): 60, 300"):
        granularity_enum(5)


def test_fills_map_liquidity_and_fees():
    raw = {"entry_id": "e", "trade_id": "1111-11111-111111", "order_id": "0000", "trade_time": "2024-01-15T10:30:00Z",
           "trade_type": "FILL", "price": "45123.45", "size": "0.005", "commission": "1.14", "product_id": "BTC-USD",
           "sequence_timestamp": "2024-01-15T10:30:00.123456Z", "liquidity_indicator": "MAKER",
           "size_in_quote": False, "user_id": "u", "side": "BUY", "retail_portfolio_id": ""}
    fill = parse_fill(Obj(raw, "fills[0]"), "pb-1")
    assert (fill.trade_id, fill.client_order_id, fill.price, fill.size, fill.fee) == (
        "1111-11111-111111", "pb-1", D("45123.45"), D("0.005"), D("1.14"))
    assert fill.liquidity is Liquidity.MAKER and fill.ts == datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    assert parse_fill(Obj(dict(raw, liquidity_indicator="TAKER"), "f"), "x").liquidity is Liquidity.TAKER
    assert parse_fill(Obj(dict(raw, trade_type="LIQUIDATION"), "f"), "x").liquidity is Liquidity.LIQUIDATION



def test_a_fill_sized_in_quote_is_converted_to_base_size():
    raw = {"trade_id": "t-1", "order_id": "o", "trade_time": "2024-01-15T10:30:00Z", "price": "40000",
           "size": "100", "commission": "0.6", "product_id": "BTC-USD", "size_in_quote": True, "side": "BUY"}
    fill = parse_fill(Obj(raw, "fills[0]"), "pb-1")
    assert fill.size == D("0.0025") and fill.price == D(40000) and fill.fee == D("0.6")  # $100, not 100 BTC
    assert parse_fill(Obj(dict(raw, size_in_quote=False), "f"), "x").size == D(100)
    assert parse_fill(Obj(raw, "f"), "x", contract_size=D("0.01")).size == D("0.25")  # contracts of 0.01 BTC
    with pytest.raises(BadResponse, match=r"fills\[0\].price: a fill sized in quote needs a positive price"):
        parse_fill(Obj(dict(raw, price="0"), "fills[0]"), "x")

def test_accounts_and_positions():
    balances = parse_balances([Obj(a, f"accounts[{i}]") for i, a in enumerate([
        {"currency": "USD", "available_balance": {"value": "100.5", "currency": "USD"},
         "hold": {"value": "10", "currency": "USD"}},
        {"currency": "USD", "available_balance": {"value": "1", "currency": "USD"}},
        {"currency": "BTC", "available_balance": {"value": "0.25", "currency": "BTC"},
         "hold": {"value": "0", "currency": "BTC"}},
    ])])
    assert balances["USD"].available == D("101.5") and balances["USD"].hold == D(10)
    assert balances["BTC"].total == D("0.25")
    short = parse_cfm_position(Obj({
        "product_id": "ETP-20DEC30-CDE", "number_of_contracts": "15", "side": "FUTURES_POSITION_SIDE_SHORT",
        "avg_entry_price": {"value": "3001", "currency": "USD"}, "leverage": "2"}, "positions[0]"), D("0.1"))
    assert (short.symbol, short.size, short.entry_price, short.leverage) == ("ETP-20DEC30-CDE", D(-15), D(3001), D(2))
    assert short.notional(D(3000)) == D(4500)  # 15 contracts x 0.1 ETH x 3000
    cfm = parse_cfm_position(Obj({"product_id": "BIP-20DEC30-CDE", "side": "LONG", "number_of_contracts": "2",
                                  "avg_entry_price": {"value": "49000.00", "currency": "USD"},
                                  "contract_size": "0.01", "leverage": "5"}, "positions[0]"))
    assert cfm.size == D(2) and cfm.entry_price == D(49000) and cfm.contract_size == D("0.01")
    assert cfm.notional(D(50000)) == D(1000)
    listed = parse_cfm_position(Obj({"product_id": "BIP-20DEC30-CDE", "expiration_time": "2030-12-20T16:00:00Z",
                                     "side": "SHORT", "number_of_contracts": "3", "current_price": "90100",
                                     "avg_entry_price": "90000", "unrealized_pnl": "-3",
                                     "daily_realized_pnl": "0"}, "positions[0]"), D("0.01"))
    assert listed.size == D(-3) and listed.contract_size == D("0.01")
    assert listed.unrealized_pnl(D(90100)) == D(-3)  # the venue's own figure: contracts x 0.01 BTC x move
    with pytest.raises(BadResponse, match=r"positions\[0\].side: unknown position side 'SIDEWAYS'"):
        parse_cfm_position(Obj({"product_id": "X", "number_of_contracts": "1", "side": "SIDEWAYS"}, "positions[0]"))


def test_derivative_summaries_and_fee_tier():
    cfm = parse_cfm_summary({"balance_summary": {"total_usd_balance": {"value": "10000.00", "currency": "USD"},
                                                 "cfm_usd_balance": {"value": "8000", "currency": "USD"},
                                                 "unrealized_pnl": {"value": "150.00", "currency": "USD"}}})
    assert cfm.total_balance == D(10000) and cfm.unrealized_pnl == D(150)
    tier = parse_transaction_summary({"total_volume": 1000, "fee_tier": {
        "pricing_tier": "Advanced 1", "taker_fee_rate": "0.006", "maker_fee_rate": "0.004"}})
    assert (tier.maker_fee_rate, tier.taker_fee_rate, tier.total_volume) == (D("0.004"), D("0.006"), D(1000))


@pytest.mark.parametrize(
    "status, body, order_request, kind, text",
    [
        (401, "Unauthorized", False, AuthenticationError, "HTTP 401 Unauthorized"),
        (403, {"error": "PERMISSION_DENIED", "code": 7, "message": "Missing required scopes",
               "error_details": "Missing required scopes"}, False, AuthenticationError, "Missing required scopes"),
        (404, {"error": "NOT_FOUND", "message": "order not found"}, False, OrderNotFound, "order not found"),
        (429, {"error": "RATE_LIMIT_EXCEEDED", "message": "Too many requests"}, False, RateLimited, "Too many"),
        (500, {"error": "INTERNAL", "message": "boom"}, False, ServerError, "HTTP 500 INTERNAL: boom"),
        (503, "", False, ServerError, "HTTP 503"),
        (400, {"error": "INVALID_ARGUMENT", "message": "limit too large"}, False, InvalidRequest, "limit too large"),
        (400, {"error": "INVALID_ARGUMENT", "error_details": "base_size too small"}, True, InvalidOrder,
         "base_size too small"),
        (400, {"error_response": {"error": "INSUFFICIENT_FUND", "message": "Insufficient balance in source account"}},
         True, InsufficientFunds, "insufficient funds"),
        (418, {"message": "teapot"}, False, ExchangeError, "teapot"),
    ],
)
def test_error_bodies_become_typed_errors(status, body, order_request, kind, text):
    path = "GET /api/v3/brokerage/orders/historical/x" if status == 404 else "GET /api/v3/brokerage/accounts"
    error = http_error(status, body, path, order_request=order_request, retry_after=2.0)
    assert type(error) is kind
    assert text in str(error)
    if isinstance(error, RateLimited):
        assert error.retry_after == 2.0
    if isinstance(error, InsufficientFunds):
        assert error.reason == "INSUFFICIENT_FUND"



@pytest.mark.parametrize("body, reason", [
    ({"success": False, "error_response": {"error": "UNKNOWN_FAILURE_REASON", "message": "", "error_details": "",
                                           "preview_failure_reason": "PREVIEW_STOP_PRICE_ABOVE_LAST_TRADE_PRICE"}},
     "PREVIEW_STOP_PRICE_ABOVE_LAST_TRADE_PRICE"),
    ({"success": False, "failure_reason": "UNKNOWN_FAILURE_REASON",
      "error_response": {"error": "INSUFFICIENT_FUND", "message": "Insufficient balance in source account",
                         "preview_failure_reason": "PREVIEW_INSUFFICIENT_FUND"}}, "INSUFFICIENT_FUND"),
    ({"success": False, "failure_reason": "UNKNOWN_FAILURE_REASON",
      "error_response": {"error": "UNKNOWN_FAILURE_REASON", "preview_failure_reason": "UNKNOWN_PREVIEW_FAILURE_REASON",
                         "new_order_failure_reason": "UNSUPPORTED_ORDER_CONFIGURATION"}},
     "UNSUPPORTED_ORDER_CONFIGURATION"),
    ({"success": False, "error_response": {"error": "UNKNOWN_FAILURE_REASON", "message": "", "error_details": ""}},
     "UNKNOWN_FAILURE_REASON"),
])
def test_a_failed_order_keeps_the_real_reason_behind_unknown_failure_reason(body, reason):
    error = http_error(400, body, "POST /api/v3/brokerage/orders", order_request=True)
    assert error.reason == reason and reason in str(error)

def test_a_404_outside_orders_is_not_found():
    assert type(http_error(404, {"message": "no portfolio"}, "GET /api/v3/brokerage/cfm/positions/X")) is NotFound


def test_times_with_nanoseconds_offsets_and_spaces():
    assert parse_time("2026-04-07T14:30:10.123456789Z", "t") == datetime(2026, 4, 7, 14, 30, 10, 123456, tzinfo=UTC)
    assert parse_time("2026-04-07 16:30:10+02:00", "t") == datetime(2026, 4, 7, 14, 30, 10, tzinfo=UTC)
    with pytest.raises(BadResponse, match="t: expected an RFC 3339 time, got 5"):
        parse_time(5, "t")
