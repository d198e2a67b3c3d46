"""ExecutionCoordinator: turns a decision into orders.

Sizing from an equity fraction, quantization to the product's increments, a
``client_order_id`` per order, the risk check, a write-ahead record before the
request is sent, placement, and the outcome (success or failure, latency).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from perpsbot.config import BotConfig
from perpsbot.config.diff import CONFIG_SET
from perpsbot.config.model import OrderTypeSetting
from perpsbot.domain import (
    ZERO,
    AccountSnapshot,
    DomainError,
    Fill,
    MarginType,
    Order,
    OrderBook,
    OrderStatus,
    OrderType,
    Position,
    Product,
    Side,
    TimeInForce,
)
from perpsbot.domain.clock import Clock
from perpsbot.exchange.port import Exchange, ExchangeError, OrderNotFound, OrderRejected, OrderRequest, OrderSnapshot
from perpsbot.execution.calls import bounded
from perpsbot.execution.pnl import PnlReport, pnl_from_fills
from perpsbot.execution.reconcile import LATE_FILL, LOST_ORDER_MARGIN, Reconciler, ReconcileReport
from perpsbot.risk.manager import OrderIntent, RiskManager
from perpsbot.store import EventStore, OrdersStore
from perpsbot.store.alerts import AlertBook
from perpsbot.strategy.base import Decision, OrderKind, OrderPlan, Target

if TYPE_CHECKING:
    from perpsbot.execution.pushed import PushedUpdates

log = logging.getLogger(__name__)

PLACE_TIMEOUT_SECONDS = 10.0
# What the orders we close on our own conclusion, not on the exchange's word, say
# (ExecutionCoordinator.closed_by_inference): an intent not listed past its bound, an
# acknowledged order the exchange no longer knows, an earlier run's intent on a new venue.
ABSENT = "not at the exchange"
VANISHED = "no longer known to the exchange"
VENUE_NEW = "the venue started anew with this process (in-process simulator)"
INFERRED_CLOSES = (ABSENT, VANISHED, VENUE_NEW)
UNRESOLVED_RETRY = timedelta(seconds=10)  # an unknown fate whose lookup failed is asked about again after this
BOOK_DEPTH = 50
LATENCY_SAMPLES = 10_000


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    client_order_id: str | None
    outcome: str  # placed | rejected_by_risk | rejected_by_exchange | failed | dry_run | skipped
    detail: str
    order: Order | None = None


class ExecutionCoordinator:
    def __init__(
        self,
        exchange: Exchange,
        risk: RiskManager,
        orders: OrdersStore,
        events: EventStore,
        clock: Clock,
        config: BotConfig,
        products: dict[str, Product],
        *,
        new_client_order_id: Callable[[], str] | None = None,
        alerts: AlertBook | None = None,
        fresh_venue: bool = False,
    ) -> None:
        self.exchange = exchange
        self.risk = risk
        self.orders = orders
        self.events = events
        self.clock = clock
        self.config = config
        self.products = products
        # Ours by their prefix, unique to the order store: recovery finds them at the exchange by it.
        self.new_client_order_id = new_client_order_id or (lambda: f"{orders.id_prefix}{uuid.uuid4().hex}")
        self.alerts = alerts or AlertBook(events, clock)
        self._account = AccountSnapshot()
        self._positions: dict[str, Position] | None = None
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.placed = 0
        self.failed = 0
        self._fill_cursor = 0
        # A venue made new for this process (the in-process simulator) holds none of the
        # store's earlier orders or fills; any other venue holds them all.
        self.fresh_venue = fresh_venue
        # Net signed size per symbol of the fills of our orders the venue holds: the
        # store's, every run's (this process's only on a fresh venue). Reconciliation
        # expects the exchange to hold this plus what was adopted.
        self.fill_ledger: dict[str, Decimal] = {} if fresh_venue else orders.net_fill_sizes()
        # Orders of unknown fate: when the exchange's silence about them proves they are absent.
        self.awaiting: dict[str, datetime] = {}
        self.duplicates_reported: set[str] = set()  # client ids whose duplicates at the venue were reported
        # What this run inherited: (signed size, price at the start) per symbol (``open_run``).
        self.opening: dict[str, tuple[Decimal, Decimal]] = {}
        self.opened_at: datetime | None = None
        # Open orders of earlier runs adopted at start-up (or foreign ones adopted): followed like ours.
        self.tracked: set[str] = set()
        # Funding the venue settled during this run, per symbol, recorded as
        # ``funding_settled`` events; the settlements' keys as the venue last listed them.
        self.funding_settled: dict[str, Decimal] = {}
        self._settlement_keys: set[tuple[str, datetime]] = set()
        self.reconciler = Reconciler(self)
        # Order and account changes the exchange pushes (None: it pushes nothing; all is polled).
        self.pushed: PushedUpdates | None = None

    # ----- account ------------------------------------------------------------------

    @property
    def account(self) -> AccountSnapshot:
        return self._account

    @account.setter
    def account(self, snapshot: AccountSnapshot) -> None:
        self._account = snapshot
        self._positions = None
        self.risk.note_margin(snapshot.margin)
        self._record_funding(snapshot)

    def _record_funding(self, snapshot: AccountSnapshot) -> None:
        """Record each funding settlement the venue reports, once: the venue lists a day's
        worth on every snapshot, so a key it no longer lists never comes back."""
        keys = set()
        for settled in snapshot.funding_settled:
            key = (settled.symbol, settled.at)
            keys.add(key)
            if key in self._settlement_keys:
                continue
            self.funding_settled[settled.symbol] = self.funding_settled.get(settled.symbol, ZERO) + settled.amount
            self.events.append(self.clock.now(), "funding_settled", settled.symbol, amount=settled.amount,
                               settled_at=settled.at)
        self._settlement_keys = keys

    async def refresh_account(self) -> AccountSnapshot:
        self.account = await bounded(self.exchange.account())
        if self.pushed is not None:
            self.pushed.account_updates["poll"] += 1
        return self.account

    def positions(self) -> dict[str, Position]:
        """Positions per traded symbol; a spot holding is a long position in its base asset.

        Worked out once per account snapshot (the strategy asks every cycle); callers
        get the same dict until the account changes, so they must not modify it."""
        held = self._positions
        if held is not None:
            return held
        account = self._account
        held = dict(account.positions)
        for symbol, product in self.products.items():
            if not product.is_derivative and symbol not in held:
                balance = account.balances.get(product.base)
                if balance is not None and balance.total >= product.min_size:
                    held[symbol] = Position(symbol, size=balance.available)
        self._positions = held
        return held

    def position_size(self, symbol: str) -> Decimal:
        position = self.positions().get(symbol)
        return position.size if position else ZERO

    # ----- decisions ----------------------------------------------------------------

    async def execute_decision(self, decision: Decision) -> list[ExecutionResult]:
        try:
            return await self._execute(decision)
        finally:
            self.events.flush()  # the decision's and its orders' events kept by append_later

    async def _execute(self, decision: Decision) -> list[ExecutionResult]:
        if decision.is_hold or decision.mark is None:
            return []
        working = self.orders.working(decision.symbol)
        if working is not None:
            # The filled position does not show a resting or unresolved order: acting on the
            # decision again would stack a second order on the first.
            return [self._skip(decision, f"{working.client_order_id} is still {working.status.value}")]
        product = self.products[decision.symbol]
        held = self.position_size(decision.symbol)
        results: list[ExecutionResult] = []
        wants = {Target.LONG: 1, Target.SHORT: -1, Target.FLAT: 0}[decision.target]
        expected: Decimal | None = None  # the position once working closing orders fill
        if held != 0 and (wants == 0 or (held > 0) != (wants > 0)):
            side = Side.SELL if held > 0 else Side.BUY
            closing = await self.submit(product, side, abs(held), decision, closing=True)
            results.append(closing)
            if closing.outcome != "placed":
                return results
            held = self.position_size(decision.symbol)
            order = closing.order
            if held != 0 and order is not None and not order.status.is_terminal:
                # Accepted but not (all) filled yet — an exchange that fills later, like a
                # backtest's next-open fills. The opening order goes in behind it, sized and
                # risk-checked against the position the close leaves.
                held = expected = held + order.remaining * side.sign
        plan = decision.plan
        if wants != 0 and held == 0 and plan is not None and plan.order is OrderKind.POST_ONLY:
            # No post-only flag on the Exchange port yet: placing a plain limit would pretend.
            results.append(self._skip(decision, "post-only orders are not supported by the exchange port yet"))
        elif wants != 0 and held == 0:
            size = self.entry_size(product, decision.mark, plan)
            side = Side.BUY if wants > 0 else Side.SELL
            if size < product.min_size:
                results.append(self._skip(decision, f"size {size} below the minimum {product.min_size}"))
            else:
                results.append(await self.submit(product, side, size, decision, closing=False, expected=expected))
        return results

    def entry_size(self, product: Product, mark: Decimal, plan: OrderPlan | None = None) -> Decimal:
        """An entry's size: the decision's quantity, else its fraction of equity (else the
        ``position_fraction`` setting), with leverage on a perpetual."""
        if plan is not None and plan.quantity is not None:
            return product.quantize_size(plan.quantity)
        fraction = plan.fraction if plan is not None and plan.fraction is not None else self.config.position_fraction
        leverage = self.config.leverage if product.is_derivative else Decimal(1)
        notional = self.account.equity * fraction * leverage
        return product.quantize_size(notional / (mark * product.contract_size))

    def _skip(self, decision: Decision, detail: str) -> ExecutionResult:
        self.events.append(self.clock.now(), "order_skipped", decision.symbol, detail=detail)
        return ExecutionResult(None, "skipped", detail)

    def _limit_price(self, product: Product, side: Side, mark: Decimal, offset_bps: Decimal) -> Decimal:
        offset = mark * offset_bps / Decimal(10_000)
        return product.quantize_price(mark + offset if side is Side.BUY else mark - offset)

    def new_order(
        self, product: Product, side: Side, size: Decimal, mark: Decimal, *, closing: bool, market: bool = False,
        plan: OrderPlan | None = None,
    ) -> Order:
        """``plan``: the decision's order type and limit offset, where it gives them."""
        limit, offset = self.config.order_type is OrderTypeSetting.LIMIT, self.config.limit_offset_bps
        if plan is not None and plan.order is not None:
            limit = plan.order is OrderKind.LIMIT
        if plan is not None and plan.limit_offset_bps is not None:
            offset = plan.limit_offset_bps
        limit = limit and not market
        return Order(
            client_order_id=self.new_client_order_id(),
            symbol=product.symbol,
            side=side,
            type=OrderType.LIMIT if limit else OrderType.MARKET,
            size=product.quantize_size(size),
            created_at=self.clock.now(),
            limit_price=self._limit_price(product, side, mark, offset) if limit else None,
            time_in_force=TimeInForce(self.config.time_in_force.value) if limit else TimeInForce.IOC,
            reduce_only=closing and product.is_derivative,
            leverage=self.config.leverage if product.is_derivative else Decimal(1),
        )

    async def flatten_all(self) -> list[ExecutionResult]:
        """Close every position with reduce-only market orders (a kill with --flatten)."""
        results = []
        for symbol, position in self.positions().items():
            product = self.products.get(symbol)
            if product is None or position.is_flat:
                continue
            mark = self.risk.mark_of(symbol) or position.entry_price
            side = Side.SELL if position.size > 0 else Side.BUY
            decision = Decision(symbol, Target.FLAT, "kill: flatten", mark)
            results.append(await self.submit(product, side, abs(position.size), decision, closing=True, flatten=True))
        return results

    async def _book_for(self, intent: OrderIntent) -> OrderBook | None:
        """The live book for the slippage check; only orders adding exposure need it."""
        if intent.reduces:
            return None
        try:
            async with asyncio.timeout(PLACE_TIMEOUT_SECONDS):
                return await self.exchange.book(intent.symbol, BOOK_DEPTH)
        except (ExchangeError, TimeoutError, OSError) as exc:
            self.events.append(self.clock.now(), "error", intent.symbol, stage="book", error=str(exc))
            return None

    async def submit(
        self,
        product: Product,
        side: Side,
        size: Decimal,
        decision: Decision,
        *,
        closing: bool,
        flatten: bool = False,
        expected: Decimal | None = None,
        market: bool = False,
    ) -> ExecutionResult:
        """Risk-check and place one order. ``expected``: the position this order will meet
        (orders ahead of it still working), instead of the one held now."""
        assert decision.mark is not None
        started = time.perf_counter()  # latency is decision -> exchange ack, our own work included
        order = self.new_order(product, side, size, decision.mark, closing=closing, market=market, plan=decision.plan)
        refused = self.exchange.capabilities.refusal(
            order.type, order.time_in_force, order.reduce_only, self._margin_type(order.symbol)
        )
        if refused is not None:  # the venue would refuse it: never sent, nothing written ahead
            return self._skip(decision, f"{self.exchange.name} {refused}")
        positions = self.positions()
        if expected is not None:
            positions = {s: p for s, p in positions.items() if s != product.symbol}
            if expected != 0:
                positions[product.symbol] = Position(product.symbol, size=expected, contract_size=product.contract_size)
        held = positions.get(product.symbol)
        intent = OrderIntent(
            symbol=product.symbol,
            side=side,
            size=order.size,
            mark=decision.mark,
            position_size=held.size if held else ZERO,
            leverage=order.leverage,
            contract_size=product.contract_size,
            flatten=flatten,
        )
        book = await self._book_for(intent)
        verdict = self.risk.check(intent, self.account.equity, positions, book)
        if not verdict.approved:
            return ExecutionResult(order.client_order_id, "rejected_by_risk", f"{verdict.code}: {verdict.detail}")
        if self.config.dry_run:
            self.events.append(
                self.clock.now(), "dry_run_order", product.symbol, client_order_id=order.client_order_id,
                side=side, size=order.size, reason=decision.reason,
            )
            return ExecutionResult(order.client_order_id, "dry_run", "dry run: not sent", order)
        return await self._place(order, decision.reason, started)

    def _margin_type(self, symbol: str) -> MarginType | None:
        """The ``margin_type`` setting on a perpetual's orders; a spot order has none."""
        return self.config.margin_type if self.products[symbol].is_perpetual else None

    async def _place(self, order: Order, reason: str, started: float) -> ExecutionResult:
        order.created_at = self.clock.now()  # the late-acceptance bound counts from the send
        # Write-ahead: the intent is recorded before the exchange hears of it — committed, not
        # fsync'd (the outcome's commit below is); a power cut in between is covered by
        # recovery finding the order at the exchange by its id prefix (Reconciler.adopt_lost_orders).
        self.orders.write_ahead(order)
        self.events.append_later(  # committed with the outcome's event, after the request
            self.clock.now(), "order_submitted", order.symbol, client_order_id=order.client_order_id,
            side=order.side, type=order.type, size=order.size, limit_price=order.limit_price,
            reduce_only=order.reduce_only, reason=reason,
        )
        request = OrderRequest(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            type=order.type,
            size=order.size,
            limit_price=order.limit_price,
            time_in_force=order.time_in_force,
            reduce_only=order.reduce_only,
            leverage=order.leverage,
            margin_type=self._margin_type(order.symbol),
        )
        try:
            async with asyncio.timeout(self.config.order_timeout_seconds):
                snapshot = await self.exchange.place_order(request)
        except asyncio.CancelledError as exc:  # the bot stopped mid-request: the fate is for the next start
            self._unknown(order, exc, "not looked up: the bot stopped")
            raise
        except OrderRejected as exc:
            return self._rejected(order, exc.reason, str(exc))
        except (ExchangeError, TimeoutError, OSError) as exc:
            # The request may or may not have reached the exchange: find out by id, never resend.
            found = await self._lookup_after_failure(order, exc)
            if found is None:
                # An exchange can take a moment to list an order it accepted: the order stays
                # PENDING (blocking new orders for its symbol) until reconciliation settles it.
                return self._unknown(order, exc, "not listed by the exchange yet")
            snapshot = found
        latency_ms = (time.perf_counter() - started) * 1000
        self.latencies_ms.append(latency_ms)
        self.apply_snapshot(order, snapshot)
        self.placed += 1
        self.risk.record_order_result(ok=True)
        self.events.append(
            self.clock.now(), "order_placed", order.symbol, client_order_id=order.client_order_id,
            status=order.status, filled_size=order.filled_size, average_fill_price=order.average_fill_price,
            latency_ms=round(latency_ms, 3),
        )
        await self.refresh_account()
        return ExecutionResult(order.client_order_id, "placed", order.status.value, order)

    async def _lookup_after_failure(self, order: Order, exc: BaseException) -> OrderSnapshot | None:
        log.warning("placing %s failed (%s); looking it up by client_order_id", order.client_order_id, exc)
        try:
            async with asyncio.timeout(self.config.order_timeout_seconds):
                return await self.exchange.get_order(order.client_order_id)
        except OrderNotFound:
            return None
        except (ExchangeError, TimeoutError, OSError) as lookup_exc:
            self._unknown(order, exc, f"lookup failed: {lookup_exc}")
            raise

    def _unknown(self, order: Order, exc: BaseException, lookup: str) -> ExecutionResult:
        """The request's fate is unknown; the order stays PENDING in the store for reconciliation."""
        # The write-ahead record, fsync'd: a commit that never moves ``synced_at`` forward,
        # which would hide orders an earlier process lost from a lost-order check not yet made.
        synced = self.orders.synced_at
        self.orders.mark_synced(order.created_at if synced is None else min(synced, order.created_at))
        self.failed += 1
        self.risk.record_order_result(ok=False)
        self.awaiting[order.client_order_id] = self._absence_provable_at(order)
        self.events.append(
            self.clock.now(),
            "order_unknown",
            order.symbol,
            client_order_id=order.client_order_id,
            error=f"{type(exc).__name__}: {exc}",
            lookup=lookup,
            absent_if_unlisted_after=self.awaiting[order.client_order_id],
        )
        return ExecutionResult(order.client_order_id, "failed", f"fate unknown ({lookup}); left PENDING", order)

    def _rejected(self, order: Order, code: str, detail: str, *, failure: bool = False) -> ExecutionResult:
        order.reject_reason = f"{code}: {detail}"
        order.advance_to(OrderStatus.REJECTED, self.clock.now())
        self.orders.upsert(order)
        self.failed += 1
        self.risk.record_order_result(ok=False)
        kind = "order_failed" if failure else "order_rejected"
        self.events.append(
            self.clock.now(), kind, order.symbol, client_order_id=order.client_order_id, code=code, detail=detail
        )
        log.warning("%s %s: %s", kind, order.client_order_id, detail)
        return ExecutionResult(order.client_order_id, "failed" if failure else "rejected_by_exchange", detail, order)

    # ----- order state --------------------------------------------------------------

    def apply_snapshot(self, order: Order, snapshot: OrderSnapshot) -> None:
        """Bring our order forward to what the exchange reports; fills are recorded once."""
        if snapshot.duplicates and order.client_order_id not in self.duplicates_reported:
            self.duplicates_reported.add(order.client_order_id)
            detail = (f"order {order.client_order_id}: the venue holds {len(snapshot.duplicates)} more order(s) "
                      f"under its id ({', '.join(snapshot.duplicates)}), cancelled if still working")
            self.events.append(self.clock.now(), "order_duplicate", order.symbol, client_order_id=order.client_order_id,
                               exchange_order_id=snapshot.exchange_order_id, duplicates=list(snapshot.duplicates))
            self.alerts.notify("duplicate_order", "P1", detail, order.symbol, client_order_id=order.client_order_id)
        order.exchange_order_id = snapshot.exchange_order_id
        for fill in snapshot.fills:
            self.record_fill(fill, order)
        if snapshot.status is OrderStatus.REJECTED and order.status is OrderStatus.PENDING:
            order.reject_reason = snapshot.reject_reason
        if snapshot.status is not order.status and not order.status.is_terminal:
            order.advance_to(snapshot.status, self.clock.now())
        self.orders.upsert(order)
        if order.status is not OrderStatus.PENDING:
            self.awaiting.pop(order.client_order_id, None)  # its fate is known

    def record_fill(self, fill: Fill, order: Order | None) -> bool:
        if not self.orders.add_fill(fill):
            return False
        if order is not None or fill.client_order_id.startswith(self.orders.id_prefix):
            # another's fill (an order placed by hand) is recorded, but explains nothing we hold
            self.fill_ledger[fill.symbol] = self.fill_ledger.get(fill.symbol, ZERO) + fill.size * fill.side.sign
        if order is not None:
            if order.status.is_terminal and order.status is not OrderStatus.FILLED:
                self.reopen(order, f"fill {fill.trade_id} arrived")  # a fill is the exchange's last word
            try:
                order.record_fill(fill)
                self.awaiting.pop(order.client_order_id, None)  # its fate is known
            except DomainError as exc:  # e.g. a fill that would overfill its order
                self.alerts.notify(
                    "fill_out_of_state", "P2", f"fill {fill.trade_id} for order {fill.client_order_id}: {exc}",
                    fill.symbol, client_order_id=fill.client_order_id, trade_id=fill.trade_id,
                )
        self.events.append(
            fill.ts, "fill", fill.symbol, trade_id=fill.trade_id, client_order_id=fill.client_order_id,
            side=fill.side, price=fill.price, size=fill.size, fee=fill.fee, liquidity=fill.liquidity,
        )
        return True

    @staticmethod
    def closed_by_inference(order: Order) -> bool:
        """Closed on our own conclusion (not listed, no longer known), not on the exchange's word."""
        return order.status.is_terminal and (order.reject_reason or "").startswith(INFERRED_CLOSES)

    def reopen(self, order: Order, why: str) -> None:
        """An order we had closed without the exchange's word (not found, vanished) that the
        exchange turns out to have: re-opened and followed again. What it adds was not meant
        to be held: its symbol goes reduce-only (lifted once flat) with a P1 alert."""
        now = self.clock.now()
        was = order.status
        order.reopen(now, why)
        self.orders.upsert(order)
        self.tracked.add(order.client_order_id)
        detail = f"order {order.client_order_id}, closed here as {was.value}, is at the exchange: {why}"
        self.events.append(now, "order_reopened", order.symbol, client_order_id=order.client_order_id, was=was, why=why)
        self.alerts.notify("late_fill", "P1", detail, order.symbol, client_order_id=order.client_order_id)
        self.risk.enter_symbol_reduce_only(order.symbol, LATE_FILL, detail)

    @property
    def fill_cursor(self) -> int:
        """Where ``sync_orders`` will ask the exchange for fills from next."""
        return self._fill_cursor

    async def follow_orders(self) -> None:
        """The cycle's order step: pushed updates applied, then the poll (``sync_orders``)
        unless a healthy push stream makes it unneeded (reconciliation still polls)."""
        pushed = self.pushed
        if pushed is None:
            await self.sync_orders()
            return
        await pushed.apply()
        if pushed.needs_poll():
            started = pushed.poll_started()
            await self.sync_orders()
            pushed.poll_done(started)

    def followed_symbols(self) -> set[str]:
        """The symbols whose orders this process follows: the configured ones and those of
        orders adopted from earlier runs."""
        symbols = set(self.config.symbols)
        for cid in self.tracked:
            order = self.orders.get(cid)
            if order is not None:
                symbols.add(order.symbol)
        return symbols

    async def sync_orders(self) -> None:
        """Pick up fills and status changes of orders that were still working."""
        fills, self._fill_cursor = await bounded(self.exchange.fills_since(self._fill_cursor))
        touched: dict[str, Order] = {}
        changes = 0
        for fill in fills:
            order = touched.get(fill.client_order_id) or self.orders.get(fill.client_order_id)
            if not self.record_fill(fill, order):
                continue
            changes += 1
            if order is None:
                self.events.append(
                    fill.ts, "foreign_fill", fill.symbol, trade_id=fill.trade_id,
                    client_order_id=fill.client_order_id, liquidity=fill.liquidity,
                )
            else:
                touched[order.client_order_id] = order
        for order in touched.values():
            self.orders.upsert(order)
        working = self.orders.orders(run_id=self.orders.run_id, open_only=True)
        seen = {o.client_order_id for o in working}
        for cid in sorted(self.tracked - seen):
            adopted = self.orders.get(cid)
            if adopted is None or adopted.status.is_terminal:
                self.tracked.discard(cid)
            else:
                working.append(adopted)
        for order in working:
            if order.status is OrderStatus.PENDING:
                continue
            try:
                snapshot = await bounded(self.exchange.get_order(order.client_order_id))
            except OrderNotFound:
                if order.client_order_id in self.tracked:
                    # an adopted order the exchange no longer has: the next reconciliation resolves it
                    self.tracked.discard(order.client_order_id)
                    continue
                # The exchange dropped a working order of ours (purged, or cancelled elsewhere).
                order.reject_reason = VANISHED
                order.advance_to(OrderStatus.CANCELLED, self.clock.now())
                self.orders.upsert(order)
                self.events.append(
                    self.clock.now(), "order_vanished", order.symbol, client_order_id=order.client_order_id
                )
                continue
            current = touched.get(order.client_order_id, order)
            was = current.status
            self.apply_snapshot(current, snapshot)
            changes += current.status is not was
            if current.status.is_terminal:
                self.tracked.discard(current.client_order_id)
        if self.pushed is not None:
            self.pushed.applied["poll"] += changes
        if fills:
            await self.refresh_account()

    # ----- PnL ---------------------------------------------------------------------------

    def pnl(self, marks: dict[str, Decimal | None] | None = None, *, run_id: int | None = None) -> PnlReport:
        """Realized, unrealized, fees and funding per position and in total, from the fills
        recorded in this run (or ``run_id``); funding as the exchange reports it: what it
        settled during the run (``funding_settled`` events) and what is counted on each open
        position and not yet settled; marks from the risk manager's mark source unless given."""
        this_run = run_id is None or run_id == self.orders.run_id
        fills = self.orders.fills(run_id=run_id if run_id is not None else self.orders.run_id)
        if this_run and self.opened_at is not None:  # earlier fills recorded late are in the opening
            fills = [f for f in fills if f.ts >= self.opened_at]
        symbols = {f.symbol for f in fills} | set(self.account.positions) | set(self.opening)
        if marks is None:
            marks = {s: self.risk.mark_of(s) for s in symbols}
        funding = dict(self.funding_settled) if this_run else self._recorded_funding(run_id)
        if this_run:
            for symbol, position in self.account.positions.items():
                if position.funding:
                    funding[symbol] = funding.get(symbol, ZERO) + position.funding
        sizes = {s: p.contract_size for s, p in self.products.items()}
        return pnl_from_fills(fills, marks, funding, sizes, self.opening if this_run else None)

    def _recorded_funding(self, run_id: int | None) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for event in self.events.query(kind="funding_settled", run_id=run_id):
            if event.symbol is not None:
                out[event.symbol] = out.get(event.symbol, ZERO) + Decimal(str(event.data["amount"]))
        return out

    async def open_run(self) -> dict[str, tuple[Decimal, Decimal]]:
        """At a run's start: what it inherits — each traded symbol's position at the
        exchange (a spot asset's whole balance, once per asset), at its mark now (a perpetual
        without one at its entry price) — the run's PnL and position history start from it;
        fills from before now are in it already."""
        self.opened_at = self.clock.now()
        account = self._account
        opening: dict[str, tuple[Decimal, Decimal]] = {}
        assets: set[str] = set()
        for symbol in self.config.symbols:
            product = self.products.get(symbol)
            if product is None:
                continue
            fallback: Decimal | None = None
            if product.is_derivative:
                position = account.positions.get(symbol)
                size, fallback = (position.size, position.entry_price) if position else (ZERO, None)
            elif product.base in assets:
                continue
            else:
                assets.add(product.base)
                balance = account.balances.get(product.base)
                size = balance.total if balance else ZERO
            if not size:
                continue
            price = self.risk.mark_of(symbol) or await self._quoted_mid(symbol) or fallback
            if price:
                opening[symbol] = (size, price)
        self.opening = opening
        return opening

    async def _quoted_mid(self, symbol: str) -> Decimal | None:
        try:
            quote = await bounded(self.exchange.quote(symbol))
        except (ExchangeError, TimeoutError, OSError):
            return None
        return quote.mid

    # ----- start-up and housekeeping ----------------------------------------------------

    async def recover(self) -> ReconcileReport:
        """At start-up: resolve what earlier runs left open, then reconcile."""
        return await self.reconciler.reconcile()

    async def housekeeping(self) -> None:
        """Each cycle: order commands from other processes, and a reconciliation when due."""
        await self.run_commands()
        if self.reconciler.due(self.clock.now()):
            await self.reconciler.reconcile()

    # ----- restart: write-ahead intents of earlier runs -------------------------------

    async def resolve_intents(self, *, this_run_pending: bool = False) -> list[tuple[str, str]]:
        """Resolve every order an earlier run left without a known outcome (PENDING, OPEN,
        PARTIALLY_FILLED) against the exchange by its client_order_id. Returns
        ``(client_order_id, outcome)`` pairs; outcome ``adopted`` (found, with its fills) |
        ``waiting`` (not listed yet, but an exchange may still accept it: it stays PENDING
        and its symbol blocked) | ``rejected`` (a PENDING intent proven absent: not listed
        ``late_acceptance_seconds`` after it was sent, nor in the exchange's order history)
        | ``cancelled`` (an acknowledged order the exchange no longer knows) | ``unresolved``
        (the lookup failed: tried again at the next reconciliation). ``this_run_pending``:
        also this run's PENDING orders whose placement ended in an unanswered lookup
        (reconciliation runs between placements, never during one). A fill that still comes
        for a closed order re-opens it (``reopen``)."""
        outcomes: list[tuple[str, str]] = []
        for order in self.orders.orders(open_only=True):
            earlier_run = self.orders.run_id is None or self._run_of(order) != self.orders.run_id
            if not earlier_run and not (this_run_pending and order.status is OrderStatus.PENDING):
                continue
            cid = order.client_order_id
            if cid in self.tracked:
                continue  # adopted already: sync_orders follows it
            try:
                outcome = await self._resolve_intent(order, venue_is_new=earlier_run and self.fresh_venue)
            except (ExchangeError, TimeoutError, OSError) as exc:
                self.events.append(
                    self.clock.now(), "intent_resolved", order.symbol, client_order_id=cid, outcome="unresolved",
                    was=order.status, error=f"{type(exc).__name__}: {exc}",
                )
                outcome = "unresolved"
                if cid in self.awaiting:  # settled by a later reconciliation, not by one every cycle
                    self.awaiting[cid] = max(self.awaiting[cid], self.clock.now() + UNRESOLVED_RETRY)
            outcomes.append((cid, outcome))
        return outcomes

    async def _resolve_intent(self, order: Order, *, venue_is_new: bool) -> str:
        cid, was = order.client_order_id, order.status
        snapshot: OrderSnapshot | None = None
        if not venue_is_new:
            try:
                async with asyncio.timeout(PLACE_TIMEOUT_SECONDS):
                    snapshot = await self.exchange.get_order(cid)
            except OrderNotFound:
                snapshot = None
        now = self.clock.now()
        if snapshot is None and not venue_is_new and was is OrderStatus.PENDING:
            provable_at = self._absence_provable_at(order)
            if now < provable_at:
                if cid not in self.awaiting:
                    self.events.append(
                        now, "intent_resolved", order.symbol, client_order_id=cid, outcome="waiting", was=was,
                        reason=f"not listed by the exchange yet; taken as absent only if still unlisted at "
                        f"{provable_at.isoformat()}",
                    )
                self.awaiting[cid] = provable_at
                return "waiting"
            snapshot = await self._in_history(order)  # the last word: the exchange's order history
        self.awaiting.pop(cid, None)
        if snapshot is None:
            if venue_is_new:
                order.reject_reason = VENUE_NEW
            elif was is OrderStatus.PENDING:
                age = (now - order.created_at).total_seconds()
                order.reject_reason = f"{ABSENT} {age:.0f} s after it was sent"
            else:
                order.reject_reason = VANISHED
            # Only a PENDING intent can be REJECTED; one the exchange had acknowledged and
            # no longer knows is over for us: CANCELLED (the state machine only moves forward).
            outcome = "rejected" if was is OrderStatus.PENDING else "cancelled"
            order.advance_to(OrderStatus.REJECTED if was is OrderStatus.PENDING else OrderStatus.CANCELLED, now)
            self.orders.upsert(order)
            self.events.append(
                now, "intent_resolved", order.symbol, client_order_id=cid, outcome=outcome, was=was,
                status=order.status, reason=order.reject_reason,
            )
            return outcome
        self._resync_fill_totals(order)
        self.apply_snapshot(order, snapshot)
        if not order.status.is_terminal:
            self.tracked.add(cid)
        self.events.append(
            self.clock.now(), "intent_resolved", order.symbol, client_order_id=cid, outcome="adopted", was=was,
            status=order.status, filled_size=order.filled_size, fills=len(snapshot.fills),
            exchange_order_id=snapshot.exchange_order_id,
        )
        return "adopted"

    def _absence_provable_at(self, order: Order) -> datetime:
        """When the exchange not listing ``order`` proves it never took it: an exchange may
        process a request well after our timeout, but not ``late_acceptance_seconds`` after the
        last moment it can have been sent (the client may resend it with the same id within
        ``order_timeout_seconds`` of the write-ahead)."""
        cfg = self.config
        return order.created_at + timedelta(seconds=cfg.order_timeout_seconds + cfg.late_acceptance_seconds)

    def absence_due(self, now: datetime) -> bool:
        """Some order of unknown fate can be settled now (reconciliation runs early for it)."""
        return any(at <= now for at in self.awaiting.values())

    async def _in_history(self, order: Order) -> OrderSnapshot | None:
        async with asyncio.timeout(PLACE_TIMEOUT_SECONDS):
            listed = await self.exchange.orders_since(order.created_at - LOST_ORDER_MARGIN, order.symbol)
        for snapshot in listed:
            if snapshot.client_order_id == order.client_order_id:
                async with asyncio.timeout(PLACE_TIMEOUT_SECONDS):
                    return await self.exchange.get_order(order.client_order_id)  # with its fills
        return None

    def _run_of(self, order: Order) -> int | None:
        return self.orders.run_of(order.client_order_id)

    def _resync_fill_totals(self, order: Order) -> None:
        """A crash between recording a fill and updating its order leaves the order behind
        its fills: bring the filled size, average price and fees back in line with them."""
        mine = [f for f in self.orders.fills(symbol=order.symbol) if f.client_order_id == order.client_order_id]
        if not mine:
            return
        filled = sum((f.size for f in mine), ZERO)
        if filled == order.filled_size:
            return
        order.filled_size = filled
        order.average_fill_price = sum((f.price * f.size for f in mine), ZERO) / filled
        order.fees = sum((f.fee for f in mine), ZERO)
        target = OrderStatus.FILLED if filled >= order.size else OrderStatus.PARTIALLY_FILLED
        order.advance_to(target, self.clock.now())

    # ----- order management -----------------------------------------------------------

    async def cancel(self, client_order_id: str) -> Order:
        """Cancel one working order; returns it as the exchange left it (an order already
        done is returned unchanged)."""
        order = self.orders.get(client_order_id)
        if order is None:
            raise OrderNotFound(f"no order {client_order_id} in the order store")
        async with asyncio.timeout(PLACE_TIMEOUT_SECONDS):
            snapshot = await self.exchange.cancel_order(client_order_id)
        self.apply_snapshot(order, snapshot)
        self.tracked.discard(client_order_id)
        self.events.append(
            self.clock.now(), "order_cancelled", order.symbol, client_order_id=client_order_id, status=order.status,
            filled_size=order.filled_size,
        )
        return order

    async def cancel_all(self, symbol: str | None = None) -> list[Order]:
        """Cancel every working order the exchange reports (ours, adopted ones and, with
        ``adopt_foreign_orders``, foreign ones), optionally for one symbol."""
        cancelled = []
        for snapshot in await bounded(self.exchange.open_orders()):
            if symbol is not None and snapshot.symbol != symbol:
                continue
            if self.orders.get(snapshot.client_order_id) is None:
                continue  # not ours: left alone
            cancelled.append(await self.cancel(snapshot.client_order_id))
        return cancelled

    async def replace(
        self, client_order_id: str, *, new_price: Decimal | None = None, new_size: Decimal | None = None
    ) -> ExecutionResult:
        """Change a working limit order's price and/or size: cancel it, then place the rest
        (or ``new_size``) as a new order with a new client_order_id linked to the old one."""
        old = self.orders.get(client_order_id)
        if old is None:
            raise OrderNotFound(f"no order {client_order_id} in the order store")
        if old.status.is_terminal or old.status is OrderStatus.PENDING:
            return ExecutionResult(client_order_id, "skipped", f"order is {old.status.value}, not working", old)
        if new_price is not None and old.type is not OrderType.LIMIT:
            return ExecutionResult(client_order_id, "skipped", "only a limit order has a price to change", old)
        if self.config.dry_run:
            return ExecutionResult(client_order_id, "dry_run", "dry run: not replaced", old)
        old = await self.cancel(client_order_id)
        size = new_size if new_size is not None else old.remaining
        if old.status is OrderStatus.FILLED or size <= 0:
            return ExecutionResult(client_order_id, "skipped", "nothing left to replace", old)
        product = self.products[old.symbol]
        new = Order(
            client_order_id=self.new_client_order_id(),
            symbol=old.symbol,
            side=old.side,
            type=old.type,
            size=product.quantize_size(size),
            created_at=self.clock.now(),
            limit_price=product.quantize_price(new_price) if new_price is not None else old.limit_price,
            time_in_force=old.time_in_force,
            reduce_only=old.reduce_only,
            leverage=old.leverage,
        )
        mark = self.risk.mark_of(old.symbol) or new.limit_price or old.average_fill_price
        held = self.positions().get(old.symbol)
        intent = OrderIntent(
            symbol=new.symbol, side=new.side, size=new.size, mark=mark or ZERO,
            position_size=held.size if held else ZERO, leverage=new.leverage, contract_size=product.contract_size,
        )
        verdict = self.risk.check(intent, self.account.equity, self.positions(), await self._book_for(intent))
        self.events.append(
            self.clock.now(), "order_replaced", new.symbol, replaces=client_order_id,
            client_order_id=new.client_order_id, size=new.size, limit_price=new.limit_price,
            approved=verdict.approved,
        )
        if not verdict.approved:
            return ExecutionResult(new.client_order_id, "rejected_by_risk", f"{verdict.code}: {verdict.detail}")
        return await self._place(new, f"replaces {client_order_id}", time.perf_counter())

    async def close_position(self, symbol: str) -> ExecutionResult:
        """Close one position with a reduce-only market order (allowed even when killed)."""
        product = self.products.get(symbol)
        if product is None:
            return ExecutionResult(None, "skipped", f"{symbol} is not traded by this bot")
        await self.refresh_account()
        position = self.positions().get(symbol)
        if position is None or position.is_flat:
            return ExecutionResult(None, "skipped", f"no position in {symbol}")
        mark = self.risk.mark_of(symbol) or position.entry_price
        side = Side.SELL if position.size > 0 else Side.BUY
        decision = Decision(symbol, Target.FLAT, "close command", mark)
        return await self.submit(product, side, abs(position.size), decision, closing=True, flatten=True, market=True)

    async def run_commands(self) -> list[tuple[int, str]]:
        """Carry out order commands posted by other processes (``perpsbot orders cancel``,
        ``perpsbot close``); each gets a one-line result in the commands table."""
        done = []
        for command_id, command, args in self.events.pending_commands():
            if command in ("resume", CONFIG_SET):
                continue  # the RiskManager's, the bot's
            try:
                result = await self._command(command, args)
            except (ExchangeError, TimeoutError, OSError) as exc:
                result = f"failed: {type(exc).__name__}: {exc}"
            except Exception as exc:  # noqa: BLE001 - a bad command never stops the cycle
                result = f"failed: {type(exc).__name__}: {exc}"
            self.events.complete_command(command_id, self.clock.now(), result)
            self.events.append(
                self.clock.now(), "command", None, id=command_id, command=command, args=args, result=result
            )
            done.append((command_id, result))
        return done

    async def _command(self, command: str, args: dict[str, object]) -> str:
        if command == "cancel":
            cid = str(args["client_order_id"])
            if self.orders.get(cid) is None:
                return f"failed: no order {cid}"
            order = await self.cancel(cid)
            return f"ok: {cid} {order.status.value} (filled {order.filled_size})"
        if command == "cancel_all":
            symbol = args.get("symbol")
            cancelled = await self.cancel_all(str(symbol) if symbol else None)
            return f"ok: {len(cancelled)} order(s) cancelled" + (
                ": " + ", ".join(o.client_order_id for o in cancelled) if cancelled else ""
            )
        if command == "close":
            result = await self.close_position(str(args["symbol"]))
            if result.outcome == "placed":
                return f"ok: {result.client_order_id} {result.detail}"
            return f"{'failed' if result.outcome != 'skipped' else 'nothing to do'}: {result.detail}"
        if command == "replace":
            price = args.get("new_price")
            size = args.get("new_size")
            result = await self.replace(
                str(args["client_order_id"]),
                new_price=Decimal(str(price)) if price is not None else None,
                new_size=Decimal(str(size)) if size is not None else None,
            )
            return f"{'ok' if result.outcome == 'placed' else result.outcome}: {result.client_order_id} {result.detail}"
        return f"unknown command {command}"
