"""``ReplayExchange``: candles as the simulator core's market, behind the ``Exchange`` port, for backtests.

The backtest loop moves it one closed candle at a time; the bot's own market data,
strategy, risk and execution code talk to it exactly as they talk to the live
exchange (quotes, book, orders, fills, account). The accounting — fills and fees,
spot balances with holds, isolated perp margin, funding, liquidation, order checks —
is ``SimCore``'s, the same as the in-process simulator's and the simulator server's;
only the market differs: ``CandleMarket`` instead of the seeded tick model.

Fill convention
---------------
A candle is four steps of the market: its open, the extreme nearer the open in
the usual reading of a bar (the low first when it closed up, else the high), the
other extreme, its close. An order placed when a candle closes reaches the market
at the **next candle's open**, whose book is ``open × (1 ± slippage)`` (rounded to
the price increment against us) and never runs out: a market order fills there
with the taker fee, as does the part of a limit that crosses it. A GTC limit then
rests and fills at its limit (maker fee) when a later step reaches it; IOC and FOK
limits get the open only. The decision never sees the price it will trade at — no
look-ahead; an order placed on the last candle is never filled. The core checks the
order when it is placed (against the close's book) and again when it arrives: an
order the account can no longer meet at the open is cancelled with the reason.
A perp position is liquidated at the price where a step crosses its liquidation
price (at the open if it gapped through). Funding: ``funding_rate`` per 8 hours,
counted each funding interval the candle's end passes, at its close.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from perpsbot.domain import (
    AccountSnapshot,
    BookLevel,
    Candle,
    Fill,
    Liquidity,
    MarginType,
    OrderBook,
    OrderType,
    Product,
    Quote,
    TimeInForce,
)
from perpsbot.domain.clock import EPOCH, Clock
from perpsbot.exchange.port import OrderRejected, OrderRequest, OrderSnapshot, VenueCapabilities
from perpsbot.exchange.sim.engine import FundingEvent, SimConfig, SimCore
from perpsbot.exchange.sim.market import ASK, FundingTick

__all__ = ["CAPABILITIES", "CandleMarket", "FundingEvent", "Lane", "ReplayCosts", "ReplayExchange"]

_BPS = Decimal(10_000)
_BOOK_SIZE = Decimal(10) ** 12  # the replayed book never runs out
_FUNDING_BASIS_S = 28_800  # funding_rate is quoted per 8 hours
# A new account every backtest, candles instead of a stream, isolated margin per position.
CAPABILITIES = VenueCapabilities(
    order_types=frozenset(OrderType), times_in_force=frozenset(TimeInForce), post_only=False, reduce_only=True,
    margin_types=frozenset({MarginType.ISOLATED}), funding=True, market_stream=False, user_stream=False,
    account_persists=False, book_from_stream=False,
)


def _dec(value: float) -> Decimal:
    return Decimal(repr(value))


@dataclass(frozen=True, slots=True)
class ReplayCosts:
    """What trading costs in a replay. Basis points; ``funding_rate`` per 8 hours."""

    fee_bps: Decimal = Decimal(5)  # taker: market orders, limits that cross at the open
    maker_fee_bps: Decimal | None = None  # limits that wait for their price; None: same as fee_bps
    slippage_bps: Decimal = Decimal(0)
    funding_rate: Decimal = Decimal(0)
    liquidation_fee_bps: Decimal = Decimal(50)

    def __post_init__(self) -> None:
        for name in ("fee_bps", "slippage_bps", "liquidation_fee_bps"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise ValueError(f"{name} must be a finite Decimal >= 0, got {value!r}")
        if self.maker_fee_bps is not None and (not self.maker_fee_bps.is_finite() or self.maker_fee_bps < 0):
            raise ValueError(f"maker_fee_bps must be >= 0, got {self.maker_fee_bps}")
        if not self.funding_rate.is_finite() or abs(self.funding_rate) >= 1:
            raise ValueError(f"funding_rate must be between -1 and 1, got {self.funding_rate}")


class CandleMarket:
    """One product's market as candles show it, for ``SimCore`` (its ``Market``).

    ``open`` / ``reach`` / ``close`` move it to the next step of a candle; the caller then
    calls ``SimCore.step``. Only a candle's open is ``live`` to new orders' arrival; the
    open's and the close's book carry the slippage, the extremes' do not (a resting
    limit is reached by the price itself)."""

    live = False

    def __init__(
        self, product: Product, *, start: float, slippage: Decimal, funding_rate: Decimal, funding_interval: int
    ) -> None:
        self.product = product
        self.symbol = product.symbol
        self._inc = product.price_increment
        self._up = 1 + slippage
        self._down = 1 - slippage
        self._units = int(_BOOK_SIZE / product.base_increment)
        self.rate = funding_rate * funding_interval / _FUNDING_BASIS_S  # per funding interval
        self._interval = funding_interval
        self.funding_at = self._next_boundary(start)  # the next candle to end at or past it counts funding
        self.funding: deque[FundingTick] = deque(maxlen=1)  # the core reads the latest
        self.last_funding_tick = -1
        self.tick = 0
        self._price = 0.0
        self._ts = EPOCH
        self._slipped = True
        self._gap = False
        self._ticks: tuple[int, int] | None = None
        self._mid: Decimal | None = None

    def _move(self, price: float, ts: datetime, *, slipped: bool) -> None:
        self.tick += 1
        self._price, self._ts, self._slipped = price, ts, slipped
        self._ticks = self._mid = None

    def open(self, price: float, ts: datetime) -> None:
        """A new candle's open: a gap from the last close, where waiting orders arrive."""
        self._move(price, ts, slipped=True)
        self.live = self._gap = True

    def reach(self, price: float) -> None:
        """The price moved (within the candle) to one of its extremes."""
        self._move(price, self._ts, slipped=False)
        self.live = self._gap = False

    def close(self, price: float, start: float, end: float) -> None:
        """The candle closed; funding for every interval boundary in (start, end] at this close."""
        self._move(price, EPOCH + timedelta(seconds=end), slipped=True)
        self.live = self._gap = False
        boundaries = int(end // self._interval - start // self._interval)
        if boundaries > 0 and self.rate:
            self.funding.append(FundingTick(self.tick, self._ts, self.rate * boundaries))
            self.last_funding_tick = self.tick
        self.funding_at = self._next_boundary(end)

    def _next_boundary(self, after: float) -> float:
        """The first funding boundary after ``after`` (never, without a rate)."""
        return (after // self._interval + 1) * self._interval if self.rate else math.inf

    def show(self, price: float, ts: datetime) -> None:
        """A close on which nothing happened (the loop only noted its price)."""
        if price != self._price or ts != self._ts:
            self._move(price, ts, slipped=True)
            self.live = self._gap = False

    # ----- what the core asks (engine.Market) -----------------------------------------

    def tick_time(self, n: int) -> datetime:
        return self._ts

    def mid_float(self) -> float:
        return self._price

    @property
    def mid(self) -> Decimal:
        if self._mid is None:
            self._mid = _dec(self._price)
        return self._mid

    def best_ticks(self) -> tuple[int, int]:
        if self._ticks is None:
            price, inc = self.mid, self._inc
            up, down = (self._up, self._down) if self._slipped else (1, 1)
            bid = int((price * down / inc).to_integral_value(ROUND_FLOOR))
            ask = int((price * up / inc).to_integral_value(ROUND_CEILING))
            self._ticks = (max(bid, 1), max(ask, 1))
        return self._ticks

    def levels(self, side: int, depth: int | None = None) -> list[tuple[int, int, int]]:
        if depth == 0:
            return []
        bid, ask = self.best_ticks()
        return [(0, ask if side == ASK else bid, self._units)]

    def consume(self, side: int, level: int, units: int) -> None:
        return None  # the replayed book never runs out

    def price(self, ticks: int) -> Decimal:
        return ticks * self._inc

    def crossing(self, level: float) -> Decimal:
        """At the open the price jumped there from the last close; within a candle it
        passed through ``level`` on its way."""
        return self.mid if self._gap else _dec(level).quantize(self._inc)

    def quote(self) -> Quote:
        bid, ask = self.best_ticks()
        return Quote(self.symbol, self.price(bid), self.price(ask), self._ts, self.mid)

    def book(self, depth: int | None = None) -> OrderBook:
        bid, ask = self.best_ticks()
        bids = (BookLevel(self.price(bid), _BOOK_SIZE),) if depth != 0 else ()
        asks = (BookLevel(self.price(ask), _BOOK_SIZE),) if depth != 0 else ()
        return OrderBook(self.symbol, self._ts, bids, asks)

    def candles(self, granularity_seconds: int, limit: int) -> list[Candle]:
        return []  # no history: the backtest loop hands every candle to the bot itself


class Lane:
    """One product's candles in a replay: what the loop moves for that symbol.

    The loop calls ``on_bar(start, open, high, low, close)`` for each new candle
    while ``busy`` (orders waiting, a perpetual position, funding to settle), and
    sets ``price`` (the close) on every candle otherwise. ``b`` is the account's
    exposure to this market (the spot holding, or contracts × size)."""

    __slots__ = ("_exchange", "b", "band", "busy", "market", "price", "symbol", "waiting")

    def __init__(self, exchange: ReplayExchange, market: CandleMarket) -> None:
        self._exchange = exchange
        self.market = market
        self.symbol = market.symbol
        self.price: float | None = None  # the latest candle's close
        self.busy = False
        self.waiting = False  # orders placed since the last candle: they arrive at its open
        self.band: tuple[float, float] | None = exchange.core.idle_band(market.symbol)
        self.b = 0.0

    def on_bar(self, start: float, open_: float, high: float, low: float, close: float) -> None:
        """A new candle, step by step: what waits for its open arrives, resting limits
        fill, a perp position is liquidated or funded. A step inside the core's
        ``idle_band`` is skipped (a held perp position costs a comparison per candle),
        the close's when no funding is due."""
        self.price = close
        market, ex, sym = self.market, self._exchange, self.symbol
        core = ex.core
        end = start + ex.bar_seconds
        band = self.band
        stepped = False
        if band is None or low <= band[0] or high >= band[1]:
            market.open(open_, EPOCH + timedelta(seconds=start))
            core.step(sym)
            band = core.idle_band(sym)
            if band is None or low <= band[0] or high >= band[1]:
                first, second = (low, high) if close >= open_ else (high, low)
                market.reach(first)
                core.step(sym)
                market.reach(second)
                core.step(sym)
            stepped = True
        if end >= market.funding_at:
            market.close(close, start, end)
            core.step(sym)
            stepped = True
        if not stepped:
            return
        waiting, self.waiting = self.waiting, False
        ex._stepped(waiting)
        self.settle()

    def settle(self) -> None:
        """What the next candle needs: whether to call on_bar at all, and the idle band."""
        core = self._exchange.core
        self.busy = core.busy(self.symbol)
        self.band = core.idle_band(self.symbol)


class ReplayExchange:
    """One account (a ``SimCore`` on a ``CandleMarket`` per product) replayed candle by candle.

    Each product is a ``Lane`` (``lanes[symbol]``) the loop moves. ``changed`` turns on
    when a step changed the account or an order; ``equity_a + Σ lane.b × lane.price`` is
    the account's equity at any close until the next change.
    """

    name = "replay"
    capabilities = CAPABILITIES

    def __init__(
        self,
        products: Product | Sequence[Product],
        clock: Clock,
        *,
        bar_seconds: int,
        starting_cash: Decimal,
        costs: ReplayCosts | None = None,
        cash_currency: str = "USD",
    ) -> None:
        listed = [products] if isinstance(products, Product) else list(products)
        if not listed:
            raise ValueError("a replay needs at least one product")
        for product in listed:
            if product.quote != cash_currency:
                raise ValueError(f"{product.symbol} is quoted in {product.quote}, the account in {cash_currency}")
        self.clock = clock
        self.bar_seconds = bar_seconds
        c = costs or ReplayCosts()
        config = SimConfig(
            starting_cash=starting_cash, taker_fee_bps=c.fee_bps,
            maker_fee_bps=c.maker_fee_bps if c.maker_fee_bps is not None else c.fee_bps,
            liquidation_fee_bps=c.liquidation_fee_bps, cash_currency=cash_currency,
        )
        start = (clock.now() - EPOCH).total_seconds()
        interval = round(config.funding_interval_seconds)
        self.markets = {
            p.symbol: CandleMarket(p, start=start, slippage=c.slippage_bps / _BPS,
                                   funding_rate=c.funding_rate if p.is_perpetual else Decimal(0),
                                   funding_interval=interval)
            for p in listed
        }
        self.core = SimCore(listed, config, start=clock.now(), markets=dict(self.markets))
        self.lanes = {symbol: Lane(self, market) for symbol, market in self.markets.items()}
        self.changed = False
        self._seen = (0, 0, Decimal(0))  # fills, funding events, funding accrued: the account's marks
        self._version = 0
        self._account: AccountSnapshot | None = None
        self._account_key: tuple[int, tuple[float | None, ...]] | None = None
        self.equity_a = float(starting_cash)

    def _stepped(self, waiting: bool) -> None:
        """A lane stepped its market: note whether the account changed."""
        core = self.core
        seen = (core.fills_since(self._seen[0])[1], core.funding_count,
                sum((core.accrued_funding(s) for s in self.lanes), Decimal(0)))
        if seen != self._seen or waiting:
            self._seen = seen
            self._account_changed()

    def funding_now(self, symbol: str) -> tuple[Decimal, datetime | None] | None:
        """A perpetual's funding (what a strategy reads): the rate per funding interval
        (``funding_rate`` per 8 h, spread over the intervals) and the next boundary."""
        self.core.product(symbol)  # UnknownProduct for another symbol
        market = self.markets[symbol]
        if not market.product.is_perpetual:
            return None
        at = market.funding_at
        return market.rate, (EPOCH + timedelta(seconds=at) if math.isfinite(at) else None)

    def _account_changed(self) -> None:
        self.changed = True
        self._version += 1
        self._show()
        a, exposure = self.core.equity_lines()
        self.equity_a = float(a)
        for symbol, lane in self.lanes.items():
            lane.b = float(exposure[symbol])

    def _show(self) -> None:
        """The markets at their latest closes, before anything is asked of them."""
        now = self.clock.now()
        for lane in self.lanes.values():
            if lane.price is not None:
                lane.market.show(lane.price, now)

    def _priced(self, symbol: str) -> None:
        if self.lanes[symbol].price is None:
            raise OrderRejected("no_price", f"no {symbol} candle replayed yet")
        self._show()

    # ----- Exchange port ---------------------------------------------------------------

    async def products(self) -> list[Product]:
        return self.core.products()

    async def quote(self, symbol: str) -> Quote:
        self.core.product(symbol)
        self._priced(symbol)
        return self.core.quote(symbol)

    async def book(self, symbol: str, depth: int) -> OrderBook:
        self.core.product(symbol)
        self._priced(symbol)
        return self.core.book(symbol, depth)

    async def candles(self, symbol: str, granularity_seconds: int, limit: int) -> list[Candle]:
        return self.core.candles(symbol, granularity_seconds, limit)

    async def place_order(self, request: OrderRequest) -> OrderSnapshot:
        self.core.product(request.symbol)
        self._priced(request.symbol)
        snapshot = self.core.place_order(request, self.clock.now())  # taken: no hold until it arrives
        lane = self.lanes[request.symbol]
        lane.waiting = True
        lane.settle()
        return snapshot

    async def cancel_order(self, client_order_id: str) -> OrderSnapshot:
        self._version += 1
        snapshot = self.core.cancel_order(client_order_id, self.clock.now())
        lane = self.lanes.get(snapshot.symbol)
        if lane is not None:
            lane.settle()
        return snapshot

    async def get_order(self, client_order_id: str) -> OrderSnapshot:
        return self.core.get_order(client_order_id)

    async def open_orders(self) -> list[OrderSnapshot]:
        return self.core.open_orders()

    async def orders_since(self, since: datetime, symbol: str | None = None) -> list[OrderSnapshot]:
        return [s for s in self.core.orders_since(since) if symbol in (None, s.symbol)]

    async def fills_since(self, cursor: int) -> tuple[list[Fill], int]:
        return self.core.fills_since(cursor)

    async def account(self) -> AccountSnapshot:
        # Asked several times per order at one price: the snapshot stands until the
        # account or the price changes.
        key = (self._version, tuple(lane.price for lane in self.lanes.values()))
        cached = self._account
        if cached is not None and self._account_key == key:
            return cached
        self._show()
        if cached is not None and self._account_key is not None and self._account_key[0] == self._version:
            # only the price moved: the same balances and positions, valued again
            self._account = AccountSnapshot(cached.balances, cached.positions, self.core.equity())
        else:
            self._account = self.core.account()
        self._account_key = key
        return self._account

    async def close(self) -> None:
        return None

    # ----- what the backtest reports ---------------------------------------------------

    @property
    def fills(self) -> list[Fill]:
        return self.core.fills

    @property
    def funding(self) -> list[FundingEvent]:
        return self.core.funding_log

    @property
    def liquidations(self) -> int:
        return sum(1 for f in self.core.fills if f.liquidity is Liquidity.LIQUIDATION)
