"""StrategyRunner: a user's ``Strategy`` behind the orchestrator's ``decide(view)``.

It keeps, per symbol, the bars of each timeframe the strategy asked for (built from the
symbol's ``MarkWindow`` of base bars), feeds the strategy's talipp indicators one bar at
a time, calls ``on_bar`` / ``on_mark`` and turns the answer into a ``Decision``.

Isolation: an answer that raises, is not a valid ``Signal`` or comes later than the
time budget is no answer — the symbol holds, an ``error`` event says why, the error is
counted, and the bot goes on. Where the bot runs on the main thread, a strategy over
its budget is interrupted (``SIGALRM``); elsewhere its late answer is dropped.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from perpsbot.domain import Product
from perpsbot.exchange.port import Exchange
from perpsbot.market.data import MarketDataService
from perpsbot.market.streaming import StreamingService
from perpsbot.market.windows import MarkWindow
from perpsbot.strategy.api import Bars, BookTop, Context, Funding, Signal, Strategy, finite, parse_timeframe
from perpsbot.strategy.base import Decision, MarketView, OrderKind, OrderPlan, Target

_HOLD = Target.HOLD
_KEEP_MIN = 256  # indicator values kept at least (talipp keeps every value unless purged)
_ALARM = hasattr(signal, "setitimer")
_HOLDS_KEPT = 64


class StrategyError(ValueError):
    """A strategy that cannot start as configured, worded in one line."""


class _Overrun(BaseException):
    """Raised inside a strategy that is over its time budget (a BaseException, so that a
    strategy's own ``except Exception`` does not swallow it)."""


class SignalError(ValueError):
    pass


@dataclass(frozen=True)
class MarketInputs:
    """Where the context's costlier figures come from (bound by the bot)."""

    now: Callable[[], datetime]
    equity: Callable[[], Decimal]
    book_top: Callable[[str], BookTop | None]
    funding: Callable[[str], Funding | None]
    products: Mapping[str, Product]


def market_inputs(
    exchange: Exchange,
    market_data: MarketDataService,
    streaming: StreamingService | None,
    now: Callable[[], datetime],
    equity: Callable[[], Decimal],
    products: Mapping[str, Product],
) -> MarketInputs:
    """The inputs of a bot: the stream's book where there is one, else the last polled
    quote; funding from a venue that has it (``Exchange.funding_now``)."""

    def book_top(symbol: str) -> BookTop | None:
        book = streaming.order_book(symbol, 1) if streaming is not None else None
        if book is not None and book.bids and book.asks:
            return BookTop(book.bids[0].price, book.asks[0].price)
        quote = market_data.last_quotes.get(symbol)
        return BookTop(quote.bid, quote.ask) if quote is not None else None

    told = exchange.funding_now if exchange.capabilities.funding else None

    def funding(symbol: str) -> Funding | None:
        found = told(symbol) if told is not None else None
        return Funding(*found) if found is not None else None

    return MarketInputs(now, equity, book_top, funding, products)


def _no_inputs() -> MarketInputs:
    def missing(*_: Any) -> Any:
        raise RuntimeError("the strategy runner is not bound to a bot yet")

    return MarketInputs(missing, missing, lambda symbol: None, lambda symbol: None, {})


class _Frame:
    """One timeframe's closed bars for one symbol, and the indicators fed from them."""

    __slots__ = ("seconds", "rows", "bars", "appended", "closed", "indicators", "_bucket", "_open")

    def __init__(self, seconds: int, rows: Any) -> None:
        self.seconds = seconds
        self.rows = rows
        self.bars = Bars(seconds, rows)
        self.appended = 0  # bars that entered this frame so far
        self.closed = False  # a bar closed on this call
        self.indicators: dict[tuple[Any, ...], list[Any]] = {}  # key -> [indicator, frame.appended fed up to]
        self._bucket: int | None = None
        self._open: list[float] | None = None  # the bar being built: start, o, h, l, c, v

    def push(self, row: tuple[float, float, float, float, float, float], base: int) -> None:
        """A base bar into a longer timeframe: the bar closes with the base bar that ends
        on its boundary (or, after a gap, when a later bar starts)."""
        start, o, h, low, c, v = row
        bucket = int(start) // self.seconds
        current = self._open
        if current is not None and bucket != self._bucket:
            self._close()
            current = None
        if current is None:
            self._bucket = bucket
            self._open = [float(bucket * self.seconds), o, h, low, c, v]
        else:
            current[2] = max(current[2], h)
            current[3] = min(current[3], low)
            current[4] = c
            current[5] += v
        if (int(start) + base) % self.seconds == 0:
            self._close()

    def _close(self) -> None:
        assert self._open is not None
        self.rows.append(tuple(self._open))
        self.appended += 1
        self.closed = True
        self._open = None
        self._bucket = None


class _Symbol:
    __slots__ = ("window", "seen", "frames", "base", "ctx", "traded", "waiting", "warm", "_holds")

    def __init__(self, window: MarkWindow, ctx: Context, frames: dict[int, _Frame], base: int, traded: bool) -> None:
        self.window = window
        self.seen = 0  # window.appended already taken
        self.frames = frames
        self.base = frames[base]
        self.ctx = ctx
        self.traded = traded
        self.waiting = Decision(ctx.symbol, _HOLD, "waiting for a closed bar")
        self.warm = False  # every frame holds the warm-up (frames only grow, until a start-over)
        self._holds: dict[str, Decision] = {}

    def hold(self, reason: str) -> Decision:
        """A HOLD for this symbol, made once per reason (a strategy holds on most bars)."""
        decision = self._holds.get(reason)
        if decision is None:
            if len(self._holds) >= _HOLDS_KEPT:  # reasons with numbers in them: do not keep them all
                self._holds.clear()
            decision = self._holds[reason] = Decision(self.ctx.symbol, _HOLD, reason)
        return decision


class StrategyRunner:
    """The orchestrator's strategy: ``name``, ``required_bars``, ``decide``, ``forget``."""

    def __init__(self, strategy: Strategy, base_seconds: int, *, budget_ms: float | None, spec: str) -> None:
        self.user = strategy
        self.name = strategy.display_name()
        self.spec = spec  # as it was selected (config / --strategy)
        self.budget_ms = budget_ms or None
        self.errors = 0
        self.errors_by_symbol: dict[str, int] = {}
        self._inputs = _no_inputs()
        self._report: Callable[[str, str], object] = lambda symbol, error: None
        self._symbols: dict[str, _Symbol] = {}
        self._has_on_mark = type(strategy).on_mark is not Strategy.on_mark
        self.warmup = self._warmup()
        self.rebase(base_seconds)

    # ----- set-up ---------------------------------------------------------------------

    def bind(self, inputs: MarketInputs, report: Callable[[str, str], object]) -> None:
        """The bot's market inputs, and where an error is reported (the ``error`` event)."""
        self._inputs = inputs
        self._report = report
        self._symbols.clear()

    def rebase(self, base_seconds: int) -> None:
        """Set the base bar length (``bar_seconds``); every timeframe must be a multiple."""
        frames = {base_seconds}
        for timeframe in self.user.timeframes:
            try:
                seconds = parse_timeframe(timeframe)
            except ValueError as exc:
                raise StrategyError(f"strategy {self.name}: {exc}") from None
            if seconds % base_seconds:
                raise StrategyError(
                    f"strategy {self.name}: timeframe {timeframe} is not a multiple of bar_seconds ({base_seconds} s)"
                )
            frames.add(seconds)
        self.base_seconds = base_seconds
        self.timeframes = tuple(sorted(frames))
        self._symbols.clear()

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.user.params)

    def set_params(self, params: Mapping[str, Any]) -> None:
        """New parameter values on the same strategy object (a live change); indicators
        start over from the bars held, with the new values."""
        before = dict(self.user.params)
        self.user.params.update(params)
        try:
            problem = _checked(self.user)
            if problem is not None:
                raise StrategyError(f"strategy {self.name}: {problem}")
            self.warmup = self._warmup()
        except StrategyError:
            self.user.params.clear()
            self.user.params.update(before)
            raise
        self._symbols.clear()

    def _warmup(self) -> int:
        """The strategy's warm-up (asked once per set of parameter values: decide reads it per call)."""
        try:
            bars = self.user.warmup()
        except Exception as exc:  # noqa: BLE001 - the user's warmup() failed: one line
            raise StrategyError(f"strategy {self.name}: warmup() raised {type(exc).__name__}: {exc}") from None
        if isinstance(bars, bool) or not isinstance(bars, int) or bars < 0:
            raise StrategyError(f"strategy {self.name}: warmup() gave {bars!r}, not a number of bars")
        self._keep = max(_KEEP_MIN, 4 * bars)  # indicator values kept
        return max(1, bars)

    @property
    def required_bars(self) -> int:
        """Base bars the window must hold to build every timeframe's warm-up."""
        longest = self.timeframes[-1] // self.base_seconds
        return self.warmup * longest + longest - 1  # a longer bar may start part-way into the window

    def forget(self, symbol: str) -> None:
        self._symbols.pop(symbol, None)

    # ----- per call -------------------------------------------------------------------

    def decide(self, view: MarketView) -> Decision:
        window = view.window
        symbol = view.symbol
        if window is None:
            return Decision(symbol, _HOLD, "no bars")
        held = self._symbols.get(symbol)
        if held is None or held.window is not window:
            held = self._start(symbol, window)
        if not held.traded:
            return Decision(symbol, _HOLD, f"not traded by {self.name}")
        self._follow(held, window)
        ctx = held.ctx
        ctx._view = view
        if view.bar_closed:
            if not held.warm:
                short = min(len(frame.rows) for frame in held.frames.values())
                if short < self.warmup:
                    return Decision(symbol, _HOLD, f"warming up: {short} of {self.warmup} bars")
                held.warm = True
            call = self.user.on_bar
        elif self._has_on_mark:
            call = self.user.on_mark
        else:
            return held.waiting
        return self._answer(held, call, view)

    def _start(self, symbol: str, window: MarkWindow) -> _Symbol:
        frames = {s: _Frame(s, window.rows if s == self.base_seconds else deque(maxlen=self.warmup + 2))
                  for s in self.timeframes}
        product = self._inputs.products.get(symbol)
        ctx = Context(symbol, product, self.base_seconds, self._inputs, self._feed)
        ctx._frames = frames
        before = self._symbols.get(symbol)
        if before is not None:  # a new window (another bar length): the strategy's own memory stays
            ctx.state = before.ctx.state
        try:
            traded = product is None or bool(self.user.trades(product))
        except Exception as exc:  # noqa: BLE001 - a failing filter leaves the symbol alone, said once
            traded = False
            self._failed(symbol, f"trades() raised {type(exc).__name__}: {exc}")
        held = self._symbols[symbol] = _Symbol(window, ctx, frames, self.base_seconds, traded)
        return held

    def _follow(self, held: _Symbol, window: MarkWindow) -> None:
        """Take the base bars the window gained since the last call into every frame."""
        new = window.appended - held.seen
        base = held.base
        frames = held.frames
        if len(frames) == 1 and new == 1:  # the usual case: one timeframe, one new bar
            base.appended = window.appended
            base.closed = True
            held.seen = window.appended
            return
        for frame in frames.values():
            frame.closed = False
        if new == 0:
            return
        rows = window.rows
        if new < 0 or new > len(rows):  # the window moved on too far: start over from what it holds
            held.warm = False
            for frame in frames.values():
                frame.indicators.clear()
                if frame is not base:
                    frame.rows.clear()
                    frame._open = None
            new = len(rows)
        base.appended = window.appended
        base.closed = True
        if len(frames) > 1:
            seconds = self.base_seconds
            for row in [rows[-k] for k in range(new, 0, -1)]:
                for frame in frames.values():
                    if frame is not base:
                        frame.push(row, seconds)
        held.seen = window.appended

    def _feed(self, frame: _Frame, kind: Callable[..., Any], args: tuple[Any, ...], source: str) -> Any:
        entry = frame.indicators.get((kind, args, source))
        rows = frame.rows
        if entry is None:
            pick = _SOURCES.get(source)
            if pick is None:
                raise ValueError(f"indicator source '{source}' is not one of {', '.join(_SOURCES)}")
            entry = frame.indicators[(kind, args, source)] = [kind(*args), frame.appended - len(rows), pick, 0]
        indicator = entry[0]
        new = frame.appended - entry[1]
        if new == 1:  # the usual case: one bar since the last call
            indicator.add(entry[2](rows[-1]))
        elif new > 0:
            if new > len(rows):  # more bars went by than are held: start over
                indicator = entry[0] = kind(*args)
                new = len(rows)
            pick = entry[2]
            for k in range(new, 0, -1):
                indicator.add(pick(rows[-k]))
        else:
            return indicator
        entry[1] = frame.appended
        entry[3] += new
        if entry[3] > self._keep:  # every so often: drop the values beyond the last few hundred
            entry[3] = 0
            if len(indicator) > self._keep:
                indicator.purge_oldest(len(indicator) - self._keep)
        return indicator

    def _answer(self, held: _Symbol, call: Callable[[Context], Any], view: MarketView) -> Decision:
        ctx, symbol = held.ctx, view.symbol
        started = time.perf_counter()
        error: str | None = None
        answer: Any = None
        try:
            if self.budget_ms is not None and _ALARM and threading.current_thread() is threading.main_thread():
                answer = _interruptible(call, ctx, self.budget_ms / 1000)
            else:
                answer = call(ctx)
        except _Overrun:
            error = f"interrupted: over its {self.budget_ms:g} ms budget"
            for frame in held.frames.values():  # it may have stopped mid-update: built again from the bars
                frame.indicators.clear()
        except Exception as exc:  # noqa: BLE001 - a strategy's failure holds its symbol, never stops the bot
            error = f"raised {type(exc).__name__}: {exc}" if str(exc) else f"raised {type(exc).__name__}"
        else:
            took = (time.perf_counter() - started) * 1000
            if self.budget_ms is not None and took > self.budget_ms:
                error = f"answered after {took:.0f} ms, over its {self.budget_ms:g} ms budget"
        if error is None:
            try:
                return self._decision(held, answer, view)
            except SignalError as exc:
                error = f"answered nonsense: {exc}"
        self._failed(symbol, error)
        return Decision(symbol, _HOLD, f"strategy error: {error}")

    def _failed(self, symbol: str, error: str) -> None:
        self.errors += 1
        self.errors_by_symbol[symbol] = self.errors_by_symbol.get(symbol, 0) + 1
        self._report(symbol, f"strategy {self.name} {error}")

    def _decision(self, held: _Symbol, answer: Any, view: MarketView) -> Decision:
        symbol = held.ctx.symbol
        if answer is None:
            return held.hold("no signal")
        if not isinstance(answer, Signal):
            raise SignalError(f"{type(answer).__name__} instead of a Signal (or None)")
        target = answer.target
        if not isinstance(target, Target):
            raise SignalError(f"target {target!r} is not a Target")
        if not isinstance(answer.reason, str):
            raise SignalError(f"reason {answer.reason!r} is not text")
        if target is _HOLD:
            return held.hold(answer.reason or "hold")
        mark = view.mark
        return Decision(symbol, target, answer.reason or target.value.lower(), mark, plan_of(answer, mark))


def plan_of(signal_: Signal, mark: Decimal) -> OrderPlan | None:
    """A signal's size, order type and protective levels, checked; None where it sets none."""
    target = signal_.target
    fraction = _number("fraction", signal_.fraction)
    quantity = _number("quantity", signal_.quantity)
    offset = _number("limit_offset_bps", signal_.limit_offset_bps)
    stop = _number("stop_loss", signal_.stop_loss)
    take = _number("take_profit", signal_.take_profit)
    trail = _number("trailing_stop", signal_.trailing_stop)
    try:
        order = None if signal_.order is None else OrderKind(signal_.order)
    except ValueError:
        raise SignalError(f"order {signal_.order!r} is not market, limit or post_only") from None
    if fraction is not None and quantity is not None:
        raise SignalError("both a fraction and a quantity: give one")
    if fraction is not None and not 0 < fraction <= 1:
        raise SignalError(f"fraction {fraction} is not in (0, 1]")
    if quantity is not None and quantity <= 0:
        raise SignalError(f"quantity {quantity} is not above 0")
    if offset is not None and (order not in (OrderKind.LIMIT, OrderKind.POST_ONLY) or not 0 <= offset <= 1000):
        raise SignalError(f"limit_offset_bps {offset} needs a limit order and 0..1000 bps")
    if target is Target.FLAT and (stop, take, trail, fraction, quantity) != (None,) * 5:
        raise SignalError("a flat target takes no size or protective levels")
    sign = 1 if target is Target.LONG else -1
    if stop is not None and (stop <= 0 or (mark - stop) * sign <= 0):
        raise SignalError(f"stop_loss {stop} is not on the losing side of the mark {mark} for {target.value}")
    if take is not None and (take <= 0 or (take - mark) * sign <= 0):
        raise SignalError(f"take_profit {take} is not on the winning side of the mark {mark} for {target.value}")
    if trail is not None and not 0 < trail < 1:
        raise SignalError(f"trailing_stop {trail} is not a fraction in (0, 1)")
    if (order, fraction, quantity, offset, stop, take, trail) == (None,) * 7:
        return None
    return OrderPlan(fraction, quantity, order, offset, stop, take, trail)


def _number(name: str, value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal) or not finite(value):
        raise SignalError(f"{name} {value!r} is not a finite number")
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _checked(strategy: Strategy) -> str | None:
    try:
        return strategy.check()
    except Exception as exc:  # noqa: BLE001 - reported as the strategy's own problem, in one line
        return f"check() raised {type(exc).__name__}: {exc}"


def _interruptible(call: Callable[[Context], Any], ctx: Context, seconds: float) -> Any:
    def overrun(signum: int, frame: Any) -> None:
        raise _Overrun

    previous = signal.signal(signal.SIGALRM, overrun)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return call(ctx)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous)


def _ohlcv(row: tuple[float, ...]) -> Any:
    from talipp.ohlcv import OHLCV

    start, o, h, low, c, v = row
    return OHLCV(o, h, low, c, None if v != v else v)


_SOURCES: dict[str, Callable[[tuple[float, ...]], Any]] = {
    "close": lambda row: row[4],
    "high": lambda row: row[2],
    "low": lambda row: row[3],
    "volume": lambda row: row[5],
    "ohlcv": _ohlcv,
}
