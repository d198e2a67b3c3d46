"""The ``Exchange`` port: everything the bot asks of an exchange.

Implementations: the in-process simulator (``exchange.sim``: ``SimExchange``, and
``ReplayExchange`` for backtests) and the Coinbase Advanced Trade adapter
(``exchange.coinbase``). The bot depends on this protocol only, and on what each venue
says it can do (``Exchange.capabilities``, a ``VenueCapabilities``): never on the
adapter's type or name. The market stream's side of the port, its venue-neutral events
and the stream protocol, is ``exchange.stream``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from perpsbot.domain import (
    AccountSnapshot,
    Candle,
    Fill,
    MarginType,
    OrderBook,
    OrderStatus,
    OrderType,
    Product,
    Quote,
    Side,
    TimeInForce,
)
from perpsbot.exchange.stream import MarketStream


class ExchangeError(Exception):
    """Base of every error an exchange reports. ``code`` is machine-readable."""

    code = "exchange_error"


class UnknownProduct(ExchangeError):
    code = "unknown_product"


class OrderRejected(ExchangeError):
    code = "order_rejected"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class OrderNotFound(ExchangeError):
    code = "order_not_found"


class ExchangeUnavailable(ExchangeError):
    code = "unavailable"


class AuthenticationError(ExchangeError):
    """The exchange refused our credentials (or they could not be loaded)."""

    code = "auth"


class RateLimited(ExchangeUnavailable):
    """Too many requests; ``retry_after`` is the server's hint in seconds, if it gave one."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(ExchangeUnavailable):
    """The exchange failed on its side (5xx) or did not answer in time."""

    code = "server_error"


class InsufficientFunds(OrderRejected):
    code = "insufficient_funds"


class InvalidOrder(OrderRejected):
    code = "invalid_order"


class InvalidRequest(ExchangeError):
    """The exchange refused a request as malformed (HTTP 400 outside order placement)."""

    code = "invalid_request"


class NotFound(ExchangeError):
    """A resource other than an order (product, portfolio, ...) does not exist."""

    code = "not_found"


class BadResponse(ExchangeError):
    """The exchange answered with something we cannot read (a missing or malformed field)."""

    code = "bad_response"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    size: Decimal
    limit_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.IOC
    reduce_only: bool = False
    leverage: Decimal = Decimal(1)
    margin_type: MarginType | None = None  # a perpetual's (the margin_type setting); None: the venue's default


@dataclass(frozen=True, slots=True)
class OrderSnapshot:
    """The exchange's view of one order, with the fills it knows of."""

    client_order_id: str
    exchange_order_id: str
    symbol: str
    side: Side
    status: OrderStatus
    size: Decimal
    filled_size: Decimal
    average_fill_price: Decimal | None
    fees: Decimal
    created_at: datetime
    reject_reason: str | None = None
    fills: tuple[Fill, ...] = field(default_factory=tuple)
    # Other orders the venue holds under the same client id (a venue whose ids are labels,
    # not idempotency keys): found when this order was looked up, cancelled if still working.
    duplicates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VenueCapabilities:
    """What a venue can do, declared by each ``Exchange`` as data. The bot and its services
    ask these — which orders to send, whether to open a stream, whether the account
    outlives the process — instead of testing the adapter's type, name or attributes."""

    order_types: frozenset[OrderType]
    times_in_force: frozenset[TimeInForce]  # of limit orders (a market order is IOC everywhere)
    post_only: bool  # limit orders that only ever rest (none of the bot's orders asks it today)
    reduce_only: bool  # orders that may only shrink a perpetual position
    margin_types: frozenset[MarginType]  # how perpetual positions can be margined (the margin_type setting)
    funding: bool  # perpetual positions pay and receive funding
    market_stream: bool  # a StreamingExchange: market data pushed over a stream (books, tickers, trades)
    user_stream: bool  # order and fill updates pushed over an authenticated stream
    account_persists: bool  # orders, fills and positions outlive the bot's process (the next run finds them)
    book_from_stream: bool  # book() can answer from the market stream's books (StreamingExchange.book_source)

    def refusal(
        self, type: OrderType, time_in_force: TimeInForce, reduce_only: bool, margin_type: MarginType | None = None
    ) -> str | None:
        """Why the venue cannot take such an order (worded to follow the venue's name), or None."""
        if margin_type is not None and margin_type not in self.margin_types:
            return f"takes no {margin_type.value} margin (only {', '.join(_names(self.margin_types)) or 'none'})"
        if type not in self.order_types:
            return f"takes no {type.value.lower()} orders"
        if type is OrderType.LIMIT and time_in_force not in self.times_in_force:
            return f"takes no {time_in_force.value} limit orders (it takes {', '.join(_names(self.times_in_force))})"
        if reduce_only and not self.reduce_only:
            return "takes no reduce-only orders"
        return None

    def describe(self) -> dict[str, Any]:
        """The capabilities as JSON-ready data (recorded with ``bot_started``)."""
        return {
            "order_types": _names(self.order_types),
            "times_in_force": _names(self.times_in_force),
            "margin_types": _names(self.margin_types),
            "post_only": self.post_only,
            "reduce_only": self.reduce_only,
            "funding": self.funding,
            "market_stream": self.market_stream,
            "user_stream": self.user_stream,
            "account_persists": self.account_persists,
            "book_from_stream": self.book_from_stream,
        }


def _names(members: frozenset[OrderType] | frozenset[TimeInForce] | frozenset[MarginType]) -> list[str]:
    return sorted(m.value for m in members)


class Exchange(Protocol):
    name: str  # for messages and records only: what a venue can do is in ``capabilities``
    capabilities: VenueCapabilities

    async def products(self) -> list[Product]: ...

    async def quote(self, symbol: str) -> Quote: ...

    async def book(self, symbol: str, depth: int) -> OrderBook:
        """The L2 book, ``depth`` levels a side."""
        ...

    async def candles(self, symbol: str, granularity_seconds: int, limit: int) -> list[Candle]:
        """The most recent closed candles, oldest first."""
        ...

    async def place_order(self, request: OrderRequest) -> OrderSnapshot: ...

    async def cancel_order(self, client_order_id: str) -> OrderSnapshot: ...

    async def get_order(self, client_order_id: str) -> OrderSnapshot: ...

    async def open_orders(self) -> list[OrderSnapshot]: ...

    async def orders_since(self, since: datetime, symbol: str | None = None) -> list[OrderSnapshot]:
        """Every order created at or after ``since`` (of ``symbol`` only, when given),
        whatever its status: recovery looks for orders of ours the order store lost, and
        for an order of unknown fate in the exchange's history."""
        ...

    async def fills_since(self, cursor: int) -> tuple[list[Fill], int]:
        """Fills after ``cursor`` (0 = all) and the cursor to pass next time."""
        ...

    async def account(self) -> AccountSnapshot: ...

    def funding_now(self, symbol: str) -> tuple[Decimal, datetime | None] | None:
        """A perpetual's funding rate per interval as the venue last gave it and its next
        settlement (None for other products, or before the venue gave one). Asked only of
        a venue whose capabilities say ``funding``."""
        ...

    async def close(self) -> None: ...


class StreamingExchange(Exchange, Protocol):
    """An ``Exchange`` whose capabilities say ``market_stream`` (and ``book_from_stream``)."""

    # Where ``book`` looks first when the capabilities say ``book_from_stream``: the composition
    # root sets it to the streamed books (None: the venue's own book request).
    book_source: Callable[[str, int], OrderBook | None] | None

    def market_stream(self, **options: Any) -> MarketStream:
        """A new market-data stream (not started); ``options`` go to the venue's stream client."""
        ...


# ----- pushed account and order updates (optional: polling is the fallback) ----------------


@dataclass(frozen=True, slots=True)
class PushedOrder:
    """An order of ours as the venue pushed it: cumulative state, not a trade. The fills
    behind a rise in ``filled_size`` are fetched and recorded by trade id."""

    client_order_id: str
    symbol: str
    status: OrderStatus
    filled_size: Decimal
    ts: datetime


@dataclass(frozen=True, slots=True)
class PushedAccount:
    """Futures margin figures the venue pushed; ``equity`` when they decide it (None: not)."""

    equity: Decimal | None
    buying_power: Decimal
    initial_margin: Decimal
    maintenance_margin: Decimal
    liquidation_buffer: Decimal
    ts: datetime


@dataclass(frozen=True, slots=True)
class PushState:
    """The push stream went up (subscribed) or down (``detail`` says why); updates may
    have been missed in between."""

    up: bool
    detail: str
    ts: datetime


@dataclass(frozen=True, slots=True)
class PushRejected:
    """A pushed frame that could not be read: ``code`` (a few kinds) and why; nothing
    of it was applied."""

    code: str
    reason: str
    ts: datetime


PushedUpdate = PushedOrder | PushedAccount | PushState | PushRejected


class PushFeed(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def silent_for(self) -> float | None:
        """Seconds since the stream last sent anything (None: not connected)."""
        ...


class PushesUpdates(Exchange, Protocol):
    """An ``Exchange`` whose capabilities say ``user_stream``: it can push account and
    order changes for ``symbols``."""

    def push_feed(self, symbols: Sequence[str], on_update: Callable[[PushedUpdate], None],
                  quiet_seconds: float) -> PushFeed | None:
        """None: this session cannot push (no credentials, say)."""
        ...
