"""``CoinbasePushFeed``: the authenticated ``user`` and ``futures_balance_summary``
channels turned into the port's venue-neutral pushed updates.

One connection to the user-data endpoint, with ``heartbeats`` (so a quiet account still
shows a live stream), ``user`` for the bot's symbols and, when one of them is a CFM
future, ``futures_balance_summary``. The feed is up once the server confirms the ``user``
subscription and down on a disconnect, a replaced silent connection or a sequence gap
(the client resubscribes; the confirmation brings it up again). What the ``user`` channel
says of an order is cumulative (``cumulative_quantity``, ``status``), never a trade: it
becomes a ``PushedOrder`` and the consumer fetches the fills by trade id.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from perpsbot.exchange.coinbase.mapping import FuturesBalanceEvent, OrderUpdate, SubscriptionsEvent
from perpsbot.exchange.coinbase.ws import Event, StreamNotice
from perpsbot.exchange.port import PushedAccount, PushedOrder, PushedUpdate, PushRejected, PushState

if TYPE_CHECKING:
    from perpsbot.exchange.coinbase.adapter import CoinbaseExchange

log = logging.getLogger(__name__)

# futures_balance_summary field -> PushedAccount field
MARGIN_FIELDS = {
    "futures_buying_power": "buying_power",
    "initial_margin": "initial_margin",
    "liquidation_threshold": "maintenance_margin",
    "liquidation_buffer_amount": "liquidation_buffer",
}


class CoinbasePushFeed:
    def __init__(self, exchange: CoinbaseExchange, symbols: Sequence[str],
                 on_update: Callable[[PushedUpdate], None], quiet_seconds: float) -> None:
        self.exchange = exchange
        self.symbols = sorted(symbols)
        self.on_update = on_update
        self.futures = any(exchange.is_cfm(s) for s in self.symbols)
        self.stream = exchange.user_stream(on_event=self._on_event, quiet_seconds=quiet_seconds, queue_events=False)
        self.up = False
        self._heard: float | None = None  # monotonic time of the last message on this connection

    async def start(self) -> None:
        await self.stream.subscribe("user", self.symbols)
        if self.futures:
            await self.stream.subscribe("futures_balance_summary")
        self.stream.start()

    async def close(self) -> None:
        await self.stream.close()

    def silent_for(self) -> float | None:
        if self._heard is None or not self.stream.connected.is_set():
            return None
        return time.monotonic() - self._heard

    # ----- frames to updates ----------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        try:
            self._translate(event)
        except Exception as exc:  # a consumer's or our bug must not end the connection
            log.exception("user stream: an update could not be handled")
            with contextlib.suppress(Exception):
                self._emit(PushRejected("handler_error", f"{type(exc).__name__}: {exc}", datetime.now(UTC)))

    def _emit(self, update: PushedUpdate) -> None:
        self.on_update(update)

    def _translate(self, event: Event) -> None:
        if isinstance(event, StreamNotice):
            self._notice(event)
            return
        self._heard = time.monotonic()
        if isinstance(event, SubscriptionsEvent):
            self._set_up("user" in event.subscriptions, "subscribed" if "user" in event.subscriptions
                         else "the user channel is not subscribed", event.ts)
        elif isinstance(event, OrderUpdate):
            self._order(event)
        elif isinstance(event, FuturesBalanceEvent):
            self._account(event)

    def _notice(self, notice: StreamNotice) -> None:
        if notice.kind == "connected":
            self._heard = time.monotonic()
        elif notice.kind in ("disconnected", "quiet", "gap"):
            self._set_up(False, f"{notice.kind}: {notice.detail}", notice.ts)
        elif notice.kind == "rejected":
            self._emit(PushRejected("not_json" if notice.detail == "not JSON" else "bad_field", notice.detail,
                                    notice.ts))
        elif notice.kind == "error":
            log.warning("user stream: the server says %s", notice.detail)

    def _set_up(self, up: bool, detail: str, ts: datetime) -> None:
        if up != self.up:
            self.up = up
            self._emit(PushState(up, detail, ts))

    def _order(self, update: OrderUpdate) -> None:
        if update.filled_size < 0:
            self._emit(PushRejected("bad_field", f"user: order {update.order_id}: negative cumulative_quantity",
                                    update.ts))
            return
        client_id = update.client_order_id or self.exchange.client_id_known(update.order_id)
        if not client_id:
            return  # an order placed elsewhere without a client id: nothing of ours
        self.exchange.remember_order(client_id, update.order_id)
        self._emit(PushedOrder(client_id, update.symbol, update.status, update.filled_size, update.ts))

    def _account(self, event: FuturesBalanceEvent) -> None:
        values = event.values
        missing = [name for name in (*MARGIN_FIELDS, "total_usd_balance") if name not in values]
        if missing:
            self._emit(PushRejected("missing_field", f"futures_balance_summary: no {', '.join(missing)}", event.ts))
            return
        figures: dict[str, Decimal] = {ours: values[theirs] for theirs, ours in MARGIN_FIELDS.items()}
        equity = self.exchange.equity_with_futures(values["total_usd_balance"])
        self._emit(PushedAccount(equity=equity, ts=event.ts, **figures))


__all__ = ["CoinbasePushFeed"]
