"""What a strategy sees and what it answers."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from perpsbot.domain import Position
from perpsbot.market.windows import Bar


class Target(str, enum.Enum):
    """The position a decision asks for. HOLD keeps whatever is held."""

    HOLD = "HOLD"
    LONG = "LONG"
    SHORT = "SHORT"
    FLAT = "FLAT"


@dataclass(frozen=True, slots=True)
class Decision:
    symbol: str
    target: Target
    reason: str
    mark: Decimal | None = None

    @property
    def is_hold(self) -> bool:
        return self.target is Target.HOLD


@dataclass(frozen=True, slots=True)
class MarketView:
    symbol: str
    bars: Sequence[Bar]
    mark: Decimal
    bar_closed: bool
    position: Position | None
    reduce_only: bool
    shorts_allowed: bool


class Strategy(Protocol):
    name: str

    @property
    def required_bars(self) -> int: ...

    def decide(self, view: MarketView) -> Decision: ...

    def forget(self, symbol: str) -> None:
        """Drop per-symbol state (the symbol left the config)."""
        ...
