"""StrategyOrchestrator: one decision per symbol per cycle, timed and recorded."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from perpsbot.domain import Position
from perpsbot.domain.clock import Clock
from perpsbot.market.data import MarketDataService
from perpsbot.store import EventStore
from perpsbot.strategy.base import Decision, MarketView, Strategy, Target

log = logging.getLogger(__name__)

_HOLD = Target.HOLD


class StrategyOrchestrator:
    """Asks the strategy for a decision per symbol and records it.

    Every non-HOLD decision is an event. A HOLD on a bar close is one too when
    ``record_holds`` is on (live); a backtest turns it off — one event per candle
    would dwarf the run — and keeps only the last one in ``last_decision``.
    """

    def __init__(
        self,
        strategy: Strategy,
        market_data: MarketDataService,
        events: EventStore,
        clock: Clock,
        *,
        positions: Callable[[], dict[str, Position]],
        reduce_only: Callable[[], bool],
        shorts_allowed: Callable[[str], bool],
        record_holds: bool = True,
    ) -> None:
        self.strategy = strategy
        self.market_data = market_data
        self.events = events
        self.clock = clock
        self._positions = positions
        self._reduce_only = reduce_only
        self._shorts_allowed = shorts_allowed
        self.record_holds = record_holds
        self.last_decision: dict[str, Decision] = {}  # the last one that was evaluated and recorded
        self.decision_ms: dict[str, float] = {}
        self._slots: dict[str, _Slot] = {}

    @property
    def shorts_allowed(self) -> Callable[[str], bool]:
        return self._shorts_allowed

    @shorts_allowed.setter
    def shorts_allowed(self, rule: Callable[[str], bool]) -> None:
        self._shorts_allowed = rule
        for slot in self._slots.values():
            slot.shorts = None

    def forget(self, symbol: str) -> None:
        self.strategy.forget(symbol)
        for table in (self.last_decision, self.decision_ms, self._slots):
            table.pop(symbol, None)

    def process_symbol(self, symbol: str) -> Decision:
        started = time.perf_counter()
        window = self.market_data.windows.get(symbol)
        if window is None or window.price is None:
            decision = Decision(symbol, _HOLD, "no mark yet")
        else:
            slot = self._slots.get(symbol)
            if slot is None or slot.view.window is not window:
                slot = self._slots[symbol] = _Slot(MarketView(symbol, None, None, False, None, False, False, window))
            closed = window.bars_closed
            bar_closed = closed != slot.bars_seen
            slot.bars_seen = closed
            shorts = slot.shorts
            if shorts is None:
                shorts = slot.shorts = self._shorts_allowed(symbol)
            # The view is this symbol's, refreshed in place: no allocation on a HOLD.
            view = slot.view
            view._mark = None
            view.price = window.price
            view.bar_closed = bar_closed
            view.position = self._positions().get(symbol)
            view.reduce_only = self._reduce_only()
            view.shorts_allowed = shorts
            decision = self.strategy.decide(view)
            if decision.target is not _HOLD or (bar_closed and self.record_holds):
                self.last_decision[symbol] = decision
                self.events.append_later(  # written with the order's events, after its request is sent
                    self.clock.now(),
                    "decision",
                    symbol,
                    target=decision.target,
                    reason=decision.reason,
                    mark=decision.mark if decision.mark is not None else view.mark,
                    **(decision.plan.recorded() if decision.plan is not None else {}),
                )
                log.debug("process_symbol %s -> %s (%s)", symbol, decision.target.value, decision.reason)
            elif bar_closed:
                self.last_decision[symbol] = decision
        self.decision_ms[symbol] = (time.perf_counter() - started) * 1000
        return decision


class _Slot:
    """What the orchestrator keeps per symbol between cycles."""

    __slots__ = ("view", "bars_seen", "shorts")

    def __init__(self, view: MarketView) -> None:
        self.view = view
        self.bars_seen: int | None = None
        self.shorts: bool | None = None
