"""Reconciliation: our records against the exchange's, at start-up and periodically.

Open orders (ours brought forward, foreign ones reported or adopted), fills since the
last one seen, positions and balances. The exchange should hold what the fills of our
orders add up to (every run's) plus what was adopted; a holding beyond that makes its
symbol reduce-only (reason ``reconciliation``) with the P1 alert
``reconciliation_mismatch`` — or, with ``unexplained_holdings = adopt``, is adopted — and
a later reconciliation that explains it lifts it.

The first reconciliation of a process also looks for orders of ours the order store
lost (``adopt_lost_orders``: a power cut after a write-ahead record that was committed
but not yet fsync'd): every order the exchange has with this store's ``id_prefix``,
created since the store's ``synced_at`` (less ``LOST_ORDER_MARGIN``), that the store
does not know is recorded and followed as ours. A reconciliation that completes marks
the store synced at its start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from perpsbot.config.model import HoldingsPolicy
from perpsbot.domain import ZERO, Order, OrderStatus, OrderType, TimeInForce
from perpsbot.exchange.port import OrderSnapshot
from perpsbot.execution.calls import bounded
from perpsbot.execution.pnl import COLLATERAL

if TYPE_CHECKING:
    from perpsbot.execution.coordinator import ExecutionCoordinator

log = logging.getLogger(__name__)

REASON = "reconciliation"  # the per-symbol reduce-only reason of a holding our records do not explain
LATE_FILL = "late_fill"  # that of a re-opened order (ExecutionCoordinator.reopen), lifted once flat
ALERT_RULE = "reconciliation_mismatch"
LOST_ORDER_MARGIN = timedelta(minutes=5)  # clock skew between our order times and the exchange's
BALANCE = "balance:"  # holdings keys for spot assets; perpetuals are keyed by symbol


@dataclass
class ReconcileReport:
    at: datetime
    open_orders: int = 0
    foreign_orders: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    positions: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # symbol: (ours, exchange's)
    mismatches: list[str] = field(default_factory=list)
    unexplained: set[str] = field(default_factory=set)  # symbols whose holding our records do not explain
    recovered_fills: int = 0

    @property
    def matched(self) -> bool:
        return not self.mismatches


class Reconciler:
    """Owned by the ExecutionCoordinator; ``reconcile()`` at start-up, then whenever
    ``due()`` (every ``reconcile_every_seconds``)."""

    def __init__(self, execution: ExecutionCoordinator) -> None:
        self.execution = execution
        # Holdings taken as ours that no fill of ours explains: adopted ones (kept in the
        # order store); on a venue made new for this process, what it held at the first
        # reconciliation (None until then).
        self.baseline: dict[str, Decimal] | None = (
            None if execution.fresh_venue else execution.orders.adopted_holdings()
        )
        self.last_at: datetime | None = None
        self._foreign_reported: set[str] = set()
        self.lost_checked = False  # adopt_lost_orders has run in this process

    def due(self, now: datetime) -> bool:
        every = self.execution.config.reconcile_every_seconds
        if self.last_at is None or (now - self.last_at).total_seconds() >= every:
            return True
        return self.execution.absence_due(now)

    def expected_position(self, key: str) -> Decimal:
        """What we should hold for a perp symbol or a ``balance:CCY`` key: the baseline plus our fills."""
        return (self.baseline or {}).get(key, ZERO) + self._ledger(key)

    async def reconcile(self) -> ReconcileReport:
        ex = self.execution
        now = ex.clock.now()
        report = ReconcileReport(now)
        if not self.lost_checked:
            report.adopted.extend(await self.adopt_lost_orders())
            self.lost_checked = True
        # Intents without a known outcome: earlier runs' (at start-up: all of them; later, those
        # whose lookup failed) and this run's whose placement ended in an unanswered lookup.
        await ex.resolve_intents(this_run_pending=True)
        await ex.sync_orders()  # fills since the last one seen; our working orders brought forward
        open_orders = await bounded(ex.exchange.open_orders())
        report.open_orders = len(open_orders)
        for snapshot in open_orders:
            self._check_open_order(snapshot, report)
        account = await ex.refresh_account()
        theirs_now = self._exchange_holdings(account)
        if self.baseline is None:
            self.baseline = {
                k: theirs_now.get(k, ZERO) - self._ledger(k) for k in set(theirs_now) | self._ledger_keys()
            }
        if self._holding_mismatches(theirs_now):
            # Before calling it unexplained: read every fill the exchange has and take in the ones we missed.
            report.recovered_fills = await self._recover_fills()
            if report.recovered_fills:
                account = await ex.refresh_account()
                theirs_now = self._exchange_holdings(account)
        for key in sorted(set(theirs_now) | self._ledger_keys()):
            ours, theirs = self.expected_position(key), theirs_now.get(key, ZERO)
            if ours != theirs and (self._rebase_flat(key, ours, theirs) or self._adopt(key, ours, theirs)):
                ours = theirs
            report.positions[key] = (ours, theirs)
            if ours != theirs:
                what = "balance" if key.startswith(BALANCE) else "position"
                report.mismatches.append(f"{key.removeprefix(BALANCE)} {what}: ours {ours}, exchange {theirs}")
                report.unexplained.update(self._symbols_of(key))
        self.last_at = now
        ex.events.append(
            now, "reconciliation", None, matched=report.matched, open_orders=report.open_orders,
            foreign_orders=report.foreign_orders, adopted=report.adopted,
            positions={s: {"ours": o, "exchange": t} for s, (o, t) in report.positions.items()},
            balances={c: b.total for c, b in account.balances.items()}, equity=account.equity,
            mismatches=report.mismatches, recovered_fills=report.recovered_fills,
        )
        self._apply_verdict(report)
        ex.orders.mark_synced(now)  # no placement runs during a reconciliation
        return report

    async def adopt_lost_orders(self) -> list[str]:
        """Orders the exchange has under this store's id prefix and the store does not:
        their write-ahead record was lost (a power cut before its fsync). Recorded as ours,
        with their fills, and followed until done. Returns their client order ids."""
        ex = self.execution
        since = ex.orders.synced_at
        if since is None:  # never marked: every record so far was written fsync'd
            return []
        prefix = ex.orders.id_prefix
        adopted = []
        for listed in await bounded(ex.exchange.orders_since(since - LOST_ORDER_MARGIN)):
            cid = listed.client_order_id
            if not cid.startswith(prefix) or ex.orders.get(cid) is not None:
                continue
            snapshot = await bounded(ex.exchange.get_order(cid))  # with its fills
            order = self._record(snapshot)
            log.warning("order %s was at the exchange but not in the order store: adopted", cid)
            ex.events.append(
                ex.clock.now(), "lost_order_adopted", snapshot.symbol, client_order_id=cid,
                exchange_order_id=snapshot.exchange_order_id, side=snapshot.side, size=snapshot.size,
                status=order.status, filled_size=order.filled_size, fills=len(snapshot.fills),
            )
            adopted.append(cid)
        return adopted

    # ----- pieces -------------------------------------------------------------------------

    def _is_perp(self, symbol: str) -> bool:
        product = self.execution.products.get(symbol)
        return product is not None and product.is_derivative

    def _spot_bases(self) -> dict[str, list[str]]:
        """Base currency -> the spot products trading it (their fills all move that balance)."""
        bases: dict[str, list[str]] = {}
        for symbol, product in self.execution.products.items():
            if not product.is_derivative:
                bases.setdefault(product.base, []).append(symbol)
        return bases

    def _watched(self) -> set[str]:
        """The holdings compared: those of the symbols the bot trades, and any our fills or
        adoptions touch — not every coin of the account (cash never: fees and PnL move it)."""
        keys = self._ledger_keys() | set(self.baseline or {}) | self._keys_of(self.execution.config.symbols)
        return {k for k in keys if k.removeprefix(BALANCE) not in COLLATERAL}

    def _exchange_holdings(self, account: Any) -> dict[str, Decimal]:
        """Perpetual positions by symbol, and spot asset balances as ``balance:CCY``, of the
        watched holdings."""
        watched = self._watched()
        held = {s: p.size for s, p in account.positions.items() if s in watched and self._is_perp(s) and p.size != 0}
        for key in watched:
            balance = account.balances.get(key.removeprefix(BALANCE)) if key.startswith(BALANCE) else None
            if balance is not None and balance.total != 0:
                held[key] = balance.total
        return held

    def _ledger(self, key: str) -> Decimal:
        ledger = self.execution.fill_ledger
        if key.startswith(BALANCE):
            return sum((ledger.get(s, ZERO) for s in self._spot_bases().get(key.removeprefix(BALANCE), [])), ZERO)
        return ledger.get(key, ZERO)

    def _ledger_keys(self) -> set[str]:
        return self._keys_of(self.execution.fill_ledger)

    def _keys_of(self, symbols: Iterable[str]) -> set[str]:
        """The holding key each known symbol moves: a perpetual its own, a spot pair its base's balance."""
        return {k for s in symbols if (k := self._key_of(s)) is not None}

    def _key_of(self, symbol: str) -> str | None:
        product = self.execution.products.get(symbol)
        if product is None:
            return None
        return symbol if product.is_derivative else BALANCE + product.base

    def _holding_mismatches(self, theirs: dict[str, Decimal]) -> bool:
        return any(self.expected_position(k) != theirs.get(k, ZERO) for k in set(theirs) | self._ledger_keys())

    async def _recover_fills(self) -> int:
        ex = self.execution
        fills, _ = await bounded(ex.exchange.fills_since(0))
        recovered = 0
        for fill in fills:
            order = ex.orders.get(fill.client_order_id)
            if ex.record_fill(fill, order):
                recovered += 1
                if order is not None:
                    ex.orders.upsert(order)
        if recovered:
            ex.events.append(ex.clock.now(), "fills_recovered", None, count=recovered)
        return recovered

    def _check_open_order(self, snapshot: OrderSnapshot, report: ReconcileReport) -> None:
        ex = self.execution
        cid = snapshot.client_order_id
        order = ex.orders.get(cid) if cid else None
        if order is None:
            report.foreign_orders.append(cid or snapshot.exchange_order_id)
            # Without a client_order_id (placed by hand in the UI, say) it cannot be followed by id.
            if ex.config.adopt_foreign_orders and cid:
                self._adopt_foreign(snapshot)
                report.adopted.append(cid)
            elif (key := cid or snapshot.exchange_order_id) not in self._foreign_reported:
                self._foreign_reported.add(key)
                ex.events.append(
                    ex.clock.now(), "foreign_order", snapshot.symbol, client_order_id=cid,
                    exchange_order_id=snapshot.exchange_order_id, side=snapshot.side, size=snapshot.size,
                    status=snapshot.status, action="left alone" if cid or not ex.config.adopt_foreign_orders
                    else "left alone: no client_order_id to follow it by",
                )
            return
        if order.status.is_terminal:
            if not ex.closed_by_inference(order):
                # closed on the exchange's own word (filled, cancelled): a listing that lags behind
                report.mismatches.append(
                    f"order {cid}: {order.status.value} here, {snapshot.status.value} at the exchange"
                )
                report.unexplained.add(order.symbol)
                return
            ex.reopen(order, f"the exchange lists it {snapshot.status.value}")
        if order.status is not snapshot.status or order.filled_size != snapshot.filled_size:
            ex.apply_snapshot(order, snapshot)
        if not order.status.is_terminal and ex.orders.run_of(cid) != ex.orders.run_id:
            ex.tracked.add(cid)

    def _adopt_foreign(self, snapshot: OrderSnapshot) -> None:
        ex = self.execution
        order = self._record(snapshot)
        ex.events.append(
            ex.clock.now(), "foreign_order", snapshot.symbol, client_order_id=snapshot.client_order_id,
            exchange_order_id=snapshot.exchange_order_id, side=snapshot.side, size=snapshot.size,
            status=order.status, action="adopted",
        )

    def _record(self, snapshot: OrderSnapshot) -> Order:
        """Store an order known only from the exchange's snapshot and follow it until done."""
        ex = self.execution
        # The port's snapshot carries no order type or limit price: recorded as a GTC limit
        # at its average fill price when it has one, else as a market order.
        price = snapshot.average_fill_price
        order = Order(
            client_order_id=snapshot.client_order_id,
            symbol=snapshot.symbol,
            side=snapshot.side,
            type=OrderType.LIMIT if price else OrderType.MARKET,
            size=snapshot.size,
            created_at=snapshot.created_at,
            limit_price=price,
            time_in_force=TimeInForce.GTC,
            status=OrderStatus.PENDING,
        )
        ex.orders.upsert(order)
        ex.apply_snapshot(order, snapshot)
        if not order.status.is_terminal:
            ex.tracked.add(order.client_order_id)
        return order

    def _working(self, symbols: list[str]) -> list[Order]:
        return [o for s in symbols if (o := self.execution.orders.working(s)) is not None]

    def _symbols_of(self, key: str) -> list[str]:
        if key.startswith(BALANCE):
            return self._spot_bases().get(key.removeprefix(BALANCE), [])
        return [key]

    def _rebase_flat(self, key: str, ours: Decimal, theirs: Decimal) -> bool:
        """Flat at the exchange, nothing of ours working there, and our records say otherwise
        (an unexplained holding closed, a liquidation we did not see): nothing is held, so
        nothing is at risk — our expectation starts again from flat (``holding_adopted``,
        reason "flat at the exchange") instead of holding the symbol reduce-only for good."""
        if theirs != 0 or self.baseline is None or self._working(self._symbols_of(key)):
            return False
        self._take_as_ours(key, ours, theirs, "flat at the exchange")
        return True

    def _take_as_ours(self, key: str, ours: Decimal, theirs: Decimal, reason: str) -> Decimal:
        ex = self.execution
        assert self.baseline is not None
        delta = theirs - ours
        self.baseline[key] = self.baseline.get(key, ZERO) + delta
        if not ex.fresh_venue:
            ex.orders.adopt_holding(key, delta)
        symbols = self._symbols_of(key)
        ex.events.append(
            ex.clock.now(), "holding_adopted", symbols[0] if symbols else None, key=key, size=delta,
            exchange=theirs, explained=ours, reason=reason,
        )
        return delta

    def _adopt(self, key: str, ours: Decimal, theirs: Decimal) -> bool:
        """With ``unexplained_holdings = adopt``, take the difference as ours from now on
        (kept in the order store). Never while an order of the symbol has an unknown fate:
        its fill may be what explains the difference."""
        ex = self.execution
        if ex.config.unexplained_holdings is not HoldingsPolicy.ADOPT or self.baseline is None:
            return False
        symbols = self._symbols_of(key)
        if any(o.status is OrderStatus.PENDING for o in self._working(symbols)):
            return False
        delta = self._take_as_ours(key, ours, theirs, "unexplained_holdings = adopt")
        what = "balance" if key.startswith(BALANCE) else "position"
        detail = (
            f"{key.removeprefix(BALANCE)} {what}: exchange {theirs}, our fills explain {ours}; {delta} adopted as ours"
        )
        ex.alerts.notify("holding_adopted", "P2", detail, symbols[0] if symbols else None, key=key, size=delta)
        return True

    def _apply_verdict(self, report: ReconcileReport) -> None:
        """Each symbol whose holding our records do not explain is reduce-only (P1 alert)
        until a reconciliation explains it again; a symbol reduce-only for a late fill is
        released once it is flat at the exchange."""
        ex = self.execution
        risk = ex.risk
        for symbol in sorted(report.unexplained):
            risk.enter_symbol_reduce_only(symbol, REASON, "; ".join(report.mismatches))
        for symbol, reasons in list(risk.symbol_reduce_only.items()):
            if REASON in reasons and symbol not in report.unexplained:
                risk.leave_symbol_reduce_only(symbol, REASON)
            if LATE_FILL in reasons and self._flat(symbol, report) and not self._working([symbol]):
                risk.leave_symbol_reduce_only(symbol, LATE_FILL)
        if REASON in risk.reduce_only_reasons:  # a global one from an earlier version's run
            risk.leave_reduce_only(REASON)
        if not report.matched:
            ex.alerts.fire(
                ALERT_RULE,
                "P1",
                f"reconciliation mismatch, reduce-only for {', '.join(sorted(report.unexplained)) or 'none'}: "
                f"{'; '.join(report.mismatches)}",
                action="reduce-only",
                symbols=sorted(report.unexplained),
                mismatches=report.mismatches,
            )
        elif ex.alerts.is_active(ALERT_RULE):
            ex.alerts.clear(ALERT_RULE, "our records match the exchange's")

    def _flat(self, symbol: str, report: ReconcileReport) -> bool:
        product = self.execution.products.get(symbol)
        key = self._key_of(symbol)
        if product is None or key is None:
            return True
        _, theirs = report.positions.get(key, (ZERO, ZERO))
        return theirs == 0 or (not product.is_derivative and abs(theirs) < product.min_size)
