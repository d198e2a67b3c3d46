"""``ReplayExchange``: a candle-driven exchange behind the ``Exchange`` port, for backtests.

The backtest loop moves it one closed candle at a time; the bot's own market data,
strategy, risk and execution code talk to it exactly as they talk to the live
exchange (quotes, book, orders, fills, account).

Fill convention
---------------
An order placed when a candle closes is filled at the **next candle's open**:
a market buy at ``open × (1 + slippage)``, a market sell at ``open × (1 − slippage)``
(rounded to the price increment against us), paying the taker fee on the notional.
A limit order fills on a later candle whose range reaches its price: at the open
when the open is already through the limit (taker fee), else at the limit (maker
fee); IOC and FOK limits get one candle, GTC ones wait. The decision never sees
the price it will trade at — no look-ahead. An order placed on the last candle
is never filled.

Accounting (as the simulator core): spot keeps cash and base balances, a buy needs
cash for cost + fee (the size is cut to what the cash pays for at the fill price,
the rest cancelled); perpetuals keep isolated margin (notional / leverage) per
position, fees from cash. Funding on a perpetual position: ``funding_rate`` per
8 hours, settled every full UTC hour (rate / 8 each time) at that candle's close;
a long pays a positive rate. A perp whose candle trades through its liquidation
price is closed there (or at the open, if it gapped through), losing its margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from perpsbot.domain import (
    ZERO,
    AccountSnapshot,
    Balance,
    BookLevel,
    Candle,
    DomainError,
    Fill,
    Liquidity,
    MarginType,
    Order,
    OrderBook,
    OrderStatus,
    OrderType,
    Position,
    Product,
    Quote,
    Side,
    TimeInForce,
)
from perpsbot.domain.clock import EPOCH, Clock
from perpsbot.exchange.port import (
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderSnapshot,
    UnknownProduct,
    VenueCapabilities,
)

_BPS = Decimal(10_000)
_BOOK_SIZE = Decimal(10) ** 12  # the replayed book never runs out
# A new account every backtest, candles instead of a stream, isolated margin per position.
CAPABILITIES = VenueCapabilities(
    order_types=frozenset(OrderType), times_in_force=frozenset(TimeInForce), post_only=False, reduce_only=True,
    margin_types=frozenset({MarginType.ISOLATED}), funding=True, market_stream=False, user_stream=False,
    account_persists=False, book_from_stream=False,
)
FUNDING_PERIOD_HOURS = 8


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


@dataclass(frozen=True, slots=True)
class FundingPayment:
    ts: datetime
    rate: Decimal  # applied this time (per-8-hour rate / 8 × hours)
    mark: Decimal
    position_size: Decimal
    payment: Decimal  # cash to the account; negative when paid


@dataclass(slots=True)
class _Rec:
    order: Order
    eid: str
    fills: list[Fill] = field(default_factory=list)
    bars_seen: int = 0


class ReplayExchange:
    """One product, one account, replayed candle by candle (see the module notes).

    The loop calls ``on_bar(start, open, high, low, close)`` for each new candle
    while ``busy`` (orders waiting, or a perpetual position to fund or liquidate),
    and sets ``price`` (the close) on every candle otherwise. ``changed`` turns on when a fill,
    funding payment or liquidation changed the account; ``equity_a + equity_b ×
    price`` is the account's equity at any close until the next change.
    """

    name = "replay"
    capabilities = CAPABILITIES

    def __init__(
        self,
        product: Product,
        clock: Clock,
        *,
        bar_seconds: int,
        starting_cash: Decimal,
        costs: ReplayCosts | None = None,
        cash_currency: str = "USD",
    ) -> None:
        if product.quote != cash_currency:
            raise ValueError(f"{product.symbol} is quoted in {product.quote}, the account in {cash_currency}")
        self.product = product
        self.clock = clock
        self.bar_seconds = bar_seconds
        self.costs = costs or ReplayCosts()
        c = self.costs
        self._taker = c.fee_bps / _BPS
        self._maker = (c.maker_fee_bps if c.maker_fee_bps is not None else c.fee_bps) / _BPS
        self._slip = c.slippage_bps / _BPS
        self._liq_fee = c.liquidation_fee_bps / _BPS
        self._funding_step = c.funding_rate / FUNDING_PERIOD_HOURS
        self._perp = product.is_derivative
        self._cash_ccy = cash_currency
        self.starting_cash = starting_cash
        self._cash = starting_cash
        self._base = ZERO  # spot holding
        self._position = Position(product.symbol, contract_size=product.contract_size)
        self._margin = ZERO  # perp isolated margin
        self._liq_f: float | None = None
        self._orders: dict[str, _Rec] = {}
        self._pending: list[_Rec] = []
        self._fills: list[Fill] = []
        self.funding: list[FundingPayment] = []
        self.liquidations = 0
        self._order_seq = 0
        self._trade_seq = 0
        self.price: float | None = None  # the latest candle's close
        self.busy = False
        self.changed = False
        self._version = 0
        self._account: AccountSnapshot | None = None
        self._account_key: tuple[int, float | None] | None = None
        self.equity_a = float(starting_cash)
        self.equity_b = 0.0
        self._history: list[tuple[float, float, float, float, float]] | None = None

    def funding_now(self, symbol: str) -> tuple[Decimal, datetime] | None:
        """A perpetual's funding (what a strategy reads): the rate settled each hour
        (``funding_rate`` per 8 h, spread over the hours) and the next hour's start."""
        self._check_symbol(symbol)
        if not self._perp:
            return None
        now = self.clock.now().timestamp()
        return self._funding_step, EPOCH + timedelta(seconds=(now // 3600 + 1) * 3600)

    # ----- the replay loop -----------------------------------------------------------

    def on_bar(self, start: float, open_: float, high: float, low: float, close: float) -> None:
        """A new candle: fill what waits for its open, liquidate, settle funding."""
        if self._pending:
            self._fill_pending(EPOCH + timedelta(seconds=start), open_, high, low)
        if self._perp and self._position.size:
            if self._liq_f is not None:
                long = self._position.size > 0
                if (low <= self._liq_f) if long else (high >= self._liq_f):
                    self._liquidate(EPOCH + timedelta(seconds=start), open_, long)
            end = start + self.bar_seconds
            hours = math.floor(end / 3600) - math.floor(start / 3600)  # hour marks in (start, end]
            if hours > 0 and self._funding_step and self._position.size:
                self._settle_funding(EPOCH + timedelta(seconds=end), close, hours)
        self.see_bar(start, open_, high, low, close)

    def see_bar(self, start: float, open_: float, high: float, low: float, close: float) -> None:
        """Record a candle on which nothing happens here."""
        self.price = close
        if self._history is not None:
            self._history.append((start, open_, high, low, close))
        self.busy = bool(self._pending) or (self._perp and bool(self._position.size))

    # ----- Exchange port ---------------------------------------------------------------

    async def products(self) -> list[Product]:
        return [self.product]

    def _check_symbol(self, symbol: str) -> None:
        if symbol != self.product.symbol:
            raise UnknownProduct(f"unknown product {symbol}; this replay trades {self.product.symbol}")

    def _close_dec(self) -> Decimal:
        if self.price is None:
            raise OrderRejected("no_price", "no candle replayed yet")
        return _dec(self.price)

    def _touch(self, close: Decimal) -> tuple[Decimal, Decimal]:
        """Bid and ask the replay would trade at now: the close ± slippage, on the price grid."""
        inc = self.product.price_increment
        bid = (close * (1 - self._slip) / inc).to_integral_value(ROUND_FLOOR) * inc
        ask = (close * (1 + self._slip) / inc).to_integral_value(ROUND_CEILING) * inc
        return max(bid, inc), ask

    async def quote(self, symbol: str) -> Quote:
        self._check_symbol(symbol)
        close = self._close_dec()
        bid, ask = self._touch(close)
        return Quote(symbol, bid, ask, self.clock.now(), close)

    async def book(self, symbol: str, depth: int) -> OrderBook:
        self._check_symbol(symbol)
        bid, ask = self._touch(self._close_dec())
        return OrderBook(symbol, self.clock.now(), (BookLevel(bid, _BOOK_SIZE),), (BookLevel(ask, _BOOK_SIZE),))

    async def candles(self, symbol: str, granularity_seconds: int, limit: int) -> list[Candle]:
        self._check_symbol(symbol)
        if granularity_seconds != self.bar_seconds or not self._history:
            return []
        return [
            Candle(symbol, EPOCH + timedelta(seconds=s), _dec(o), _dec(h), _dec(lo), _dec(c), ZERO)
            for s, o, h, lo, c in self._history[-limit:]
        ]

    async def place_order(self, request: OrderRequest) -> OrderSnapshot:
        known = self._orders.get(request.client_order_id)
        if known is not None:
            return self._snapshot(known)
        now = self.clock.now()
        self._order_seq += 1
        eid = f"R-{self._order_seq:08d}"
        try:
            order = Order(
                client_order_id=request.client_order_id, symbol=request.symbol, side=request.side,
                type=request.type, size=request.size, created_at=now, limit_price=request.limit_price,
                time_in_force=request.time_in_force, reduce_only=request.reduce_only, leverage=request.leverage,
                exchange_order_id=eid,
            )
        except (DomainError, ArithmeticError) as exc:
            raise OrderRejected("invalid_order", str(exc)) from None
        rec = _Rec(order, eid)
        self._orders[order.client_order_id] = rec
        self._validate(rec, now)
        order.transition(OrderStatus.OPEN, now)
        self._pending.append(rec)
        self.busy = True
        return self._snapshot(rec)

    def _reject(self, rec: _Rec, reason: str, message: str, ts: datetime) -> None:
        rec.order.reject_reason = reason
        rec.order.transition(OrderStatus.REJECTED, ts)
        if reason == "unknown_product":
            raise UnknownProduct(message)
        raise OrderRejected(reason, message)

    def _validate(self, rec: _Rec, ts: datetime) -> None:
        order, p = rec.order, self.product
        cid = order.client_order_id
        if order.symbol != p.symbol:
            self._reject(rec, "unknown_product", f"unknown product {order.symbol}", ts)
        if order.size < p.min_size or order.size % p.base_increment != 0:
            self._reject(rec, "invalid_size", f"{cid}: size {order.size} is below {p.min_size} or off the "
                         f"{p.base_increment} grid", ts)
        if order.type is OrderType.LIMIT:
            assert order.limit_price is not None
            if order.limit_price % p.price_increment != 0:
                self._reject(rec, "invalid_price", f"{cid}: limit {order.limit_price} is off the "
                             f"{p.price_increment} grid", ts)
        if not order.leverage.is_finite() or order.leverage < 1 or order.leverage > p.max_leverage:
            self._reject(rec, "invalid_leverage", f"{cid}: leverage {order.leverage} outside 1..{p.max_leverage}", ts)
        held = self._exposure()
        buy = order.side is Side.BUY
        if order.reduce_only and (held == 0 or (held > 0) == buy):
            self._reject(rec, "reduce_only_would_increase", f"{cid}: reduce-only {order.side.value} would open "
                         f"or increase a position ({held})", ts)
        close = self._close_dec()
        if not p.is_derivative:
            if buy:
                cost = order.size * close * (1 + self._slip) * (1 + self._taker)
                if self._pending:
                    cost += self._pending_spend(close)
                if cost > self._cash:
                    self._reject(rec, "insufficient_funds", f"{cid}: needs about {cost:.2f} {p.quote}, "
                                 f"has {self._cash:.2f}", ts)
            elif order.size + (self._pending_sells() if self._pending else ZERO) > self._base:
                self._reject(rec, "insufficient_funds", f"{cid}: needs {order.size} {p.base}, has {self._base}", ts)
        elif not order.reduce_only and (held == 0 or (held > 0) == buy):
            margin = order.size * close * p.contract_size / order.leverage
            fee = order.size * close * p.contract_size * self._taker
            if margin + fee > self._cash:
                self._reject(rec, "insufficient_funds", f"{cid}: needs {margin + fee:.2f} {p.quote} of margin "
                             f"and fees, has {self._cash:.2f}", ts)

    def _exposure(self) -> Decimal:
        return self._position.size if self._perp else self._base

    def _pending_spend(self, close: Decimal) -> Decimal:
        return sum(
            (r.order.remaining * (r.order.limit_price or close) * (1 + self._taker)
             for r in self._pending if r.order.side is Side.BUY),
            ZERO,
        )

    def _pending_sells(self) -> Decimal:
        return sum((r.order.remaining for r in self._pending if r.order.side is Side.SELL), ZERO)

    async def cancel_order(self, client_order_id: str) -> OrderSnapshot:
        rec = self._orders.get(client_order_id)
        if rec is None:
            raise OrderNotFound(f"no order {client_order_id}")
        if rec in self._pending:
            self._pending.remove(rec)
            rec.order.transition(OrderStatus.CANCELLED, self.clock.now())
        return self._snapshot(rec)

    async def get_order(self, client_order_id: str) -> OrderSnapshot:
        rec = self._orders.get(client_order_id)
        if rec is None:
            raise OrderNotFound(f"no order {client_order_id}")
        return self._snapshot(rec)

    async def open_orders(self) -> list[OrderSnapshot]:
        return [self._snapshot(r) for r in self._pending]

    async def orders_since(self, since: datetime, symbol: str | None = None) -> list[OrderSnapshot]:
        snapshots = (self._snapshot(r) for r in self._orders.values())
        return [s for s in snapshots if s.created_at >= since and symbol in (None, s.symbol)]

    async def fills_since(self, cursor: int) -> tuple[list[Fill], int]:
        if cursor < 0:
            raise ValueError(f"fill cursor must be >= 0, got {cursor}")
        return self._fills[cursor:], len(self._fills)

    async def account(self) -> AccountSnapshot:
        # Asked several times per order at one price: the snapshot stands until the
        # account or the price changes.
        key = (self._version, self.price)
        if self._account_key == key and self._account is not None:
            return self._account
        balances = {self._cash_ccy: Balance(self._cash_ccy, self._cash)}
        positions: dict[str, Position] = {}
        if self._base:
            balances[self.product.base] = Balance(self.product.base, self._base)
        if self._position.size:
            positions[self.product.symbol] = self._position.copy()
        self._account = AccountSnapshot(balances=balances, positions=positions, equity=self.equity())
        self._account_key = key
        return self._account

    async def close(self) -> None:
        return None

    # ----- state ---------------------------------------------------------------------

    @property
    def fills(self) -> list[Fill]:
        return list(self._fills)

    @property
    def cash(self) -> Decimal:
        return self._cash

    @property
    def position(self) -> Position:
        return self._position.copy()

    @property
    def margin(self) -> Decimal:
        return self._margin

    def equity(self) -> Decimal:
        if self.price is None:
            return self._cash + self._margin
        close = _dec(self.price)
        if self._perp:
            return self._cash + self._margin + self._position.unrealized_pnl(close)
        return self._cash + self._base * close

    def _account_changed(self) -> None:
        self.changed = True
        self._version += 1
        if self._perp:
            pos = self._position
            b = float(pos.size * pos.contract_size)
            self.equity_a = float(self._cash + self._margin) - b * float(pos.entry_price)
            self.equity_b = b
        else:
            self.equity_a = float(self._cash)
            self.equity_b = float(self._base)

    # ----- fills ---------------------------------------------------------------------

    def _fill_pending(self, ts: datetime, open_: float, high: float, low: float) -> None:
        inc = self.product.price_increment
        still: list[_Rec] = []
        for rec in self._pending:
            order = rec.order
            buy = order.side is Side.BUY
            if order.type is OrderType.MARKET:
                raw = _dec(open_) * ((1 + self._slip) if buy else (1 - self._slip))
                price = max((raw / inc).to_integral_value(ROUND_CEILING if buy else ROUND_FLOOR) * inc, inc)
                self._execute(rec, price, Liquidity.TAKER, ts)
                continue
            limit = order.limit_price
            assert limit is not None
            flimit = float(limit)
            if (low <= flimit) if buy else (high >= flimit):
                crossed = (open_ <= flimit) if buy else (open_ >= flimit)
                price = _dec(open_) if crossed else limit
                self._execute(rec, price, Liquidity.TAKER if crossed else Liquidity.MAKER, ts)
            elif order.time_in_force is TimeInForce.GTC:
                still.append(rec)
            else:  # IOC / FOK: this candle was their chance
                order.transition(OrderStatus.CANCELLED, ts)
        self._pending = still

    def _affordable(self, order: Order, price: Decimal, rate: Decimal) -> Decimal:
        """How much of ``order`` the account can take at ``price`` (a multiple of the increment)."""
        p = self.product
        want = order.remaining
        held = self._exposure()
        buy = order.side is Side.BUY
        if order.reduce_only:
            if held == 0 or (held > 0) == buy:
                return ZERO
            want = min(want, abs(held))
        if not self._perp:
            if buy:
                unit = price * (1 + rate)
                can = self._cash / unit
            else:
                can = self._base
        else:
            closing = ZERO if held == 0 or (held > 0) == buy else min(abs(held), want)
            if closing == want:
                return want
            # Opening the rest needs margin and fees from cash (closing part frees margin first).
            freed = self._margin * closing / abs(held) if closing else ZERO
            unit = price * p.contract_size * (1 / order.leverage + rate)
            can = closing + (self._cash + freed - closing * price * p.contract_size * rate) / unit
        if can >= want:
            return want
        return max(ZERO, (can / p.base_increment).to_integral_value(ROUND_FLOOR) * p.base_increment)

    def _execute(self, rec: _Rec, price: Decimal, liquidity: Liquidity, ts: datetime) -> None:
        order = rec.order
        rate = self._maker if liquidity is Liquidity.MAKER else self._taker
        size = self._affordable(order, price, rate)
        if order.time_in_force is TimeInForce.FOK and order.type is OrderType.LIMIT and size < order.remaining:
            size = ZERO  # all or nothing
        if size <= 0 or size < self.product.min_size and size < order.remaining:
            order.reject_reason = "insufficient_funds" if not order.reduce_only else "nothing_to_reduce"
            order.transition(OrderStatus.CANCELLED, ts)
            return
        self._fill(rec, price, size, liquidity, ts, rate)
        if order.remaining > 0:  # cut to what the account could take: the rest is cancelled
            order.reject_reason = "insufficient_funds"
            order.transition(OrderStatus.CANCELLED, ts)

    def _fill(
        self, rec: _Rec, price: Decimal, size: Decimal, liquidity: Liquidity, ts: datetime, rate: Decimal
    ) -> None:
        p = self.product
        order = rec.order
        fee = price * size * p.contract_size * rate
        self._trade_seq += 1
        fill = Fill(f"RT-{self._trade_seq:08d}", order.client_order_id, p.symbol, order.side, price, size, fee,
                    liquidity, ts)
        if self._perp:
            self._perp_fill(order.side, size, price, order.leverage, fee)
        else:
            self._position.apply_fill(order.side, size, price, fee)
            if order.side is Side.BUY:
                self._cash -= price * size + fee
                self._base += size
            else:
                self._cash += price * size - fee
                self._base -= size
        order.record_fill(fill)
        rec.fills.append(fill)
        self._fills.append(fill)
        self._account_changed()

    def _perp_fill(self, side: Side, size: Decimal, price: Decimal, leverage: Decimal, fee: Decimal) -> None:
        pos = self._position
        before = pos.size
        closing = ZERO if before == 0 or (before > 0) == (side is Side.BUY) else min(abs(before), size)
        opening = size - closing
        released = ZERO
        if closing:
            released = self._margin if closing == abs(before) else self._margin * closing / abs(before)
        realized = pos.apply_fill(side, size, price, fee)
        added = opening * price * pos.contract_size / leverage if opening else ZERO
        self._margin = self._margin - released + added
        if opening:
            pos.leverage = leverage if before == 0 or closing else (
                abs(pos.size) * pos.entry_price * pos.contract_size / self._margin
            )
        if pos.size == 0:
            self._margin = ZERO
        self._cash += released + realized - fee - added
        liq = pos.liquidation_price(self.product.maintenance_margin_rate)
        self._liq_f = None if liq is None or (pos.size > 0 and liq <= 0) else float(liq)

    def _liquidate(self, ts: datetime, open_: float, long: bool) -> None:
        assert self._liq_f is not None
        p = self.product
        pos = self._position
        through = open_ <= self._liq_f if long else open_ >= self._liq_f  # gapped through: the open is all there is
        price = _dec(open_) if through else _dec(self._liq_f).quantize(p.price_increment)
        side = Side.SELL if long else Side.BUY
        size = abs(pos.size)
        fee = price * size * p.contract_size * self._liq_fee
        self._order_seq += 1
        eid = f"R-{self._order_seq:08d}"
        order = Order(f"liquidation-{self._order_seq:08d}", p.symbol, side, OrderType.MARKET, size, ts,
                      reduce_only=True, leverage=pos.leverage, exchange_order_id=eid)
        order.transition(OrderStatus.OPEN, ts)
        rec = _Rec(order, eid)
        self._orders[order.client_order_id] = rec
        realized = pos.apply_fill(side, size, price, fee)
        self._cash += max(ZERO, self._margin + realized - fee)  # a loss beyond the margin is not ours to pay
        self._margin = ZERO
        self._liq_f = None
        self._trade_seq += 1
        fill = Fill(f"RT-{self._trade_seq:08d}", order.client_order_id, p.symbol, side, price, size, fee,
                    Liquidity.LIQUIDATION, ts)
        order.record_fill(fill)
        rec.fills.append(fill)
        self._fills.append(fill)
        self.liquidations += 1
        self._account_changed()

    def _settle_funding(self, ts: datetime, close: float, hours: int) -> None:
        pos = self._position
        mark = _dec(close)
        rate = self._funding_step * hours
        payment = -pos.size * mark * pos.contract_size * rate
        pos.funding += payment
        self._cash += payment
        if self._cash < 0:  # cash ran out: the position's margin pays the rest
            self._margin += self._cash
            self._cash = ZERO
        self.funding.append(FundingPayment(ts, rate, mark, pos.size, payment))
        self._account_changed()

    def _snapshot(self, rec: _Rec) -> OrderSnapshot:
        o = rec.order
        return OrderSnapshot(
            client_order_id=o.client_order_id, exchange_order_id=rec.eid, symbol=o.symbol, side=o.side,
            status=o.status, size=o.size, filled_size=o.filled_size, average_fill_price=o.average_fill_price,
            fees=o.fees, created_at=o.created_at, reject_reason=o.reject_reason, fills=tuple(rec.fills),
        )
