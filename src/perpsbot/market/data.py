"""MarketDataService: marks per symbol into bounded windows, with freshness per symbol.

Marks arrive two ways and share one freshness record per symbol (the exchange time the
symbol's mark was last known to hold, UNIX seconds):

* ``update_marks(symbols)`` polls a quote per symbol (REST);
* ``apply_mark(symbol, price, epoch)`` takes a mark from the stream (book mid or last
  trade), and ``confirm_mark(symbol, epoch)`` records that the stream vouches for the
  current mark at a later exchange time (no gap, the book unchanged since).

``mark_age`` — what the risk manager's staleness guard reads — is the clock's time
minus that freshness, whichever way it came.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from perpsbot.domain import Quote
from perpsbot.domain.clock import Clock
from perpsbot.exchange.port import Exchange
from perpsbot.market.windows import Bar, Mark, MarkWindow
from perpsbot.store import EventStore

log = logging.getLogger(__name__)

# A quote stamped further ahead of our clock than this is treated as bad data.
MAX_FUTURE_SKEW = timedelta(seconds=5)
QUOTE_TIMEOUT_SECONDS = 5.0
CANDLES_TIMEOUT_SECONDS = 10.0


class BadQuote(ValueError):
    pass


@dataclass(frozen=True)
class WindowSpec:
    """How much history the strategy needs; windows are trimmed to exactly this."""

    max_marks: int
    max_bars: int
    bar_seconds: int


@dataclass(frozen=True)
class MarkUpdate:
    updated: tuple[str, ...]
    failed: dict[str, str]
    bars_closed: tuple[str, ...]
    elapsed_ms: float


class MarketDataService:
    def __init__(
        self,
        exchange: Exchange,
        clock: Clock,
        events: EventStore,
        symbols: Iterable[str],
        spec: WindowSpec,
    ) -> None:
        self.exchange = exchange
        self.clock = clock
        self.events = events
        self.spec = spec
        self.windows: dict[str, MarkWindow] = {}
        self.last_update: dict[str, datetime] = {}
        self.error_counts: dict[str, int] = {}
        self.last_quotes: dict[str, Quote] = {}
        self.updates_total = 0
        self.streamed_total = 0
        self.update_counts: dict[str, int] = {}  # marks taken per symbol, polled or streamed
        self.fresh: dict[str, float] = {}  # exchange time (UNIX s) the symbol's mark last held
        for symbol in symbols:
            self.add_symbol(symbol)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.windows)

    def add_symbol(self, symbol: str) -> None:
        if symbol not in self.windows:
            self.windows[symbol] = MarkWindow(self.spec.max_marks, self.spec.max_bars, self.spec.bar_seconds)
            self.error_counts[symbol] = 0
            self.update_counts.setdefault(symbol, 0)

    def remove_symbol(self, symbol: str) -> None:
        for table in (self.windows, self.last_update, self.error_counts, self.last_quotes, self.fresh,
                      self.update_counts):
            table.pop(symbol, None)

    def resize(self, spec: WindowSpec) -> None:
        if spec.bar_seconds != self.spec.bar_seconds:
            self.spec = spec
            for symbol in list(self.windows):
                self.windows[symbol] = MarkWindow(spec.max_marks, spec.max_bars, spec.bar_seconds)
            return
        self.spec = spec
        for window in self.windows.values():
            window.resize(spec.max_marks, spec.max_bars)

    async def warm_up(self, symbols: Iterable[str] | None = None) -> None:
        """Seed closed bars from the exchange's candles so trading can start at once."""
        for symbol in symbols or self.symbols:
            try:
                async with asyncio.timeout(CANDLES_TIMEOUT_SECONDS):
                    candles = await self.exchange.candles(symbol, self.spec.bar_seconds, self.spec.max_bars)
            except Exception as exc:  # noqa: BLE001 - warm-up is best effort; live marks follow
                timed_out = isinstance(exc, TimeoutError) and not str(exc)
                error = f"no candles within {CANDLES_TIMEOUT_SECONDS:g} s" if timed_out else str(exc)
                log.warning("warm-up of %s failed: %s", symbol, error)
                self.events.append(self.clock.now(), "warmup_failed", symbol, error=error)
                continue
            self.windows[symbol].seed_bars([Bar(c.start, c.open, c.high, c.low, c.close, c.volume) for c in candles])

    async def update_marks(self, symbols: Iterable[str] | None = None) -> MarkUpdate:
        """Fetch a quote per symbol (all, or the ones given) concurrently; one symbol
        failing never stops the others."""
        started = time.perf_counter()
        symbols = self.symbols if symbols is None else tuple(s for s in symbols if s in self.windows)
        if not symbols:
            return MarkUpdate((), {}, (), 0.0)
        results = await asyncio.gather(
            *(asyncio.wait_for(self.exchange.quote(s), QUOTE_TIMEOUT_SECONDS) for s in symbols),
            return_exceptions=True,
        )
        updated, closed = [], []
        failed: dict[str, str] = {}
        now = self.clock.now()
        for symbol, result in zip(symbols, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation, interrupt: not a data problem
            try:
                if isinstance(result, Exception):
                    raise result
                self._check(symbol, result, now)
            except Exception as exc:  # noqa: BLE001 - any failure is recorded per symbol
                reason = _describe(exc)
                failed[symbol] = reason
                self.error_counts[symbol] = self.error_counts.get(symbol, 0) + 1
                log.warning("mark update for %s failed: %s", symbol, reason)
                self.events.append(now, "mark_error", symbol, error=reason)
                continue
            quote = result
            if symbol not in self.windows:  # removed while the request was in flight
                continue
            if self.windows[symbol].append(Mark(quote.ts, quote.mid)):
                closed.append(symbol)
            self._freshen(symbol, quote.ts.timestamp())
            self.last_quotes[symbol] = quote
            self.last_update[symbol] = now
            self.updates_total += 1
            self.update_counts[symbol] += 1
            updated.append(symbol)
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.debug("update_marks: %d updated, %d failed in %.2f ms", len(updated), len(failed), elapsed_ms)
        return MarkUpdate(tuple(updated), failed, tuple(closed), elapsed_ms)

    def _check(self, symbol: str, quote: object, now: datetime) -> None:
        if not isinstance(quote, Quote):
            raise BadQuote(f"expected a quote, got {type(quote).__name__}")
        if quote.symbol != symbol:
            raise BadQuote(f"asked for {symbol}, got a quote for {quote.symbol}")
        if quote.ts > now + MAX_FUTURE_SKEW:
            raise BadQuote(f"quote time {quote.ts.isoformat()} is ahead of the clock {now.isoformat()}")

    def apply_mark(self, symbol: str, price: Decimal, epoch: float) -> bool:
        """A mark from the stream, stamped with the exchange time of its message (UNIX
        seconds); True when it closed a bar. Ignored for a symbol that is not (or no
        longer) tracked."""
        window = self.windows.get(symbol)
        if window is None:
            return False
        closed = window.push(epoch, price)
        fresh = self.fresh
        if epoch > fresh.get(symbol, 0.0):
            fresh[symbol] = epoch
        self.streamed_total += 1
        self.update_counts[symbol] += 1
        return closed

    def confirm_mark(self, symbol: str, epoch: float) -> None:
        """The stream vouches that ``symbol``'s current mark still holds at exchange
        time ``epoch`` (UNIX seconds): nothing it depends on changed since."""
        if symbol in self.windows:
            self._freshen(symbol, epoch)

    def _freshen(self, symbol: str, epoch: float) -> None:
        if epoch > self.fresh.get(symbol, 0.0):
            self.fresh[symbol] = epoch

    def mark(self, symbol: str) -> Decimal | None:
        window = self.windows.get(symbol)
        last = window.last if window else None
        return last.price if last else None

    def mark_age(self, symbol: str) -> float | None:
        """Seconds since the exchange time the symbol's mark was last known to hold (its
        latest mark, or a later confirmation from the stream); None if it has none."""
        window = self.windows.get(symbol)
        if window is None or window.price is None:
            return None
        held = max(window.price_ts, self.fresh.get(symbol, 0.0))  # the latest mark's exchange time
        return max(0.0, self.clock.now().timestamp() - held)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no quote within {QUOTE_TIMEOUT_SECONDS:g} s"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
