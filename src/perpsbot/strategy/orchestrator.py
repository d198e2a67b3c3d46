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


class StrategyOrchestrator:
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
    ) -> None:
        self.strategy = strategy
        self.market_data = market_data
        self.events = events
        self.clock = clock
        self._positions = positions
        self._reduce_only = reduce_only
        self.shorts_allowed = shorts_allowed
        self.last_decision: dict[str, Decision] = {}  # the last one that was evaluated and recorded
        self.decision_ms: dict[str, float] = {}
        self._bars_seen: dict[str, int] = {}

    def forget(self, symbol: str) -> None:
        self.strategy.forget(symbol)
        for table in (self.last_decision, self.decision_ms, self._bars_seen):
            table.pop(symbol, None)

    def process_symbol(self, symbol: str) -> Decision:
        started = time.perf_counter()
        window = self.market_data.windows.get(symbol)
        mark = self.market_data.mark(symbol)
        if window is None or mark is None:
            decision = Decision(symbol, Target.HOLD, "no mark yet")
        else:
            bar_closed = window.bars_closed != self._bars_seen.get(symbol)
            self._bars_seen[symbol] = window.bars_closed
            view = MarketView(
                symbol=symbol,
                bars=window.bars,
                mark=mark,
                bar_closed=bar_closed,
                position=self._positions().get(symbol),
                reduce_only=self._reduce_only(),
                shorts_allowed=self.shorts_allowed(symbol),
            )
            decision = self.strategy.decide(view)
            if bar_closed or not decision.is_hold:
                self.last_decision[symbol] = decision
                self.events.append(
                    self.clock.now(),
                    "decision",
                    symbol,
                    target=decision.target,
                    reason=decision.reason,
                    mark=decision.mark,
                )
        elapsed = (time.perf_counter() - started) * 1000
        self.decision_ms[symbol] = elapsed
        log.debug("process_symbol %s -> %s (%s) in %.3f ms", symbol, decision.target.value, decision.reason, elapsed)
        return decision
