"""StreamingService: live market data from the exchange's WebSocket.

Per symbol it keeps an L2 order book (snapshot + updates; a crossed or inconsistent
book is resynced from a fresh snapshot), the latest ticker and the recent trades, and
writes marks into ``MarketDataService``'s windows — the book mid, or the last trade
(``mark_source``) — stamped with the exchange time of the message that moved them.
A heartbeat on a healthy connection (every message before it received, in order)
confirms the current marks, so a quiet but healthy book stays fresh for the risk
manager's staleness guard.

The service also decides which symbols need REST polling (``symbols_to_poll``): all of
them while the stream is down (disconnected, or silent beyond ``quiet_seconds``), and any
symbol the stream has not served within that limit (a book waiting for its snapshot, a
symbol just added). Every ``heartbeat_seconds`` a ``stream_heartbeat`` event records
per-feed message ages, reconnects, gaps, resyncs and the p95 streaming lag (exchange
timestamp of a message to its effect in the mark window), kept as a histogram.

It reads only the venue-neutral market events of ``exchange.stream`` (a message's
``kind`` is its feed: book, ticker, trades, heartbeat) and subscribes by feed; which
venue and channels are behind them is the stream client's business. The hot path
(``on_market``) is synchronous and allocation-light: the venue's stream client decodes
each message straight into those events and calls it directly, without a queue.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from perpsbot.config.model import MarkSource, StreamLevel
from perpsbot.domain import OrderBook
from perpsbot.domain.clock import Clock, WallClock
from perpsbot.exchange.stream import BOOK, HEARTBEAT, TICKER, TRADES, MarketMessage, MarketStream, MarketTrade, Ticker
from perpsbot.market.book import L2Book
from perpsbot.market.data import MarketDataService
from perpsbot.store import EventStore

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
TRADE_HISTORY = 100
# The feeds subscribed at each stream level (the venue's heartbeat comes with every stream).
LEVEL_FEEDS: dict[StreamLevel, tuple[str, ...]] = {
    StreamLevel.LEVEL2: (BOOK, TICKER, TRADES),
    StreamLevel.TICKER: (TICKER, TRADES),
    StreamLevel.OFF: (),
}
_monotonic = time.monotonic
_from_epoch = datetime.fromtimestamp
_HALF = Decimal("0.5")
_DECIMAL_CACHE_SIZE = 8192


OpenStream = Callable[..., MarketStream]


class LagHistogram:
    """Latencies in log-spaced buckets: 1 µs to ~10^3 s, 16 buckets per doubling (each
    ~4.4 % wide), so memory is fixed however long the run and a quantile is read to
    within a bucket's width (the bucket's upper edge is reported)."""

    MIN = 1e-6
    PER_DOUBLING = 16
    BUCKETS = 16 * 30 + 2

    def __init__(self) -> None:
        self.counts = [0] * self.BUCKETS
        self.total = 0
        self.sum = 0.0
        self.max = 0.0

    def record(self, seconds: float) -> None:
        if seconds <= self.MIN:
            index = 0
        else:
            index = min(self.BUCKETS - 1, int(math.log2(seconds / self.MIN) * self.PER_DOUBLING) + 1)
        self.counts[index] += 1
        self.total += 1
        self.sum += seconds
        if seconds > self.max:
            self.max = seconds

    def quantile(self, q: float) -> float | None:
        """Seconds below which a share ``q`` of the samples fall (None: no samples)."""
        if not self.total:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                edge = self.upper_edge(index)
                return min(edge, self.max) if index else self.MIN
        return self.max

    def reset(self) -> None:
        self.counts = [0] * self.BUCKETS
        self.total = 0
        self.sum = 0.0
        self.max = 0.0

    def upper_edge(self, index: int) -> float:
        """The largest latency bucket ``index`` holds."""
        return self.MIN * 2 ** (index / self.PER_DOUBLING)

    def copy(self) -> LagHistogram:
        other = LagHistogram()
        other.counts = list(self.counts)
        other.total = self.total
        other.sum = self.sum
        other.max = self.max
        return other

    def since(self, earlier: LagHistogram) -> LagHistogram:
        """The samples recorded after ``earlier`` (a copy of this histogram) was taken."""
        other = LagHistogram()
        other.counts = [now - then for now, then in zip(self.counts, earlier.counts, strict=True)]
        other.total = self.total - earlier.total
        other.sum = self.sum - earlier.sum
        other.max = self.max if other.total else 0.0  # an upper bound: the run's maximum
        return other


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class StreamingService:
    def __init__(
        self,
        open_stream: OpenStream,
        market_data: MarketDataService,
        events: EventStore,
        clock: Clock,
        symbols: Iterable[str],
        *,
        level: StreamLevel = StreamLevel.LEVEL2,
        mark_source: MarkSource = MarkSource.MID,
        quiet_seconds: float = 5.0,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stream_options: dict[str, Any] | None = None,
        now: Callable[[], float] | None = None,
    ) -> None:
        self._open = open_stream
        self.market_data = market_data
        self.events = events
        self.clock = clock
        self.level = StreamLevel(level)
        self.mark_source = MarkSource(mark_source)
        self.quiet_seconds = quiet_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.stream_options = dict(stream_options or {})  # passed to the stream (e.g. reconnect policy)
        # Exchange time is compared with the clock's time: the wall clock's, fast.
        self._now = now or (time.time if isinstance(clock, WallClock) else (lambda: clock.now().timestamp()))
        self.symbols: list[str] = []
        self.books: dict[str, L2Book] = {}
        self.tickers: dict[str, Ticker] = {}
        self.trades: dict[str, deque[MarketTrade]] = {}
        self.stream: MarketStream | None = None
        self.connected = False
        self._top: dict[str, tuple[float, float] | Decimal] = {}  # what the current mark was made from
        self._decimals: dict[float, Decimal] = {}  # book prices recur: their exact Decimal, cached
        self._mids: dict[tuple[float, float], Decimal] = {}  # and so do tops: their exact mid, cached
        self._marked: set[str] = set()  # symbols with a stream mark since the last (re)connect or gap
        self._symbol_last: dict[str, float] = {}  # monotonic time the stream last served each symbol
        self._feed_last: dict[str, float] = {}  # monotonic time of each feed's last message
        self._feed_count: dict[str, int] = {}
        self._last_message = -math.inf
        self._polling: tuple[str, ...] = ()
        self.lag = LagHistogram()  # the whole run
        self._lag_at_heartbeat = LagHistogram()  # a copy taken at the last heartbeat record
        self.messages = 0
        self.level_updates = 0
        self.resyncs = 0
        self.fallback_polls = 0  # symbol polls made because the stream did not serve them
        self._past = {"reconnects": 0, "gaps": 0, "quiet_replacements": 0, "bad_messages": 0}  # closed streams
        for symbol in symbols:
            self._track(symbol)

    # ----- lifecycle ----------------------------------------------------------------

    @property
    def feeds(self) -> tuple[str, ...]:
        return LEVEL_FEEDS[self.level]

    @property
    def active(self) -> bool:
        return self.stream is not None

    async def start(self) -> None:
        """Open the stream (unless the level is ``off``); subscriptions go out on connect."""
        if self.level is StreamLevel.OFF or self.stream is not None:
            return
        options = {"quiet_seconds": self.quiet_seconds, **self.stream_options}
        self.stream = self._open(on_event=self._on_notice, on_market=self.on_market, queue_events=False, **options)
        for feed in self.feeds:
            if self.symbols:
                await self.stream.subscribe(feed, self.symbols)
        self.stream.start()

    async def close(self) -> None:
        stream = self.stream
        if stream is not None:
            for key, value in self.counters().items():
                self._past[key] = value
        self.stream = None
        self.connected = False
        self._forget_stream_state()
        if stream is not None:
            await stream.close()

    def _forget_stream_state(self) -> None:
        for book in self.books.values():
            book.clear()
        self._top.clear()
        self._marked.clear()
        self._symbol_last.clear()

    async def heartbeat_loop(self) -> None:
        while True:
            await self.clock.sleep(self.heartbeat_seconds)
            self.heartbeat()

    # ----- symbols and settings, live -------------------------------------------------

    def _track(self, symbol: str) -> None:
        self.symbols.append(symbol)
        self.trades[symbol] = deque(maxlen=TRADE_HISTORY)
        if self.level is StreamLevel.LEVEL2:
            self.books[symbol] = L2Book(symbol)

    async def add_symbol(self, symbol: str) -> None:
        if symbol in self.trades:
            return
        self._track(symbol)
        if self.stream is not None:
            for feed in self.feeds:
                await self.stream.subscribe(feed, [symbol])

    async def remove_symbol(self, symbol: str) -> None:
        if symbol not in self.trades:
            return
        self.symbols.remove(symbol)
        for table in (self.books, self.tickers, self.trades, self._top, self._symbol_last):
            table.pop(symbol, None)
        self._marked.discard(symbol)
        if self.stream is not None:
            for feed in self.feeds:
                await self.stream.unsubscribe(feed, [symbol])

    async def set_level(self, level: StreamLevel) -> None:
        level = StreamLevel(level)
        if level is self.level:
            return
        old = set(self.feeds)
        self.level = level
        self.books = {s: L2Book(s) for s in self.symbols} if level is StreamLevel.LEVEL2 else {}
        self._top.clear()
        self._marked.clear()
        if level is StreamLevel.OFF:
            await self.close()
            return
        if self.stream is None:
            await self.start()
            return
        new = set(self.feeds)
        for feed in sorted(old - new):
            await self.stream.unsubscribe(feed, list(self.symbols))
        for feed in sorted(new - old):
            if self.symbols:
                await self.stream.subscribe(feed, self.symbols)

    def set_mark_source(self, source: MarkSource) -> None:
        self.mark_source = MarkSource(source)
        self._top.clear()
        self._marked.clear()

    def set_quiet_seconds(self, seconds: float) -> None:
        self.quiet_seconds = seconds
        if self.stream is not None:
            self.stream.quiet_seconds = seconds

    async def reconfigure(
        self, *, removed: Iterable[str] = (), added: Iterable[str] = (), level: StreamLevel | None = None,
        mark_source: MarkSource | None = None, quiet_seconds: float | None = None,
    ) -> None:
        """Apply a config change without a restart."""
        for symbol in removed:
            await self.remove_symbol(symbol)
        if mark_source is not None and MarkSource(mark_source) is not self.mark_source:
            self.set_mark_source(mark_source)
        if quiet_seconds is not None:
            self.set_quiet_seconds(quiet_seconds)
        if level is not None:
            await self.set_level(level)
        for symbol in added:
            await self.add_symbol(symbol)

    # ----- the hot path ---------------------------------------------------------------

    def on_market(self, message: MarketMessage) -> None:
        """One decoded market-data message (called by the WebSocket client)."""
        mono = _monotonic()
        kind = message.kind
        self._feed_last[kind] = self._last_message = mono
        self.messages += 1
        applied = False
        if kind == BOOK:  # _on_book, inlined: this is most of the traffic
            books = self.books
            mid = self.mark_source is MarkSource.MID
            checked = message.levels_checked
            for event in message.events:
                symbol = event.symbol
                book = books.get(symbol)
                if book is None:
                    continue
                levels = event.updates
                if event.type == "snapshot":
                    ok = book.reset(levels)
                elif not book.synced:
                    continue  # waiting for a snapshot
                elif checked:
                    ok = book.apply_valid(levels)
                else:
                    ok = book.apply(levels)
                self.level_updates += len(levels)
                if not ok:
                    self._resync(symbol, book.problem)
                elif mid and self._mark_mid(symbol, book.best_bid, book.best_ask, message.epoch, mono):
                    applied = True
        elif kind == TICKER:
            for event in message.events:
                for ticker in event.tickers:
                    if self._on_ticker(ticker, message, mono):
                        applied = True
        elif kind == TRADES:
            applied = self._on_trades(message, mono)
        elif kind == HEARTBEAT:
            self._confirm_all(message.epoch, mono)
        counts = self._feed_count
        counts[kind] = counts.get(kind, 0) + 1
        if applied:
            self.lag.record(self._now() - message.epoch)

    def _on_book(self, symbol: str, kind: str, levels: list[Any], message: MarketMessage, mono: float) -> bool:
        """One book event (``on_market`` inlines the same steps)."""
        book = self.books.get(symbol)
        if book is None:
            return False
        if kind == "snapshot":
            ok = book.reset(levels)
        elif book.synced:
            ok = book.apply(levels)
        else:
            return False  # waiting for a snapshot
        self.level_updates += len(levels)
        if not ok:
            self._resync(symbol, book.problem)
            return False
        if self.mark_source is MarkSource.MID:
            return self._mark_mid(symbol, book.best_bid, book.best_ask, message.epoch, mono)
        return False

    def _mark_mid(self, symbol: str, bid: float | None, ask: float | None, epoch: float, mono: float) -> bool:
        if bid is None or ask is None:
            return False
        top = (bid, ask)
        if self._top.get(symbol) != top:
            self._top[symbol] = top
            self.market_data.apply_mark(symbol, self._mids.get(top) or self._mid(top), epoch)
        else:
            self.market_data.confirm_mark(symbol, epoch)
        self._marked.add(symbol)
        self._symbol_last[symbol] = mono
        return True

    def _mid(self, top: tuple[float, float]) -> Decimal:
        """The exact mid of a (bid, ask) of wire prices, cached."""
        mids = self._mids
        if len(mids) >= _DECIMAL_CACHE_SIZE:
            mids.clear()
        mid = mids[top] = (self._decimal(top[0]) + self._decimal(top[1])) * _HALF
        return mid

    def _decimal(self, value: float) -> Decimal:
        """The exact Decimal of a wire price (its shortest repr), cached."""
        cache = self._decimals
        exact = cache.get(value)
        if exact is None:
            if len(cache) >= _DECIMAL_CACHE_SIZE:
                cache.clear()
            exact = cache[value] = Decimal(repr(value))
        return exact

    def _mark_last(self, symbol: str, price: Decimal, message: MarketMessage, mono: float) -> bool:
        if self._top.get(symbol) != price:
            self._top[symbol] = price
            self.market_data.apply_mark(symbol, price, message.epoch)
        else:
            self.market_data.confirm_mark(symbol, message.epoch)
        self._marked.add(symbol)
        self._symbol_last[symbol] = mono
        return True

    def _on_ticker(self, ticker: Ticker, message: MarketMessage, mono: float) -> bool:
        symbol = ticker.symbol
        if symbol not in self.trades:
            return False
        self.tickers[symbol] = ticker
        if self.mark_source is MarkSource.LAST:
            price = ticker.price
            return price > 0 and self._mark_last(symbol, self._decimal(price), message, mono)
        if self.level is StreamLevel.TICKER:
            bid, ask = ticker.best_bid, ticker.best_ask
            if bid and ask and bid < ask:
                return self._mark_mid(symbol, bid, ask, message.epoch, mono)
        return False

    def _on_trades(self, message: MarketMessage, mono: float) -> bool:
        latest: dict[str, MarketTrade] = {}
        for event in message.events:
            for trade in event.trades:
                history = self.trades.get(trade.symbol)
                if history is None:
                    continue
                history.append(trade)
                seen = latest.get(trade.symbol)
                if seen is None or trade.time > seen.time:
                    latest[trade.symbol] = trade
        if self.mark_source is not MarkSource.LAST:
            return False
        applied = False
        for symbol, trade in latest.items():
            if trade.price > 0 and self._mark_last(symbol, trade.price, message, mono):
                applied = True
        return applied

    def _confirm_all(self, epoch: float, mono: float) -> None:
        """A heartbeat in sequence: every mark the stream made still holds at ``epoch``."""
        if not self.connected or self.stream is None:
            return
        awaiting = self.stream.awaiting_snapshot
        books = self.books
        use_books = self.level is StreamLevel.LEVEL2 and self.mark_source is MarkSource.MID
        for symbol in self._marked:
            if use_books:
                book = books.get(symbol)
                if book is None or not book.synced or symbol in awaiting:
                    continue
            self.market_data.confirm_mark(symbol, epoch)
            self._symbol_last[symbol] = mono

    def _resync(self, symbol: str, reason: str) -> None:
        self.resyncs += 1
        book = self.books.get(symbol)
        if book is not None:
            book.clear()  # nothing in it is trusted until the fresh snapshot
        self._top.pop(symbol, None)
        self._marked.discard(symbol)
        self._symbol_last.pop(symbol, None)
        log.warning("book %s inconsistent (%s): resyncing", symbol, reason)
        self.events.append(self.clock.now(), "stream_resync", symbol, reason=reason)
        if self.stream is not None:
            self.stream.resync_book(symbol, reason)

    def _on_notice(self, event: Any) -> None:
        kind = getattr(event, "kind", None)
        if kind == "connected":
            self.connected = True
        elif kind in ("disconnected", "quiet"):
            if self.connected:
                log.warning("market stream down (%s): polling marks meanwhile", event.detail)
            self.connected = False
            self._forget_stream_state()
        elif kind == "gap":
            self._marked.clear()
        elif kind == "error":
            log.warning("market stream error: %s", event.detail)

    # ----- fallback and freshness -------------------------------------------------------

    def serving(self, symbol: str) -> bool:
        """Whether the stream currently keeps ``symbol``'s mark fresh."""
        if self.stream is None or not self.connected:
            return False
        mono = _monotonic()
        limit = self.quiet_seconds
        return mono - self._last_message <= limit and mono - self._symbol_last.get(symbol, -math.inf) <= limit

    def symbols_to_poll(self) -> tuple[str, ...]:
        """The symbols whose marks must come from REST polling this cycle."""
        if self.stream is None or not self.connected:
            polled = tuple(self.symbols)
        else:
            polled = tuple(s for s in self.symbols if not self.serving(s))
        self.fallback_polls += len(polled)
        if set(polled) != set(self._polling):
            now = self.clock.now()
            if polled and self.stream is not None:
                reason = "disconnected" if not self.connected else "quiet"
                self.events.append(now, "stream_fallback", None, symbols=list(polled), reason=reason)
            elif not polled:
                self.events.append(now, "stream_recovered", None, symbols=list(self._polling))
        self._polling = polled
        return polled

    @property
    def polling(self) -> tuple[str, ...]:
        """The symbols polled in the latest cycle."""
        return self._polling

    # ----- what the strategy and risk can read -------------------------------------------

    def order_book(self, symbol: str, depth: int) -> OrderBook | None:
        """The streamed book's top ``depth`` levels, when the stream is serving it."""
        book = self.books.get(symbol)
        if book is None or not book.synced or not self.serving(symbol):
            return None
        fresh = self.market_data.fresh.get(symbol)
        ts = _from_epoch(fresh, UTC) if fresh else self.clock.now()
        return book.order_book(depth, ts)

    def ticker(self, symbol: str) -> Ticker | None:
        return self.tickers.get(symbol)

    def recent_trades(self, symbol: str) -> list[MarketTrade]:
        return list(self.trades.get(symbol, ()))

    # ----- telemetry -----------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Totals over every stream this service opened (a level switched off and on
        again opens a new one)."""
        past = self._past
        stream = self.stream
        if stream is None:
            return dict(past)
        return {
            "reconnects": past["reconnects"] + max(0, stream.connects - 1),
            "gaps": past["gaps"] + stream.gaps,
            "quiet_replacements": past["quiet_replacements"] + stream.quiet_reconnects,
            "bad_messages": past["bad_messages"] + stream.bad_messages,
        }

    def heartbeat_age(self) -> float | None:
        """Seconds since the exchange's last heartbeat message (None: none yet)."""
        last = self._feed_last.get(HEARTBEAT)
        return None if last is None else _monotonic() - last

    def heartbeat(self) -> dict[str, Any] | None:
        """Record a ``stream_heartbeat`` event (and return its data); None when off."""
        if self.level is StreamLevel.OFF and self.stream is None:
            return None
        mono = _monotonic()
        interval = self.lag.since(self._lag_at_heartbeat)
        channels = {}
        for feed in (*self.feeds, HEARTBEAT):
            last = self._feed_last.get(feed)
            channels[feed] = {
                "age_s": None if last is None else round(mono - last, 3),
                "messages": self._feed_count.get(feed, 0),
            }
        data: dict[str, Any] = {
            "level": self.level.value,
            "mark_source": self.mark_source.value,
            "connected": self.connected,
            "channels": channels,
            **self.counters(),
            "book_resyncs": self.resyncs,
            "messages": self.messages,
            "level_updates": self.level_updates,
            "lag_p50_ms": _ms(interval.quantile(0.50)),
            "lag_p95_ms": _ms(interval.quantile(0.95)),
            "lag_samples": interval.total,
            "lag_p95_ms_run": _ms(self.lag.quantile(0.95)),
            "polling": list(self._polling),
            "books_synced": sorted(s for s, b in self.books.items() if b.synced),
        }
        self.events.append(self.clock.now(), "stream_heartbeat", None, **data)
        self._lag_at_heartbeat = self.lag.copy()
        return data

    def summary(self) -> dict[str, Any]:
        """Figures for the run summary."""
        counters = self.counters()
        return {
            "stream_level": self.level.value,
            "stream_messages": self.messages,
            "stream_level_updates": self.level_updates,
            "stream_lag_p50_ms": _ms(self.lag.quantile(0.50)),
            "stream_lag_p95_ms": _ms(self.lag.quantile(0.95)),
            "stream_reconnects": counters["reconnects"],
            "stream_gaps": counters["gaps"],
            "stream_book_resyncs": self.resyncs,
            "stream_fallback_polls": self.fallback_polls,
        }
