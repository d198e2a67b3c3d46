"""``SimExchange``: the simulator core behind the async ``Exchange`` port."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from decimal import Decimal

from perpsbot.domain import AccountSnapshot, Candle, Fill, MarginType, OrderType, Product, Quote, TimeInForce
from perpsbot.domain.clock import Clock
from perpsbot.exchange.port import OrderRequest, OrderSnapshot, VenueCapabilities
from perpsbot.exchange.sim.engine import SimCore
from perpsbot.exchange.sim.market import OrderBook


class SimExchange:
    """Every call first brings the simulated markets up to ``clock.now()``
    (the core never steps backwards), then asks the core.

    ``order_latency_seconds`` delays every order placement by that long on the clock
    before the order reaches the core (the ``sim_order_latency_ms`` setting): a slow
    exchange, for latency drills and drift reviews.

    ``account_persists`` False: the core was made for this process (the builder's own
    simulator), so no later run finds its orders; a core that outlives the bot (a test's,
    shared across restarts) persists."""

    name = "sim"

    def __init__(
        self, core: SimCore, clock: Clock, *, order_latency_seconds: float = 0.0, account_persists: bool = True
    ) -> None:
        if order_latency_seconds < 0:
            raise ValueError("order_latency_seconds must be >= 0")
        # No stream: marks are polled. Perp positions are margined in isolation (SimCore).
        self.capabilities = VenueCapabilities(
            order_types=frozenset(OrderType), times_in_force=frozenset(TimeInForce), post_only=False,
            reduce_only=True, margin_types=frozenset({MarginType.ISOLATED}), funding=True, market_stream=False,
            user_stream=False, account_persists=account_persists, book_from_stream=False,
        )
        self.core = core
        self.clock = clock
        self.order_latency_seconds = order_latency_seconds

    def _sync(self) -> None:
        self.core.advance_to(self.clock.now())

    async def products(self) -> list[Product]:
        return self.core.products()

    async def quote(self, symbol: str) -> Quote:
        self._sync()
        return self.core.quote(symbol)

    def funding_now(self, symbol: str) -> tuple[Decimal, datetime | None] | None:
        """A perpetual's last published funding rate (per funding interval) and its next
        settlement; None for spot or before the first rate."""
        self._sync()
        model = self.core.market(symbol)
        if not model.product.is_perpetual or not model.funding:
            return None
        last = model.funding[-1]
        return last.rate, last.ts + timedelta(seconds=self.core.config.funding_interval_seconds)

    async def book(self, symbol: str, depth: int | None = None) -> OrderBook:
        """Not part of the port: the synthetic L2 book."""
        self._sync()
        return self.core.book(symbol, depth)

    async def candles(self, symbol: str, granularity_seconds: int, limit: int) -> list[Candle]:
        self._sync()
        return self.core.candles(symbol, granularity_seconds, limit)

    async def place_order(self, request: OrderRequest) -> OrderSnapshot:
        if self.order_latency_seconds:
            await self.clock.sleep(self.order_latency_seconds)
        now = self.clock.now()
        self.core.advance_to(now)
        return self.core.place_order(request, now)

    async def cancel_order(self, client_order_id: str) -> OrderSnapshot:
        now = self.clock.now()
        self.core.advance_to(now)
        return self.core.cancel_order(client_order_id, now)

    async def get_order(self, client_order_id: str) -> OrderSnapshot:
        self._sync()
        return self.core.get_order(client_order_id)

    async def open_orders(self) -> list[OrderSnapshot]:
        self._sync()
        return self.core.open_orders()

    async def orders_since(self, since: datetime, symbol: str | None = None) -> list[OrderSnapshot]:
        self._sync()
        return [s for s in self.core.orders_since(since) if symbol in (None, s.symbol)]

    async def fills_since(self, cursor: int) -> tuple[list[Fill], int]:
        self._sync()
        return self.core.fills_since(cursor)

    async def account(self) -> AccountSnapshot:
        """The core's account, with its CFM margin as the venue states it."""
        self._sync()
        return dataclasses.replace(self.core.account(), margin=self.core.cfm_margin())

    async def close(self) -> None:
        return None
