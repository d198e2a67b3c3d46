"""What a strategy sees and what it answers."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from perpsbot.domain import Position
from perpsbot.market.windows import Bar, MarkWindow


class Target(str, enum.Enum):
    """The position a decision asks for. HOLD keeps whatever is held."""

    HOLD = "HOLD"
    LONG = "LONG"
    SHORT = "SHORT"
    FLAT = "FLAT"


class OrderKind(str, enum.Enum):
    MARKET = "market"
    LIMIT = "limit"  # at ``limit_offset_bps`` past the mark (a buy above it, a sell below)
    POST_ONLY = "post_only"  # a limit that must rest on the book (maker only)


@dataclass(frozen=True, slots=True)
class OrderPlan:
    """How a decision wants to be carried out, where it says more than the bot's settings:
    the entry's size (a fraction of equity or a quantity), its order type, and protective
    levels (recorded with the decision; carried out by issue 17's protective orders)."""

    fraction: Decimal | None = None
    quantity: Decimal | None = None
    order: OrderKind | None = None  # None: the order_type setting
    limit_offset_bps: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    trailing_stop: Decimal | None = None

    def recorded(self) -> dict[str, object]:
        """The fields that are set, for the decision's event."""
        shown: dict[str, object] = {} if self.order is None else {"order": self.order.value}
        for name in ("fraction", "quantity", "limit_offset_bps", "stop_loss", "take_profit", "trailing_stop"):
            value = getattr(self, name)
            if value is not None:
                shown[name] = value
        return shown


@dataclass(frozen=True, slots=True)
class Decision:
    symbol: str
    target: Target
    reason: str
    mark: Decimal | None = None
    plan: OrderPlan | None = None  # None: sized and ordered as the bot's settings say

    @property
    def is_hold(self) -> bool:
        return self.target is Target.HOLD


class MarketView:
    """What a strategy sees of one symbol at one moment.

    Built fresh in tests (``MarketView(symbol, bars, mark, ...)``); the orchestrator
    keeps one per symbol and refreshes it each cycle, so a strategy must not hold on
    to a view between calls. With a ``window`` (the symbol's ``MarkWindow``) the bars
    and the ``Decimal`` mark are read from it only when asked for, and ``price`` —
    the mark as a float, for indicators — is always there.
    """

    __slots__ = ("symbol", "_bars", "_mark", "bar_closed", "position", "reduce_only", "shorts_allowed", "window",
                 "price")

    def __init__(
        self,
        symbol: str,
        bars: Sequence[Bar] | None,
        mark: Decimal | None,
        bar_closed: bool,
        position: Position | None,
        reduce_only: bool,
        shorts_allowed: bool,
        window: MarkWindow | None = None,
    ) -> None:
        self.symbol = symbol
        self._bars = bars
        self._mark = mark
        self.bar_closed = bar_closed
        self.position = position
        self.reduce_only = reduce_only
        self.shorts_allowed = shorts_allowed
        self.window = window
        self.price: float | None = float(mark) if mark is not None else (window.price if window is not None else None)

    @property
    def bars(self) -> Sequence[Bar]:
        if self._bars is None:
            return self.window.bars if self.window is not None else []
        return self._bars

    @property
    def mark(self) -> Decimal:
        mark = self._mark
        if mark is None and self.window is not None:
            last = self.window.last
            if last is not None:
                mark = self._mark = last.price
        assert mark is not None, "a view always has a mark"
        return mark


class Strategy(Protocol):
    name: str

    @property
    def required_bars(self) -> int: ...

    def decide(self, view: MarketView) -> Decision: ...

    def forget(self, symbol: str) -> None:
        """Drop per-symbol state (the symbol left the config)."""
        ...
