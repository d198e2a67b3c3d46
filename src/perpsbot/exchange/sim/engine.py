"""The simulator core: markets, an account, order matching, funding and liquidation.

``SimCore`` is synchronous and knows nothing of clocks: callers move it with
``advance_to(ts)``; ``SimExchange`` wraps it behind the async ``Exchange`` port.

Accounting model
----------------
* Spot: one balance per currency (cash and base assets). A buy needs cash for
  cost + fee; a sell needs the base asset. Resting orders put what they may
  spend on hold. A spot ``Position`` is kept per traded symbol for reporting
  (entry price, realised PnL, fees); the balances are the source of truth.
* Futures, perpetual-style and dated (settled in the cash currency): isolated margin
  per position. A dated future has no funding, and refuses orders once expired.
  Opening/increasing takes ``notional / leverage`` from cash into the
  position's margin; reducing returns the proportional margin plus the
  realised PnL. Fees are paid from cash. ``Position.funding`` is the net
  funding *received* (negative when paid), counted every funding interval and
  settled in cash twice a day, at 00:00 and 12:00 UTC (even once flat), as Coinbase's
  US perpetual-style futures do. Cash pays from the position's margin if it runs out.
* Liquidation: an isolated perpetual when its mark crosses its liquidation price;
  CFM futures by the venue's rule (``margin.py``): when the account's total margin
  (cash + posted margin + unrealised PnL + accrued funding) falls under the maintenance
  margin of every CFM position at the window's rates, all of them are closed.
* Equity = cash (available + hold) + spot assets at mid + perp margin + perp
  unrealised PnL at mid (the mark) + funding accrued and not yet settled.

Our orders take liquidity from the synthetic book but do not move the price
path (it is exogenous, which keeps runs reproducible); liquidity taken at a tick
is gone for the rest of that tick.

Markets
-------
The core asks each product's market (``Market``) for its book, mid and funding;
by default it makes seeded ``MarketModel`` s and steps them itself. A caller may
give its own markets instead (``markets=``: the backtest's candles, sim/replay.py)
and move them itself, calling ``step(symbol)`` after each move; ``advance_to`` then
only keeps the time. A market that is not ``live`` (a candle that has closed) takes
orders as it shows them — checked against its book then — and they reach it at its
next step, filled there as any new order is.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NoReturn, Protocol

from perpsbot.domain import (
    ZERO,
    AccountSnapshot,
    Balance,
    Candle,
    DomainError,
    Fill,
    FundingSettlement,
    Liquidity,
    MarginRates,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Product,
    Quote,
    Side,
    TimeInForce,
    VenueMargin,
    require_aware,
)
from perpsbot.exchange.port import (
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderSnapshot,
    UnknownProduct,
)
from perpsbot.exchange.sim.margin import initial_rate, maintenance_rate, margin_window, rates_window
from perpsbot.exchange.sim.market import (
    ASK,
    BID,
    FundingTick,
    MarketModel,
    OrderBook,
    derive_seed,
    from_us,
    to_us,
)
from perpsbot.exchange.sim.products import SimProduct, default_market_params, is_cfm

_BPS = Decimal(10_000)
_ONE = Decimal(1)
_LIVE = frozenset({OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})
_NO_BUY = -1
_NO_SELL = 1 << 62
_SETTLEMENT_US = 12 * 3600 * 1_000_000  # funding is settled twice a day
_CENT = Decimal("0.01")
_EVERYWHERE = (-math.inf, math.inf)


def _dec(value: object, name: str) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, str)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    raise TypeError(f"SimConfig.{name} must be a Decimal, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int = 0
    starting_cash: Decimal = Decimal(100_000)
    maker_fee_bps: Decimal = Decimal("2.5")
    taker_fee_bps: Decimal = Decimal("5")
    tick_seconds: float = 0.1
    warmup_seconds: float = 900.0
    funding_interval_seconds: float = 3600.0
    book_levels: int = 10
    liquidation_fee_bps: Decimal = Decimal("50")
    start: datetime | None = None  # None: the first advance_to() (or SimCore(start=...)) anchors the run
    cash_currency: str = "USD"
    second_bar_history: int = 7200  # 1 s bars kept (2 h): candles whose granularity is not a multiple of 60
    minute_bar_history: int = 2880  # 1 min bars kept (2 days): candles of multiples of 60 s

    def __post_init__(self) -> None:
        for name in ("starting_cash", "maker_fee_bps", "taker_fee_bps", "liquidation_fee_bps"):
            object.__setattr__(self, name, _dec(getattr(self, name), name))
        if self.starting_cash < 0:
            raise ValueError("starting_cash must be >= 0")
        for name in ("maker_fee_bps", "taker_fee_bps", "liquidation_fee_bps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not self.tick_seconds > 0 or round(self.tick_seconds * 1_000_000) < 1:
            raise ValueError("tick_seconds must be > 0 (at least 1 microsecond)")
        if self.warmup_seconds < 0:
            raise ValueError("warmup_seconds must be >= 0")
        if not self.funding_interval_seconds > 0:
            raise ValueError("funding_interval_seconds must be > 0")
        if self.book_levels < 1:
            raise ValueError("book_levels must be >= 1")
        if self.start is not None:
            require_aware(self.start, "SimConfig.start")


@dataclass(frozen=True, slots=True)
class FundingEvent:
    """One funding settlement on an open perpetual position.

    ``payment`` is the cash flow to the account: ``-size * mark * contract_size * rate``
    (a long pays when the rate is positive)."""

    symbol: str
    ts: datetime
    rate: Decimal
    mark: Decimal
    position_size: Decimal
    payment: Decimal


class Market(Protocol):
    """What the core asks of one product's market: the seeded ``MarketModel`` and the
    backtest's ``CandleMarket`` both answer it. Prices and sizes in grid units (ticks of
    ``price_increment``, units of ``base_increment``)."""

    product: Product
    live: bool  # an order placed now trades now; False: it reaches the market at its next step
    funding: deque[FundingTick]  # rates published, the latest last
    last_funding_tick: int  # the tick of the latest

    @property
    def tick(self) -> int: ...

    @property
    def mid(self) -> Decimal: ...

    def tick_time(self, n: int) -> datetime: ...

    def mid_float(self) -> float: ...

    def best_ticks(self) -> tuple[int, int]: ...

    def levels(self, side: int, depth: int | None = None) -> list[tuple[int, int, int]]: ...

    def consume(self, side: int, level: int, units: int) -> None: ...

    def price(self, ticks: int) -> Decimal: ...

    def crossing(self, level: float) -> Decimal: ...

    def quote(self) -> Quote: ...

    def book(self, depth: int | None = None) -> OrderBook: ...

    def candles(self, granularity_seconds: int, limit: int) -> list[Candle]: ...


class UnknownProductRejected(OrderRejected, UnknownProduct):
    """An order for a product the exchange does not list: both an ``OrderRejected``
    (reason ``unknown_product``) and an ``UnknownProduct``."""


@dataclass(slots=True)
class _Rec:
    order: Order | None
    eid: str
    seq: int
    product: Product | None
    fills: list[Fill] = field(default_factory=list)
    hold_ccy: str | None = None
    hold: Decimal = ZERO
    unit_hold: Decimal = ZERO
    limit_ticks: int = 0
    fixed: OrderSnapshot | None = None  # for requests too malformed to become a domain Order


class SimCore:
    """In-process exchange: synthetic markets plus one account."""

    def __init__(
        self,
        products: Iterable[SimProduct | Product],
        config: SimConfig | None = None,
        *,
        start: datetime | None = None,
        markets: Mapping[str, Market] | None = None,
    ) -> None:
        self.config = config if config is not None else SimConfig()
        cfg = self.config
        self._specs: dict[str, SimProduct] = {}
        for item in products:
            spec = item if isinstance(item, SimProduct) else SimProduct(item, default_market_params(item))
            if spec.symbol in self._specs:
                raise ValueError(f"product {spec.symbol} listed twice")
            self._specs[spec.symbol] = spec
        if not self._specs:
            raise ValueError("the simulator needs at least one product")
        self._maker = cfg.maker_fee_bps / _BPS
        self._taker = cfg.taker_fee_bps / _BPS
        self._liq_fee = cfg.liquidation_fee_bps / _BPS
        self._cash = cfg.cash_currency
        self._balances: dict[str, list[Decimal]] = {self._cash: [cfg.starting_cash, ZERO]}
        self._positions: dict[str, Position] = {}
        self._margin: dict[str, Decimal] = {}
        self._accrued: dict[str, Decimal] = {}  # funding counted, not yet settled in cash
        self._intraday_margin = False  # enrolled in intraday margin (its lower rates in the window)
        self._maint_window = ""  # the window whose rates ``_maint`` holds, until ``_maint_until_us``
        self._maint_until_us = -1
        self._maint: dict[str, float] = {}  # CFM symbol -> maintenance rate in that window
        self._liq_price: dict[str, float] = {}
        self._orders: dict[str, _Rec] = {}
        self._resting: dict[str, list[_Rec]] = {s: [] for s in self._specs}
        self._arriving: dict[str, list[_Rec]] = {s: [] for s in self._specs}  # for a market not live
        self._max_buy: dict[str, int] = {s: _NO_BUY for s in self._specs}
        self._min_sell: dict[str, int] = {s: _NO_SELL for s in self._specs}
        self._fills: list[Fill] = []
        self._funding_log: list[FundingEvent] = []
        self._settlements: list[FundingSettlement] = []  # funding settled in cash, oldest first
        self._order_seq = 0
        self._trade_seq = 0
        self._liq_seq = 0
        self._models: dict[str, Market] = {}
        self._ticking: dict[str, MarketModel] = {}  # the markets the core steps itself
        if markets is not None and set(markets) != set(self._specs):
            raise ValueError(f"markets for {sorted(markets)}, products {sorted(self._specs)}")
        self._driven = dict(markets) if markets is not None else None
        self._tick_us = round(cfg.tick_seconds * 1_000_000)
        self._funding_us = round(cfg.funding_interval_seconds * 1_000_000)
        self._n: int | None = None
        self.start: datetime | None = None
        self.run_tag = ""
        self._value_product: dict[str, str] = {}  # which product prices a currency: spot first, else a perp
        for perp_pass in (False, True):
            for spec in self._specs.values():
                p = spec.product
                if p.is_derivative == perp_pass and p.quote == self._cash:
                    self._value_product.setdefault(p.base, p.symbol)
        anchor = start if start is not None else cfg.start
        if anchor is not None:
            self._begin(anchor)

    # ----- time -------------------------------------------------------------------------

    def _begin(self, start: datetime) -> None:
        require_aware(start, "simulator start")
        cfg = self.config
        origin = start - timedelta(seconds=cfg.warmup_seconds)
        for sym, spec in self._specs.items():
            if self._driven is not None:
                self._models[sym] = self._driven[sym]
                continue
            self._models[sym] = self._ticking[sym] = MarketModel(
                spec.product,
                spec.market,
                seed=cfg.seed,
                start=origin,
                tick_seconds=cfg.tick_seconds,
                book_levels=cfg.book_levels,
                funding_interval_seconds=cfg.funding_interval_seconds,
                second_bars=cfg.second_bar_history,
                minute_bars=cfg.minute_bar_history,
            )
        target = to_us(start) // self._tick_us
        # Ids carry a tag of (seed, start): deterministic for a replay, yet a later run
        # (another start) never reuses an earlier run's trade or order ids.
        self.run_tag = f"{derive_seed(cfg.seed, 'run', str(to_us(start))) & 0xFFFFFFFF:08x}"
        for model in self._ticking.values():
            model.step_to(target)
        self._n = target
        self.start = start

    @property
    def started(self) -> bool:
        return self._n is not None

    def _require_started(self) -> int:
        if self._n is None:
            raise RuntimeError("the simulator has no start time yet: call advance_to(ts) first")
        return self._n

    @property
    def tick(self) -> int:
        return self._require_started()

    @property
    def now(self) -> datetime:
        """Grid time of the current tick."""
        return from_us(self._require_started() * self._tick_us)

    def advance_to(self, ts: datetime) -> None:
        """Step every market along the grid up to ``ts`` (never backwards), matching
        resting orders, settling funding and liquidating as the prices move."""
        if self._n is None:
            self._begin(ts)
            return
        target = to_us(ts) // self._tick_us
        if target <= self._n:
            return
        if self._driven is not None:  # the caller moves these markets (step): only the time here
            self._n = target
            return
        active = [s for s in self._specs if self._is_active(s)]
        for sym, model in self._ticking.items():
            if sym not in active:
                model.step_to(target)
        if active:
            models = [(s, self._ticking[s]) for s in active]
            for n in range(self._n + 1, target + 1):
                for sym, model in models:
                    model.step_to(n)
                    self._on_tick(sym, model, n)
        self._n = target

    def _is_active(self, symbol: str) -> bool:
        if self._resting[symbol]:
            return True
        if self._accrued.get(symbol):
            return True
        pos = self._positions.get(symbol)
        return pos is not None and pos.size != 0 and self._specs[symbol].product.is_derivative

    @property
    def intraday_margin(self) -> bool:
        """Whether the account is enrolled in intraday margin (``INTRADAY_MARGIN_SETTING_INTRADAY``)."""
        return self._intraday_margin

    @intraday_margin.setter
    def intraday_margin(self, enrolled: bool) -> None:
        self._intraday_margin = enrolled
        self._maint_until_us = -1

    def margin_rates_window(self) -> str:
        """The margin window whose rates apply to CFM futures now."""
        return rates_window(self.now, self._intraday_margin)

    def busy(self, symbol: str) -> bool:
        """Whether a step of ``symbol``'s market can change anything: orders waiting or
        resting, a perp position, funding not yet settled."""
        return bool(self._arriving[symbol]) or self._is_active(symbol)

    def idle_band(self, symbol: str) -> tuple[float, float] | None:
        """Prices between which (exclusive) a move of ``symbol``'s market changes nothing
        but funding: no orders waiting or resting, and a perp position's liquidation price
        outside. None: any move may matter. A caller that moves its market (a replay)
        skips the steps that stay inside."""
        if self._arriving[symbol] or self._resting[symbol]:
            return None
        liq = self._liq_price.get(symbol)
        if liq is None:
            return _EVERYWHERE
        return (liq, math.inf) if self._positions[symbol].size > 0 else (-math.inf, liq)

    def step(self, symbol: str) -> None:
        """A market the caller moves (``markets=``) has moved: the orders it took while
        not live arrive first (filled as new orders at its book now), then what a tick
        does — resting orders matched, funding, liquidation."""
        model = self._models[symbol]
        n = model.tick
        arriving = self._arriving[symbol]
        if arriving and model.live:
            self._arriving[symbol] = []
            ts = model.tick_time(n)
            for rec in arriving:
                self._arrive(rec, model.product, ts)
        self._on_tick(symbol, model, n)

    def _on_tick(self, sym: str, model: Market, n: int) -> None:
        if self._resting[sym]:
            bid, ask = model.best_ticks()
            if ask <= self._max_buy[sym]:
                self._match_side(sym, model, n, Side.BUY)
            if bid >= self._min_sell[sym]:
                self._match_side(sym, model, n, Side.SELL)
        pos = self._positions.get(sym)
        if model.last_funding_tick == n and pos is not None and pos.size != 0 and model.product.is_perpetual:
            self._charge_funding(sym, model, n, pos)
        if model.last_funding_tick == n and self._accrued.get(sym) and self._settles_at(model, n):
            settled = self._accrued.pop(sym).quantize(_CENT)
            self._pay(sym, model.product.quote, settled)
            self._settlements.append(FundingSettlement(sym, model.tick_time(n), settled))
        if pos is None or pos.size == 0 or not model.product.is_derivative:
            return
        if is_cfm(model.product):
            if self._cfm_under_maintenance(to_us(model.tick_time(n))):
                for cfm_sym in [s for s, p in self._positions.items() if p.size and is_cfm(self._specs[s].product)]:
                    self._liquidate(cfm_sym, self._models[cfm_sym], n, self._positions[cfm_sym])
            return
        liq = self._liq_price.get(sym)
        if liq is not None:
            mark = model.mid_float()
            if (pos.size > 0 and mark <= liq) or (pos.size < 0 and mark >= liq):
                self._liquidate(sym, model, n, pos)

    # ----- market data ------------------------------------------------------------------

    def products(self) -> list[Product]:
        return [spec.product for spec in self._specs.values()]

    def product(self, symbol: str) -> Product:
        return self._spec(symbol).product

    def _spec(self, symbol: str) -> SimProduct:
        spec = self._specs.get(symbol)
        if spec is None:
            raise UnknownProduct(f"unknown product {symbol}")
        return spec

    def market(self, symbol: str) -> MarketModel:
        """The seeded market of ``symbol`` (a core given its markets has none)."""
        self._spec(symbol)
        self._require_started()
        model = self._ticking.get(symbol)
        if model is None:
            raise RuntimeError(f"{symbol}'s market is the caller's (markets=), not a MarketModel")
        return model

    def _market(self, symbol: str) -> Market:
        self._spec(symbol)
        self._require_started()
        return self._models[symbol]

    def quote(self, symbol: str) -> Quote:
        return self._market(symbol).quote()

    def book(self, symbol: str, depth: int | None = None) -> OrderBook:
        return self._market(symbol).book(depth)

    def candles(self, symbol: str, granularity_seconds: int, limit: int) -> list[Candle]:
        return self._market(symbol).candles(granularity_seconds, limit)

    # ----- orders -----------------------------------------------------------------------

    def place_order(self, request: OrderRequest, now: datetime | None = None) -> OrderSnapshot:
        """Place an order. A known ``client_order_id`` returns that order's snapshot
        (no second order). Raises ``OrderRejected`` (the order is kept as REJECTED)."""
        existing = self._orders.get(request.client_order_id)
        if existing is not None:
            return self._snapshot(existing)
        if now is not None:
            self.advance_to(now)
        self._require_started()
        ts = now if now is not None else self.now
        eid = self._next_order_id()
        spec = self._specs.get(request.symbol)
        try:
            order = Order(
                client_order_id=request.client_order_id,
                symbol=request.symbol,
                side=request.side,
                type=request.type,
                size=request.size,
                created_at=ts,
                limit_price=request.limit_price,
                time_in_force=request.time_in_force,
                reduce_only=request.reduce_only,
                leverage=request.leverage,
                exchange_order_id=eid,
            )
        except (DomainError, ArithmeticError) as exc:
            bad_size = not (request.size.is_finite() and request.size > 0)
            reason = "invalid_size" if bad_size else "invalid_price"
            snap = OrderSnapshot(
                request.client_order_id, eid, request.symbol, request.side, OrderStatus.REJECTED,
                request.size, ZERO, None, ZERO, ts, reason,
            )
            self._orders[request.client_order_id] = _Rec(None, eid, self._order_seq, None, fixed=snap)
            raise OrderRejected(reason, str(exc)) from None
        rec = _Rec(order, eid, self._order_seq, spec.product if spec else None)
        self._orders[order.client_order_id] = rec
        if spec is None:
            self._reject(rec, "unknown_product", f"unknown product {request.symbol}", ts)
        product = spec.product
        self._validate(rec, product, ts)
        if not self._models[product.symbol].live:
            return self._queue(rec, product, ts)
        self._execute(rec, product, ts)
        return self._snapshot(rec)

    def _reject(self, rec: _Rec, reason: str, message: str, ts: datetime) -> NoReturn:
        """Refuse the order: REJECTED, or CANCELLED with the reason once it was taken
        (an order that arrives at a market it can no longer meet)."""
        order = rec.order
        assert order is not None
        order.reject_reason = reason
        order.transition(OrderStatus.REJECTED if order.status is OrderStatus.PENDING else OrderStatus.CANCELLED, ts)
        if reason == "unknown_product":
            raise UnknownProductRejected(reason, message)
        raise OrderRejected(reason, message)

    def _validate(self, rec: _Rec, p: Product, ts: datetime) -> None:
        order = rec.order
        assert order is not None
        cid = order.client_order_id
        if p.expired(ts):
            assert p.expiry is not None  # expired: it has one
            self._reject(rec, "product_expired", f"{cid}: {p.symbol} expired at {p.expiry.isoformat()}; "
                         "it no longer trades", ts)
        if order.size < p.min_size:
            self._reject(rec, "invalid_size", f"{cid}: size {order.size} below the minimum {p.min_size}", ts)
        if order.size % p.base_increment != 0:
            self._reject(rec, "invalid_size", f"{cid}: size {order.size} is not a multiple of {p.base_increment}", ts)
        if order.type is OrderType.LIMIT:
            assert order.limit_price is not None
            if not order.limit_price.is_finite() or order.limit_price % p.price_increment != 0:
                self._reject(
                    rec, "invalid_price",
                    f"{cid}: limit price {order.limit_price} is not a multiple of {p.price_increment}", ts,
                )
        lev = order.leverage
        if not lev.is_finite() or lev < 1:
            self._reject(rec, "invalid_leverage", f"{cid}: leverage must be >= 1, got {lev}", ts)
        if lev > p.max_leverage:
            self._reject(rec, "leverage_too_high", f"{cid}: leverage {lev} above the maximum {p.max_leverage}", ts)
        if order.reduce_only:
            current = self._exposure(p)
            if current == 0 or (current > 0) == (order.side is Side.BUY):
                self._reject(
                    rec, "reduce_only_would_increase",
                    f"{cid}: reduce-only {order.side.value} would open or increase a position ({current})", ts,
                )
            if order.size > abs(current):
                order.size = abs(current)  # clip to what is left to close

    def _exposure(self, p: Product) -> Decimal:
        """Signed holding a reduce-only order may reduce."""
        if p.is_derivative:
            pos = self._positions.get(p.symbol)
            return pos.size if pos is not None else ZERO
        return self._balance(p.base)[0]

    def _plan(self, order: Order, p: Product, model: Market) -> tuple[list[tuple[int, int, int]], int, int | None]:
        """What ``order`` would take from the book now: ``(level, price_ticks, units)`` per
        level, the units left over, and its limit in ticks."""
        buy = order.side is Side.BUY
        limit_ticks: int | None = None
        if order.type is OrderType.LIMIT:
            assert order.limit_price is not None
            limit_ticks = int(order.limit_price / p.price_increment)
        plan: list[tuple[int, int, int]] = []
        left = int(order.size / p.base_increment)
        for level, price, avail in model.levels(ASK if buy else BID):
            if limit_ticks is not None and (price > limit_ticks if buy else price < limit_ticks):
                break
            take = min(avail, left)
            plan.append((level, price, take))
            left -= take
            if left == 0:
                break
        return plan, left, limit_ticks

    def _queue(self, rec: _Rec, p: Product, ts: datetime) -> OrderSnapshot:
        """The market is between steps (a candle has closed): the order is checked against
        the book it shows now, and reaches the market at its next step (``step``)."""
        order = rec.order
        assert order is not None
        plan, left, _ = self._plan(order, p, self._models[p.symbol])
        hold_ccy, unit_hold = self._hold_terms(order, p)
        self._check_funds(rec, p, plan, hold_ccy, unit_hold * left * p.base_increment, ts)
        order.transition(OrderStatus.OPEN, ts)
        self._arriving[p.symbol].append(rec)
        return self._snapshot(rec)

    def _arrive(self, rec: _Rec, p: Product, ts: datetime) -> None:
        """An order taken while the market was not live reaches it: checked again (the
        position or the cash may have moved since), then executed; refused: cancelled."""
        try:
            self._validate(rec, p, ts)
            self._execute(rec, p, ts)
        except OrderRejected:
            pass  # _reject cancelled it, with the reason

    def _execute(self, rec: _Rec, p: Product, ts: datetime) -> None:
        order = rec.order
        assert order is not None
        model = self._models[p.symbol]
        opp = ASK if order.side is Side.BUY else BID
        plan, left, limit_ticks = self._plan(order, p, model)
        taken = order.status is not OrderStatus.PENDING  # it arrives from the queue, already OPEN
        if order.type is OrderType.LIMIT and order.time_in_force is TimeInForce.FOK and left > 0:
            if not taken:
                order.transition(OrderStatus.OPEN, ts)
            order.transition(OrderStatus.CANCELLED, ts)
            return
        rest_units = left if order.type is OrderType.LIMIT and order.time_in_force is TimeInForce.GTC else 0
        hold_ccy, unit_hold = self._hold_terms(order, p)
        rest_size = rest_units * p.base_increment
        hold = unit_hold * rest_size
        self._check_funds(rec, p, plan, hold_ccy, hold, ts)

        if not taken:
            order.transition(OrderStatus.OPEN, ts)

        for level, price, take in plan:
            model.consume(opp, level, take)
            self._fill(rec, p, model.price(price), take * p.base_increment, Liquidity.TAKER, ts)
        if order.remaining > 0:
            if rest_units > 0 and not self._cancelled_by_flat(rec, p, ts):
                rec.hold_ccy, rec.hold, rec.unit_hold = hold_ccy, hold, unit_hold
                assert limit_ticks is not None
                rec.limit_ticks = limit_ticks
                if hold:
                    bal = self._balance(hold_ccy)
                    bal[0] -= hold
                    bal[1] += hold
                self._resting[p.symbol].append(rec)
                self._refresh_thresholds(p.symbol)
            elif not order.status.is_terminal:
                order.transition(OrderStatus.CANCELLED, ts)
        if plan:
            self._after_position_change(p.symbol, ts)

    def _cancelled_by_flat(self, rec: _Rec, p: Product, ts: datetime) -> bool:
        """A perp reduce-only order whose position closed while it filled: cancel the rest."""
        order = rec.order
        assert order is not None
        if order.reduce_only and p.is_derivative and self._positions[p.symbol].size == 0:
            order.transition(OrderStatus.CANCELLED, ts)
            return True
        return False

    def _hold_terms(self, order: Order, p: Product) -> tuple[str, Decimal]:
        """What a resting order puts on hold, per unit of size."""
        if order.type is not OrderType.LIMIT or order.time_in_force is not TimeInForce.GTC:
            return self._cash, ZERO
        assert order.limit_price is not None
        if p.is_derivative:
            if order.reduce_only:
                return p.quote, ZERO
            return p.quote, order.limit_price * p.contract_size / order.leverage * (1 + self._maker)
        if order.side is Side.BUY:
            return p.quote, order.limit_price * (1 + self._maker)
        return p.base, _ONE

    def _check_funds(
        self, rec: _Rec, p: Product, plan: list[tuple[int, int, int]], hold_ccy: str, hold: Decimal, ts: datetime
    ) -> None:
        order = rec.order
        assert order is not None
        inc, binc = p.price_increment, p.base_increment
        if p.is_derivative:
            pos = self._positions.get(p.symbol)
            pos = pos.copy() if pos is not None else Position(p.symbol, contract_size=p.contract_size)
            margin = self._margin.get(p.symbol, ZERO)
            delta = ZERO
            for _, price, take in plan:
                px, size = price * inc, take * binc
                fee = px * size * p.contract_size * self._taker
                d, margin = self._perp_effect(pos, margin, order.side, size, px, order.leverage, fee)
                delta += d
            cash = self._balance(p.quote)[0]
            if cash + delta - hold < 0:
                need = hold - delta
                self._reject(rec, "insufficient_funds", f"{order.client_order_id}: needs {need} {p.quote}, "
                             f"available {cash}", ts)
            if is_cfm(p):
                self._check_initial_margin(rec, p, ts)
            return
        if order.side is Side.BUY:
            cost = sum(((price * inc) * (take * binc) * (1 + self._taker) for _, price, take in plan), ZERO)
            cash = self._balance(p.quote)[0]
            if cost + hold > cash:
                self._reject(rec, "insufficient_funds", f"{order.client_order_id}: needs {cost + hold} {p.quote}, "
                             f"available {cash}", ts)
            return
        have = self._balance(p.base)[0]
        if order.size > have:
            self._reject(rec, "insufficient_funds", f"{order.client_order_id}: needs {order.size} {p.base}, "
                         f"available {have}", ts)

    def _check_initial_margin(self, rec: _Rec, p: Product, ts: datetime) -> None:
        """A CFM order that adds contracts needs their initial margin at the window's rate
        out of the buying power: the account's total margin less holds and the initial
        margin of what it already holds."""
        order = rec.order
        assert order is not None
        before = self._positions[p.symbol].size if p.symbol in self._positions else ZERO
        added = abs(before + order.size * order.side.sign) - abs(before)
        if added <= 0:
            return
        window = self.margin_rates_window()
        power = self.margin_total() - self._balances[self._cash][1] - self.cfm_requirements(window)[0]
        need = added * p.contract_size * self._models[p.symbol].mid * initial_rate(p, window)
        if need > power:
            self._reject(rec, "insufficient_funds", f"{order.client_order_id}: needs {need:.2f} {p.quote} of "
                         f"initial margin ({initial_rate(p, window):.2%}), buying power {power:.2f}", ts)

    def _balance(self, ccy: str) -> list[Decimal]:
        bal = self._balances.get(ccy)
        if bal is None:
            bal = self._balances[ccy] = [ZERO, ZERO]
        return bal

    @staticmethod
    def _perp_effect(
        pos: Position, margin: Decimal, side: Side, size: Decimal, price: Decimal, lev: Decimal, fee: Decimal
    ) -> tuple[Decimal, Decimal]:
        """Apply a perp fill to ``pos``; returns (cash delta, new margin)."""
        before = pos.size
        opening_side = before == 0 or (before > 0) == (side is Side.BUY)
        closing = ZERO if opening_side else min(abs(before), size)
        opening = size - closing
        released = ZERO
        if closing:
            released = margin if closing == abs(before) else margin * closing / abs(before)
        realized = pos.apply_fill(side, size, price, fee)
        added = opening * price * pos.contract_size / lev if opening else ZERO
        new_margin = margin - released + added
        if opening:
            if before == 0 or closing:
                pos.leverage = lev  # fresh (or flipped) position: all of it opened at this leverage
            elif pos.leverage != lev:
                pos.leverage = abs(pos.size) * pos.entry_price * pos.contract_size / new_margin
        if pos.size == 0:
            new_margin = ZERO
        return released + realized - fee - added, new_margin

    def _next_trade_id(self) -> str:
        self._trade_seq += 1
        return f"T{self._trade_seq:06d}-{self.run_tag}"

    def _next_order_id(self) -> str:
        self._order_seq += 1
        return f"SIM-{self._order_seq:08d}-{self.run_tag}"

    def _fill(
        self, rec: _Rec, p: Product, price: Decimal, size: Decimal, liquidity: Liquidity, ts: datetime
    ) -> Fill:
        order = rec.order
        assert order is not None
        rate = self._maker if liquidity is Liquidity.MAKER else self._taker
        fee = price * size * p.contract_size * rate
        fill = Fill(self._next_trade_id(), order.client_order_id, p.symbol, order.side, price, size, fee, liquidity, ts)
        if p.is_derivative:
            pos = self._positions.get(p.symbol)
            if pos is None:
                pos = self._positions[p.symbol] = Position(p.symbol, contract_size=p.contract_size)
            delta, margin = self._perp_effect(
                pos, self._margin.get(p.symbol, ZERO), order.side, size, price, order.leverage, fee
            )
            self._balance(p.quote)[0] += delta
            self._margin[p.symbol] = margin
            self._refresh_liq(p)
        else:
            pos = self._positions.get(p.symbol)
            if pos is None:
                pos = self._positions[p.symbol] = Position(p.symbol)
            pos.apply_fill(order.side, size, price, fee)
            cash, base = self._balance(p.quote), self._balance(p.base)
            if order.side is Side.BUY:
                cash[0] -= price * size + fee
                base[0] += size
            else:
                base[0] -= size
                cash[0] += price * size - fee
        order.record_fill(fill)
        rec.fills.append(fill)
        self._fills.append(fill)
        return fill

    def _refresh_liq(self, p: Product) -> None:
        """An isolated position's liquidation price (a CFM future's is the account's rule)."""
        pos = self._positions[p.symbol]
        liq = pos.liquidation_price(p.maintenance_margin_rate)
        if liq is None or (pos.size > 0 and liq <= 0) or is_cfm(p):
            self._liq_price.pop(p.symbol, None)
        else:
            self._liq_price[p.symbol] = float(liq)

    def _refresh_thresholds(self, sym: str) -> None:
        rest = self._resting[sym]
        self._max_buy[sym] = max((r.limit_ticks for r in rest if r.order.side is Side.BUY), default=_NO_BUY)  # type: ignore[union-attr]  # a resting record has its order
        self._min_sell[sym] = min((r.limit_ticks for r in rest if r.order.side is Side.SELL), default=_NO_SELL)  # type: ignore[union-attr]  # a resting record has its order

    def _release_hold(self, rec: _Rec, size: Decimal | None) -> None:
        """Give back the hold for ``size`` of the order (all of it if None)."""
        if not rec.hold or rec.hold_ccy is None:
            return
        amount = rec.hold if size is None else min(rec.hold, rec.unit_hold * size)
        bal = self._balance(rec.hold_ccy)
        bal[1] -= amount
        bal[0] += amount
        rec.hold -= amount

    def _unrest(self, rec: _Rec) -> None:
        sym = rec.order.symbol  # type: ignore[union-attr]  # a resting record has its order
        rest = self._resting[sym]
        if rec in rest:
            rest.remove(rec)
            self._refresh_thresholds(sym)
        arriving = self._arriving[sym]
        if rec in arriving:
            arriving.remove(rec)

    def _match_side(self, sym: str, model: Market, n: int, side: Side) -> None:
        buy = side is Side.BUY
        p = model.product
        opp = ASK if buy else BID
        levels = [list(level) for level in model.levels(opp)]
        if not levels:
            return
        best = levels[0][1]
        crossing = [
            r for r in self._resting[sym]
            if r.order.side is side and (r.limit_ticks >= best if buy else r.limit_ticks <= best)  # type: ignore[union-attr]  # a resting record has its order
        ]
        crossing.sort(key=lambda r: (-r.limit_ticks if buy else r.limit_ticks, r.seq))
        ts = model.tick_time(n)
        binc = p.base_increment
        for rec in crossing:
            order = rec.order
            assert order is not None
            want = int(order.remaining / binc)
            if order.reduce_only and p.is_derivative:
                pos = self._positions.get(sym)
                held = pos.size if pos is not None else ZERO
                if held == 0 or (held > 0) == buy:
                    self._cancel(rec, ts)
                    continue
                want = min(want, int(abs(held) / binc))
            got = 0
            for level in levels:
                if want == got:
                    break
                if (level[1] > rec.limit_ticks) if buy else (level[1] < rec.limit_ticks):
                    break
                take = min(level[2], want - got)
                if take > 0:
                    model.consume(opp, level[0], take)
                    level[2] -= take
                    got += take
            if got == 0:
                continue
            size = got * binc
            complete = size == order.remaining
            self._release_hold(rec, None if complete else size)
            self._fill(rec, p, model.price(rec.limit_ticks), size, Liquidity.MAKER, ts)
            if order.status.is_terminal:
                self._unrest(rec)
            elif order.reduce_only and p.is_derivative and self._positions[sym].size == 0:
                self._cancel(rec, ts)
        self._after_position_change(sym, ts)

    def _after_position_change(self, sym: str, ts: datetime) -> None:
        """A flat perp position leaves nothing for resting reduce-only orders to do."""
        pos = self._positions.get(sym)
        if pos is None or pos.size != 0 or not self._specs[sym].product.is_derivative:
            return
        for rec in list(self._resting[sym]):
            if rec.order.reduce_only:  # type: ignore[union-attr]  # a resting record has its order
                self._cancel(rec, ts)

    def _cancel(self, rec: _Rec, ts: datetime) -> None:
        order = rec.order
        assert order is not None
        if order.status in _LIVE:
            self._release_hold(rec, None)
            self._unrest(rec)
            order.transition(OrderStatus.CANCELLED, ts)

    def cancel_order(self, client_order_id: str, now: datetime | None = None) -> OrderSnapshot:
        """Cancel a live order; an order already done is returned unchanged."""
        rec = self._orders.get(client_order_id)
        if rec is None:
            raise OrderNotFound(f"no order {client_order_id}")
        if now is not None:
            self.advance_to(now)
        if rec.order is not None and rec.order.status in _LIVE:
            self._cancel(rec, now if now is not None else self.now)
        return self._snapshot(rec)

    def get_order(self, client_order_id: str) -> OrderSnapshot:
        rec = self._orders.get(client_order_id)
        if rec is None:
            raise OrderNotFound(f"no order {client_order_id}")
        return self._snapshot(rec)

    def open_orders(self) -> list[OrderSnapshot]:
        return [self._snapshot(r) for r in self._orders.values() if r.order is not None and r.order.status in _LIVE]

    def orders_since(self, since: datetime) -> list[OrderSnapshot]:
        snapshots = (self._snapshot(r) for r in self._orders.values())
        return [s for s in snapshots if s.created_at >= since]

    def fills_since(self, cursor: int) -> tuple[list[Fill], int]:
        if cursor < 0:
            raise ValueError(f"fill cursor must be >= 0, got {cursor}")
        return self._fills[cursor:], len(self._fills)

    @staticmethod
    def _snapshot(rec: _Rec) -> OrderSnapshot:
        if rec.fixed is not None:
            return rec.fixed
        o = rec.order
        assert o is not None
        return OrderSnapshot(
            client_order_id=o.client_order_id,
            exchange_order_id=rec.eid,
            symbol=o.symbol,
            side=o.side,
            status=o.status,
            size=o.size,
            filled_size=o.filled_size,
            average_fill_price=o.average_fill_price,
            fees=o.fees,
            created_at=o.created_at,
            reject_reason=o.reject_reason,
            fills=tuple(rec.fills),
        )

    # ----- funding and liquidation --------------------------------------------------------

    def _charge_funding(self, sym: str, model: Market, n: int, pos: Position) -> None:
        rate = model.funding[-1].rate
        mark = model.mid
        payment = -pos.size * mark * pos.contract_size * rate
        pos.funding += payment
        self._accrued[sym] = self._accrued.get(sym, ZERO) + payment
        self._funding_log.append(FundingEvent(sym, model.tick_time(n), rate, mark, pos.size, payment))

    def _cfm_under_maintenance(self, at_us: int) -> bool:
        """The venue's rule for CFM futures: the account's total margin under the
        maintenance margin of its CFM positions at the window's rates (floats: checked on
        every tick while one is held)."""
        if at_us >= self._maint_until_us:
            at = from_us(at_us)
            self._maint_window = rates_window(at, self._intraday_margin)
            _, ends = margin_window(at)
            self._maint_until_us = to_us(ends)
            self._maint = {s: float(maintenance_rate(spec.product, self._maint_window))
                           for s, spec in self._specs.items() if is_cfm(spec.product)}
        cash = self._balances[self._cash]
        total = float(cash[0] + cash[1]) + float(sum(self._margin.values(), ZERO))
        total += float(sum(self._accrued.values(), ZERO))
        maintenance = 0.0
        for sym, pos in self._positions.items():
            if not pos.size or not self._specs[sym].product.is_derivative:
                continue
            mark = self._models[sym].mid_float()
            total += (mark - float(pos.entry_price)) * float(pos.size * pos.contract_size)
            if sym in self._maint:
                maintenance += abs(float(pos.size * pos.contract_size)) * mark * self._maint[sym]
        return total < maintenance

    def _settles_at(self, model: Market, n: int) -> bool:
        """Whether the funding interval that ended at tick ``n`` ends on 00:00 or 12:00 UTC."""
        interval_us = self._funding_us
        return to_us(model.tick_time(n)) // interval_us * interval_us % _SETTLEMENT_US == 0

    def _pay(self, sym: str, currency: str, payment: Decimal) -> None:
        """Funding into cash; if cash runs out, the position's margin pays the rest."""
        cash = self._balance(currency)
        cash[0] += payment
        if cash[0] < 0:
            self._margin[sym] = self._margin.get(sym, ZERO) + cash[0]
            cash[0] = ZERO

    def _liquidate(self, sym: str, model: Market, n: int, pos: Position) -> None:
        p = model.product
        ts = model.tick_time(n)
        level = self._liq_price.get(sym)  # none for a CFM future: the venue's rule closes it at the mark
        mark = model.crossing(level) if level is not None else model.mid
        side = Side.SELL if pos.size > 0 else Side.BUY
        size = abs(pos.size)
        self._liq_seq += 1
        cid = f"liquidation-{sym}-{self._liq_seq:04d}-{self.run_tag}"
        while cid in self._orders:
            cid += "x"
        order = Order(cid, sym, side, OrderType.MARKET, size, ts, reduce_only=True, leverage=pos.leverage)
        order.exchange_order_id = self._next_order_id()
        rec = _Rec(order, order.exchange_order_id, self._order_seq, p)
        self._orders[cid] = rec
        order.transition(OrderStatus.OPEN, ts)
        fee = mark * size * p.contract_size * self._liq_fee
        margin = self._margin.get(sym, ZERO)
        realized = pos.apply_fill(side, size, mark, fee)
        cash = self._balance(p.quote)
        if is_cfm(p):  # cross margin: the account pays what the posted margin does not cover
            cash[0] = max(ZERO, cash[0] + margin + realized - fee)
        else:  # isolated: anything beyond the margin is the insurance fund's
            cash[0] += max(ZERO, margin + realized - fee)
        self._margin[sym] = ZERO
        self._liq_price.pop(sym, None)
        fill = Fill(self._next_trade_id(), cid, sym, side, mark, size, fee, Liquidity.LIQUIDATION, ts)
        order.record_fill(fill)
        rec.fills.append(fill)
        self._fills.append(fill)
        self._after_position_change(sym, ts)

    # ----- account ------------------------------------------------------------------------

    def margin(self, symbol: str) -> Decimal:
        """Isolated margin posted on a perpetual position."""
        self._spec(symbol)
        return self._margin.get(symbol, ZERO)

    @property
    def funding_log(self) -> list[FundingEvent]:
        return list(self._funding_log)

    @property
    def settlements(self) -> list[FundingSettlement]:
        """Funding settled in cash (twice a day, to the cent), oldest first."""
        return list(self._settlements)

    @property
    def funding_count(self) -> int:
        """Funding events so far (``funding_log`` without the copy)."""
        return len(self._funding_log)

    @property
    def fills(self) -> list[Fill]:
        return list(self._fills)

    def equity(self) -> Decimal:
        total = ZERO
        for ccy, (avail, hold) in self._balances.items():
            amount = avail + hold
            if ccy == self._cash:
                total += amount
            elif amount and ccy in self._value_product:
                total += amount * self._models[self._value_product[ccy]].mid
        for sym, pos in self._positions.items():
            model = self._models[sym]
            if model.product.is_derivative:
                total += self._margin.get(sym, ZERO)
                if pos.size:
                    total += pos.unrealized_pnl(model.mid)
        return total + sum(self._accrued.values(), ZERO)

    def margin_total(self) -> Decimal:
        """What the perps are margined with: cash (on hold too), posted margin, unrealised
        PnL at the mark and funding accrued, not yet settled."""
        cash = self._balances[self._cash]
        total = cash[0] + cash[1] + sum(self._margin.values(), ZERO) + sum(self._accrued.values(), ZERO)
        for sym, pos in self._positions.items():
            if pos.size and self._specs[sym].product.is_derivative:
                total += pos.unrealized_pnl(self._models[sym].mid)
        return total

    def cfm_requirements(self, window: str) -> tuple[Decimal, Decimal]:
        """(initial, maintenance) margin of the CFM positions at the rates of ``window``."""
        initial = maintenance = ZERO
        for sym, pos in self._positions.items():
            product = self._specs[sym].product
            if pos.size and is_cfm(product):
                notional = pos.notional(self._models[sym].mid)
                initial += notional * initial_rate(product, window)
                maintenance += notional * maintenance_rate(product, window)
        return initial, maintenance

    def cfm_margin(self) -> VenueMargin | None:
        """The account's CFM margin as the venue states it (the server's balance summary
        and margin window), for the in-process front; None when no CFM future is listed."""
        cfm = [spec.product for spec in self._specs.values() if is_cfm(spec.product)]
        if not cfm:
            return None
        window, ends = margin_window(self.now)
        rates = self.margin_rates_window()
        initial, maintenance = self.cfm_requirements(rates)
        total = self.margin_total()
        buffer = total - maintenance
        return VenueMargin(
            window=window.removeprefix("FCM_MARGIN_WINDOW_TYPE_").lower(), window_ends=ends, total_balance=total,
            buying_power=max(ZERO, total - self._balances[self._cash][1] - initial), initial_margin=initial,
            maintenance_margin=maintenance, liquidation_threshold=maintenance, liquidation_buffer=buffer,
            liquidation_buffer_pct=(buffer / total * 100).quantize(_CENT) if total > 0 else ZERO,
            rates={p.symbol: MarginRates(initial_rate(p, rates), initial_rate(p, rates)) for p in cfm},
        )

    def equity_lines(self) -> tuple[Decimal, dict[str, Decimal]]:
        """Equity as ``a + Σ b × mark`` over the markets, everything else as it is now: a
        caller that moves the markets (a replay) prices the account at any marks without
        asking again. A symbol's ``b`` is the spot holding (held too) or contracts × size."""
        exposure: dict[str, Decimal] = {}
        a = self.equity()
        for symbol, spec in self._specs.items():
            p = spec.product
            if p.is_derivative:
                pos = self._positions.get(symbol)
                b = pos.size * pos.contract_size if pos is not None else ZERO
            else:
                held = self._balances.get(p.base)
                b = held[0] + held[1] if held is not None else ZERO
            exposure[symbol] = b
            if b:
                a -= b * self._models[symbol].mid
        return a, exposure

    def accrued_funding(self, symbol: str) -> Decimal:
        """Funding counted on a future and not yet settled in cash."""
        return self._accrued.get(symbol, ZERO)

    def account(self) -> AccountSnapshot:
        self._require_started()
        balances = {ccy: Balance(ccy, avail, hold) for ccy, (avail, hold) in self._balances.items()}
        positions = {sym: pos.copy() for sym, pos in self._positions.items()}
        return AccountSnapshot(balances=balances, positions=positions, equity=self.equity())
