"""WebSocket client for Coinbase Advanced Trade market data and user data, on aiohttp.

One ``CoinbaseWebSocket`` per endpoint (market data: ``wss://advanced-trade-ws.coinbase.com``;
user data: ``wss://advanced-trade-ws-user.coinbase.com``). It keeps the set of
subscriptions and holds them across connections:

* subscribe / unsubscribe per channel, each message carrying a fresh JWT when the client
  has credentials (required for ``user`` and ``futures_balance_summary``);
* messages arrive in the documented envelope and are decoded into typed events
  (``mapping.TickerEvent``, ``L2Snapshot``, ``L2Update``, ``TradeEvent``, ``CandleEvent``,
  ``OrderUpdate``, ``HeartbeatEvent``, ...) delivered to an async iterator and/or a callback;
* ``sequence_num`` must go up by exactly one per message on a connection: a gap is answered
  by resubscribing (a fresh ``level2`` snapshot follows; updates in between are dropped);
* a dropped connection is replaced forever, with capped exponential backoff and jitter,
  and every subscription is sent again;
* a connection with no message at all (heartbeats included) for ``quiet_seconds`` is
  considered dead and replaced;
* ``resync_book(symbol)`` asks for a fresh ``level2`` snapshot of one product (the book
  keeper found it crossed or inconsistent).

With ``on_market`` set, public market-data messages (``l2_data``, ``ticker``,
``ticker_batch``, ``market_trades``, ``heartbeats``) take the fast path: decoded by
``wire.decode_market`` into the venue-neutral ``exchange.stream`` events and handed to
``on_market`` synchronously, after the same sequence check and snapshot filtering;
everything else still becomes typed events. ``subscribe`` takes a feed's name
(``exchange.stream.BOOK`` ...) for its channel.
``queue_events=False`` skips the event queue when only the callbacks are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from perpsbot.exchange.coinbase.auth import JwtSigner
from perpsbot.exchange.coinbase.mapping import (
    L2Snapshot,
    L2Update,
    WsEvent,
    parse_envelope,
)
from perpsbot.exchange.coinbase.rest import RetryPolicy
from perpsbot.exchange.coinbase.wire import FEED_CHANNELS, decode_market
from perpsbot.exchange.port import AuthenticationError, BadResponse
from perpsbot.exchange.stream import BOOK, MarketMessage

log = logging.getLogger(__name__)

DEFAULT_WS_URL = "wss://advanced-trade-ws.coinbase.com"
DEFAULT_WS_USER_URL = "wss://advanced-trade-ws-user.coinbase.com"
PRIVATE_CHANNELS = frozenset({"user", "futures_balance_summary"})
CHANNELS = frozenset({"heartbeats", "ticker", "ticker_batch", "level2", "market_trades", "candles", "status",
                      *PRIVATE_CHANNELS})
RECONNECT_POLICY = RetryPolicy(attempts=1_000_000, base_delay=0.5, max_delay=30.0)


@dataclass(frozen=True, slots=True)
class StreamNotice:
    """Something the stream itself went through: ``connected``, ``disconnected``,
    ``gap`` (resubscribed), ``quiet`` (replaced), ``error`` (an error message),
    ``rejected`` (a message that could not be read, and why)."""

    kind: str
    detail: str
    ts: datetime


Event = WsEvent | StreamNotice
Callback = Callable[[Event], Any]
MarketCallback = Callable[[MarketMessage], None]


class _QuietConnection(Exception):
    pass


class CoinbaseWebSocket:
    def __init__(
        self,
        url: str = DEFAULT_WS_URL,
        signer: JwtSigner | None = None,
        *,
        ssl: ssl_module.SSLContext | None = None,
        quiet_seconds: float = 30.0,
        heartbeats: bool = True,
        reconnect: RetryPolicy = RECONNECT_POLICY,
        on_event: Callback | None = None,
        queue_size: int = 10_000,
        rng: random.Random | None = None,
        on_market: MarketCallback | None = None,
        queue_events: bool = True,
    ) -> None:
        self.url = url
        self.signer = signer
        self._ssl = ssl
        self.quiet_seconds = quiet_seconds
        self.reconnect = reconnect
        self.on_event = on_event
        self.on_market = on_market
        self.queue_events = queue_events
        self._rng = rng or random.Random()
        self.subscriptions: dict[str, set[str]] = {}
        if heartbeats:
            self.subscriptions["heartbeats"] = set()
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_sequence: int | None = None
        self._awaiting_snapshot: set[str] = set()
        self._send_lock = asyncio.Lock()
        self.connected = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        # Counters for tests and telemetry.
        self.connects = 0
        self.gaps = 0
        self.quiet_reconnects = 0
        self.dropped_events = 0
        self.bad_messages = 0
        self.book_resyncs = 0

    def __repr__(self) -> str:
        return f"CoinbaseWebSocket(url={self.url!r}, channels={sorted(self.subscriptions)})"

    # ----- subscriptions --------------------------------------------------------------

    def _check_channel(self, channel: str) -> None:
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; channels: {', '.join(sorted(CHANNELS))}")
        if channel in PRIVATE_CHANNELS and self.signer is None:
            raise AuthenticationError(f"the {channel} channel needs API credentials")

    async def subscribe(self, channel: str, product_ids: Iterable[str] = ()) -> None:
        """``channel``: Coinbase's name, or a venue-neutral feed's (``exchange.stream``)."""
        channel = FEED_CHANNELS.get(channel, channel)
        self._check_channel(channel)
        products = set(product_ids)
        self.subscriptions.setdefault(channel, set()).update(products)
        if channel == "level2":
            self._awaiting_snapshot.update(products)
        await self._send_subscription("subscribe", channel, products)

    async def unsubscribe(self, channel: str, product_ids: Iterable[str] | None = None) -> None:
        channel = FEED_CHANNELS.get(channel, channel)
        held = self.subscriptions.get(channel, set())
        products = set(product_ids) if product_ids is not None else set(held)
        held.difference_update(products)
        if not held or product_ids is None:
            self.subscriptions.pop(channel, None)
        self._awaiting_snapshot.difference_update(products if channel == "level2" else ())
        await self._send_subscription("unsubscribe", channel, products)

    def subscription_message(self, kind: str, channel: str, product_ids: Iterable[str]) -> dict[str, Any]:
        message: dict[str, Any] = {"type": kind, "channel": channel}
        products = sorted(product_ids)
        if products:
            message["product_ids"] = products
        if self.signer is not None:
            message["jwt"] = self.signer.ws_token()  # a fresh one per message
        return message

    async def _send_subscription(self, kind: str, channel: str, products: set[str]) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return  # sent on (re)connect
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await ws.send_str(json.dumps(self.subscription_message(kind, channel, products)))

    async def _send_all(self, kind: str = "subscribe") -> None:
        for channel, products in list(self.subscriptions.items()):
            await self._send_subscription(kind, channel, set(products))

    # ----- delivery -------------------------------------------------------------------

    async def _deliver(self, event: Event) -> None:
        if self.on_event is not None:
            result = self.on_event(event)
            if inspect.isawaitable(result):
                await result
        if not self.queue_events:
            return
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.dropped_events += 1
        self._queue.put_nowait(event)

    async def events(self) -> AsyncIterator[Event]:
        """Every event and notice, in arrival order, until ``close()``."""
        while not (self._closed and self._queue.empty()):
            getter = asyncio.ensure_future(self._queue.get())
            try:
                yield await getter
            except asyncio.CancelledError:
                getter.cancel()
                raise

    async def next_event(self, timeout: float | None = None) -> Event:
        return await asyncio.wait_for(self._queue.get(), timeout)

    # ----- connection -----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """``close()`` was called."""
        return self._closed

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._closed = False
            self._task = asyncio.create_task(self._run(), name=f"coinbase-ws {self.url}")
        return self._task

    async def close(self) -> None:
        self._closed = True
        for task in list(self._background):
            task.cancel()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> CoinbaseWebSocket:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _notice(self, kind: str, detail: str) -> None:
        await self._deliver(StreamNotice(kind, detail, datetime.now(UTC)))

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            reason = "closed by the server"
            try:
                if self._session is None or self._session.closed:
                    self._session = aiohttp.ClientSession()
                async with self._session.ws_connect(
                    self.url, ssl=self._ssl if self._ssl is not None else True, autoping=True,
                    max_msg_size=0,
                ) as ws:
                    self._ws = ws
                    self._last_sequence = None
                    self._awaiting_snapshot = set(self.subscriptions.get("level2", ()))
                    self.connects += 1
                    attempt = 0
                    await self._send_all()
                    self.connected.set()
                    await self._notice("connected", self.url)
                    await self._read(ws)
            except _QuietConnection:
                self.quiet_reconnects += 1
                reason = f"no message for {self.quiet_seconds:g} s"
                await self._notice("quiet", reason)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._ws = None
                self.connected.clear()
            if self._closed:
                break
            delay = self.reconnect.delay(min(attempt, 30), self._rng)
            attempt += 1
            log.warning("websocket %s down (%s); reconnecting in %.2f s", self.url, reason, delay)
            await self._notice("disconnected", reason)
            await asyncio.sleep(delay)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            try:
                message = await ws.receive(timeout=self.quiet_seconds)
            except TimeoutError:
                await ws.close()
                raise _QuietConnection() from None
            if message.type == aiohttp.WSMsgType.TEXT:
                if self.on_market is None or not self.handle_market_text(message.data):
                    await self._handle(message.data)
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                  aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                return

    async def _handle(self, text: str) -> None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            self.bad_messages += 1
            log.warning("websocket %s: a message that is not JSON", self.url)
            await self._notice("rejected", "not JSON")
            return
        if isinstance(data, dict) and data.get("type") == "error":
            await self._notice("error", str(data.get("message") or data))
            return
        try:
            envelope = parse_envelope(data)
        except BadResponse as exc:
            self.bad_messages += 1
            log.warning("websocket %s: %s", self.url, exc)
            await self._notice("rejected", str(exc))
            return
        expected = None if self._last_sequence is None else self._last_sequence + 1
        self._last_sequence = envelope.sequence_num
        if expected is not None and envelope.sequence_num != expected:
            await self._resync(self._gap(expected, envelope.sequence_num))
        for event in envelope.events:
            if isinstance(event, L2Snapshot):
                self._awaiting_snapshot.discard(event.symbol)
            elif isinstance(event, L2Update) and event.symbol in self._awaiting_snapshot:
                continue  # applies to a book we no longer trust; the snapshot replaces it
            await self._deliver(event)

    def handle_market_text(self, text: str | bytes) -> bool:
        """The fast path: one market-data message, sequence-checked and handed to
        ``on_market``. False when it is not a market-data message (the caller then takes
        the generic path)."""
        message = decode_market(text)
        if message is None:
            return False
        expected = None if self._last_sequence is None else self._last_sequence + 1
        self._last_sequence = message.sequence
        if expected is not None and message.sequence != expected:
            self._spawn(self._resync(self._gap(expected, message.sequence)))
        if message.kind == BOOK:
            awaiting = self._awaiting_snapshot
            if awaiting:
                kept = []
                for event in message.events:
                    if event.type == "snapshot":
                        awaiting.discard(event.symbol)
                    elif event.symbol in awaiting:
                        continue  # applies to a book we no longer trust; the snapshot replaces it
                    kept.append(event)
                message.events = kept
        assert self.on_market is not None
        try:
            self.on_market(message)
        except Exception:  # a consumer's bug must not end the connection
            log.exception("websocket %s: the market-data callback failed on a %s message", self.url,
                          message.kind)
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def resync_book(self, symbol: str, reason: str = "") -> None:
        """Drop ``symbol``'s level2 updates until a fresh snapshot, and ask for one by
        resubscribing that product alone."""
        if symbol not in self.subscriptions.get("level2", ()):
            return
        self.book_resyncs += 1
        self._awaiting_snapshot.add(symbol)
        log.warning("websocket %s: resyncing the %s book%s", self.url, symbol, f" ({reason})" if reason else "")

        async def resubscribe() -> None:
            await self._send_subscription("unsubscribe", "level2", {symbol})
            await self._send_subscription("subscribe", "level2", {symbol})

        self._spawn(resubscribe())

    @property
    def awaiting_snapshot(self) -> frozenset[str]:
        """Products whose level2 updates are being dropped until a fresh snapshot."""
        return frozenset(self._awaiting_snapshot)

    def _gap(self, expected: int, got: int) -> str:
        """Count the gap and stop trusting every book at once (before the next update)."""
        self.gaps += 1
        detail = f"sequence_num {got}, expected {expected}: resubscribing"
        log.warning("websocket %s: %s", self.url, detail)
        self._awaiting_snapshot = set(self.subscriptions.get("level2", ()))
        return detail

    async def _resync(self, detail: str) -> None:
        await self._notice("gap", detail)
        await self._send_all("unsubscribe")
        await self._send_all("subscribe")


__all__ = [
    "CHANNELS",
    "DEFAULT_WS_URL",
    "DEFAULT_WS_USER_URL",
    "PRIVATE_CHANNELS",
    "CoinbaseWebSocket",
    "Event",
    "StreamNotice",
]
