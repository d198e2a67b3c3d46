"""The gateway's market data as the venue-neutral events of ``exchange.stream``.

``GatewayMarketStream`` keeps one unauthenticated JSON-RPC WebSocket (the market-data
host) and subscribes by feed: ``book`` → ``book.{instrument}.100ms``, ``ticker`` →
``ticker.{instrument}.100ms``, ``trades`` → ``trades.{instrument}.100ms``. The gateway's
``heartbeat`` frames (every ``heartbeat_seconds``) arrive in order behind every
notification before them, so each becomes a ``heartbeat`` event.

Books: a ``snapshot`` then ``change`` notifications, each naming its ``change_id`` and
the ``prev_change_id`` it follows. A change whose ``prev_change_id`` is not the last
``change_id`` seen is a gap: the book is resubscribed (the gateway answers with a fresh
snapshot) and its changes are dropped until then. Book notifications are decoded by one
``msgspec`` decoder straight into ``BookMessage`` (levels as floats, bounded: price > 0,
size >= 0; a frame with a level out of bounds is decoded again unbounded, as
``UncheckedBookMessage``, so the book's checking ``apply`` refuses it and resyncs).
Ticker and trade notifications go through ``json`` with exact ``Decimal``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar

import msgspec

from perpsbot.domain import Side
from perpsbot.exchange.coinbase.auth import JwtSigner
from perpsbot.exchange.gateway.rpc import RpcClient
from perpsbot.exchange.port import ExchangeError
from perpsbot.exchange.stream import (
    BOOK,
    HEARTBEAT,
    TICKER,
    TRADES,
    AskLevel,
    BidLevel,
    MarketEvent,
    MarketMessage,
    MarketTrade,
    Ticker,
)

log = logging.getLogger(__name__)

FEED_CHANNEL = {BOOK: "book.{}.100ms", TICKER: "ticker.{}.100ms", TRADES: "trades.{}.100ms"}


class BookMessage(MarketMessage):
    kind: ClassVar[str] = BOOK


class UncheckedBookMessage(MarketMessage):
    kind: ClassVar[str] = BOOK
    levels_checked: ClassVar[bool] = False


class TickerMessage(MarketMessage):
    kind: ClassVar[str] = TICKER


class TradesMessage(MarketMessage):
    kind: ClassVar[str] = TRADES


class HeartbeatMessage(MarketMessage):
    kind: ClassVar[str] = HEARTBEAT


_Price = Annotated[float, msgspec.Meta(gt=0)]
_Size = Annotated[float, msgspec.Meta(ge=0)]


class _BookData(msgspec.Struct):
    type: str
    instrument_name: str
    timestamp: int
    change_id: int
    bids: list[tuple[str, _Price, _Size]] = []
    asks: list[tuple[str, _Price, _Size]] = []
    prev_change_id: int | None = None


class _LaxBookData(msgspec.Struct):
    type: str
    instrument_name: str
    timestamp: int
    change_id: int
    bids: list[tuple[str, float, float]] = []
    asks: list[tuple[str, float, float]] = []
    prev_change_id: int | None = None


class _Params(msgspec.Struct):
    channel: str
    data: _BookData


class _LaxParams(msgspec.Struct):
    channel: str
    data: _LaxBookData


class _Frame(msgspec.Struct):
    method: str
    params: _Params


class _LaxFrame(msgspec.Struct):
    method: str
    params: _LaxParams


_decode_book = msgspec.json.Decoder(_Frame).decode
_decode_lax_book = msgspec.json.Decoder(_LaxFrame).decode
_BOOK_MARK = '"channel":"book.'


@dataclass(frozen=True, slots=True)
class StreamNotice:
    """``connected`` / ``disconnected`` / ``gap`` / ``quiet`` with why."""

    kind: str
    detail: str
    ts: datetime


def _stamp(ms: int) -> tuple[str, float]:
    epoch = ms / 1000
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(), epoch


class GatewayMarketStream:
    """A ``MarketStream`` on the gateway (see the module doc)."""

    def __init__(
        self,
        ws_url: str,
        *,
        ssl: Any = None,
        on_event: Callable[[Any], None] | None = None,
        on_market: Callable[[MarketMessage], None] | None = None,
        quiet_seconds: float = 30.0,
        heartbeat_seconds: int = 10,
        signer: JwtSigner | None = None,
        **_: Any,
    ) -> None:
        self.quiet_seconds = quiet_seconds
        self.on_event = on_event
        self.on_market = on_market
        self.rpc = RpcClient(ws_url, None, signer, ssl=ssl, heartbeat_seconds=heartbeat_seconds,
                             on_notice=self._on_notice, on_text=self._on_text, on_state=self._on_state)
        self.gaps = 0
        self.quiet_reconnects = 0
        self.book_resyncs = 0
        self._change: dict[str, int] = {}  # instrument -> last change_id applied
        self._awaiting: set[str] = set()  # books waiting for a snapshot
        self._symbols: dict[str, set[str]] = {feed: set() for feed in FEED_CHANNEL}
        self._seq = 0
        self._task: asyncio.Task[None] | None = None
        self._resyncs: set[asyncio.Task[None]] = set()
        self.closed = False

    # ----- the MarketStream protocol ----------------------------------------------------

    @property
    def connects(self) -> int:
        return self.rpc.connects

    @property
    def bad_messages(self) -> int:
        return sum(self.rpc.rejected.values())

    @property
    def awaiting_snapshot(self) -> frozenset[str]:
        return frozenset(self._awaiting)

    def _channels(self, feed: str, symbols: Iterable[str]) -> list[str]:
        pattern = FEED_CHANNEL.get(feed)
        return [pattern.format(s) for s in symbols] if pattern is not None else []

    async def subscribe(self, channel: str, product_ids: Iterable[str] = ()) -> None:
        symbols = list(product_ids)
        if channel == HEARTBEAT:
            return  # the gateway's heartbeats come with the connection
        self._symbols.setdefault(channel, set()).update(symbols)
        if channel == BOOK:
            self._awaiting.update(symbols)
        for name in self._channels(channel, symbols):
            if name not in self.rpc.subscriptions:
                self.rpc.subscriptions.append(name)
        if self._task is not None and self.rpc.connected:
            await self.rpc.subscribe(self._channels(channel, symbols))

    async def unsubscribe(self, channel: str, product_ids: Iterable[str] | None = None) -> None:
        symbols = list(product_ids) if product_ids is not None else sorted(self._symbols.get(channel, ()))
        self._symbols.get(channel, set()).difference_update(symbols)
        names = self._channels(channel, symbols)
        if self.rpc.connected:
            await self.rpc.unsubscribe(names)
        else:
            self.rpc.subscriptions = [c for c in self.rpc.subscriptions if c not in names]

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gateway-market-stream")
        return self._task

    async def close(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.rpc.close()

    def resync_book(self, symbol: str, reason: str = "") -> None:
        """Drop ``symbol``'s book and ask the gateway for a fresh snapshot."""
        self.book_resyncs += 1
        self._awaiting.add(symbol)
        self._change.pop(symbol, None)
        if not self.rpc.connected:
            return  # the next connection subscribes afresh
        task = asyncio.get_running_loop().create_task(self._resubscribe(symbol))
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    async def _resubscribe(self, symbol: str) -> None:
        channel = FEED_CHANNEL[BOOK].format(symbol)
        try:
            await self.rpc.unsubscribe([channel])
            await self.rpc.subscribe([channel])
        except ExchangeError as exc:
            log.warning("book %s not resubscribed (%s): the next connection will", symbol, exc)

    # ----- connection ------------------------------------------------------------------

    async def _run(self) -> None:
        while not self.closed:
            try:
                up = await self.rpc.connect()
            except ExchangeError as exc:
                log.warning("gateway market stream: %s", exc)
                up = False
            if not up:
                await asyncio.sleep(0.5)
                continue
            while self.rpc.connected:
                await asyncio.sleep(min(1.0, self.quiet_seconds / 4))
                silent = time.monotonic() - self.rpc.last_message
                if self.rpc.connected and silent > self.quiet_seconds:
                    self.quiet_reconnects += 1
                    self._notice("quiet", f"no message for {self.quiet_seconds:g} s")
                    ws = self.rpc._ws
                    if ws is not None:
                        await ws.close()

    def _notice(self, kind: str, detail: str) -> None:
        if self.on_event is not None:
            self.on_event(StreamNotice(kind, detail, datetime.now(UTC)))

    def _on_state(self, up: bool, detail: str) -> None:
        if not up:
            self._awaiting.update(self._symbols.get(BOOK, ()))
            self._change.clear()
        self._notice("connected" if up else "disconnected", detail)

    def _emit(self, message: MarketMessage) -> None:
        if self.on_market is not None:
            self.on_market(message)

    # ----- decoding ----------------------------------------------------------------------

    def _on_text(self, text: str) -> bool:
        if _BOOK_MARK not in text[:80]:
            if '"method":"heartbeat"' in text[:60]:
                self._seq += 1
                now = datetime.now(UTC)
                self._emit(HeartbeatMessage(now.isoformat(), self._seq, epoch=now.timestamp()))
            return False  # the RPC client reads it (a test_request is answered there)
        try:
            data: _BookData | _LaxBookData = _decode_book(text).params.data
            unchecked = False
        except msgspec.ValidationError:
            try:
                data = _decode_lax_book(text).params.data
                unchecked = True
            except (msgspec.ValidationError, msgspec.DecodeError):
                self.rpc.rejected["malformed book notification"] += 1
                return True
        except msgspec.DecodeError:
            self.rpc.rejected["not JSON"] += 1
            return True
        self._on_book(data, unchecked)
        return True

    def _on_book(self, data: _BookData | _LaxBookData, unchecked: bool) -> None:
        symbol = data.instrument_name
        if data.type == "snapshot":
            self._awaiting.discard(symbol)
            kind = "snapshot"
        elif data.type == "change":
            if symbol in self._awaiting:
                return  # until the snapshot
            if data.prev_change_id != self._change.get(symbol):
                self.gaps += 1
                detail = f"book {symbol}: change {data.change_id} follows {data.prev_change_id}, " \
                         f"last seen {self._change.get(symbol)}"
                log.warning("gateway %s: resyncing", detail)
                self._notice("gap", detail)
                self.resync_book(symbol, "change id gap")
                return
            kind = "update"
        else:
            self.rpc.rejected["book notification of unknown type"] += 1
            return
        self._change[symbol] = data.change_id
        levels: list[Any] = [BidLevel(p, 0.0 if a == "delete" else s) for a, p, s in data.bids]
        levels += [AskLevel(p, 0.0 if a == "delete" else s) for a, p, s in data.asks]
        stamp, epoch = _stamp(data.timestamp)
        self._seq += 1
        cls = UncheckedBookMessage if unchecked else BookMessage
        self._emit(cls(stamp, self._seq, [MarketEvent(type=kind, symbol=symbol, updates=levels)], epoch=epoch))

    def _on_notice(self, channel: str, data: Any) -> None:
        feed = channel.split(".")[0]
        if feed == "ticker":
            self._on_ticker(data)
        elif feed == "trades":
            self._on_trades(data)
        else:
            self.rpc.rejected["a notification on an unknown channel"] += 1

    def _on_ticker(self, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("instrument_name"), str):
            raise ValueError("a ticker without instrument_name")

        def num(name: str) -> float | None:
            value = data.get(name)
            if value is None:
                return None
            if not isinstance(value, Decimal | int) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"ticker {name} is not a number")
            return float(value)

        stats = data.get("stats")
        volume = stats.get("volume") if isinstance(stats, dict) else None
        ticker = Ticker(symbol=data["instrument_name"], price=num("last_price") or math.nan,
                        best_bid=num("best_bid_price"), best_ask=num("best_ask_price"),
                        best_bid_size=num("best_bid_amount"), best_ask_size=num("best_ask_amount"),
                        volume_24h=float(volume) if isinstance(volume, Decimal | int) else None)
        stamp, epoch = _stamp(int(data.get("timestamp") or 0))
        self._seq += 1
        self._emit(TickerMessage(stamp, self._seq, [MarketEvent(symbol=ticker.symbol, tickers=[ticker])],
                                 epoch=epoch))

    def _on_trades(self, data: Any) -> None:
        if not isinstance(data, list) or not data:
            raise ValueError("trades must be a list of one trade or more")
        trades = []
        newest = 0
        for item in data:
            price, amount = item.get("price"), item.get("amount")
            if not isinstance(price, Decimal | int) or not isinstance(amount, Decimal | int) or price <= 0:
                raise ValueError("a trade without a positive price and an amount")
            taker = str(item.get("direction", ""))
            if taker not in ("buy", "sell"):
                raise ValueError(f"trade direction {taker!r}")
            ms = int(item["timestamp"])
            newest = max(newest, ms)
            trades.append(MarketTrade(
                trade_id=str(item["trade_id"]), symbol=str(item["instrument_name"]), price=Decimal(price),
                size=Decimal(amount), side=Side.SELL if taker == "buy" else Side.BUY,  # the maker's
                time=datetime.fromtimestamp(ms / 1000, tz=UTC),
            ))
        if trades:
            stamp, epoch = _stamp(newest)
            self._seq += 1
            self._emit(TradesMessage(stamp, self._seq, [MarketEvent(trades=trades)], epoch=epoch))
