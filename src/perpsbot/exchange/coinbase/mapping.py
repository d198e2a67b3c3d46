"""Coinbase Advanced Trade JSON <-> domain types.

Numbers arrive as strings and become ``Decimal``; times arrive as RFC 3339 strings (or
UNIX seconds for candle starts) and become aware UTC datetimes. A missing or malformed
field raises ``BadResponse`` naming the field's path (``order.filled_size: missing``),
never a ``KeyError``.

Order statuses onto our state machine (``PENDING`` there means "written ahead, not yet
acknowledged", so anything the exchange already holds is at least ``OPEN``):

=====================================  =======================================
Coinbase                               OrderStatus
=====================================  =======================================
PENDING, QUEUED, OPEN, CANCEL_QUEUED   OPEN, or PARTIALLY_FILLED once filled > 0
FILLED                                 FILLED
CANCELLED                              CANCELLED
EXPIRED                                EXPIRED
FAILED                                 REJECTED
=====================================  =======================================
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from perpsbot.domain import (
    ZERO,
    Balance,
    BookLevel,
    Candle,
    DomainError,
    Fill,
    Liquidity,
    MarginRates,
    MarginType,
    OrderBook,
    OrderStatus,
    Position,
    Product,
    ProductType,
    Quote,
    Side,
    Sweep,
    VenueMargin,
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
    OrderRejected,
    OrderSnapshot,
    RateLimited,
    ServerError,
)
from perpsbot.exchange.stream import MarketTrade

# ----- reading fields ---------------------------------------------------------------


class Obj:
    """A JSON object and where it sits in the response, for errors that name the field."""

    __slots__ = ("data", "path")

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise BadResponse(f"{path}: expected an object, got {_kind(data)}")
        self.data = data
        self.path = path

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        value = self.data.get(key)
        return value is not None and value != ""

    def raw(self, key: str) -> Any:
        if key not in self.data or self.data[key] is None:
            raise BadResponse(f"{self._where(key)}: missing")
        return self.data[key]

    def obj(self, key: str) -> Obj:
        return Obj(self.raw(key), self._where(key))

    def opt_obj(self, key: str) -> Obj | None:
        return self.obj(key) if isinstance(self.data.get(key), Mapping) else None

    def objs(self, key: str, *, optional: bool = False) -> list[Obj]:
        if optional and self.data.get(key) is None:
            return []
        value = self.raw(key)
        if not isinstance(value, list):
            raise BadResponse(f"{self._where(key)}: expected a list, got {_kind(value)}")
        return [Obj(item, f"{self._where(key)}[{i}]") for i, item in enumerate(value)]

    def str(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str) or not value:
            raise BadResponse(f"{self._where(key)}: expected a non-empty string, got {_show(value)}")
        return value

    def opt_str(self, key: builtins.str, default: builtins.str | None = None) -> builtins.str | None:
        value = self.data.get(key)
        if value is None or value == "":
            return default
        if not isinstance(value, str):
            raise BadResponse(f"{self._where(key)}: expected a string, got {_show(value)}")
        return value

    def bool(self, key: builtins.str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise BadResponse(f"{self._where(key)}: expected true or false, got {_show(value)}")

    def int(self, key: builtins.str) -> int:
        value = self.raw(key)
        if isinstance(value, bool):
            raise BadResponse(f"{self._where(key)}: expected an integer, got {_show(value)}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise BadResponse(f"{self._where(key)}: expected an integer, got {_show(value)}") from None

    def decimal(self, key: builtins.str) -> Decimal:
        return to_decimal(self.raw(key), self._where(key))

    def opt_decimal(self, key: builtins.str) -> Decimal | None:
        value = self.data.get(key)
        if value is None or value == "":
            return None
        return to_decimal(value, self._where(key))

    def amount(self, key: builtins.str) -> Decimal:
        """A money value: a plain string or ``{"value", "currency"}``."""
        return _amount(self.raw(key), self._where(key))

    def opt_amount(self, key: builtins.str) -> Decimal | None:
        value = self.data.get(key)
        if value is None or value == "":
            return None
        return _amount(value, self._where(key))

    def time(self, key: builtins.str) -> datetime:
        return parse_time(self.raw(key), self._where(key))

    def opt_time(self, key: builtins.str) -> datetime | None:
        value = self.data.get(key)
        if value is None or value == "":
            return None
        return parse_time(value, self._where(key))


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def to_decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise BadResponse(f"{where}: expected a decimal string, got {_show(value)}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise BadResponse(f"{where}: not a decimal: {_show(value)}") from None
    if not number.is_finite():
        raise BadResponse(f"{where}: not a finite decimal: {_show(value)}")
    return number


def _amount(value: Any, where: str) -> Decimal:
    if isinstance(value, Mapping):
        if "value" in value:
            return to_decimal(value["value"], f"{where}.value")
        raise BadResponse(f"{where}: expected an amount object with a value")
    return to_decimal(value, where)


def parse_time(value: Any, where: str) -> datetime:
    """RFC 3339 (any fraction length, 'Z' or an offset) -> aware UTC datetime."""
    if not isinstance(value, str) or not value:
        raise BadResponse(f"{where}: expected an RFC 3339 time, got {_show(value)}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise BadResponse(f"{where}: not an RFC 3339 time: {_show(value)}") from None
    if ts.tzinfo is None:
        raise BadResponse(f"{where}: time without a UTC offset: {_show(value)}")
    return ts.astimezone(UTC)


def parse_unix(value: Any, where: str) -> datetime:
    try:
        seconds = int(str(value))
    except ValueError:
        raise BadResponse(f"{where}: expected UNIX seconds, got {_show(value)}") from None
    return datetime.fromtimestamp(seconds, UTC)


def format_time(ts: datetime) -> str:
    """An aware datetime as RFC 3339 with a 'Z' (what Coinbase's query parameters take)."""
    if ts.tzinfo is None:
        raise ValueError("naive datetime")
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dec_str(value: Decimal) -> str:
    """A Decimal as a plain string (never exponent notation)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def parse_side(value: Any, where: str) -> Side:
    if isinstance(value, str) and value.upper() in ("BUY", "SELL"):
        return Side(value.upper())
    raise BadResponse(f"{where}: expected BUY or SELL, got {_show(value)}")


# ----- candles ------------------------------------------------------------------------

GRANULARITIES: dict[int, str] = {
    60: "ONE_MINUTE",
    300: "FIVE_MINUTE",
    900: "FIFTEEN_MINUTE",
    1800: "THIRTY_MINUTE",
    3600: "ONE_HOUR",
    7200: "TWO_HOUR",
    21600: "SIX_HOUR",
    86400: "ONE_DAY",
}
MAX_CANDLES_PER_REQUEST = 350


class UnsupportedGranularity(InvalidRequest):
    code = "unsupported_granularity"


def granularity_enum(seconds: int) -> str:
    try:
        return GRANULARITIES[seconds]
    except KeyError:
        offered = ", ".join(str(s) for s in GRANULARITIES)
        raise UnsupportedGranularity(
            f"candles: Coinbase has no {seconds} s granularity; offered (seconds): {offered}"
        ) from None


def parse_candle(item: Obj, symbol: str) -> Candle:
    try:
        return Candle(
            symbol=symbol,
            start=parse_unix(item.raw("start"), f"{item.path}.start"),
            open=item.decimal("open"),
            high=item.decimal("high"),
            low=item.decimal("low"),
            close=item.decimal("close"),
            volume=item.decimal("volume"),
        )
    except DomainError as exc:
        raise BadResponse(f"{item.path}: {exc}") from None


def parse_candles(body: Any, symbol: str) -> list[Candle]:
    """``{"candles": [...]}`` (newest first on the wire) -> oldest first."""
    candles = [parse_candle(item, symbol) for item in Obj(body, "").objs("candles", optional=True)]
    return sorted(candles, key=lambda c: c.start)


# ----- products -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CoinbaseProduct:
    """A product as Coinbase lists it, with what the domain ``Product`` leaves out."""

    product_id: str
    product_type: str  # SPOT | FUTURE
    venue: str | None  # CBE (spot), FCM (CFM futures)
    base: str
    quote: str
    base_increment: Decimal
    price_increment: Decimal
    base_min_size: Decimal
    contract_size: Decimal = Decimal(1)
    contract_expiry_type: str | None = None  # PERPETUAL | EXPIRING
    contract_expiry: datetime | None = None
    max_leverage: Decimal | None = None
    funding_rate: Decimal | None = None
    funding_interval: str | None = None  # e.g. "3600s"; CFM perpetual-style futures only
    funding_time: datetime | None = None
    trading_disabled: bool = False
    price: Decimal | None = None
    intraday_margin: MarginRates | None = None  # CFM futures: the listed margin rate per window
    overnight_margin: MarginRates | None = None

    @property
    def is_perpetual(self) -> bool:
        """A perpetual, such as a CFM perpetual-style future: Coinbase lists those as
        EXPIRING (a far expiry, e.g. ``BIP-20DEC30-CDE``) with a ``funding_interval`` and a
        ``funding_rate``; a dated future has neither."""
        if self.product_type != "FUTURE":
            return False
        return self.contract_expiry_type == "PERPETUAL" or self.funding_interval is not None

    @property
    def is_future(self) -> bool:
        return self.product_type == "FUTURE"

    def to_domain(self) -> Product | None:
        """Spot products, perpetuals (CFM perpetual-style ones sized in contracts of
        ``contract_size``) and dated futures (``ProductType.FUTURE``, in contracts too, with
        their ``contract_expiry``); None for another product type."""
        if self.product_type == "SPOT":
            kind = ProductType.SPOT
        elif self.is_perpetual:
            kind = ProductType.PERPETUAL
        elif self.is_future:
            kind = ProductType.FUTURE
            if self.contract_expiry is None:
                raise BadResponse(f"product {self.product_id}: a dated future without a contract_expiry")
        else:
            return None
        leverage = Decimal(1)
        if kind is not ProductType.SPOT and self.max_leverage is not None and self.max_leverage >= 1:
            leverage = self.max_leverage
        try:
            return Product(
                symbol=self.product_id,
                base=self.base,
                quote=self.quote,
                type=kind,
                base_increment=self.base_increment,
                price_increment=self.price_increment,
                min_size=self.base_min_size if self.base_min_size > 0 else self.base_increment,
                max_leverage=leverage,
                contract_size=self.contract_size,
                expiry=self.contract_expiry if kind is not ProductType.SPOT else None,
            )
        except DomainError as exc:
            raise BadResponse(f"product {self.product_id}: {exc}") from None


def parse_product(item: Obj) -> CoinbaseProduct:
    product_id = item.str("product_id")
    product_type = item.str("product_type").upper()
    details = item.opt_obj("future_product_details")
    base = item.opt_str("base_currency_id") or item.opt_str("base_display_symbol")
    quote = item.opt_str("quote_currency_id") or item.opt_str("quote_display_symbol")
    expiry_type = contract_size = expiry = max_leverage = funding = interval = funding_time = None
    intraday = overnight = None
    if details is not None:
        expiry_type = details.opt_str("contract_expiry_type")
        contract_size = details.opt_decimal("contract_size")
        expiry = details.opt_time("contract_expiry")
        base = base or details.opt_str("contract_root_unit")
        perp = details.opt_obj("perpetual_details")
        if perp is not None:
            max_leverage = perp.opt_decimal("max_leverage")
            funding = perp.opt_decimal("funding_rate")
            funding_time = perp.opt_time("funding_time")
        funding = funding if funding is not None else details.opt_decimal("funding_rate")
        funding_time = funding_time or details.opt_time("funding_time")
        interval = details.opt_str("funding_interval")
        intraday = _margin_rates(details, "intraday_margin_rate")
        overnight = _margin_rates(details, "overnight_margin_rate")
    elif product_type == "FUTURE":
        raise BadResponse(f"{item.path}.future_product_details: missing for FUTURE product {product_id}")
    parts = product_id.split("-")
    base = base or parts[0]
    quote = quote or (parts[1] if len(parts) > 1 and product_type == "SPOT" else "USD")
    price_increment = item.opt_decimal("price_increment") or item.decimal("quote_increment")
    return CoinbaseProduct(
        product_id=product_id,
        product_type=product_type,
        venue=item.opt_str("product_venue"),
        base=base,
        quote=quote,
        base_increment=item.decimal("base_increment"),
        price_increment=price_increment,
        base_min_size=item.opt_decimal("base_min_size") or ZERO,
        contract_size=contract_size if contract_size and contract_size > 0 else Decimal(1),
        contract_expiry_type=expiry_type.upper() if expiry_type else None,
        contract_expiry=expiry,
        max_leverage=max_leverage,
        funding_rate=funding,
        funding_interval=interval,
        funding_time=funding_time,
        trading_disabled=item.bool("trading_disabled") or item.bool("is_disabled"),
        price=item.opt_decimal("price"),
        intraday_margin=intraday,
        overnight_margin=overnight,
    )


def _margin_rates(details: Obj, key: str) -> MarginRates | None:
    """``{"long_margin_rate", "short_margin_rate"}``: a share of notional in [0, 1]."""
    rates = details.opt_obj(key)
    if rates is None:
        return None
    long, short = rates.opt_decimal("long_margin_rate"), rates.opt_decimal("short_margin_rate")
    if long is None or short is None:
        return None
    for name, rate in (("long_margin_rate", long), ("short_margin_rate", short)):
        if not 0 <= rate <= 1:
            raise BadResponse(f"{rates.path}.{name}: {rate} is not a share of notional between 0 and 1")
    return MarginRates(long, short)


def parse_products(body: Any) -> list[CoinbaseProduct]:
    return [parse_product(item) for item in Obj(body, "").objs("products", optional=True)]


# ----- market data ------------------------------------------------------------------------


def parse_pricebook_quote(book: Obj, now: datetime | None = None) -> Quote:
    symbol = book.str("product_id")
    bids, asks = book.objs("bids"), book.objs("asks")
    if not bids or not asks:
        raise BadResponse(f"{book.path}: {symbol} has an empty side (bids {len(bids)}, asks {len(asks)})")
    ts = book.opt_time("time") or now
    if ts is None:
        raise BadResponse(f"{book.path}.time: missing")
    try:
        return Quote(symbol, bids[0].decimal("price"), asks[0].decimal("price"), ts)
    except DomainError as exc:
        raise BadResponse(f"{book.path}: {exc}") from None


def parse_best_bid_ask(body: Any, now: datetime | None = None) -> dict[str, Quote]:
    """``{"pricebooks": [{"product_id", "bids": [{"price", "size"}], "asks": [...], "time"}]}``."""
    quotes = {}
    for book in Obj(body, "").objs("pricebooks"):
        quote = parse_pricebook_quote(book, now)
        quotes[quote.symbol] = quote
    return quotes


def parse_product_book(body: Any, now: datetime | None = None) -> OrderBook:
    """``{"pricebook": {"product_id", "bids": [{"price", "size"}], "asks": [...], "time"}}``."""
    book = Obj(body, "").obj("pricebook")

    def levels(key: str) -> tuple[BookLevel, ...]:
        return tuple(BookLevel(level.decimal("price"), level.decimal("size")) for level in book.objs(key))

    ts = book.opt_time("time") or now
    if ts is None:
        raise BadResponse("pricebook.time: missing")
    return OrderBook(book.str("product_id"), ts, levels("bids"), levels("asks"))


def parse_market_trade(item: Obj) -> MarketTrade:
    return MarketTrade(
        trade_id=str(item.raw("trade_id")),
        symbol=item.str("product_id"),
        price=item.decimal("price"),
        size=item.decimal("size"),
        side=parse_side(item.raw("side"), f"{item.path}.side"),
        time=item.time("time"),
    )


# ----- order configurations ---------------------------------------------------------------


class StopDirection(str, enum.Enum):
    UP = "STOP_DIRECTION_STOP_UP"
    DOWN = "STOP_DIRECTION_STOP_DOWN"


@dataclass(frozen=True, slots=True)
class MarketIoc:
    """``market_market_ioc``: exactly one of base_size / quote_size."""

    base_size: Decimal | None = None
    quote_size: Decimal | None = None
    key = "market_market_ioc"

    def __post_init__(self) -> None:
        if (self.base_size is None) == (self.quote_size is None):
            raise ValueError("market_market_ioc takes exactly one of base_size and quote_size")

    def fields(self) -> dict[str, Any]:
        if self.base_size is not None:
            return {"base_size": dec_str(self.base_size)}
        assert self.quote_size is not None
        return {"quote_size": dec_str(self.quote_size)}


@dataclass(frozen=True, slots=True)
class LimitGtc:
    base_size: Decimal
    limit_price: Decimal
    post_only: bool = False
    key = "limit_limit_gtc"

    def fields(self) -> dict[str, Any]:
        return {"base_size": dec_str(self.base_size), "limit_price": dec_str(self.limit_price),
                "post_only": self.post_only}


@dataclass(frozen=True, slots=True)
class LimitGtd:
    base_size: Decimal
    limit_price: Decimal
    end_time: datetime
    post_only: bool = False
    key = "limit_limit_gtd"

    def fields(self) -> dict[str, Any]:
        return {"base_size": dec_str(self.base_size), "limit_price": dec_str(self.limit_price),
                "end_time": format_time(self.end_time), "post_only": self.post_only}


@dataclass(frozen=True, slots=True)
class LimitIoc:
    """``sor_limit_ioc``: a limit IOC (smart order routed)."""

    base_size: Decimal
    limit_price: Decimal
    key = "sor_limit_ioc"

    def fields(self) -> dict[str, Any]:
        return {"base_size": dec_str(self.base_size), "limit_price": dec_str(self.limit_price)}


@dataclass(frozen=True, slots=True)
class LimitFok:
    base_size: Decimal
    limit_price: Decimal
    key = "limit_limit_fok"

    def fields(self) -> dict[str, Any]:
        return {"base_size": dec_str(self.base_size), "limit_price": dec_str(self.limit_price)}


@dataclass(frozen=True, slots=True)
class StopLimitGtc:
    base_size: Decimal
    limit_price: Decimal
    stop_price: Decimal
    stop_direction: StopDirection
    key = "stop_limit_stop_limit_gtc"

    def fields(self) -> dict[str, Any]:
        return {"base_size": dec_str(self.base_size), "limit_price": dec_str(self.limit_price),
                "stop_price": dec_str(self.stop_price), "stop_direction": self.stop_direction.value}


@dataclass(frozen=True, slots=True)
class StopLimitGtd:
    base_size: Decimal
    limit_price: Decimal
    stop_price: Decimal
    stop_direction: StopDirection
    end_time: datetime
    key = "stop_limit_stop_limit_gtd"

    def fields(self) -> dict[str, Any]:
        return {"base_size": dec_str(self.base_size), "limit_price": dec_str(self.limit_price),
                "stop_price": dec_str(self.stop_price), "stop_direction": self.stop_direction.value,
                "end_time": format_time(self.end_time)}


@dataclass(frozen=True, slots=True)
class BracketGtc:
    """``trigger_bracket_gtc``: a take-profit limit with a stop trigger."""

    base_size: Decimal
    limit_price: Decimal
    stop_trigger_price: Decimal
    key = "trigger_bracket_gtc"

    def fields(self) -> dict[str, Any]:
        return {"base_size": dec_str(self.base_size), "limit_price": dec_str(self.limit_price),
                "stop_trigger_price": dec_str(self.stop_trigger_price)}


@dataclass(frozen=True, slots=True)
class BracketGtd:
    base_size: Decimal
    limit_price: Decimal
    stop_trigger_price: Decimal
    end_time: datetime
    key = "trigger_bracket_gtd"

    def fields(self) -> dict[str, Any]:
        return {"base_size": dec_str(self.base_size), "limit_price": dec_str(self.limit_price),
                "stop_trigger_price": dec_str(self.stop_trigger_price), "end_time": format_time(self.end_time)}


OrderConfiguration = (
    MarketIoc | LimitGtc | LimitGtd | LimitIoc | LimitFok | StopLimitGtc | StopLimitGtd | BracketGtc | BracketGtd
)
CONFIGURATIONS: dict[str, type] = {
    cls.key: cls
    for cls in (MarketIoc, LimitGtc, LimitGtd, LimitIoc, LimitFok, StopLimitGtc, StopLimitGtd, BracketGtc, BracketGtd)
}


def encode_configuration(config: OrderConfiguration) -> dict[str, Any]:
    return {config.key: config.fields()}


def decode_configuration(body: Any, where: str = "order_configuration") -> OrderConfiguration:
    """The one known configuration in an ``order_configuration`` object."""
    root = Obj(body, where)
    present = [key for key in root.data if root.data[key] is not None]
    known = [key for key in present if key in CONFIGURATIONS]
    if len(known) != 1:
        raise BadResponse(f"{where}: expected one of {', '.join(CONFIGURATIONS)}; got {present or 'nothing'}")
    key = known[0]
    c = root.obj(key)
    if key == "market_market_ioc":
        return MarketIoc(c.opt_decimal("base_size"), None if c.has("base_size") else c.decimal("quote_size"))
    size, price = c.decimal("base_size"), c.decimal("limit_price")
    if key == "limit_limit_gtc":
        return LimitGtc(size, price, c.bool("post_only"))
    if key == "limit_limit_gtd":
        return LimitGtd(size, price, c.time("end_time"), c.bool("post_only"))
    if key == "sor_limit_ioc":
        return LimitIoc(size, price)
    if key == "limit_limit_fok":
        return LimitFok(size, price)
    if key in ("stop_limit_stop_limit_gtc", "stop_limit_stop_limit_gtd"):
        direction_raw = c.str("stop_direction")
        try:
            direction = StopDirection(direction_raw)
        except ValueError:
            raise BadResponse(f"{c.path}.stop_direction: unknown value {direction_raw!r}") from None
        if key == "stop_limit_stop_limit_gtc":
            return StopLimitGtc(size, price, c.decimal("stop_price"), direction)
        return StopLimitGtd(size, price, c.decimal("stop_price"), direction, c.time("end_time"))
    if key == "trigger_bracket_gtc":
        return BracketGtc(size, price, c.decimal("stop_trigger_price"))
    return BracketGtd(size, price, c.decimal("stop_trigger_price"), c.time("end_time"))


@dataclass(frozen=True, slots=True)
class NewOrder:
    """The body of ``POST /orders`` (and, without the client id, of ``/orders/preview``)."""

    client_order_id: str
    product_id: str
    side: Side
    configuration: OrderConfiguration
    leverage: Decimal | None = None
    margin_type: MarginType | None = None
    reduce_only: bool = False
    retail_portfolio_id: str | None = None
    preview_id: str | None = None

    def body(self, *, preview: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {} if preview else {"client_order_id": self.client_order_id}
        out.update(
            product_id=self.product_id,
            side=self.side.value,
            order_configuration=encode_configuration(self.configuration),
        )
        if self.leverage is not None:
            out["leverage"] = dec_str(self.leverage)
        if self.margin_type is not None:
            out["margin_type"] = self.margin_type.value.upper()  # CROSS | ISOLATED
        if self.reduce_only:
            out["reduce_only"] = True
        if self.retail_portfolio_id:
            out["retail_portfolio_id"] = self.retail_portfolio_id
        if self.preview_id and not preview:
            out["preview_id"] = self.preview_id
        return out


# ----- orders, fills ------------------------------------------------------------------------

_WORKING = frozenset({"PENDING", "QUEUED", "OPEN", "CANCEL_QUEUED", "EDIT_QUEUED"})
_FINAL = {
    "FILLED": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELLED,
    "EXPIRED": OrderStatus.EXPIRED,
    "FAILED": OrderStatus.REJECTED,
}


def order_status(raw: str, filled: Decimal, where: str = "order.status") -> OrderStatus:
    value = raw.upper()
    if value in _WORKING:
        return OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.OPEN
    if value in _FINAL:
        return _FINAL[value]
    raise BadResponse(f"{where}: unknown order status {raw!r}")


@dataclass(frozen=True, slots=True)
class CoinbaseOrder:
    order_id: str
    client_order_id: str
    product_id: str
    side: Side
    status: OrderStatus
    raw_status: str
    configuration: OrderConfiguration | None
    size: Decimal
    filled_size: Decimal
    average_filled_price: Decimal | None
    total_fees: Decimal
    created_at: datetime
    reject_reason: str | None = None
    leverage: Decimal | None = None
    margin_type: str | None = None

    def snapshot(self, fills: Iterable[Fill] = ()) -> OrderSnapshot:
        return OrderSnapshot(
            client_order_id=self.client_order_id,
            exchange_order_id=self.order_id,
            symbol=self.product_id,
            side=self.side,
            status=self.status,
            size=self.size,
            filled_size=self.filled_size,
            average_fill_price=self.average_filled_price,
            fees=self.total_fees,
            created_at=self.created_at,
            reject_reason=self.reject_reason,
            fills=tuple(fills),
        )


_NO_REASON = {"", "REJECT_REASON_UNSPECIFIED", "UNKNOWN_FAILURE_REASON"}


def parse_order(item: Obj) -> CoinbaseOrder:
    filled = item.opt_decimal("filled_size") or ZERO
    raw_status = item.str("status")
    configuration = (
        decode_configuration(item.raw("order_configuration"), f"{item.path}.order_configuration")
        if item.data.get("order_configuration") is not None
        else None
    )
    base_size = getattr(configuration, "base_size", None)
    size = base_size if base_size is not None else filled
    average = item.opt_decimal("average_filled_price")
    reason = item.opt_str("reject_message") or item.opt_str("reject_reason")
    return CoinbaseOrder(
        order_id=item.str("order_id"),
        client_order_id=item.opt_str("client_order_id", "") or "",
        product_id=item.str("product_id"),
        side=parse_side(item.raw("side"), f"{item.path}.side"),
        status=order_status(raw_status, filled, f"{item.path}.status"),
        raw_status=raw_status.upper(),
        configuration=configuration,
        size=size,
        filled_size=filled,
        average_filled_price=average if filled > 0 and average else None,
        total_fees=item.opt_decimal("total_fees") or item.opt_decimal("fee") or ZERO,
        created_at=item.time("created_time"),
        reject_reason=None if reason in _NO_REASON else reason,
        leverage=item.opt_decimal("leverage"),
        margin_type=item.opt_str("margin_type"),
    )


def parse_order_response(body: Any) -> CoinbaseOrder:
    """``GET /orders/historical/{id}``: ``{"order": {...}}``."""
    return parse_order(Obj(body, "").obj("order"))


def parse_fill(item: Obj, client_order_id: str, contract_size: Decimal = Decimal(1)) -> Fill:
    """A fill of an order placed by ``quote_size`` says ``size_in_quote: true``: its
    ``size`` is then the quote amount transacted, and the size is that over the price
    (and the product's ``contract_size``, for futures)."""
    indicator = (item.opt_str("liquidity_indicator") or "").upper()
    trade_type = (item.opt_str("trade_type") or "").upper()
    if "LIQUIDAT" in trade_type:
        liquidity = Liquidity.LIQUIDATION
    elif indicator == "MAKER":
        liquidity = Liquidity.MAKER
    else:
        liquidity = Liquidity.TAKER
    price, size = item.decimal("price"), item.decimal("size")
    if item.bool("size_in_quote"):
        if price <= 0:
            raise BadResponse(f"{item.path}.price: a fill sized in quote needs a positive price, got {price}")
        size = size / (price * contract_size)
    return Fill(
        trade_id=str(item.raw("trade_id")),
        client_order_id=client_order_id,
        symbol=item.str("product_id"),
        side=parse_side(item.raw("side"), f"{item.path}.side"),
        price=price,
        size=size,
        fee=item.opt_decimal("commission") or ZERO,
        liquidity=liquidity,
        ts=item.time("trade_time"),
    )


# ----- accounts and positions -----------------------------------------------------------


def parse_balances(accounts: Iterable[Obj]) -> dict[str, Balance]:
    """Spot accounts -> one Balance per currency (accounts of one currency are summed)."""
    totals: dict[str, tuple[Decimal, Decimal]] = {}
    for account in accounts:
        currency = account.str("currency")
        available = account.amount("available_balance")
        hold = account.opt_amount("hold") or ZERO
        prev = totals.get(currency, (ZERO, ZERO))
        totals[currency] = (prev[0] + available, prev[1] + hold)
    return {ccy: Balance(ccy, a, h) for ccy, (a, h) in totals.items()}


_LONG = ("LONG", "FUTURES_POSITION_SIDE_LONG", "POSITION_SIDE_LONG")
_SHORT = ("SHORT", "FUTURES_POSITION_SIDE_SHORT", "POSITION_SIDE_SHORT")


def _signed(size: Decimal, side: str | None, where: str) -> Decimal:
    if side is None or side.upper() in ("", "UNKNOWN", "FUTURES_POSITION_SIDE_UNSPECIFIED"):
        return size
    if side.upper() in _LONG:
        return abs(size)
    if side.upper() in _SHORT:
        return -abs(size)
    raise BadResponse(f"{where}: unknown position side {side!r}")


def parse_cfm_position(item: Obj, contract_size: Decimal = Decimal(1)) -> Position:
    """``GET /cfm/positions``: ``number_of_contracts`` with ``side`` LONG/SHORT and
    ``avg_entry_price``. The position does not say what a contract is: ``contract_size``
    comes from the product's listing."""
    symbol = item.str("product_id")
    size = _signed(item.decimal("number_of_contracts"), item.opt_str("side"), f"{item.path}.side")
    entry = item.opt_amount("avg_entry_price") or item.opt_amount("entry_vwap") or ZERO
    return Position(symbol, size=size, entry_price=entry if size else ZERO,
                    leverage=item.opt_decimal("leverage") or Decimal(1),
                    contract_size=item.opt_decimal("contract_size") or contract_size)


@dataclass(frozen=True, slots=True)
class PerpSummary:
    """What a derivatives portfolio adds to equity: its balance including unrealized PnL."""

    total_balance: Decimal
    unrealized_pnl: Decimal


def parse_cfm_summary(body: Any) -> PerpSummary:
    """CFM's ``total_usd_balance`` is spot USD (``cbi_usd_balance``) plus the futures
    account (``cfm_usd_balance``): the whole USD a futures position can be margined with."""
    summary = Obj(body, "").obj("balance_summary")
    return PerpSummary(summary.amount("total_usd_balance"), summary.opt_amount("unrealized_pnl") or ZERO)


@dataclass(frozen=True, slots=True)
class MarginWindow:
    """``GET /cfm/intraday/current_margin_window``: the window in force and its end."""

    window: str  # intraday | overnight | ... (``FCM_MARGIN_WINDOW_TYPE_*`` in lower case)
    ends: datetime | None


def parse_margin_window(body: Any) -> MarginWindow:
    window = Obj(body, "").obj("margin_window")
    kind = window.str("margin_window_type")
    if not kind.startswith(_WINDOW_PREFIX) or kind == f"{_WINDOW_PREFIX}UNSPECIFIED":
        raise BadResponse(f"{window.path}.margin_window_type: {kind!r} names no margin window")
    return MarginWindow(kind.removeprefix(_WINDOW_PREFIX).lower(), window.opt_time("end_time"))


def parse_intraday_enrolled(body: Any) -> bool:
    """``GET /cfm/intraday/margin_setting``: whether the account takes the intraday rates
    (``INTRADAY_MARGIN_SETTING_INTRADAY``) or the standard ones all day."""
    return Obj(body, "").str("setting") == "INTRADAY_MARGIN_SETTING_INTRADAY"


_WINDOW_PREFIX = "FCM_MARGIN_WINDOW_TYPE_"


def parse_cfm_margin(
    body: Any, window: MarginWindow, rates: Mapping[str, MarginRates], sweeps: tuple[Sweep, ...] = ()
) -> VenueMargin:
    """The balance summary's margin figures in ``window``: initial and maintenance margin
    from that window's measure (``intraday_margin_window_measure`` or the overnight one),
    the rest from the summary itself. ``rates``: the products' listed rates in the window."""
    summary = Obj(body, "").obj("balance_summary")
    key = "intraday_margin_window_measure" if window.window == "intraday" else "overnight_margin_window_measure"
    measure = summary.opt_obj(key)
    initial = measure.opt_amount("initial_margin") if measure is not None else None
    maintenance = measure.opt_amount("maintenance_margin") if measure is not None else None
    return VenueMargin(
        window=window.window,
        window_ends=window.ends,
        total_balance=summary.amount("total_usd_balance"),
        buying_power=summary.amount("futures_buying_power"),
        initial_margin=initial if initial is not None else summary.amount("initial_margin"),
        maintenance_margin=maintenance if maintenance is not None else summary.amount("liquidation_threshold"),
        liquidation_threshold=summary.amount("liquidation_threshold"),
        liquidation_buffer=summary.amount("liquidation_buffer_amount"),
        liquidation_buffer_pct=summary.opt_decimal("liquidation_buffer_percentage"),
        rates=dict(rates),
        sweeps=sweeps,
    )


def parse_sweeps(body: Any) -> tuple[Sweep, ...]:
    """``GET /cfm/sweeps``: pending and processing sweeps out of the futures account."""
    out = []
    for item in Obj(body, "").objs("sweeps", optional=True):
        sweep_all = item.bool("should_sweep_all")
        out.append(Sweep(
            sweep_id=item.str("id"),
            status=item.opt_str("status") or "UNKNOWN",
            amount=None if sweep_all else item.opt_amount("requested_amount"),
            scheduled_at=item.opt_time("scheduled_time"),
        ))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class FeeTier:
    pricing_tier: str | None
    maker_fee_rate: Decimal
    taker_fee_rate: Decimal
    total_volume: Decimal | None = None


def parse_transaction_summary(body: Any) -> FeeTier:
    root = Obj(body, "")
    tier = root.obj("fee_tier")
    return FeeTier(
        pricing_tier=tier.opt_str("pricing_tier"),
        maker_fee_rate=tier.decimal("maker_fee_rate"),
        taker_fee_rate=tier.decimal("taker_fee_rate"),
        total_volume=root.opt_decimal("total_volume"),
    )


# ----- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorBody:
    error: str
    message: str

    @property
    def text(self) -> str:
        if self.error and self.message and self.error not in self.message:
            return f"{self.error}: {self.message}"
        return self.message or self.error


_PLACEHOLDER_REASONS = frozenset({
    "UNKNOWN_FAILURE_REASON", "UNKNOWN_PREVIEW_FAILURE_REASON", "UNKNOWN_NEW_ORDER_FAILURE_REASON",
    "PREVIEW_FAILURE_REASON_UNSPECIFIED", "REJECT_REASON_UNSPECIFIED",
})


def parse_error_body(raw: Any) -> ErrorBody:
    """Coinbase error bodies are ``{"error", "code", "message", "error_details"}``, the
    create-order kind ``{"error_response": {...}}``, or plain text (an HTTP 401).

    A failed order often says ``"error": "UNKNOWN_FAILURE_REASON"`` with an empty message
    and gives the real reason only in ``preview_failure_reason`` (or ``failure_reason``):
    the first reason that is not such a placeholder is the error."""
    if isinstance(raw, Mapping):
        nested = raw.get("error_response")
        inner = nested if isinstance(nested, Mapping) else raw
        reasons = [str(r) for r in (inner.get("error"), inner.get("preview_failure_reason"),
                                    inner.get("new_order_failure_reason"), inner.get("failure_reason"),
                                    raw.get("failure_reason")) if r]
        real = [r for r in reasons if r.upper() not in _PLACEHOLDER_REASONS]
        error = real[0] if real else (reasons[0] if reasons else "")
        message = str(inner.get("message") or inner.get("error_details") or "")
        return ErrorBody(error, message)
    text = str(raw or "").strip()
    return ErrorBody("", text[:300])


def rejection(body: ErrorBody) -> OrderRejected:
    reason = body.error or "UNKNOWN_FAILURE_REASON"
    text = body.text or reason
    if "INSUFFICIENT_FUND" in reason.upper() or "INSUFFICIENT" in text.upper():
        return InsufficientFunds(reason, f"insufficient funds: {text}")
    return InvalidOrder(reason, f"order rejected: {text}")


def http_error(status: int, raw: Any, what: str, *, order_request: bool = False,
               retry_after: float | None = None) -> ExchangeError:
    """A typed error for a non-2xx answer to ``what`` ("GET /api/v3/brokerage/...")."""
    body = parse_error_body(raw)
    detail = body.text or f"HTTP {status}"
    message = f"{what}: HTTP {status} {detail}"
    if status in (401, 403):
        return AuthenticationError(message)
    if status == 404:
        return OrderNotFound(message) if "/orders" in what else NotFound(message)
    if status == 429:
        return RateLimited(message, retry_after)
    if status >= 500:
        return ServerError(message)
    if status in (400, 409, 422):
        if order_request:
            return rejection(body)
        return InvalidRequest(message)
    return ExchangeError(message)


# ----- websocket messages ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeartbeatEvent:
    counter: int
    ts: datetime


@dataclass(frozen=True, slots=True)
class TickerEvent:
    symbol: str
    price: Decimal
    best_bid: Decimal | None
    best_ask: Decimal | None
    best_bid_size: Decimal | None
    best_ask_size: Decimal | None
    volume_24h: Decimal | None
    ts: datetime

    def quote(self) -> Quote | None:
        if self.best_bid is None or self.best_ask is None:
            return None
        return Quote(self.symbol, self.best_bid, self.best_ask, self.ts, self.price)


@dataclass(frozen=True, slots=True)
class L2Level:
    side: str  # "bid" | "offer"
    price: Decimal
    size: Decimal
    ts: datetime | None = None


@dataclass(frozen=True, slots=True)
class L2Snapshot:
    symbol: str
    bids: tuple[L2Level, ...]
    asks: tuple[L2Level, ...]
    ts: datetime


@dataclass(frozen=True, slots=True)
class L2Update:
    symbol: str
    changes: tuple[L2Level, ...]  # size 0 removes the level
    ts: datetime


@dataclass(frozen=True, slots=True)
class TradeEvent:
    trade: MarketTrade
    ts: datetime


@dataclass(frozen=True, slots=True)
class CandleEvent:
    candle: Candle
    ts: datetime


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    status: OrderStatus
    raw_status: str
    filled_size: Decimal
    leaves_size: Decimal | None
    average_price: Decimal | None
    fees: Decimal
    ts: datetime
    snapshot: bool = False


@dataclass(frozen=True, slots=True)
class FuturesBalanceEvent:
    values: dict[str, Decimal]
    ts: datetime


@dataclass(frozen=True, slots=True)
class SubscriptionsEvent:
    subscriptions: dict[str, tuple[str, ...]]
    ts: datetime


WsEvent = (
    HeartbeatEvent | TickerEvent | L2Snapshot | L2Update | TradeEvent | CandleEvent | OrderUpdate
    | FuturesBalanceEvent | SubscriptionsEvent
)


@dataclass(frozen=True, slots=True)
class Envelope:
    channel: str
    client_id: str
    ts: datetime
    sequence_num: int
    events: tuple[WsEvent, ...] = field(default_factory=tuple)


def _l2_level(item: Obj) -> L2Level:
    side = item.str("side").lower()
    if side not in ("bid", "offer"):
        raise BadResponse(f"{item.path}.side: expected bid or offer, got {side!r}")
    return L2Level(side, item.decimal("price_level"), item.decimal("new_quantity"), item.opt_time("event_time"))


def _ws_events(channel: str, event: Obj, ts: datetime) -> list[WsEvent]:
    kind = (event.opt_str("type") or "").lower()
    if channel == "heartbeats":
        return [HeartbeatEvent(event.int("heartbeat_counter"), ts)]
    if channel in ("ticker", "ticker_batch"):
        return [
            TickerEvent(
                symbol=t.str("product_id"), price=t.decimal("price"),
                best_bid=t.opt_decimal("best_bid"), best_ask=t.opt_decimal("best_ask"),
                best_bid_size=t.opt_decimal("best_bid_quantity"), best_ask_size=t.opt_decimal("best_ask_quantity"),
                volume_24h=t.opt_decimal("volume_24_h"), ts=ts,
            )
            for t in event.objs("tickers")
        ]
    if channel == "l2_data":
        symbol = event.str("product_id")
        levels = tuple(_l2_level(u) for u in event.objs("updates"))
        if kind == "snapshot":
            return [L2Snapshot(symbol, tuple(lv for lv in levels if lv.side == "bid"),
                               tuple(lv for lv in levels if lv.side == "offer"), ts)]
        if kind == "update":
            return [L2Update(symbol, levels, ts)]
        raise BadResponse(f"{event.path}.type: expected snapshot or update, got {kind!r}")
    if channel == "market_trades":
        return [TradeEvent(parse_market_trade(t), ts) for t in event.objs("trades")]
    if channel == "candles":
        return [CandleEvent(parse_candle(c, c.str("product_id")), ts) for c in event.objs("candles")]
    if channel == "user":
        out: list[WsEvent] = []
        for o in event.objs("orders", optional=True):
            filled = o.opt_decimal("cumulative_quantity") or ZERO
            raw_status = o.str("status")
            avg = o.opt_decimal("avg_price")
            out.append(OrderUpdate(
                order_id=o.str("order_id"),
                client_order_id=o.opt_str("client_order_id", "") or "",
                symbol=o.str("product_id"),
                side=parse_side(o.raw("order_side"), f"{o.path}.order_side"),
                status=order_status(raw_status, filled, f"{o.path}.status"),
                raw_status=raw_status.upper(),
                filled_size=filled,
                leaves_size=o.opt_decimal("leaves_quantity"),
                average_price=avg if filled > 0 and avg else None,
                fees=o.opt_decimal("total_fees") or ZERO,
                ts=ts,
                snapshot=kind == "snapshot",
            ))
        return out
    if channel == "futures_balance_summary":
        summary = event.obj("fcm_balance_summary")
        values = {}
        for key, value in summary.data.items():
            if isinstance(value, str | int) and not isinstance(value, bool):
                try:
                    values[key] = to_decimal(value, f"{summary.path}.{key}")
                except BadResponse:
                    continue
        return [FuturesBalanceEvent(values, ts)]
    if channel == "subscriptions":
        subs = event.obj("subscriptions")
        return [SubscriptionsEvent(
            {str(k): tuple(str(p) for p in (v or [])) for k, v in subs.data.items()}, ts)]
    return []


def parse_envelope(message: Any) -> Envelope:
    """A websocket message in the documented envelope:
    ``{"channel", "client_id", "timestamp", "sequence_num", "events": [...]}``."""
    root = Obj(message, "message")
    channel = root.str("channel")
    ts = root.time("timestamp")
    sequence = root.int("sequence_num")
    events: list[WsEvent] = []
    for event in root.objs("events", optional=True):
        events.extend(_ws_events(channel, event, ts))
    return Envelope(channel, root.opt_str("client_id", "") or "", ts, sequence, tuple(events))
