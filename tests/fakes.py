"""A scriptable exchange for tests that need to control quotes and failures exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from perpsbot.domain import (
    AccountSnapshot,
    Balance,
    BookLevel,
    Candle,
    Fill,
    Liquidity,
    MarginType,
    OrderBook,
    OrderStatus,
    OrderType,
    Position,
    Product,
    ProductType,
    Quote,
    TimeInForce,
)
from perpsbot.domain.clock import Clock
from perpsbot.exchange.port import OrderNotFound, OrderRequest, OrderSnapshot, VenueCapabilities

D = Decimal
# Everything an order can ask for; an account that outlives the bot; no streams.
FAKE_CAPABILITIES = VenueCapabilities(
    order_types=frozenset(OrderType), times_in_force=frozenset(TimeInForce), post_only=False, reduce_only=True,
    margin_types=frozenset(MarginType), funding=False, market_stream=False, user_stream=False,
    account_persists=True, book_from_stream=False,
)


# The US perpetual-style futures: whole contracts of 0.01 BTC / 0.1 ETH.
CONTRACTS = {"BIP-20DEC30-CDE": ("BTC", D("0.01")), "ETP-20DEC30-CDE": ("ETH", D("0.1"))}


def perp(symbol: str) -> Product:
    base, contract = CONTRACTS[symbol]
    return Product(symbol, base, "USD", ProductType.PERPETUAL, D(1), D("0.01"), D(1), D(20), contract)


def spot(symbol: str) -> Product:
    base, quote = symbol.split("-")
    return Product(symbol, base, quote, ProductType.SPOT, D("0.001"), D("0.01"), D("0.001"))


@dataclass
class FakeExchange:
    clock: Clock
    products_list: list[Product]
    prices: dict[str, Decimal] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    bad: dict[str, object] = field(default_factory=dict)
    frozen: set[str] = field(default_factory=set)
    equity: Decimal = D(100_000)
    name: str = "fake"
    capabilities: VenueCapabilities = FAKE_CAPABILITIES
    requests: list[OrderRequest] = field(default_factory=list)
    quote_calls: list[str] = field(default_factory=list)
    closed: bool = False
    _orders: dict[str, OrderSnapshot] = field(default_factory=dict)
    _fills: list[Fill] = field(default_factory=list)
    _positions: dict[str, Position] = field(default_factory=dict)
    _frozen_at: dict[str, Quote] = field(default_factory=dict)

    async def products(self) -> list[Product]:
        return list(self.products_list)

    async def quote(self, symbol: str) -> Quote:
        self.quote_calls.append(symbol)
        if symbol in self.failing:
            raise ConnectionError(f"{symbol} feed down")
        if symbol in self.bad:
            return self.bad[symbol]  # type: ignore[return-value]
        if symbol in self.frozen and symbol in self._frozen_at:
            return self._frozen_at[symbol]
        price = self.prices[symbol]
        quote = Quote(symbol, price - D("0.5"), price + D("0.5"), self.clock.now(), price)
        self._frozen_at[symbol] = quote
        return quote

    async def candles(self, symbol: str, granularity_seconds: int, limit: int) -> list[Candle]:
        return []

    async def book(self, symbol: str, depth: int) -> OrderBook:
        """A deep book one tick either side of the price: fills land on the mark."""
        price = self.prices[symbol]
        level = D(1_000_000)
        return OrderBook(
            symbol, self.clock.now(), (BookLevel(price, level),), (BookLevel(price, level),)
        )

    async def place_order(self, request: OrderRequest) -> OrderSnapshot:
        self.requests.append(request)
        price = self.prices[request.symbol]
        fill = Fill(
            f"T{len(self._fills) + 1}", request.client_order_id, request.symbol, request.side, price,
            request.size, D(0), Liquidity.TAKER, self.clock.now(),
        )
        self._fills.append(fill)
        contract = next((p.contract_size for p in self.products_list if p.symbol == request.symbol), D(1))
        position = self._positions.setdefault(
            request.symbol, Position(request.symbol, leverage=request.leverage, contract_size=contract))
        position.apply_fill(request.side, request.size, price)
        if position.is_flat:
            del self._positions[request.symbol]
        snapshot = OrderSnapshot(
            request.client_order_id, f"X{len(self._orders)}", request.symbol, request.side, OrderStatus.FILLED,
            request.size, request.size, price, D(0), self.clock.now(), fills=(fill,),
        )
        self._orders[request.client_order_id] = snapshot
        return snapshot

    async def cancel_order(self, client_order_id: str) -> OrderSnapshot:
        return await self.get_order(client_order_id)

    async def get_order(self, client_order_id: str) -> OrderSnapshot:
        if client_order_id not in self._orders:
            raise OrderNotFound(client_order_id)
        return self._orders[client_order_id]

    async def open_orders(self) -> list[OrderSnapshot]:
        return []

    async def orders_since(self, since: datetime, symbol: str | None = None) -> list[OrderSnapshot]:
        return [o for o in self._orders.values() if o.created_at >= since and symbol in (None, o.symbol)]

    async def fills_since(self, cursor: int) -> tuple[list[Fill], int]:
        return self._fills[cursor:], len(self._fills)

    async def account(self) -> AccountSnapshot:
        return AccountSnapshot(
            balances={"USD": Balance("USD", self.equity)},
            positions={s: p.copy() for s, p in self._positions.items()},
            equity=self.equity,
        )

    async def close(self) -> None:
        self.closed = True
