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
from perpsbot.exchange.sim.products import cfm_expiry, is_cfm
from perpsbot.exchange.sim.venue import MarketTrade, OrderView, ProductStats, SimVenue

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
    perp = product.is_perpetual
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
        "display_name": f"{product.base} PERP" if perp else f"{product.base}/{product.quote}",
        "product_venue": ("FCM" if is_cfm(product) else "INTX") if perp else "CBE",
        "approximate_quote_24h_volume": num((stats.volume_24h * stats.price).quantize(Decimal("0.01"))),
    }
    if perp and is_cfm(product):
        out["future_product_details"] = cfm_details_json(product, stats, venue)
    elif perp:
        out["future_product_details"] = {
            "venue": "intx",
            "contract_code": product.base,
            "contract_expiry": "",
            "contract_size": num(product.contract_size),
            "contract_root_unit": product.base,
            "group_description": f"{product.base} Perpetual",
            "contract_expiry_timezone": "",
            "group_short_description": f"{product.base} PERP",
            "risk_managed_by": "MANAGED_BY_VENUE",
            "contract_expiry_type": "PERPETUAL",
            "perpetual_details": {
                "open_interest": "0",
                "funding_rate": num(stats.funding_rate),
                "funding_time": ts(stats.funding_time),
                "max_leverage": num(product.max_leverage),
                "base_asset_uuid": venue.account_id(product.base),
                "underlying_type": "SPOT",
            },
            "contract_display_name": f"{product.base} PERP",
            "time_to_expiry_ms": "0",
            "non_crypto": False,
            "contract_expiry_name": "",
            "twenty_four_by_seven": True,
        }
    return out


def cfm_details_json(product: Product, stats: ProductStats, venue: SimVenue) -> dict[str, Any]:
    """A US perpetual-style future as Advanced Trade lists it: EXPIRING (far out) yet with
    a ``funding_interval`` and ``funding_rate``, and a PERP display name. ``perpetual_details``
    carries the leverage cap as on the INTX listing (the simulator's margin is per position)."""
    expiry = cfm_expiry(product)
    code = product.symbol.split("-")[0]
    interval = venue.core.config.funding_interval_seconds
    left_ms = max(0, int((expiry - venue.core.now).total_seconds() * 1000))
    return {
        "venue": "cde",
        "contract_code": code,
        "contract_expiry": ts(expiry),
        "contract_size": num(product.contract_size),
        "contract_root_unit": product.base,
        "group_description": f"{product.base} Perpetual-Style Futures",
        "contract_expiry_timezone": "UTC",
        "group_short_description": f"{product.base} PERP",
        "risk_managed_by": "MANAGED_BY_FCM",
        "contract_expiry_type": "EXPIRING",
        "perpetual_details": {
            "open_interest": "0",
            "funding_rate": num(stats.funding_rate),
            "funding_time": ts(stats.funding_time),
            "max_leverage": num(product.max_leverage),
            "base_asset_uuid": "",
            "underlying_type": "SPOT",
        },
        "contract_display_name": f"{product.base} PERP",
        "time_to_expiry_ms": str(left_ms),
        "non_crypto": False,
        "contract_expiry_name": expiry.strftime("%d %b %Y").upper(),
        "twenty_four_by_seven": True,
        "open_interest": "0",
        "funding_rate": num(stats.funding_rate),
        "funding_time": ts(stats.funding_time),
        "funding_interval": f"{num(Decimal(repr(interval)))}s",
        "index_price": num(stats.mid),
        "display_name": f"{product.base} PERP",
        "futures_asset_type": "FUTURES_ASSET_TYPE_CRYPTO",
        "intraday_margin_rate": _margin_rates(product, INTRADAY),
        "overnight_margin_rate": _margin_rates(product, OVERNIGHT),
    }


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
        "side": trade.side,
        "exchange": "CBE",
    }


# ----- orders and fills -----------------------------------------------------------------


def order_configuration(view: OrderView) -> dict[str, Any]:
    spec = view.order.spec
    return {spec.config_key: dict(spec.config)}


def order_json(view: OrderView, venue: SimVenue) -> dict[str, Any]:
    order = view.order
    spec = order.spec
    perp = spec.product.is_perpetual
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
        "retail_portfolio_id": venue.intx_portfolio_id if perp and not is_cfm(spec.product)
        else venue.default_portfolio_id,
        "originating_order_id": "",
        "attached_order_id": "",
        "attached_order_configuration": None,
    }


def expiry_type(product: Product) -> str:
    if not product.is_perpetual:
        return "UNKNOWN_CONTRACT_EXPIRY_TYPE"
    return "EXPIRING" if is_cfm(product) else "PERPETUAL"


def ws_order_json(view: OrderView, venue: SimVenue) -> dict[str, Any]:
    """An order in the ``user`` channel."""
    order = view.order
    spec = order.spec
    perp = spec.product.is_perpetual
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
        "retail_portfolio_id": venue.intx_portfolio_id if perp and not is_cfm(spec.product)
        else venue.default_portfolio_id,
        "risk_managed_by": ("MANAGED_BY_FCM" if is_cfm(spec.product) else "MANAGED_BY_VENUE") if perp
        else "UNKNOWN_RISK_MANAGEMENT_TYPE",
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
        "retail_portfolio_id": venue.intx_portfolio_id if product.is_perpetual and not is_cfm(product)
        else venue.default_portfolio_id,
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
        {"name": "Perpetuals", "uuid": venue.intx_portfolio_id, "type": "INTX", "deleted": False},
    ]


def intx_position_json(venue: SimVenue, product: Product, pos: Position, mark: Decimal) -> dict[str, Any]:
    ccy = product.quote
    margin = venue.margin(product.symbol)
    buy, sell = venue.open_order_sizes(product.symbol)
    liq = pos.liquidation_price(product.maintenance_margin_rate)
    unrealized = pos.unrealized_pnl(mark)
    notional = pos.notional(mark)
    return {
        "product_id": product.symbol,
        "product_uuid": venue.make_id("product", product.symbol),
        "portfolio_uuid": venue.intx_portfolio_id,
        "symbol": product.symbol,
        "vwap": amount(pos.entry_price, ccy),
        "entry_vwap": amount(pos.entry_price, ccy),
        "position_side": "POSITION_SIDE_LONG" if pos.size > 0 else "POSITION_SIDE_SHORT",
        "margin_type": "MARGIN_TYPE_ISOLATED",
        "net_size": num(pos.size),
        "buy_order_size": num(buy),
        "sell_order_size": num(sell),
        "im_contribution": num((margin / notional).quantize(Decimal("0.000001")) if notional else ZERO),
        "unrealized_pnl": amount(unrealized, ccy),
        "mark_price": amount(mark, ccy),
        "liquidation_price": amount(product.quantize_price(liq) if liq else ZERO, ccy),
        "leverage": num(pos.leverage.quantize(Decimal("0.01"))),
        "im_notional": amount(margin, ccy),
        "mm_notional": amount(notional * product.maintenance_margin_rate, ccy),
        "position_notional": amount(notional, ccy),
        "aggregated_pnl": amount(pos.realized_pnl + unrealized + pos.funding - pos.fees, ccy),
    }


def ws_perp_position_json(venue: SimVenue, product: Product, pos: Position, mark: Decimal) -> dict[str, Any]:
    full = intx_position_json(venue, product, pos, mark)
    return {
        "product_id": product.symbol,
        "portfolio_uuid": venue.intx_portfolio_id,
        "vwap": full["vwap"]["value"],
        "entry_vwap": full["entry_vwap"]["value"],
        "position_side": "Long" if pos.size > 0 else "Short",
        "margin_type": "Isolated",
        "net_size": full["net_size"],
        "buy_order_size": full["buy_order_size"],
        "sell_order_size": full["sell_order_size"],
        "leverage": full["leverage"],
        "mark_price": full["mark_price"]["value"],
        "liquidation_price": full["liquidation_price"]["value"],
        "im_notional": full["im_notional"]["value"],
        "mm_notional": full["mm_notional"]["value"],
        "position_notional": full["position_notional"]["value"],
        "unrealized_pnl": full["unrealized_pnl"]["value"],
        "aggregated_pnl": full["aggregated_pnl"]["value"],
    }


def intx_summary_json(venue: SimVenue) -> dict[str, Any]:
    s = venue.futures_summary()
    ccy = venue.core.config.cash_currency
    collateral = s["available"] + s["hold"] + s["margin"]
    buffer = s["total"] - s["maintenance"]
    return {
        "portfolios": [{
            "portfolio_uuid": venue.intx_portfolio_id,
            "collateral": num(collateral),
            "position_notional": num(s["notional"]),
            "open_position_notional": num(s["notional"]),
            "pending_fees": "0",
            "borrow": "0",
            "accrued_interest": "0",
            "rolling_debt": "0",
            "portfolio_initial_margin": num(
                (s["margin"] / s["notional"]).quantize(Decimal("0.0001")) if s["notional"] else ZERO
            ),
            "portfolio_im_notional": amount(s["margin"], ccy),
            "portfolio_maintenance_margin": num(
                (s["maintenance"] / s["notional"]).quantize(Decimal("0.0001")) if s["notional"] else ZERO
            ),
            "portfolio_mm_notional": amount(s["maintenance"], ccy),
            "liquidation_percentage": num(
                (s["maintenance"] / s["total"] * 100).quantize(Decimal("0.01")) if s["total"] > 0 else ZERO
            ),
            "liquidation_buffer": num(buffer),
            "margin_type": "MARGIN_TYPE_ISOLATED",
            "margin_flags": "PORTFOLIO_MARGIN_FLAGS_UNSPECIFIED",
            "liquidation_status": "PORTFOLIO_LIQUIDATION_STATUS_NOT_LIQUIDATING",
            "unrealized_pnl": amount(s["unrealized_pnl"], ccy),
            "total_balance": amount(s["total"], ccy),
        }],
        "summary": {
            "unrealized_pnl": amount(s["unrealized_pnl"], ccy),
            "buying_power": amount(s["available"], ccy),
            "total_balance": amount(s["total"], ccy),
            "max_withdrawal_amount": amount(s["available"], ccy),
        },
    }


def intx_balances_json(venue: SimVenue) -> dict[str, Any]:
    s = venue.futures_summary()
    ccy = venue.core.config.cash_currency
    return {
        "portfolio_balances": [{
            "portfolio_uuid": venue.intx_portfolio_id,
            "balances": [{
                "asset": {
                    "asset_id": venue.make_id("asset", ccy),
                    "asset_uuid": venue.make_id("asset", ccy),
                    "asset_name": ccy,
                    "status": "ACTIVE",
                    "collateral_weight": "1",
                    "account_collateral_limit": "",
                    "ecosystem_collateral_limit_breached": False,
                    "asset_icon_url": "",
                    "supported_networks_enabled": True,
                },
                "quantity": num(s["available"] + s["hold"] + s["margin"]),
                "hold": num(s["hold"] + s["margin"]),
                "transfer_hold": "0",
                "collateral_value": num(s["total"]),
                "collateral_weight": "1",
                "max_withdraw_amount": num(s["available"]),
                "loan": "0",
                "loan_collateral_requirement_usd": "0",
                "pledged_quantity": "0",
            }],
            "is_margin_limit_reached": False,
        }],
    }


def _margin_window(venue: SimVenue, kind: str, s: Mapping[str, Decimal]) -> dict[str, str]:
    """A margin window measure at that window's rates: plain strings, in REST as in the
    channel (Get Futures Balance Summary documents it so)."""
    initial, maintenance = venue.core.cfm_requirements(applicable(kind, venue.core.intraday_margin))
    return {
        "margin_window_type": kind,
        "margin_level": "MARGIN_LEVEL_TYPE_BASE",
        "initial_margin": num(initial),
        "maintenance_margin": num(maintenance),
        "liquidation_buffer": num(s["total"] - maintenance),
        "total_hold": num(s["hold"]),
        "futures_buying_power": num(max(ZERO, s["total"] - s["hold"] - initial)),
    }


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
        "liquidation_buffer_percentage": num(
            (buffer / s["total"] * 100).quantize(Decimal("0.01")) if s["total"] > 0 else ZERO
        ),
        "intraday_margin_window_measure": _margin_window(venue, INTRADAY, s),
        "overnight_margin_window_measure": _margin_window(venue, OVERNIGHT, s),
    }
    return out


def fcm_position_json(product: Product, pos: Position, mark: Decimal) -> dict[str, Any]:
    """``number_of_contracts``; the PnL figures count ``contract_size`` base units a contract."""
    return {
        "product_id": product.symbol,
        "expiration_time": ts(cfm_expiry(product)),
        "side": "LONG" if pos.size > 0 else "SHORT",
        "number_of_contracts": num(abs(pos.size)),
        "current_price": num(mark),
        "avg_entry_price": num(pos.entry_price),
        "unrealized_pnl": num(pos.unrealized_pnl(mark)),
        "daily_realized_pnl": num(pos.realized_pnl),
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
