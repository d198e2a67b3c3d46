"""The ``Exchange`` port: everything the bot asks of an exchange.

Implementations: the in-process simulator (``exchange.sim``) and the Coinbase
Advanced Trade adapter (``exchange.coinbase``). The bot depends on this protocol only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable

from perpsbot.domain import (
    AccountSnapshot,
    Candle,
    Fill,
    OrderBook,
    OrderStatus,
    OrderType,
    Product,
    Quote,
    Side,
    TimeInForce,
)


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


class Exchange(Protocol):
    name: str

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

    async def close(self) -> None: ...


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


@runtime_checkable
class PushesUpdates(Protocol):
    """An exchange that can push account and order changes for ``symbols``."""

    def push_feed(self, symbols: Sequence[str], on_update: Callable[[PushedUpdate], None],
                  quiet_seconds: float) -> PushFeed | None:
        """None: this session cannot push (no credentials, say)."""
        ...
