"""The strategy API: what a user's strategy class declares, sees and answers.

A strategy is a class (subclass of ``Strategy``) in the user's own file, an importable
module or an installed package (entry point group ``perpsbot.strategies``). It declares

* its parameters, as ``Param`` class attributes (type, default, range: checked when the
  bot starts, ranges kept for optimisation);
* the symbols it trades (``symbols``, or a ``trades(product)`` filter) and the bar
  lengths it needs (``timeframes``: the bot's ``bar_seconds`` and multiples of it);
* how many bars each timeframe needs before it can decide (``warmup()``).

On every closed bar ``on_bar(ctx)`` gets a ``Context`` (bars with volume per timeframe,
the mark and book top, funding for perpetuals, its position, the account's equity) and
answers a ``Signal``: a target (long / short / flat / hold) with an optional size, order
type and protective levels. ``on_mark(ctx)``, between bar closes, is optional.

Indicators come from talipp (``ctx.indicator(SMA, 20)``): incremental, one value in,
one out, so the live path does per bar what a backtest does per candle.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, NamedTuple

from perpsbot.domain import Position, Product
from perpsbot.strategy.base import OrderKind, Target

__all__ = [
    "BarRow", "Bars", "BookTop", "Context", "Funding", "OrderKind", "Param", "Signal", "Strategy", "Target",
    "flat", "go_long", "go_short", "hold",
]

_TYPES: dict[type, str] = {int: "a whole number", float: "a number", Decimal: "a number", bool: "true or false",
                           str: "text"}


class ParamError(ValueError):
    """A parameter value that does not fit its declaration, worded in one line."""


class Param:
    """A strategy parameter: ``period = Param(int, 14, low=2, high=200, help="bars")``.

    ``low`` / ``high`` bound the value (both inclusive) and are the range an optimiser
    searches; ``choices`` lists the values text may take."""

    def __init__(
        self,
        type: type,
        default: Any,
        *,
        low: Any = None,
        high: Any = None,
        choices: Sequence[str] | None = None,
        help: str = "",
    ) -> None:
        if type not in _TYPES:
            raise TypeError(f"Param type must be one of int, float, Decimal, bool, str; got {type!r}")
        self.type = type
        self.low = low
        self.high = high
        self.choices = tuple(choices) if choices is not None else None
        self.help = help
        self.name = ""
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name  # the default is checked with the other values, when the bot starts

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return instance.params[self.name]

    def parse(self, raw: Any) -> Any:
        """``raw`` (text from the command line or config, or a value) as this parameter's
        type, within its range; ``ParamError`` otherwise."""
        value = self._typed(raw)
        if self.low is not None and value < self.low:
            raise ParamError(f"parameter {self.name} = {raw!r}: must be at least {self.low}")
        if self.high is not None and value > self.high:
            raise ParamError(f"parameter {self.name} = {raw!r}: must be at most {self.high}")
        if self.choices is not None and value not in self.choices:
            raise ParamError(f"parameter {self.name} = {raw!r}: must be one of {', '.join(self.choices)}")
        return value

    def _typed(self, raw: Any) -> Any:
        kind = self.type
        wrong = ParamError(f"parameter {self.name} = {raw!r}: expected {_TYPES[kind]}")
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "yes", "1", "on"):
                return True
            if text in ("false", "no", "0", "off"):
                return False
            raise wrong
        if kind is str:
            return str(raw)
        if isinstance(raw, bool):
            raise wrong
        try:
            number = Decimal(str(raw).strip())
        except InvalidOperation:
            raise wrong from None
        if not number.is_finite():
            raise wrong
        if kind is int:
            if number != number.to_integral_value():
                raise wrong
            return int(number)
        return float(number) if kind is float else number

    def describe(self) -> str:
        bounds = f" [{self.low}..{self.high}]" if self.low is not None or self.high is not None else ""
        return f"{self.name}: {self.type.__name__} = {self.default}{bounds}" + (f"  {self.help}" if self.help else "")


@dataclass(frozen=True, slots=True)
class Signal:
    """A strategy's answer for one symbol. ``size``: a fraction of equity (``fraction``)
    or a quantity of the product (``quantity``), else the bot's ``position_fraction``;
    ``order`` "market", "limit" (at ``limit_offset_bps`` past the mark) or "post_only",
    else the bot's ``order_type``.
    Protective levels are prices (``stop_loss``, ``take_profit``) and a fraction
    (``trailing_stop``): checked and recorded with the decision; the orders that carry them
    out at the exchange come with issue 17 ("Positions protected at the exchange")."""

    target: Target
    reason: str = ""
    fraction: float | Decimal | None = None
    quantity: float | Decimal | None = None
    order: OrderKind | str | None = None
    limit_offset_bps: float | Decimal | None = None
    stop_loss: float | Decimal | None = None
    take_profit: float | Decimal | None = None
    trailing_stop: float | Decimal | None = None


def go_long(reason: str = "", **options: Any) -> Signal:
    return Signal(Target.LONG, reason, **options)


def go_short(reason: str = "", **options: Any) -> Signal:
    return Signal(Target.SHORT, reason, **options)


def flat(reason: str = "") -> Signal:
    return Signal(Target.FLAT, reason)


def hold(reason: str = "") -> Signal:
    return Signal(Target.HOLD, reason)


class BarRow(NamedTuple):
    """One closed bar; ``start`` in UNIX seconds; ``volume`` NaN where it is not known
    (bars the bot builds from marks: a quote carries no volume)."""

    start: float
    open: float
    high: float
    low: float
    close: float
    volume: float


class Bars(Sequence[BarRow]):
    """The closed bars of one timeframe, oldest first (``bars[-1]`` is the newest)."""

    __slots__ = ("seconds", "_rows")

    def __init__(self, seconds: int, rows: Sequence[tuple[float, float, float, float, float, float]]) -> None:
        self.seconds = seconds
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [BarRow(*row) for row in list(self._rows)[index]]
        return BarRow(*self._rows[index])

    def __iter__(self) -> Iterator[BarRow]:
        return (BarRow(*row) for row in self._rows)

    def closes(self, count: int | None = None) -> list[float]:
        return self._column(4, count)

    def highs(self, count: int | None = None) -> list[float]:
        return self._column(2, count)

    def lows(self, count: int | None = None) -> list[float]:
        return self._column(3, count)

    def volumes(self, count: int | None = None) -> list[float]:
        return self._column(5, count)

    def _column(self, at: int, count: int | None) -> list[float]:
        rows = self._rows
        take = len(rows) if count is None else min(count, len(rows))
        return [rows[-k][at] for k in range(take, 0, -1)]


@dataclass(frozen=True, slots=True)
class BookTop:
    bid: Decimal
    ask: Decimal


@dataclass(frozen=True, slots=True)
class Funding:
    """A perpetual's funding: ``rate`` per funding interval (> 0: longs pay shorts) and
    when it is next settled."""

    rate: Decimal
    next_time: datetime | None


class Context:
    """What a strategy sees of one symbol on one call. One object per symbol, refreshed
    in place: read it during the call, do not keep it. What costs something to work out
    (the mark as a Decimal, the equity, the book top, funding) is read only when asked
    for. ``state`` is the strategy's own per-symbol dict (dropped when the symbol leaves
    the config)."""

    __slots__ = ("symbol", "product", "state", "_view", "_inputs", "_frames", "_base", "_feed")

    def __init__(self, symbol: str, product: Product | None, base: int, inputs: Any, feed: Callable[..., Any]) -> None:
        self.symbol = symbol
        self.product = product
        self.state: dict[str, Any] = {}
        self._view: Any = None  # the orchestrator's MarketView of this call
        self._inputs = inputs  # the bot's MarketInputs (clock, equity, book top, funding)
        self._base = base
        self._frames: dict[int, Any] = {}  # seconds -> the runner's frame of that timeframe
        self._feed = feed

    @property
    def now(self) -> datetime:
        return self._inputs.now()

    @property
    def mark(self) -> Decimal:
        return self._view.mark

    @property
    def price(self) -> float:
        """The mark as a float, for arithmetic with indicators."""
        return self._view.price

    @property
    def position(self) -> Position | None:
        return self._view.position

    @property
    def size(self) -> Decimal:
        """The position held: > 0 long, < 0 short, 0 flat."""
        position = self._view.position
        return position.size if position is not None else Decimal(0)

    @property
    def equity(self) -> Decimal:
        return self._inputs.equity()

    @property
    def book(self) -> BookTop | None:
        """The best bid and ask, where the exchange gave them (None in a candle backtest)."""
        return self._inputs.book_top(self.symbol)

    @property
    def funding(self) -> Funding | None:
        """A perpetual's funding rate and next settlement; None for spot or where unknown."""
        if not self.is_perpetual:
            return None
        return self._inputs.funding(self.symbol)

    @property
    def reduce_only(self) -> bool:
        """The risk manager allows only orders that shrink a position."""
        return self._view.reduce_only

    @property
    def shorts_allowed(self) -> bool:
        return self._view.shorts_allowed

    @property
    def is_perpetual(self) -> bool:
        return self.product is not None and self.product.is_perpetual

    @property
    def bars(self) -> Bars:
        """The base timeframe's closed bars (``bar_seconds``)."""
        return self._frames[self._base].bars

    def bars_of(self, timeframe: str | int) -> Bars:
        return self._frame(timeframe).bars

    def closed(self, timeframe: str | int) -> bool:
        """True when this call comes with a new closed bar of ``timeframe``."""
        return self._frame(timeframe).closed

    def indicator(
        self, kind: Callable[..., Any], *args: Any, timeframe: str | int | None = None, source: str = "close"
    ) -> Any:
        """A talipp indicator ``kind(*args)`` on this symbol's ``timeframe`` bars, fed with
        ``source`` ("close", "high", "low", "volume" or "ohlcv") of every closed bar: made
        on first use from the bars held, then given one value per new bar."""
        frame = self._frames[self._base] if timeframe is None else self._frame(timeframe)
        return self._feed(frame, kind, args, source)

    def _frame(self, timeframe: str | int) -> Any:
        seconds = parse_timeframe(timeframe)
        frame = self._frames.get(seconds)
        if frame is None:
            raise KeyError(f"timeframe {timeframe} is not among the strategy's timeframes")
        return frame


class Strategy:
    """Base class of a user strategy. Subclass it, declare ``Param`` attributes and
    ``timeframes``, and write ``on_bar``. Parameter values are read as attributes
    (``self.period``); ``self.params`` holds them all."""

    name: ClassVar[str] = ""  # as reports name it; defaults to the class name
    timeframes: ClassVar[tuple[str | int, ...]] = ()  # besides the base bar_seconds, e.g. ("1h",)
    symbols: ClassVar[tuple[str, ...] | None] = None  # None: every configured symbol (see trades())

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = {p.name: p.default for p in self.declared().values()}
        self.params.update(params)

    @classmethod
    def declared(cls) -> dict[str, Param]:
        found: dict[str, Param] = {}
        for klass in reversed(cls.__mro__):
            found.update({k: v for k, v in vars(klass).items() if isinstance(v, Param)})
        return found

    @classmethod
    def display_name(cls) -> str:
        return cls.name or cls.__name__

    def trades(self, product: Product) -> bool:
        """Whether this strategy trades ``product`` (with ``symbols`` unset: all)."""
        return self.symbols is None or product.symbol in self.symbols

    def warmup(self) -> int:
        """Closed bars each timeframe needs before ``on_bar`` is called."""
        return 1

    def check(self) -> str | None:
        """A problem with the parameters together (e.g. fast >= slow), or None."""
        return None

    def on_bar(self, ctx: Context) -> Signal | None:
        raise NotImplementedError

    def on_mark(self, ctx: Context) -> Signal | None:
        """Called on a cycle without a closed bar (a new mark): default hold."""
        return None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_timeframe(value: str | int) -> int:
    """``"5m"`` / ``"1h"`` / ``300`` as seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        text = str(value).strip().lower()
        unit = _UNITS.get(text[-1:]) if text and not text[-1].isdigit() else 1
        number = text[:-1] if text and not text[-1].isdigit() else text
        if unit is None or not number.isdigit():
            raise ParamError(f"timeframe '{value}' is not like 30s, 5m, 1h, 1d or a number of seconds")
        seconds = int(number) * unit
    if seconds <= 0:
        raise ParamError(f"timeframe '{value}' must be longer than 0 s")
    return seconds


def finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
