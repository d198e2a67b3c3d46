"""``SimVenue``: Coinbase order semantics on top of ``SimCore``, for the simulator server.

The core knows market and limit orders (GTC / IOC / FOK) keyed by client order id.
The venue adds what Coinbase's API has and the core does not:

* Coinbase ``order_id`` UUIDs, and the ``client_order_id`` rule: a known id returns the
  existing order, never a second one (a *failed* attempt creates no order, so its id
  may be used again);
* order configurations: ``market_market_ioc`` (``base_size`` or ``quote_size``; a buy's
  ``quote_size`` includes the fee, as Coinbase's ``size_inclusive_of_fees``),
  ``sor_limit_ioc``, ``limit_limit_gtc`` / ``_gtd`` / ``_fok`` (``post_only``,
  ``quote_size`` converted at the limit price), ``stop_limit_stop_limit_gtc`` /
  ``_gtd`` and ``trigger_bracket_gtc`` / ``_gtd``. Other configurations, and any
  ``attached_order_configuration`` (not modelled: refused, never dropped), fail with
  ``UNSUPPORTED_ORDER_CONFIGURATION``;
* GTD expiry: the core is brought to the expiry instant, the order cancelled and
  reported ``EXPIRED``;
* a stop already on the wrong side of the last trade fails as Coinbase answers it (the
  reason only in ``preview_failure_reason``);
* stop-limit orders are held here (``trigger_status`` ``STOP_PENDING``) until the last
  trade price reaches the stop (``STOP_DIRECTION_STOP_UP``: >= stop, ``_DOWN``: <=),
  then a GTC limit order goes to the core. Nothing is put on hold before the trigger;
  insufficient funds at the trigger fail the order;
* trigger brackets: a GTC limit (take profit) rests in the core; when the last trade
  reaches ``stop_trigger_price`` (a SELL bracket: <=, a BUY bracket: >=) the limit is
  cancelled and the remainder sent as a market order;
* edits of open limit orders (price and/or total size): the resting core order is
  replaced, the ``order_id`` stays;
* the market's trades, sampled from the synthetic market on every ``sync``.

Triggers are checked on every ``sync`` (the server's 100 ms ticker and every request),
not on every core tick.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from perpsbot.domain import ZERO, AccountSnapshot, Fill, OrderStatus, OrderType, Position, Product, Side, TimeInForce
from perpsbot.exchange.port import OrderRejected, OrderRequest, OrderSnapshot
from perpsbot.exchange.sim.engine import SimCore
from perpsbot.exchange.sim.margin import maintenance_rate
from perpsbot.exchange.sim.products import is_cfm, is_gateway
from perpsbot.exchange.stream import MarketTrade

# order_configuration key -> (order type, Coinbase time in force)
CONFIGURATIONS: dict[str, tuple[str, str]] = {
    "market_market_ioc": ("MARKET", "IMMEDIATE_OR_CANCEL"),
    "sor_limit_ioc": ("LIMIT", "IMMEDIATE_OR_CANCEL"),
    "limit_limit_gtc": ("LIMIT", "GOOD_UNTIL_CANCELLED"),
    "limit_limit_gtd": ("LIMIT", "GOOD_UNTIL_DATE_TIME"),
    "limit_limit_fok": ("LIMIT", "FILL_OR_KILL"),
    "stop_limit_stop_limit_gtc": ("STOP_LIMIT", "GOOD_UNTIL_CANCELLED"),
    "stop_limit_stop_limit_gtd": ("STOP_LIMIT", "GOOD_UNTIL_DATE_TIME"),
    "trigger_bracket_gtc": ("BRACKET", "GOOD_UNTIL_CANCELLED"),
    "trigger_bracket_gtd": ("BRACKET", "GOOD_UNTIL_DATE_TIME"),
}
STOP_UP = "STOP_DIRECTION_STOP_UP"
STOP_DOWN = "STOP_DIRECTION_STOP_DOWN"
LIVE_STATUSES = frozenset({"OPEN", "PENDING"})
TERMINAL_STATUSES = frozenset({"FILLED", "CANCELLED", "EXPIRED", "FAILED"})

# the core's reject reasons -> (Coinbase error, preview failure reason)
CORE_REJECTS: dict[str, tuple[str, str]] = {
    "insufficient_funds": ("INSUFFICIENT_FUND", "PREVIEW_INSUFFICIENT_FUND"),
    "invalid_size": ("INVALID_SIZE_PRECISION", "PREVIEW_INVALID_SIZE_PRECISION"),
    "invalid_price": ("INVALID_PRICE_PRECISION", "PREVIEW_INVALID_PRICE_PRECISION"),
    "invalid_leverage": ("INVALID_REQUEST", "PREVIEW_INVALID_LEVERAGE"),
    "leverage_too_high": ("INVALID_REQUEST", "PREVIEW_INVALID_LEVERAGE"),
    "reduce_only_would_increase": ("INVALID_REQUEST", "PREVIEW_INVALID_REDUCE_ONLY"),
    "unknown_product": ("INVALID_PRODUCT_ID", "PREVIEW_INVALID_PRODUCT_ID"),
    "product_expired": ("ORDER_ENTRY_DISABLED", "UNKNOWN_PREVIEW_FAILURE_REASON"),
}


class ApiError(Exception):
    """A request the API refuses outright (answered with an HTTP error status)."""

    def __init__(self, status: int, error: str, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.details = details if details is not None else message


class OrderFailure(Exception):
    """An order Coinbase would answer with ``success: false`` and an ``error_response``."""

    def __init__(self, error: str, message: str, preview_reason: str, details: str = "") -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.preview_reason = preview_reason
        self.details = details or message


def _failure_from_core(exc: OrderRejected) -> OrderFailure:
    error, preview = CORE_REJECTS.get(exc.reason, ("UNKNOWN_FAILURE_REASON", "UNKNOWN_PREVIEW_FAILURE_REASON"))
    return OrderFailure(error, str(exc), preview, f"{exc.reason}: {exc}")


def parse_decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ApiError(400, "INVALID_ARGUMENT", f"{what} must be a decimal string")
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation:
        raise ApiError(400, "INVALID_ARGUMENT", f"{what} {value!r} is not a number") from None
    if not result.is_finite():
        raise ApiError(400, "INVALID_ARGUMENT", f"{what} {value!r} is not a finite number")
    return result


def parse_time(value: Any, what: str) -> datetime:
    """RFC 3339 (``2021-05-31T09:59:59.000Z``) or Unix seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "INVALID_ARGUMENT", f"{what} must be an RFC 3339 time")
    text = value.strip()
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), UTC)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        if "." in text:  # Python wants at most 6 fractional digits
            head, _, tail = text.partition(".")
            digits = "".join(ch for ch in tail if ch.isdigit())
            text = f"{head}.{digits[:6]}{tail[len(digits):]}"
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise ApiError(400, "INVALID_ARGUMENT", f"{what} {value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(slots=True)
class OrderSpec:
    """A parsed create-order request."""

    symbol: str
    product: Product
    side: Side
    config_key: str
    kind: str
    tif: str
    config: dict[str, Any]
    size: Decimal
    quote_size: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_direction: str | None = None
    end_time: datetime | None = None
    post_only: bool = False
    reduce_only: bool = False
    leverage: Decimal = Decimal(1)
    margin_type: str | None = None


@dataclass(slots=True)
class VenueOrder:
    order_id: str
    client_order_id: str
    spec: OrderSpec
    created_at: datetime
    seq: int
    legs: list[str] = field(default_factory=list)
    state: str | None = None  # None: follow the core legs; else CANCELLED / EXPIRED / FAILED
    triggered: bool = False
    reject_reason: str = ""
    reject_message: str = ""
    cancel_message: str = ""
    is_liquidation: bool = False
    edit_history: list[dict[str, Any]] = field(default_factory=list)
    last_signature: tuple[Any, ...] | None = None

    @property
    def symbol(self) -> str:
        return self.spec.symbol

    @property
    def side(self) -> Side:
        return self.spec.side

    @property
    def has_trigger(self) -> bool:
        return self.spec.kind in ("STOP_LIMIT", "BRACKET")


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order as the API reports it, aggregated over its core legs."""

    order: VenueOrder
    status: str
    filled_size: Decimal
    average_price: Decimal | None
    fees: Decimal
    filled_value: Decimal
    fills: tuple[Fill, ...]
    trigger_status: str
    outstanding_hold: Decimal

    @property
    def number_of_fills(self) -> int:
        return len(self.fills)

    @property
    def last_fill_time(self) -> datetime | None:
        return self.fills[-1].ts if self.fills else None

    @property
    def leaves(self) -> Decimal:
        if self.status in LIVE_STATUSES:
            return max(ZERO, self.order.spec.size - self.filled_size)
        return ZERO

    def signature(self) -> tuple[Any, ...]:
        spec = self.order.spec
        return (self.status, self.filled_size, self.trigger_status, spec.size, spec.limit_price, len(self.fills))


@dataclass(frozen=True, slots=True)
class ProductStats:
    price: Decimal
    mid: Decimal
    bid: Decimal
    ask: Decimal
    volume_24h: Decimal
    open_24h: Decimal
    low_24h: Decimal
    high_24h: Decimal
    funding_rate: Decimal | None
    funding_time: datetime | None

    @property
    def change_pct_24h(self) -> Decimal:
        if not self.open_24h:
            return ZERO
        return (self.price - self.open_24h) / self.open_24h * 100


def _quantize_down(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_DOWN) * step


class SimVenue:
    """The simulator core plus Coinbase order semantics, market trades and ids."""

    def __init__(self, core: SimCore, *, seed: int | None = None, trade_history: int = 1000) -> None:
        self.core = core
        # The gateway's instruments, and the core orders another front placed: not this front's to show.
        self._listed = [p for p in core.products() if not is_gateway(p)]
        self.elsewhere: set[str] = set()
        self._sampled = [p.symbol for p in core.products()]  # market trades are sampled for every front
        self.seed = core.config.seed if seed is None else seed
        self.user_id = self.make_id("user")
        self.default_portfolio_id = self.make_id("portfolio", "default")
        self.consumer_portfolio_id = self.make_id("portfolio", "consumer")  # a second, user-made portfolio
        self._orders: dict[str, VenueOrder] = {}
        self._by_coid: dict[str, VenueOrder] = {}
        self._by_leg: dict[str, VenueOrder] = {}
        self._order_seq = 0
        self._fills: list[tuple[Fill, str]] = []
        self._fill_cursor = 0
        self._watch: dict[str, VenueOrder] = {}  # orders not yet reported in a terminal state
        self._dirty: set[str] = set()
        self._trades: dict[str, deque[MarketTrade]] = {s: deque(maxlen=trade_history) for s in self._sampled}
        self._new_trades: dict[str, list[MarketTrade]] = {s: [] for s in self._sampled}
        self._last_volume: dict[str, Decimal] = {}
        self._trade_seq: dict[str, int] = {s: 0 for s in self._sampled}
        self._stats: dict[str, tuple[int, ProductStats]] = {}
        self.fills_changed = False  # set when fills arrive; the server clears it

    # ----- ids -------------------------------------------------------------------------

    def make_id(self, *parts: str) -> str:
        digest = hashlib.sha256("|".join([str(self.seed), *parts]).encode()).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    def account_id(self, currency: str) -> str:
        return self.make_id("account", currency)

    def _next_order_id(self) -> tuple[str, int]:
        self._order_seq += 1
        return self.make_id("order", self.core.run_tag, str(self._order_seq)), self._order_seq

    # ----- products and market data ------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        return [p.symbol for p in self._listed]

    def products(self) -> list[Product]:
        """The products this front lists (the core's, but the gateway's instruments)."""
        return list(self._listed)

    def product(self, symbol: str) -> Product:
        for p in self._listed:
            if p.symbol == symbol:
                return p
        raise ApiError(404, "NOT_FOUND", f"ProductID {symbol} could not be found")

    @property
    def currencies(self) -> list[str]:
        """The cash currency, then every currency a spot product trades (perpetuals hold none)."""
        out = [self.core.config.cash_currency]
        for p in self.core.products():
            for ccy in ([] if p.is_derivative else [p.base]) + [p.quote]:
                if ccy not in out:
                    out.append(ccy)
        for ccy in self.core.account().balances:
            if ccy not in out:
                out.append(ccy)
        return out

    def stats(self, symbol: str) -> ProductStats:
        product = self.product(symbol)
        model = self.core.market(symbol)
        key = model.tick
        cached = self._stats.get(symbol)
        if cached is not None and cached[0] == key:
            return cached[1]
        quote = model.quote()
        candles = model.candles(60, 1440)
        price = model.last_trade
        opening = candles[0].open if candles else price
        low = min([c.low for c in candles] + [price])
        high = max([c.high for c in candles] + [price])
        volume = sum((c.volume for c in candles), ZERO)
        rate = funding_time = None
        if product.is_perpetual:
            interval = self.core.config.funding_interval_seconds
            if model.funding:
                rate = model.funding[-1].rate
            else:
                rate = Decimal(model.premium * interval / 28_800).quantize(Decimal("1e-12"))
            now_s = model.time.timestamp()
            funding_time = datetime.fromtimestamp((now_s // interval + 1) * interval, UTC)
        stats = ProductStats(price, model.mid, quote.bid, quote.ask, volume, opening, low, high, rate, funding_time)
        self._stats[symbol] = (key, stats)
        return stats

    def market_trades(self, symbol: str, limit: int, start: datetime | None = None,
                      end: datetime | None = None) -> list[MarketTrade]:
        """Newest first."""
        self.product(symbol)
        out = []
        for trade in reversed(self._trades[symbol]):
            if end is not None and trade.time >= end:
                continue
            if start is not None and trade.time < start:
                break
            out.append(trade)
            if len(out) >= limit:
                break
        return out

    def drain_new_trades(self) -> dict[str, list[MarketTrade]]:
        out = {s: t for s, t in self._new_trades.items() if t}
        self._new_trades = {s: [] for s in self._sampled}
        return out

    # ----- time ------------------------------------------------------------------------

    def sync(self, now: datetime) -> None:
        """Bring the core to ``now``: expire GTD orders at their end time, then match,
        sample market trades, take in fills and fire triggers."""
        if not self.core.started:
            self.core.advance_to(now)
            for symbol in self._sampled:
                self._last_volume[symbol] = self.core.market(symbol).total_volume
        due = sorted(
            (o.spec.end_time, o.seq, o) for o in list(self._watch.values())
            if o.spec.end_time is not None and o.spec.end_time <= now and o.state is None
        )
        for end_time, _, order in due:
            self.core.advance_to(end_time)
            self._after_advance()
            if self.view(order).status in LIVE_STATUSES:
                self._expire(order, max(end_time, self.core.now))
        self.core.advance_to(now)
        self._after_advance()

    def _after_advance(self) -> None:
        self._sample_trades()
        self._ingest_fills()
        for order in list(self._watch.values()):
            if order.has_trigger and not order.triggered and order.state is None:
                self._check_trigger(order)

    def _sample_trades(self) -> None:
        for symbol in self._sampled:
            model = self.core.market(symbol)
            volume = model.total_volume
            last = self._last_volume.get(symbol)
            self._last_volume[symbol] = volume
            if last is None or volume <= last:
                continue
            price = model.last_trade
            bid, ask = model.best_ticks()
            aggressor_buy = model.last_trade_ticks >= (bid + ask) / 2
            self._trade_seq[symbol] += 1
            trade = MarketTrade(
                trade_id=f"{self._trade_seq[symbol]}",
                symbol=symbol,
                price=price,
                size=volume - last,
                side=Side.SELL if aggressor_buy else Side.BUY,  # the maker's, as Coinbase reports it
                time=model.time,
            )
            self._trades[symbol].append(trade)
            self._new_trades[symbol].append(trade)

    def _ingest_fills(self) -> None:
        fills, self._fill_cursor = self.core.fills_since(self._fill_cursor)
        for fill in fills:
            if fill.client_order_id in self.elsewhere:
                continue  # an order of the gateway front
            order = self._by_leg.get(fill.client_order_id)
            if order is None:  # an order the core made itself: a liquidation
                order = self._adopt_liquidation(fill)
            self._fills.append((fill, order.order_id))
            self._dirty.add(order.order_id)
            self.fills_changed = True

    def _adopt_liquidation(self, fill: Fill) -> VenueOrder:
        snap = self.core.get_order(fill.client_order_id)
        product = self.product(snap.symbol)
        spec = OrderSpec(
            symbol=snap.symbol, product=product, side=snap.side, config_key="market_market_ioc", kind="MARKET",
            tif="IMMEDIATE_OR_CANCEL", config={"base_size": str(snap.size)}, size=snap.size, reduce_only=True,
        )
        order_id, seq = self._next_order_id()
        order = VenueOrder(order_id, snap.client_order_id, spec, snap.created_at, seq, legs=[snap.client_order_id],
                           is_liquidation=True)
        self._index(order)
        return order

    # ----- parsing ---------------------------------------------------------------------

    def _product_for_order(self, product_id: Any) -> Product:
        if not isinstance(product_id, str) or not product_id:
            raise ApiError(400, "INVALID_ARGUMENT", "product_id is required")
        try:
            return self.product(product_id)
        except ApiError:
            raise OrderFailure("INVALID_PRODUCT_ID", f"product {product_id} is not listed",
                               "PREVIEW_INVALID_PRODUCT_ID") from None

    def _book_size_for_quote(self, product: Product, side: Side, quote_size: Decimal) -> Decimal:
        """The base size whose cost walking the book is closest to ``quote_size`` without going over.
        A buy's ``quote_size`` includes the taker fee (Coinbase's ``size_inclusive_of_fees``):
        what it spends on the asset is ``quote_size / (1 + fee rate)``."""
        book = self.core.book(product.symbol)
        levels = book.asks if side is Side.BUY else book.bids
        budget = quote_size / (1 + self.core.config.taker_fee_bps / 10_000) if side is Side.BUY else quote_size
        left, base = budget, ZERO
        for level in levels:
            cost = level.price * level.size * product.contract_size
            if cost >= left:
                base += left / (level.price * product.contract_size)
                left = ZERO
                break
            base += level.size
            left -= cost
        return _quantize_down(base, product.base_increment)

    def parse_order(self, body: Mapping[str, Any], now: datetime, *, need_client_id: bool = True) -> OrderSpec:
        product = self._product_for_order(body.get("product_id"))
        side_text = body.get("side")
        if not isinstance(side_text, str) or side_text.upper() not in ("BUY", "SELL"):
            raise OrderFailure("INVALID_SIDE", f"side must be BUY or SELL, got {side_text!r}", "PREVIEW_INVALID_SIDE")
        side = Side(side_text.upper())
        configuration = body.get("order_configuration")
        if not isinstance(configuration, Mapping):
            raise ApiError(400, "INVALID_ARGUMENT", "order_configuration is required")
        if body.get("attached_order_configuration") is not None:
            raise OrderFailure("UNSUPPORTED_ORDER_CONFIGURATION",
                               "attached_order_configuration (a take-profit / stop-loss attached to the order) "
                               "is not supported by the simulator; place it as its own order once this one fills",
                               "PREVIEW_INVALID_ORDER_CONFIG")
        keys = [k for k, v in configuration.items() if v is not None]
        if len(keys) != 1:
            raise ApiError(400, "INVALID_ARGUMENT", "order_configuration must hold exactly one configuration")
        key = keys[0]
        if key not in CONFIGURATIONS:
            raise OrderFailure("UNSUPPORTED_ORDER_CONFIGURATION",
                               f"order configuration {key} is not supported by the simulator",
                               "PREVIEW_INVALID_ORDER_CONFIG")
        cfg = configuration[key]
        if not isinstance(cfg, Mapping):
            raise ApiError(400, "INVALID_ARGUMENT", f"{key} must be an object")
        kind, tif = CONFIGURATIONS[key]

        def dec(name: str) -> Decimal | None:
            value = cfg.get(name)
            return None if value is None or value == "" else parse_decimal(value, name)

        base, quote = dec("base_size"), dec("quote_size")
        limit = dec("limit_price")
        echo: dict[str, Any] = {}
        for name in ("quote_size", "base_size", "limit_price", "stop_price", "stop_trigger_price"):
            if cfg.get(name) not in (None, ""):
                echo[name] = str(cfg[name])
        if kind != "MARKET":
            if limit is None:
                raise ApiError(400, "INVALID_ARGUMENT", f"{key} needs limit_price")
            if limit <= 0:
                raise OrderFailure(
                    "INVALID_LIMIT_PRICE", f"limit price {limit} must be > 0", "PREVIEW_INVALID_LIMIT_PRICE"
                )
            if limit % product.price_increment != 0:
                raise OrderFailure("INVALID_PRICE_PRECISION",
                                   f"limit price {limit} is not a multiple of {product.price_increment}",
                                   "PREVIEW_INVALID_PRICE_PRECISION")
        if (base is None) == (quote is None) or (quote is not None and kind in ("STOP_LIMIT", "BRACKET")):
            needs = "base_size" if kind in ("STOP_LIMIT", "BRACKET") else "exactly one of base_size and quote_size"
            raise ApiError(400, "INVALID_ARGUMENT", f"{key} needs {needs}")
        if base is not None:
            if base <= 0:
                raise OrderFailure("INVALID_REQUEST", f"base_size {base} must be > 0",
                                   "PREVIEW_INVALID_BASE_SIZE_TOO_SMALL")
            if base % product.base_increment != 0:
                raise OrderFailure("INVALID_SIZE_PRECISION",
                                   f"base_size {base} is not a multiple of {product.base_increment}",
                                   "PREVIEW_INVALID_SIZE_PRECISION")
            size = base
        else:
            assert quote is not None
            if quote <= 0:
                raise OrderFailure("INVALID_REQUEST", f"quote_size {quote} must be > 0",
                                   "PREVIEW_INVALID_QUOTE_SIZE_TOO_SMALL")
            if kind == "MARKET":
                size = self._book_size_for_quote(product, side, quote)
            else:
                assert limit is not None
                size = _quantize_down(quote / (limit * product.contract_size), product.base_increment)
        if size < product.min_size:
            raise OrderFailure("INVALID_REQUEST", f"size {size} is below the minimum {product.min_size}",
                               "PREVIEW_INVALID_BASE_SIZE_TOO_SMALL")
        spec = OrderSpec(symbol=product.symbol, product=product, side=side, config_key=key, kind=kind, tif=tif,
                         config=echo, size=size, quote_size=quote, limit_price=limit)
        if kind == "STOP_LIMIT":
            spec.stop_price = dec("stop_price")
            direction = cfg.get("stop_direction")
            if spec.stop_price is None or spec.stop_price <= 0 or spec.stop_price % product.price_increment != 0:
                raise OrderFailure(
                    "INVALID_REQUEST",
                    f"stop_price must be a positive multiple of {product.price_increment}",
                    "PREVIEW_INVALID_STOP_PRICE",
                )
            if direction not in (STOP_UP, STOP_DOWN):
                raise OrderFailure("INVALID_REQUEST", f"stop_direction must be {STOP_UP} or {STOP_DOWN}",
                                   "PREVIEW_INVALID_STOP_PRICE")
            spec.stop_direction = direction
            echo["stop_direction"] = direction
            self._check_stop_side(spec)
        if kind == "BRACKET":
            spec.stop_price = dec("stop_trigger_price")
            assert limit is not None
            if spec.stop_price is None or spec.stop_price <= 0 or spec.stop_price % product.price_increment != 0:
                raise OrderFailure("INVALID_REQUEST",
                                   f"stop_trigger_price must be a positive multiple of {product.price_increment}",
                                   "PREVIEW_INVALID_STOP_PRICE")
            if (side is Side.SELL and spec.stop_price >= limit) or (side is Side.BUY and spec.stop_price <= limit):
                raise OrderFailure("INVALID_REQUEST",
                                   "stop_trigger_price must be below limit_price for a SELL bracket, above for a BUY",
                                   "PREVIEW_INVALID_STOP_PRICE")
        if tif == "GOOD_UNTIL_DATE_TIME":
            if cfg.get("end_time") in (None, ""):
                raise ApiError(400, "INVALID_ARGUMENT", f"{key} needs end_time")
            spec.end_time = parse_time(cfg.get("end_time"), "end_time")
            if spec.end_time <= now:
                raise OrderFailure("INVALID_REQUEST", f"end_time {cfg.get('end_time')} is not in the future",
                                   "PREVIEW_INVALID_END_TIME")
            echo["end_time"] = str(cfg.get("end_time"))
        if key in ("limit_limit_gtc", "limit_limit_gtd"):
            post_only = cfg.get("post_only", False)
            if not isinstance(post_only, bool):
                raise ApiError(400, "INVALID_ARGUMENT", "post_only must be true or false")
            spec.post_only = post_only
            echo["post_only"] = post_only
        reduce_only = body.get("reduce_only", cfg.get("reduce_only", False))
        if not isinstance(reduce_only, bool):
            raise ApiError(400, "INVALID_ARGUMENT", "reduce_only must be true or false")
        spec.reduce_only = reduce_only
        leverage = body.get("leverage")
        if leverage not in (None, ""):
            spec.leverage = parse_decimal(leverage, "leverage")
        margin_type = body.get("margin_type")
        if margin_type not in (None, "", "CROSS", "ISOLATED"):
            raise ApiError(400, "INVALID_ARGUMENT", "margin_type must be CROSS or ISOLATED")
        spec.margin_type = margin_type or None
        return spec

    def _check_stop_side(self, spec: OrderSpec) -> None:
        """Coinbase refuses a stop already on the wrong side of the last trade (a STOP_UP at or
        below it, a STOP_DOWN at or above it), with the reason only in ``preview_failure_reason``
        under an ``UNKNOWN_FAILURE_REASON`` error and no message: that is the shape answered."""
        assert spec.stop_price is not None
        last = self.core.market(spec.symbol).last_trade
        if spec.stop_direction == STOP_UP and spec.stop_price <= last:
            raise OrderFailure("UNKNOWN_FAILURE_REASON", "", "PREVIEW_STOP_PRICE_BELOW_LAST_TRADE_PRICE")
        if spec.stop_direction == STOP_DOWN and spec.stop_price >= last:
            raise OrderFailure("UNKNOWN_FAILURE_REASON", "", "PREVIEW_STOP_PRICE_ABOVE_LAST_TRADE_PRICE")

    # ----- orders ------------------------------------------------------------------------

    def _index(self, order: VenueOrder) -> None:
        self._orders[order.order_id] = order
        self._by_coid.setdefault(order.client_order_id, order)
        for leg in order.legs:
            self._by_leg[leg] = order
        self._watch[order.order_id] = order
        self._dirty.add(order.order_id)

    def _core_request(self, order: VenueOrder, leg: str, type_: OrderType, tif: TimeInForce, size: Decimal,
                      price: Decimal | None) -> OrderRequest:
        spec = order.spec
        return OrderRequest(leg, spec.symbol, spec.side, type_, size, price, tif, spec.reduce_only, spec.leverage)

    def _place_leg(self, order: VenueOrder, leg: str, type_: OrderType, tif: TimeInForce, size: Decimal,
                   price: Decimal | None, now: datetime) -> OrderSnapshot:
        snap = self.core.place_order(self._core_request(order, leg, type_, tif, size, price), now)
        order.legs.append(leg)
        self._by_leg[leg] = order
        return snap

    def _post_only_crosses(self, spec: OrderSpec, price: Decimal) -> bool:
        quote = self.core.quote(spec.symbol)
        return price >= quote.ask if spec.side is Side.BUY else price <= quote.bid

    def find_by_client_id(self, client_order_id: str) -> VenueOrder | None:
        return self._by_coid.get(client_order_id)

    def create_order(self, body: Mapping[str, Any], now: datetime) -> tuple[VenueOrder, bool]:
        """(the order, whether it was created now). A known ``client_order_id`` returns the
        existing order. Raises ``OrderFailure`` (nothing created) or ``ApiError``."""
        coid = body.get("client_order_id")
        if not isinstance(coid, str) or not coid.strip():
            raise ApiError(400, "INVALID_ARGUMENT", "client_order_id is required")
        existing = self._by_coid.get(coid)
        if existing is not None:
            return existing, False
        spec = self.parse_order(body, now)
        order_id, seq = self._next_order_id()
        order = VenueOrder(order_id, coid, spec, now, seq)
        self._submit(order, now)
        self._index(order)
        if order.has_trigger and not order.triggered:
            self._check_trigger(order)
        return order, True

    def _submit(self, order: VenueOrder, now: datetime) -> None:
        spec = order.spec
        if spec.post_only and spec.limit_price is not None and self._post_only_crosses(spec, spec.limit_price):
            raise OrderFailure("INVALID_LIMIT_PRICE_POST_ONLY",
                               f"post-only {spec.side.value} at {spec.limit_price} would take liquidity",
                               "PREVIEW_INVALID_LIMIT_PRICE_POST_ONLY")
        if spec.kind == "STOP_LIMIT":
            return  # held here until the stop price is reached
        try:
            if spec.kind == "MARKET":
                snap = self._place_leg(order, order.order_id, OrderType.MARKET, TimeInForce.IOC, spec.size, None, now)
            else:
                tif = {"IMMEDIATE_OR_CANCEL": TimeInForce.IOC, "FILL_OR_KILL": TimeInForce.FOK}.get(
                    spec.tif, TimeInForce.GTC
                )
                snap = self._place_leg(order, order.order_id, OrderType.LIMIT, tif, spec.size, spec.limit_price, now)
        except OrderRejected as exc:
            raise _failure_from_core(exc) from None
        spec.size = snap.size  # the core clips a reduce-only order to the position it reduces

    def _check_trigger(self, order: VenueOrder) -> None:
        spec = order.spec
        assert spec.stop_price is not None
        last = self.core.market(spec.symbol).last_trade
        if spec.kind == "STOP_LIMIT":
            hit = last >= spec.stop_price if spec.stop_direction == STOP_UP else last <= spec.stop_price
        else:
            if self.view(order).status not in LIVE_STATUSES:
                return
            hit = last <= spec.stop_price if spec.side is Side.SELL else last >= spec.stop_price
        if hit:
            self._fire(order, self.core.now)

    def _fire(self, order: VenueOrder, now: datetime) -> None:
        spec = order.spec
        order.triggered = True
        self._dirty.add(order.order_id)
        if spec.kind == "STOP_LIMIT":
            try:
                self._place_leg(order, f"{order.order_id}/stop", OrderType.LIMIT, TimeInForce.GTC, spec.size,
                                spec.limit_price, now)
            except OrderRejected as exc:
                failure = _failure_from_core(exc)
                order.state = "FAILED"
                order.reject_reason = failure.error
                order.reject_message = failure.message
            return
        # bracket: the stop leg replaces the take-profit limit
        self.core.cancel_order(order.legs[-1], now)
        left = spec.size - self.view(order).filled_size
        if left <= 0:
            return
        try:
            self._place_leg(order, f"{order.order_id}/stop", OrderType.MARKET, TimeInForce.IOC, left, None, now)
        except OrderRejected as exc:
            order.state = "CANCELLED"
            order.cancel_message = f"stop leg rejected: {exc}"

    def _expire(self, order: VenueOrder, at: datetime) -> None:
        if order.legs:
            self.core.cancel_order(order.legs[-1], at)
        if self.view(order).status != "FILLED":
            order.state = "EXPIRED"
            order.cancel_message = "order expired (end_time reached)"
        self._dirty.add(order.order_id)

    def cancel(self, order_id: str, now: datetime) -> tuple[bool, str]:
        """(success, failure reason) for one id of a batch cancel."""
        order = self._orders.get(order_id)
        if order is None:
            return False, "UNKNOWN_CANCEL_ORDER"
        if self.view(order).status not in LIVE_STATUSES:
            return False, "INVALID_CANCEL_REQUEST"
        if order.legs:
            self.core.cancel_order(order.legs[-1], now)
        if self.view(order).status in LIVE_STATUSES or not order.legs:
            order.state = "CANCELLED"
        order.cancel_message = "User requested cancel"
        self._dirty.add(order.order_id)
        return True, "UNKNOWN_CANCEL_FAILURE_REASON"

    def edit(self, order_id: Any, price: Any, size: Any, now: datetime, *, dry_run: bool = False) -> list[str]:
        """Edit an open limit GTC/GTD order; returns edit failure reasons (empty: done)."""
        order = self._orders.get(order_id) if isinstance(order_id, str) else None
        if order is None:
            return ["ORDER_NOT_FOUND"]
        spec = order.spec
        if spec.kind != "LIMIT" or spec.tif not in ("GOOD_UNTIL_CANCELLED", "GOOD_UNTIL_DATE_TIME"):
            return ["ONLY_LIMIT_ORDER_EDITS_SUPPORTED"]
        view = self.view(order)
        if view.status != "OPEN":
            return ["ONLY_OPEN_ORDERS_CAN_BE_EDITED"]
        new_price = spec.limit_price if price in (None, "") else parse_decimal(price, "price")
        new_size = spec.size if size in (None, "") else parse_decimal(size, "size")
        assert new_price is not None
        product = spec.product
        if new_price <= 0 or new_price % product.price_increment != 0:
            return ["INVALID_EDITED_PRICE"]
        if new_size <= 0 or new_size % product.base_increment != 0:
            return ["INVALID_EDITED_SIZE"]
        if new_size <= view.filled_size:
            return ["CANNOT_EDIT_TO_BELOW_FILLED_SIZE"]
        if new_price == spec.limit_price and new_size == spec.size:
            return ["EDIT_REQUEST_EQUAL_TO_ORIGINAL_REQUEST"]
        if spec.post_only and self._post_only_crosses(spec, new_price):
            return ["INVALID_EDITED_PRICE"]
        if dry_run:
            return []
        old_price, old_size = spec.limit_price, spec.size
        old_leg = order.legs[-1]
        self.core.cancel_order(old_leg, now)
        filled = self.view(order).filled_size
        n = len(order.edit_history) + 1
        try:
            if new_size > filled:
                self._place_leg(order, f"{order.order_id}/edit{n}", OrderType.LIMIT, TimeInForce.GTC,
                                new_size - filled, new_price, now)
        except OrderRejected:
            if old_size > filled:  # put the original back
                try:
                    self._place_leg(order, f"{order.order_id}/restore{n}", OrderType.LIMIT, TimeInForce.GTC,
                                    old_size - filled, old_price, now)
                except OrderRejected:
                    order.state = "CANCELLED"
                    order.cancel_message = "edit failed and the original could not be restored"
            self._dirty.add(order.order_id)
            return ["COMMANDER_REJECTED_EDIT_ORDER"]
        spec.limit_price, spec.size = new_price, new_size
        spec.config["limit_price"], spec.config["base_size"] = str(new_price), str(new_size)
        spec.config.pop("quote_size", None)
        order.edit_history.append({"price": str(new_price), "size": str(new_size), "replace_accept_timestamp": now})
        self._dirty.add(order.order_id)
        return []

    def close_position(self, body: Mapping[str, Any], now: datetime) -> tuple[VenueOrder, bool]:
        """A reduce-only market order closing (part of) a perpetual position."""
        coid = body.get("client_order_id")
        if not isinstance(coid, str) or not coid.strip():
            raise ApiError(400, "INVALID_ARGUMENT", "client_order_id is required")
        existing = self._by_coid.get(coid)
        if existing is not None:
            return existing, False
        product = self._product_for_order(body.get("product_id"))
        position = self.core.account().positions.get(product.symbol)
        if not product.is_derivative or position is None or position.size == 0:
            raise OrderFailure(
                "INVALID_REQUEST", f"no open position in {product.symbol}", "PREVIEW_INVALID_REDUCE_ONLY"
            )
        size = abs(position.size)
        if body.get("size") not in (None, ""):
            size = min(size, parse_decimal(body.get("size"), "size"))
        side = "SELL" if position.size > 0 else "BUY"
        request = {
            "client_order_id": coid, "product_id": product.symbol, "side": side, "reduce_only": True,
            "leverage": str(position.leverage),
            "order_configuration": {"market_market_ioc": {"base_size": str(size)}},
        }
        return self.create_order(request, now)

    def preview(self, body: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """Estimated cost of an order without placing it (never raises ``OrderFailure``)."""
        errs: list[str] = []
        out: dict[str, Any] = {"errs": errs, "warning": []}
        try:
            spec = self.parse_order(body, now)
        except OrderFailure as exc:
            errs.append(exc.preview_reason)
            return out
        product = spec.product
        quote = self.core.quote(spec.symbol)
        book = self.core.book(spec.symbol)
        levels = book.asks if spec.side is Side.BUY else book.bids
        left, notional, filled = spec.size, ZERO, ZERO
        limit = spec.limit_price if spec.kind in ("LIMIT",) else None
        for level in levels:
            if left <= 0:
                break
            if limit is not None and (level.price > limit if spec.side is Side.BUY else level.price < limit):
                break
            take = min(left, level.size)
            notional += take * level.price * product.contract_size
            filled += take
            left -= take
        if spec.kind != "MARKET" and left > 0:  # the rest rests (or triggers) at the limit price
            assert spec.limit_price is not None
            notional += left * spec.limit_price * product.contract_size
            filled += left
        commission = notional * self.core.config.taker_fee_bps / 10_000
        if spec.post_only and spec.limit_price is not None and self._post_only_crosses(spec, spec.limit_price):
            errs.append("PREVIEW_INVALID_LIMIT_PRICE_POST_ONLY")
        if filled < spec.size and spec.kind == "MARKET":
            errs.append("PREVIEW_INVALID_NO_LIQUIDITY")
        account = self.core.account()
        cash = account.balances.get(product.quote)
        cash_available = cash.available if cash else ZERO
        margin = notional / spec.leverage if product.is_derivative and spec.leverage > 0 else notional
        if product.is_derivative:
            if not spec.reduce_only and margin + commission > cash_available:
                errs.append("PREVIEW_INSUFFICIENT_FUND")
        elif spec.side is Side.BUY:
            if notional + commission > cash_available:
                errs.append("PREVIEW_INSUFFICIENT_FUND")
        else:
            base = account.balances.get(product.base)
            if (base.available if base else ZERO) < spec.size:
                errs.append("PREVIEW_INSUFFICIENT_FUND")
        avg = notional / (filled * product.contract_size) if filled else ZERO
        reference = quote.ask if spec.side is Side.BUY else quote.bid
        slippage = abs(avg - reference) / reference if filled and reference else ZERO
        out.update(
            order_total=notional + commission if spec.side is Side.BUY else notional - commission,
            commission_total=commission,
            quote_size=notional,
            base_size=filled,
            best_bid=quote.bid,
            best_ask=quote.ask,
            is_max=False,
            order_margin_total=margin if product.is_derivative else ZERO,
            leverage=spec.leverage,
            long_leverage=spec.leverage,
            short_leverage=spec.leverage,
            slippage=slippage,
            preview_id=str(uuid.uuid4()),
            max_leverage=product.max_leverage,
            average_filled_price=avg,
        )
        return out

    # ----- views -------------------------------------------------------------------------

    def order(self, order_id: str) -> VenueOrder:
        order = self._orders.get(order_id)
        if order is None:
            raise ApiError(404, "NOT_FOUND", f"order {order_id} not found")
        return order

    def orders(self) -> list[VenueOrder]:
        """Newest first."""
        return sorted(self._orders.values(), key=lambda o: o.seq, reverse=True)

    def fills(self) -> list[tuple[Fill, str]]:
        """(fill, order_id), oldest first."""
        return list(self._fills)

    def view(self, order: VenueOrder) -> OrderView:
        spec = order.spec
        snaps = [self.core.get_order(leg) for leg in order.legs]
        fills = tuple(f for s in snaps for f in s.fills)
        filled = sum((f.size for f in fills), ZERO)
        fees = sum((f.fee for f in fills), ZERO)
        value = sum((f.price * f.size * spec.product.contract_size for f in fills), ZERO)
        avg = value / (filled * spec.product.contract_size) if filled else None
        if order.state is not None:
            status = order.state
        elif not snaps:
            status = "OPEN"  # a stop order waiting for its trigger
        else:
            last = snaps[-1].status
            if last in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED):
                status = "OPEN"
            elif last is OrderStatus.REJECTED:
                status = "FAILED"
            else:  # FILLED, CANCELLED, EXPIRED, PENDING
                status = last.value
        if not order.has_trigger:
            trigger = "INVALID_ORDER_TYPE"
        else:
            trigger = "STOP_TRIGGERED" if order.triggered else "STOP_PENDING"
        hold = ZERO
        if status in LIVE_STATUSES and spec.limit_price is not None and snaps:  # nothing held before a trigger
            left = max(ZERO, spec.size - filled)
            maker = self.core.config.maker_fee_bps / 10_000
            if spec.product.is_derivative:
                if not spec.reduce_only:
                    hold = left * spec.limit_price * spec.product.contract_size / spec.leverage * (1 + maker)
            elif spec.side is Side.BUY:
                hold = left * spec.limit_price * (1 + maker)
            else:
                hold = left
        return OrderView(order, status, filled, avg, fees, value, fills, trigger, hold)

    def live_orders(self) -> list[VenueOrder]:
        return [o for o in self.orders() if self.view(o).status in LIVE_STATUSES]

    def drain_changed_orders(self) -> list[OrderView]:
        """Orders whose reported state changed since the last call (for the user channel)."""
        changed: list[OrderView] = []
        candidates = {**{oid: self._orders[oid] for oid in self._dirty if oid in self._orders}, **self._watch}
        self._dirty.clear()
        for order in sorted(candidates.values(), key=lambda o: o.seq):
            view = self.view(order)
            signature = view.signature()
            if signature != order.last_signature:
                order.last_signature = signature
                changed.append(view)
            if view.status in TERMINAL_STATUSES:
                self._watch.pop(order.order_id, None)
        return changed

    # ----- account -----------------------------------------------------------------------

    def account(self) -> AccountSnapshot:
        return self.core.account()

    def open_order_sizes(self, symbol: str) -> tuple[Decimal, Decimal]:
        """(buy, sell) size still working in ``symbol``'s live orders."""
        buy = sell = ZERO
        for order in self._watch.values():
            if order.symbol != symbol:
                continue
            view = self.view(order)
            if view.status in LIVE_STATUSES:
                if order.side is Side.BUY:
                    buy += view.leaves
                else:
                    sell += view.leaves
        return buy, sell

    def perp_positions(self) -> list[tuple[Product, Position, Decimal]]:
        """(product, position, mark) for every open perpetual position."""
        out = []
        account = self.core.account()
        for product in self._listed:
            pos = account.positions.get(product.symbol)
            if product.is_derivative and pos is not None and pos.size != 0:
                out.append((product, pos, self.core.market(product.symbol).mid))
        return out

    def margin(self, symbol: str) -> Decimal:
        return self.core.margin(symbol)

    def futures_summary(self) -> dict[str, Decimal]:
        """The margin account in numbers (cash in the quote currency, perps at mark)."""
        account = self.core.account()
        cash = account.balances.get(self.core.config.cash_currency)
        available = cash.available if cash else ZERO
        hold = cash.hold if cash else ZERO
        margin = unrealized = realized = maintenance = notional = funding = ZERO
        window = self.core.margin_rates_window()
        for product, pos, mark in self.perp_positions():
            margin += self.core.margin(product.symbol)
            unrealized += pos.unrealized_pnl(mark)
            notional += pos.notional(mark)
            rate = maintenance_rate(product, window) if is_cfm(product) else product.maintenance_margin_rate
            maintenance += pos.notional(mark) * rate
        for product in self._listed:
            held = account.positions.get(product.symbol)
            if product.is_derivative and held is not None:
                realized += held.realized_pnl
                funding += held.funding
        accrued = sum((self.core.accrued_funding(p.symbol) for p in self.core.products()), ZERO)
        total = available + hold + margin + unrealized + accrued
        return {
            "available": available,
            "hold": hold,
            "margin": margin,
            "unrealized_pnl": unrealized,
            "realized_pnl": realized,
            "funding": funding,
            "accrued_funding": accrued,
            "maintenance": maintenance,
            "notional": notional,
            "total": total,
            "equity": account.equity,
        }

