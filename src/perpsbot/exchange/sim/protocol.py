"""Simulator objects -> Coinbase Advanced Trade JSON (REST bodies and WebSocket events).

Numbers are decimal strings (``"0.00000001"``, never exponents), times RFC 3339 in UTC
(``2024-01-01T12:00:00.123456Z``; WebSocket envelopes carry nanoseconds). Field names
and enum values follow Coinbase's documented API.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from perpsbot.domain import ZERO, Candle, Fill, Liquidity, Position, Product
from perpsbot.exchange.sim.margin import INTRADAY, OVERNIGHT, applicable, initial_rate
from perpsbot.exchange.sim.market import OrderBook
from perpsbot.exchange.sim.venue import OrderView, ProductStats, SimVenue
from perpsbot.exchange.stream import MarketTrade

GRPC_CODES = {
    "INVALID_ARGUMENT": 3,
    "NOT_FOUND": 5,
    "PERMISSION_DENIED": 7,
    "RATE_LIMIT_EXCEEDED": 8,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
}

GRANULARITIES = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "THIRTY_MINUTE": 1800,
    "ONE_HOUR": 3600,
    "TWO_HOUR": 7200,
    "SIX_HOUR": 21600,
    "ONE_DAY": 86400,
}
MAX_CANDLES = 350

_WS_ORDER_TYPES = {"MARKET": "Market", "LIMIT": "Limit", "STOP_LIMIT": "Stop Limit", "BRACKET": "Bracket"}


def dumps(data: Any) -> str:
    """Compact JSON, as Coinbase sends it."""
    return json.dumps(data, separators=(",", ":"))


def num(value: Decimal | int | float | None) -> str:
    """A decimal string without exponent or trailing zeros ("" for None)."""
    if value is None:
        return ""
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    if d == 0:
        return "0"
    text = format(d.normalize(), "f")
    return text


def ts(dt: datetime | None) -> str:
    """RFC 3339, microseconds, ``Z``."""
    if dt is None:
        return ""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ts_nanos(dt: datetime) -> str:
    """RFC 3339 with nanoseconds, as in WebSocket envelopes."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def amount(value: Decimal, currency: str) -> dict[str, str]:
    return {"value": num(value), "currency": currency}


def error_body(error: str, message: str, details: str | None = None) -> dict[str, Any]:
    """An error the way Coinbase's gateway returns it."""
    return {
        "error": error,
        "code": GRPC_CODES.get(error, 2),
        "message": message,
        "error_details": message if details is None else details,
        "details": [],
    }


# ----- products and market data --------------------------------------------------------


def product_json(product: Product, stats: ProductStats, venue: SimVenue) -> dict[str, Any]:
    perp = product.is_derivative
    base_max = product.min_size * 1_000_000
    out: dict[str, Any] = {
        "product_id": product.symbol,
        "price": num(stats.price),
        "price_percentage_change_24h": num(stats.change_pct_24h.quantize(Decimal("0.00000001"))),
        "volume_24h": num(stats.volume_24h),
        "volume_percentage_change_24h": "0",
        "base_increment": num(product.base_increment),
        "quote_increment": num(product.price_increment),
        "quote_min_size": num(product.min_size * stats.price) if perp else "1",
        "quote_max_size": "100000000",
        "base_min_size": num(product.min_size),
        "base_max_size": num(base_max),
        "base_name": "" if perp else product.base,
        "quote_name": "US Dollar" if product.quote == "USD" else product.quote,
        "watched": False,
        "is_disabled": False,
        "new": False,
        "status": "online",
        "cancel_only": False,
        "limit_only": False,
        "post_only": False,
        "trading_disabled": False,
        "auction_mode": False,
        "product_type": "FUTURE" if perp else "SPOT",
        "quote_currency_id": product.quote,
        "base_currency_id": "" if perp else product.base,
        "fcm_trading_session_details": None,
        "mid_market_price": num(stats.mid),
        "alias": "",
        "alias_to": [],
        "base_display_symbol": product.base,
        "quote_display_symbol": product.quote,
        "view_only": False,
        "price_increment": num(product.price_increment),
        "display_name": display_name(product),
        "product_venue": "FCM" if perp else "CBE",
        "approximate_quote_24h_volume": num((stats.volume_24h * stats.price).quantize(Decimal("0.01"))),
    }
    if perp:
        out["future_product_details"] = cfm_details_json(product, stats, venue)
    return out


def display_name(product: Product) -> str:
    """``BTC-USD`` -> "BTC/USD", a perpetual-style future "BTC PERP", a dated one "BTC 26 MAR 27"."""
    if not product.is_derivative:
        return f"{product.base}/{product.quote}"
    if product.is_perpetual or product.expiry is None:
        return f"{product.base} PERP"
    return f"{product.base} {product.expiry.strftime('%d %b %y').upper()}"


def cfm_details_json(product: Product, stats: ProductStats, venue: SimVenue) -> dict[str, Any]:
    """A CFM future as Advanced Trade lists it: EXPIRING with a ``contract_size``. A US
    perpetual-style one (far out) adds a ``funding_interval`` and ``funding_rate`` and a PERP
    display name; a dated one has no funding field. ``perpetual_details`` carries the
    leverage cap (the simulator's margin is per position). A perpetual without an expiry
    (one a test lists) is PERPETUAL, with no expiry fields."""
    expiry = product.expiry
    code = product.symbol.split("-")[0]
    left_ms = max(0, int((expiry - venue.core.now).total_seconds() * 1000)) if expiry else 0
    perp = product.is_perpetual
    out: dict[str, Any] = {
        "venue": "cde",
        "contract_code": code,
        "contract_expiry": ts(expiry),
        "contract_size": num(product.contract_size),
        "contract_root_unit": product.base,
        "group_description": f"{product.base} Perpetual-Style Futures" if perp else f"{product.base} Futures",
        "contract_expiry_timezone": "UTC",
        "group_short_description": display_name(product),
        "risk_managed_by": "MANAGED_BY_FCM",
        "contract_expiry_type": expiry_type(product),
        "perpetual_details": {
            "open_interest": "0",
            "max_leverage": num(product.max_leverage),
            "base_asset_uuid": "",
            "underlying_type": "SPOT",
        },
        "contract_display_name": display_name(product),
        "time_to_expiry_ms": str(left_ms),
        "non_crypto": False,
        "contract_expiry_name": expiry.strftime("%d %b %Y").upper() if expiry else "",
        "twenty_four_by_seven": True,
        "open_interest": "0",
        "index_price": num(stats.mid),
        "display_name": display_name(product),
        "futures_asset_type": "FUTURES_ASSET_TYPE_CRYPTO",
        "intraday_margin_rate": _margin_rates(product, INTRADAY),
        "overnight_margin_rate": _margin_rates(product, OVERNIGHT),
    }
    if perp:
        interval = venue.core.config.funding_interval_seconds
        out["perpetual_details"].update(funding_rate=num(stats.funding_rate), funding_time=ts(stats.funding_time))
        out.update(funding_rate=num(stats.funding_rate), funding_time=ts(stats.funding_time),
                   funding_interval=f"{num(Decimal(repr(interval)))}s")
    return out


def _margin_rates(product: Product, window: str) -> dict[str, str]:
    rate = num(initial_rate(product, window))
    return {"long_margin_rate": rate, "short_margin_rate": rate}


def levels_json(levels: Iterable[Any]) -> list[dict[str, str]]:
    return [{"price": num(level.price), "size": num(level.size)} for level in levels]


def pricebook_json(book: OrderBook, limit: int | None = None) -> dict[str, Any]:
    bids = book.bids[:limit] if limit else book.bids
    asks = book.asks[:limit] if limit else book.asks
    return {"product_id": book.symbol, "bids": levels_json(bids), "asks": levels_json(asks), "time": ts(book.ts)}


def candle_json(candle: Candle) -> dict[str, str]:
    return {
        "start": str(int(candle.start.timestamp())),
        "low": num(candle.low),
        "high": num(candle.high),
        "open": num(candle.open),
        "close": num(candle.close),
        "volume": num(candle.volume),
    }


def market_trade_json(trade: MarketTrade) -> dict[str, str]:
    return {
        "trade_id": trade.trade_id,
        "product_id": trade.symbol,
        "price": num(trade.price),
        "size": num(trade.size),
        "time": ts(trade.time),
        "side": trade.side.value,
        "exchange": "CBE",
    }


# ----- orders and fills -----------------------------------------------------------------


def order_configuration(view: OrderView) -> dict[str, Any]:
    spec = view.order.spec
    return {spec.config_key: dict(spec.config)}


def order_json(view: OrderView, venue: SimVenue) -> dict[str, Any]:
    order = view.order
    spec = order.spec
    perp = spec.product.is_derivative
    value_after_fees = view.filled_value + view.fees if spec.side.value == "BUY" else view.filled_value - view.fees
    completion = (view.filled_size / spec.size * 100) if spec.size else ZERO
    return {
        "order_id": order.order_id,
        "product_id": spec.symbol,
        "user_id": venue.user_id,
        "order_configuration": order_configuration(view),
        "side": spec.side.value,
        "client_order_id": order.client_order_id,
        "status": view.status,
        "time_in_force": spec.tif,
        "created_time": ts(order.created_at),
        "completion_percentage": num(completion.quantize(Decimal("0.01"))),
        "filled_size": num(view.filled_size),
        "average_filled_price": num(view.average_price or ZERO),
        "fee": "",
        "number_of_fills": str(view.number_of_fills),
        "filled_value": num(view.filled_value),
        "pending_cancel": False,
        "size_in_quote": spec.quote_size is not None,
        "total_fees": num(view.fees),
        "size_inclusive_of_fees": spec.kind == "MARKET" and spec.side.value == "BUY" and spec.quote_size is not None,
        "total_value_after_fees": num(value_after_fees),
        "trigger_status": view.trigger_status,
        "order_type": spec.kind,
        "reject_reason": order.reject_reason or "REJECT_REASON_UNSPECIFIED",
        "settled": view.status in ("FILLED", "CANCELLED", "EXPIRED", "FAILED"),
        "product_type": "FUTURE" if perp else "SPOT",
        "reject_message": order.reject_message,
        "cancel_message": order.cancel_message,
        "order_placement_source": "RETAIL_ADVANCED",
        "outstanding_hold_amount": num(view.outstanding_hold),
        "is_liquidation": order.is_liquidation,
        "last_fill_time": ts(view.last_fill_time) or None,
        "edit_history": [
            {"price": e["price"], "size": e["size"], "replace_accept_timestamp": ts(e["replace_accept_timestamp"])}
            for e in order.edit_history
        ],
        "leverage": num(spec.leverage) if perp else "",
        "margin_type": (spec.margin_type or "CROSS") if perp else "UNKNOWN_MARGIN_TYPE",
        "retail_portfolio_id": venue.default_portfolio_id,
        "originating_order_id": "",
        "attached_order_id": "",
        "attached_order_configuration": None,
    }


def expiry_type(product: Product) -> str:
    if not product.is_derivative:
        return "UNKNOWN_CONTRACT_EXPIRY_TYPE"
    return "EXPIRING" if product.expiry is not None else "PERPETUAL"


def ws_order_json(view: OrderView, venue: SimVenue) -> dict[str, Any]:
    """An order in the ``user`` channel."""
    order = view.order
    spec = order.spec
    perp = spec.product.is_derivative
    value_after_fees = view.filled_value + view.fees if spec.side.value == "BUY" else view.filled_value - view.fees
    completion = (view.filled_size / spec.size * 100) if spec.size else ZERO
    return {
        "avg_price": num(view.average_price or ZERO),
        "cancel_reason": order.cancel_message,
        "client_order_id": order.client_order_id,
        "completion_percentage": num(completion.quantize(Decimal("0.01"))),
        "contract_expiry_type": expiry_type(spec.product),
        "cumulative_quantity": num(view.filled_size),
        "filled_value": num(view.filled_value),
        "leaves_quantity": num(view.leaves),
        "limit_price": num(spec.limit_price or ZERO),
        "number_of_fills": str(view.number_of_fills),
        "order_id": order.order_id,
        "order_side": spec.side.value,
        "order_type": _WS_ORDER_TYPES[spec.kind],
        "outstanding_hold_amount": num(view.outstanding_hold),
        "post_only": "true" if spec.post_only else "false",
        "product_id": spec.symbol,
        "product_type": "FUTURE" if perp else "SPOT",
        "reject_reason": order.reject_reason,
        "retail_portfolio_id": venue.default_portfolio_id,
        "risk_managed_by": "MANAGED_BY_FCM" if perp else "UNKNOWN_RISK_MANAGEMENT_TYPE",
        "status": view.status,
        "stop_price": num(spec.stop_price or ZERO),
        "time_in_force": spec.tif,
        "total_fees": num(view.fees),
        "total_value_after_fees": num(value_after_fees),
        "trigger_status": view.trigger_status,
        "creation_time": ts(order.created_at),
        "end_time": ts(spec.end_time) if spec.end_time else "0001-01-01T00:00:00Z",
        "start_time": "0001-01-01T00:00:00Z",
    }


def fill_json(fill: Fill, order_id: str, venue: SimVenue) -> dict[str, Any]:
    """A fill of an order placed by ``quote_size`` is reported as Coinbase does: ``size_in_quote``
    true and ``size`` the quote amount transacted (price x size x contract size)."""
    product = venue.product(fill.symbol)
    liquidity = {Liquidity.MAKER: "MAKER", Liquidity.TAKER: "TAKER"}.get(fill.liquidity, "TAKER")
    in_quote = venue.order(order_id).spec.quote_size is not None
    size = fill.price * fill.size * product.contract_size if in_quote else fill.size
    return {
        "entry_id": venue.make_id("fill", fill.trade_id),
        "trade_id": fill.trade_id,
        "order_id": order_id,
        "trade_time": ts(fill.ts),
        "trade_type": "FILL",
        "price": num(fill.price),
        "size": num(size),
        "commission": num(fill.fee),
        "product_id": fill.symbol,
        "sequence_timestamp": ts(fill.ts),
        "liquidity_indicator": liquidity,
        "size_in_quote": in_quote,
        "user_id": venue.user_id,
        "side": fill.side.value,
        "retail_portfolio_id": venue.default_portfolio_id,
    }


def create_success(view: OrderView) -> dict[str, Any]:
    order = view.order
    return {
        "success": True,
        "success_response": {
            "order_id": order.order_id,
            "product_id": order.symbol,
            "side": order.side.value,
            "client_order_id": order.client_order_id,
        },
        "order_configuration": order_configuration(view),
    }


def create_failure(error: str, message: str, details: str, preview_reason: str,
                   configuration: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "success": False,
        "error_response": {
            "error": error,
            "message": message,
            "error_details": details,
            "preview_failure_reason": preview_reason,
            "new_order_failure_reason": error,
        },
    }
    if isinstance(configuration, Mapping):
        out["order_configuration"] = dict(configuration)
    return out


# ----- accounts, portfolios, perpetuals, futures ------------------------------------------


def account_json(
    venue: SimVenue, currency: str, available: Decimal, hold: Decimal, created: datetime
) -> dict[str, Any]:
    fiat = currency in ("USD", "USDC", "EUR", "GBP")
    return {
        "uuid": venue.account_id(currency),
        "name": f"{currency} Wallet",
        "currency": currency,
        "available_balance": amount(available, currency),
        "default": currency == venue.core.config.cash_currency,
        "active": True,
        "created_at": ts(created),
        "updated_at": ts(created),
        "deleted_at": None,
        "type": "ACCOUNT_TYPE_FIAT" if fiat else "ACCOUNT_TYPE_CRYPTO",
        "ready": True,
        "hold": amount(hold, currency),
        "retail_portfolio_id": venue.default_portfolio_id,
        "platform": "ACCOUNT_PLATFORM_CONSUMER",
    }


def portfolios_json(venue: SimVenue) -> list[dict[str, Any]]:
    return [
        {"name": "Default", "uuid": venue.default_portfolio_id, "type": "DEFAULT", "deleted": False},
        {"name": "Trading", "uuid": venue.consumer_portfolio_id, "type": "CONSUMER", "deleted": False},
    ]


def _margin_window(venue: SimVenue, kind: str, s: Mapping[str, Decimal], *, channel: bool) -> dict[str, str]:
    """A margin window measure at that window's rates: plain strings, in REST as in the
    channel (Get Futures Balance Summary documents it so). REST names the buffer
    ``liquidation_buffer`` (an amount); the ``futures_balance_summary`` channel
    ``liquidation_buffer_percentage`` (the official SDK's ``FCMMarginWindowMeasure``)."""
    initial, maintenance = venue.core.cfm_requirements(applicable(kind, venue.core.intraday_margin))
    buffer = s["total"] - maintenance
    return {
        "margin_window_type": kind,
        "margin_level": "MARGIN_LEVEL_TYPE_BASE",
        "initial_margin": num(initial),
        "maintenance_margin": num(maintenance),
        **({"liquidation_buffer_percentage": _percent(buffer, s["total"])} if channel
           else {"liquidation_buffer": num(buffer)}),
        "total_hold": num(s["hold"]),
        "futures_buying_power": num(max(ZERO, s["total"] - s["hold"] - initial)),
    }


def _percent(part: Decimal, whole: Decimal) -> str:
    return num((part / whole * 100).quantize(Decimal("0.01")) if whole > 0 else ZERO)


INTRADAY_MARGIN_SETTINGS = ("INTRADAY_MARGIN_SETTING_STANDARD", "INTRADAY_MARGIN_SETTING_INTRADAY")


def fcm_balance_summary(venue: SimVenue, *, as_amounts: bool) -> dict[str, Any]:
    """The margin account as a futures (FCM) balance summary: ``Amount`` objects for REST,
    plain strings for the ``futures_balance_summary`` channel. Initial and maintenance
    margin (the liquidation threshold) at the rates of the window in force; buying power
    is what is left of the total after the initial margin and the holds."""
    s = venue.futures_summary()
    ccy = venue.core.config.cash_currency
    initial, maintenance = venue.core.cfm_requirements(venue.core.margin_rates_window())

    def v(x: Decimal) -> Any:
        return amount(x, ccy) if as_amounts else num(x)

    buffer = s["total"] - maintenance
    power = max(ZERO, s["total"] - s["hold"] - initial)
    out: dict[str, Any] = {
        "futures_buying_power": v(power),
        "total_usd_balance": v(s["total"]),
        "cbi_usd_balance": v(s["available"] + s["hold"]),
        "cfm_usd_balance": v(s["margin"] + s["unrealized_pnl"] + s["accrued_funding"]),
        "total_open_orders_hold_amount": v(s["hold"]),
        "unrealized_pnl": v(s["unrealized_pnl"]),
        "daily_realized_pnl": v(s["realized_pnl"]),
        "initial_margin": v(initial),
        "available_margin": v(power),
        "liquidation_threshold": v(maintenance),
        "liquidation_buffer_amount": v(buffer),
        "liquidation_buffer_percentage": _percent(buffer, s["total"]),
        "intraday_margin_window_measure": _margin_window(venue, INTRADAY, s, channel=not as_amounts),
        "overnight_margin_window_measure": _margin_window(venue, OVERNIGHT, s, channel=not as_amounts),
    }
    return out


def fcm_position_json(product: Product, pos: Position, mark: Decimal) -> dict[str, Any]:
    """``number_of_contracts``; the PnL figures count ``contract_size`` base units a contract."""
    return {
        "product_id": product.symbol,
        "expiration_time": ts(product.expiry),
        "side": "LONG" if pos.size > 0 else "SHORT",
        "number_of_contracts": num(abs(pos.size)),
        "current_price": num(mark),
        "avg_entry_price": num(pos.entry_price),
        "unrealized_pnl": num(pos.unrealized_pnl(mark)),
        "daily_realized_pnl": num(pos.realized_pnl),
    }


def breakdown_future_json(product: Product, pos: Position, mark: Decimal) -> dict[str, Any]:
    """A futures position in a portfolio breakdown's ``futures_positions``."""
    ccy = product.quote
    return {
        "product_id": product.symbol,
        "contract_size": num(product.contract_size),
        "side": "FUTURES_POSITION_SIDE_LONG" if pos.size > 0 else "FUTURES_POSITION_SIDE_SHORT",
        "amount": num(abs(pos.size)),
        "avg_entry_price": num(pos.entry_price),
        "current_price": num(mark),
        "unrealized_pnl": num(pos.unrealized_pnl(mark)),
        "expiry": ts(product.expiry),
        "underlying_asset": product.base,
        "asset_img_url": "",
        "product_name": product.symbol,
        "venue": "FCM",
        "notional_value": amount(pos.notional(mark), ccy),
    }


def ws_fcm_position_json(product: Product, pos: Position, mark: Decimal) -> dict[str, Any]:
    """A CFM position in the ``user`` channel's ``expiring_futures_positions``."""
    return {
        "product_id": product.symbol,
        "side": "Long" if pos.size > 0 else "Short",
        "number_of_contracts": num(abs(pos.size)),
        "realized_pnl": num(pos.realized_pnl),
        "unrealized_pnl": num(pos.unrealized_pnl(mark)),
        "entry_price": num(pos.entry_price),
    }


def fee_tier_json(venue: SimVenue) -> dict[str, str]:
    cfg = venue.core.config
    return {
        "pricing_tier": "Advanced 1",
        "usd_from": "0",
        "usd_to": "10000",
        "taker_fee_rate": num(cfg.taker_fee_bps / 10_000),
        "maker_fee_rate": num(cfg.maker_fee_bps / 10_000),
        "aop_from": "",
        "aop_to": "",
    }
