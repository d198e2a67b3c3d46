"""``PushedUpdates``: order and account changes the exchange pushes, for the coordinator.

A pushed order update is cumulative state (status, filled size), never a trade, so it is
never turned into a fill: a rise in the filled size fetches the order with its fills
(``Exchange.get_order``), which go through the one fill path every other source uses,
keyed by trade id (``OrdersStore.add_fill`` refuses a trade id it holds). A fill the
push brought in is therefore not recorded again when the poll, the fill listing or a
reconciliation sees it, and the reverse. A terminal status with nothing more filled
settles the order at once, without a request.

Updates are queued by the stream's callback and applied by the bot's main task only
(between cycles, woken by ``ready``, and at the start of each cycle's order step), never
beside a cycle that holds the same orders. While the stream is healthy (subscribed, heard
from within the quiet window, every symbol followed) the cycle does not poll fills and
order status; whenever it was down or a frame was rejected, the next cycles poll as
before until one full poll that began with the stream healthy has run (what was missed
is caught up there; what came after its start was pushed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, cast

from perpsbot.domain import DomainError, Order, OrderStatus
from perpsbot.domain.clock import Clock
from perpsbot.exchange.port import (
    Exchange,
    ExchangeError,
    PushedAccount,
    PushedOrder,
    PushedUpdate,
    PushesUpdates,
    PushFeed,
    PushRejected,
    PushState,
)
from perpsbot.execution.calls import bounded
from perpsbot.logs import RateLimitedLog
from perpsbot.store import EventStore

if TYPE_CHECKING:
    from perpsbot.execution.coordinator import ExecutionCoordinator

log = logging.getLogger(__name__)


class PushedUpdates:
    def __init__(self, coordinator: ExecutionCoordinator, events: EventStore, clock: Clock, symbols: list[str],
                 quiet_seconds: float) -> None:
        self.coordinator = coordinator
        self.events = events
        self.clock = clock
        self.symbols = frozenset(symbols)
        self.quiet_seconds = quiet_seconds
        self.feed: PushFeed | None = None
        self.up = False
        self.pending: dict[str, PushedOrder] = {}  # the newest update per client order id, oldest first
        self.ready = asyncio.Event()  # set while updates wait to be applied
        self.margin: PushedAccount | None = None  # the venue's futures margin figures, last pushed
        self.applied = Counter[str]()  # order changes applied, by source: push | poll
        self.account_updates = Counter[str]()  # account figures taken, by source: push | poll
        self.rejected = Counter[str]()  # frames refused, by code
        self._missed = 1  # bumped whenever updates may have been missed (down, a rejected frame)
        self._caught_up = 0  # the value of _missed at the start of the last full poll begun while healthy
        self._polling: bool | None = None  # what the last cycle did (for the fallback events)
        self._log_rejected = RateLimitedLog(log)

    @classmethod
    def for_exchange(cls, exchange: Exchange, coordinator: ExecutionCoordinator, events: EventStore, clock: Clock,
                     symbols: list[str], quiet_seconds: float) -> PushedUpdates | None:
        """The exchange's push feed for ``symbols``; None when it pushes nothing."""
        if not exchange.capabilities.user_stream:
            return None
        pushed = cls(coordinator, events, clock, symbols, quiet_seconds)
        pushed.feed = cast(PushesUpdates, exchange).push_feed(symbols, pushed.on_update, quiet_seconds)
        return pushed if pushed.feed is not None else None

    async def start(self) -> None:
        if self.feed is not None:
            await self.feed.start()

    async def close(self) -> None:
        if self.feed is not None:
            await self.feed.close()

    # ----- the stream's callback (synchronous, no request) ------------------------------

    def on_update(self, update: PushedUpdate) -> None:
        if isinstance(update, PushedOrder):
            self.pending.pop(update.client_order_id, None)
            self.pending[update.client_order_id] = update
            self.ready.set()
        elif isinstance(update, PushedAccount):
            self._take_account(update)
        elif isinstance(update, PushState):
            self._state(update)
        else:
            self._reject(update)

    def _take_account(self, update: PushedAccount) -> None:
        self.margin = update
        self.account_updates["push"] += 1
        if update.equity is not None:
            account = self.coordinator.account
            self.coordinator.account = dataclasses.replace(account, equity=update.equity)

    def _state(self, update: PushState) -> None:
        self.up = update.up
        if not update.up:
            self._missed += 1
        log.info("user stream %s (%s)", "up" if update.up else "down", update.detail)

    def _reject(self, update: PushRejected) -> None:
        self._missed += 1  # an order update may have been in it: the next cycle polls
        first = not self.rejected[update.code]
        self.rejected[update.code] += 1
        self._log_rejected(logging.WARNING, "user stream frame rejected (%s): %s", update.code, update.reason)
        if first:  # one event per kind of rejection a run; the counter has them all
            self.events.append(update.ts, "push_rejected", None, code=update.code, reason=update.reason)

    # ----- health -------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Subscribed and heard from within the quiet window."""
        silent = self.feed.silent_for() if self.feed is not None else None
        return self.up and silent is not None and silent < self.quiet_seconds

    def needs_poll(self) -> bool:
        """Whether this cycle polls fills and order status (records a change of mind)."""
        healthy, behind = self.healthy, self._caught_up != self._missed
        unfollowed = not self.coordinator.followed_symbols() <= self.symbols
        polling = not healthy or behind or unfollowed
        if polling != self._polling:
            now = self.clock.now()
            if polling and self._polling is not None:
                reason = ("down" if not self.up else "quiet" if not healthy else "catching up" if behind
                          else "symbol not subscribed")
                self.events.append(now, "push_fallback", None, reason=reason)
            elif not polling:
                self.events.append(now, "push_recovered", None)
            self._polling = polling
        return polling

    def poll_started(self) -> int | None:
        """Marks a poll's start: one that starts while the stream is healthy catches up with
        everything missed so far (what happens after its start is pushed); None otherwise."""
        return self._missed if self.healthy else None

    def poll_done(self, started: int | None) -> None:
        """The poll marked ``started`` ran to its end."""
        if started is not None:
            self._caught_up = started

    def summary(self) -> dict[str, object]:
        return {
            "push_healthy": self.healthy,
            "push_order_updates": self.applied["push"],
            "poll_order_updates": self.applied["poll"],
            "push_account_updates": self.account_updates["push"],
            "push_rejected": dict(self.rejected),
        }

    # ----- applying (the bot's main task only) --------------------------------------------

    async def apply(self) -> int:
        """Apply the queued order updates; returns how many changed an order. An update the
        exchange could not be asked about is left to the poll, which the next cycle runs."""
        changed = 0
        try:
            while self.pending:
                client_id = next(iter(self.pending))
                update = self.pending.pop(client_id)
                order = self.coordinator.orders.get(client_id)
                if order is None:
                    continue  # not an order of ours
                try:
                    changed += await self._apply(order, update)
                except (ExchangeError, TimeoutError, OSError) as exc:
                    self._missed += 1
                    log.warning("pushed update of %s not applied (%s); the poll takes it", client_id, exc)
        except BaseException:
            self._missed += 1  # stopped half-way: what was dropped is polled
            raise
        finally:
            self.ready.clear()
        if changed:
            self.applied["push"] += changed
            await self.coordinator.refresh_account()
        return changed

    async def _apply(self, order: Order, update: PushedOrder) -> int:
        before = (order.status, order.filled_size)
        if update.filled_size <= order.filled_size and (update.status is order.status or order.status.is_terminal):
            return 0  # nothing we do not know
        if update.filled_size == order.filled_size and self._settle(order, update.status, update.ts):
            return 1
        snapshot = await bounded(self.coordinator.exchange.get_order(order.client_order_id))
        self.coordinator.apply_snapshot(order, snapshot)  # its fills, once each by trade id
        if order.status.is_terminal:
            self.coordinator.tracked.discard(order.client_order_id)
        return int((order.status, order.filled_size) != before)

    def _settle(self, order: Order, status: OrderStatus, ts: datetime) -> bool:
        """A terminal status pushed with nothing more filled closes the order as it stands
        (not FILLED: that one comes with its fills)."""
        if not status.is_terminal or status is OrderStatus.FILLED or order.status is OrderStatus.PENDING:
            return False
        try:
            order.advance_to(status, ts)
        except DomainError:
            return False  # not a move the state machine knows from here: ask the exchange
        self.coordinator.orders.upsert(order)
        self.coordinator.tracked.discard(order.client_order_id)
        return True
