"""Value types shared by every layer.

Money, prices and sizes are ``Decimal``; timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

from perpsbot.domain.margin import FundingSettlement, VenueMargin

ZERO = Decimal(0)


class DomainError(ValueError):
    """A value that breaks a domain rule (a bad quote, a negative size, ...)."""


def require_aware(ts: datetime, what: str) -> datetime:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise DomainError(f"{what} must be timezone-aware, got naive {ts.isoformat()}")
    return ts


class Side(str, enum.Enum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class ProductType(str, enum.Enum):
    SPOT = "SPOT"
    PERPETUAL = "PERPETUAL"
    FUTURE = "FUTURE"  # a dated future: margined like a perpetual, no funding, refused once expired


class MarginType(str, enum.Enum):
    """How a perpetual position is margined: from the whole account (cross) or from the
    margin set aside for it alone (isolated). The ``margin_type`` setting."""

    CROSS = "cross"
    ISOLATED = "isolated"


class OrderType(str, enum.Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"


class TimeInForce(str, enum.Enum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class Liquidity(str, enum.Enum):
    MAKER = "MAKER"
    TAKER = "TAKER"
    LIQUIDATION = "LIQUIDATION"


@dataclass(frozen=True, slots=True)
class Product:
    symbol: str
    base: str
    quote: str
    type: ProductType
    base_increment: Decimal
    price_increment: Decimal
    min_size: Decimal
    max_leverage: Decimal = Decimal(1)
    contract_size: Decimal = Decimal(1)
    maintenance_margin_rate: Decimal = Decimal("0.05")
    expiry: datetime | None = None  # when a future stops trading (a dated one's is near, a perpetual-style one's far)

    def __post_init__(self) -> None:
        for name in ("base_increment", "price_increment", "min_size", "contract_size"):
            if getattr(self, name) <= 0:
                raise DomainError(f"product {self.symbol}: {name} must be > 0")
        if self.max_leverage < 1:
            raise DomainError(f"product {self.symbol}: max_leverage must be >= 1")
        if self.type is ProductType.SPOT and self.max_leverage != 1:
            raise DomainError(f"product {self.symbol}: spot products have no leverage")
        if self.expiry is not None:
            require_aware(self.expiry, f"product {self.symbol} expiry")
        elif self.type is ProductType.FUTURE:
            raise DomainError(f"product {self.symbol}: a dated future needs an expiry")

    @property
    def is_perpetual(self) -> bool:
        """Funding is exchanged on it."""
        return self.type is ProductType.PERPETUAL

    @property
    def is_derivative(self) -> bool:
        """A perpetual or a dated future: margined, sized in contracts, may be held short."""
        return self.type is not ProductType.SPOT

    def expired(self, at: datetime) -> bool:
        return self.expiry is not None and at >= self.expiry

    def quantize_size(self, size: Decimal) -> Decimal:
        """Round a size down to the product's base increment (never up: up could exceed a cap)."""
        return (size / self.base_increment).to_integral_value(ROUND_DOWN) * self.base_increment

    def quantize_price(self, price: Decimal) -> Decimal:
        return (price / self.price_increment).to_integral_value(ROUND_HALF_EVEN) * self.price_increment


@dataclass(frozen=True, slots=True)
class Quote:
    symbol: str
    bid: Decimal
    ask: Decimal
    ts: datetime
    last: Decimal | None = None

    def __post_init__(self) -> None:
        require_aware(self.ts, f"quote {self.symbol} timestamp")
        if not (self.bid.is_finite() and self.ask.is_finite()):
            raise DomainError(f"quote {self.symbol}: bid/ask must be finite")
        if self.bid <= 0 or self.ask <= 0:
            raise DomainError(f"quote {self.symbol}: bid {self.bid} / ask {self.ask} must be > 0")
        if self.bid > self.ask:
            raise DomainError(f"quote {self.symbol}: crossed, bid {self.bid} > ask {self.ask}")

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


@dataclass(frozen=True, slots=True)
class BookLevel:
    price: Decimal
    size: Decimal


@dataclass(frozen=True, slots=True)
class OrderBook:
    """An L2 snapshot: bids best (highest) first, asks best (lowest) first."""

    symbol: str
    ts: datetime
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]

    def expected_fill(self, side: Side, size: Decimal) -> tuple[Decimal | None, Decimal]:
        """Average price and size a market order of ``size`` would get by walking
        the opposite side; the size is short of ``size`` when the book runs out."""
        levels = self.asks if side is Side.BUY else self.bids
        remaining, cost = size, ZERO
        for level in levels:
            take = min(remaining, level.size)
            cost += take * level.price
            remaining -= take
            if remaining <= 0:
                break
        filled = size - remaining
        return (cost / filled if filled > 0 else None), filled


@dataclass(frozen=True, slots=True)
class Candle:
    symbol: str
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    def __post_init__(self) -> None:
        require_aware(self.start, f"candle {self.symbol} start")
        if not (self.low <= min(self.open, self.close) and self.high >= max(self.open, self.close)):
            raise DomainError(f"candle {self.symbol} {self.start.isoformat()}: OHLC out of range")


class OrderStatus(str, enum.Enum):
    PENDING = "PENDING"
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)

_LEGAL: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.OPEN, OrderStatus.REJECTED}),
    OrderStatus.OPEN: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED}
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED}
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
}


class IllegalTransition(DomainError):
    pass


@dataclass(slots=True)
class Order:
    """An order's request and lifecycle. Status only moves along ``_LEGAL``."""

    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    size: Decimal
    created_at: datetime
    limit_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.IOC
    reduce_only: bool = False
    leverage: Decimal = Decimal(1)
    status: OrderStatus = OrderStatus.PENDING
    exchange_order_id: str | None = None
    filled_size: Decimal = ZERO
    average_fill_price: Decimal | None = None
    fees: Decimal = ZERO
    reject_reason: str | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        require_aware(self.created_at, f"order {self.client_order_id} created_at")
        if self.size <= 0:
            raise DomainError(f"order {self.client_order_id}: size must be > 0, got {self.size}")
        if self.type is OrderType.LIMIT and (self.limit_price is None or self.limit_price <= 0):
            raise DomainError(f"order {self.client_order_id}: a limit order needs a positive limit price")

    @property
    def remaining(self) -> Decimal:
        return self.size - self.filled_size

    def copy(self) -> Order:
        """A separate copy (no re-validation: this one was valid already)."""
        new = object.__new__(Order)
        for name in _ORDER_FIELDS:
            setattr(new, name, getattr(self, name))
        return new

    def transition(self, to: OrderStatus, at: datetime | None = None) -> None:
        if to not in _LEGAL[self.status]:
            raise IllegalTransition(
                f"order {self.client_order_id}: {self.status.value} -> {to.value} is not allowed"
            )
        self.status = to
        if at is not None:
            self.updated_at = require_aware(at, "order update time")

    def advance_to(self, to: OrderStatus, at: datetime | None = None) -> None:
        """Move to ``to`` through the shortest legal path (an exchange may report
        an order already filled when we last knew it as pending)."""
        if to is self.status and to is not OrderStatus.PARTIALLY_FILLED:
            return
        if to in _LEGAL[self.status]:
            self.transition(to, at)
            return
        if self.status is OrderStatus.PENDING and to in _LEGAL[OrderStatus.OPEN]:
            self.transition(OrderStatus.OPEN, at)
            self.transition(to, at)
            return
        raise IllegalTransition(
            f"order {self.client_order_id}: cannot move from {self.status.value} to {to.value}"
        )

    def reopen(self, at: datetime, why: str) -> None:
        """Undo a close the exchange contradicts: an order we marked REJECTED (not found) or
        CANCELLED (vanished) that it fills or lists after all. Back to OPEN (or
        PARTIALLY_FILLED, with fills already), so what comes next can be recorded; the reason
        stays on the order. The one backward move of the state machine."""
        if self.status not in (OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.EXPIRED):
            raise IllegalTransition(f"order {self.client_order_id}: {self.status.value} cannot be re-opened")
        self.status = OrderStatus.PARTIALLY_FILLED if self.filled_size else OrderStatus.OPEN
        self.reject_reason = f"re-opened ({why}); was closed: {self.reject_reason or 'no reason'}"
        self.updated_at = require_aware(at, "order update time")

    def record_fill(self, fill: Fill) -> None:
        if fill.size <= 0:
            raise DomainError(f"fill {fill.trade_id}: size must be > 0")
        if self.filled_size + fill.size > self.size:
            raise DomainError(f"fill {fill.trade_id} overfills order {self.client_order_id}")
        notional = (self.average_fill_price or ZERO) * self.filled_size + fill.price * fill.size
        self.filled_size += fill.size
        self.average_fill_price = notional / self.filled_size
        self.fees += fill.fee
        self.advance_to(
            OrderStatus.FILLED if self.filled_size == self.size else OrderStatus.PARTIALLY_FILLED, fill.ts
        )


_ORDER_FIELDS = tuple(Order.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Fill:
    trade_id: str
    client_order_id: str
    symbol: str
    side: Side
    price: Decimal
    size: Decimal
    fee: Decimal
    liquidity: Liquidity
    ts: datetime

    def __post_init__(self) -> None:
        require_aware(self.ts, f"fill {self.trade_id} timestamp")


@dataclass(slots=True)
class Position:
    """A net position in one product. ``size`` is signed: > 0 long, < 0 short."""

    symbol: str
    size: Decimal = ZERO
    entry_price: Decimal = ZERO
    leverage: Decimal = Decimal(1)
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    funding: Decimal = ZERO  # received (< 0: paid) and not yet reported settled by the venue
    contract_size: Decimal = Decimal(1)

    @property
    def is_flat(self) -> bool:
        return self.size == 0

    @property
    def side(self) -> Side | None:
        if self.size == 0:
            return None
        return Side.BUY if self.size > 0 else Side.SELL

    def notional(self, mark: Decimal) -> Decimal:
        return abs(self.size) * mark * self.contract_size

    def unrealized_pnl(self, mark: Decimal) -> Decimal:
        return (mark - self.entry_price) * self.size * self.contract_size

    def liquidation_price(self, maintenance_margin_rate: Decimal) -> Decimal | None:
        """Isolated-margin liquidation price: where the margin posted at entry
        (notional / leverage) has shrunk to the maintenance requirement."""
        if self.size == 0:
            return None
        inv_lev = 1 / self.leverage
        if self.size > 0:
            price = self.entry_price * (1 - inv_lev) / (1 - maintenance_margin_rate)
            return max(price, ZERO)
        return self.entry_price * (1 + inv_lev) / (1 + maintenance_margin_rate)

    def apply_fill(self, side: Side, size: Decimal, price: Decimal, fee: Decimal = ZERO) -> Decimal:
        """Apply a fill; returns the PnL it realized (before fees)."""
        if size <= 0:
            raise DomainError(f"position {self.symbol}: fill size must be > 0")
        signed = size * side.sign
        self.fees += fee
        realized = ZERO
        if self.size == 0 or (self.size > 0) == (signed > 0):
            total = self.size + signed
            self.entry_price = (self.entry_price * abs(self.size) + price * size) / abs(total)
            self.size = total
            return realized
        closing = min(abs(self.size), size)
        direction = 1 if self.size > 0 else -1
        realized = (price - self.entry_price) * closing * direction * self.contract_size
        self.realized_pnl += realized
        self.size += signed
        if self.size == 0:
            self.entry_price = ZERO
        elif (self.size > 0) != (direction > 0):
            self.entry_price = price  # flipped: the remainder opened at this price
        return realized

    def copy(self) -> Position:
        new = object.__new__(Position)
        for name in _POSITION_FIELDS:
            setattr(new, name, getattr(self, name))
        return new


_POSITION_FIELDS = tuple(Position.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Balance:
    currency: str
    available: Decimal
    hold: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return self.available + self.hold


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """What the exchange says we own: balances, positions and equity in the quote currency."""

    balances: dict[str, Balance] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    equity: Decimal = ZERO
    margin: VenueMargin | None = None  # the venue's margin figures, when it states them
    # Funding the venue settled lately (the last day; the same entries again on later
    # snapshots): ``Position.funding`` then holds only what is counted and not yet settled.
    funding_settled: tuple[FundingSettlement, ...] = ()
