"""The baseline strategy: moving-average crossover on closed bars with a trailing stop."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from perpsbot.market.windows import Bar
from perpsbot.strategy.base import Decision, MarketView, Target


def sma(values: Sequence[Decimal], n: int) -> Decimal:
    return sum(values[-n:], Decimal(0)) / n


class MACrossover:
    """Go long when the fast average crosses above the slow one, short (if allowed)
    when it crosses below. A trailing stop closes a position that gives back
    ``trailing_stop_pct`` from its best mark. In reduce-only mode the only answers
    are FLAT and HOLD."""

    name = "ma_crossover"

    def __init__(self, short_window: int, long_window: int, trailing_stop_pct: Decimal) -> None:
        if not 0 < short_window < long_window:
            raise ValueError("need 0 < short_window < long_window")
        self.short_window = short_window
        self.long_window = long_window
        self.trailing_stop_pct = trailing_stop_pct
        self._extreme: dict[str, Decimal] = {}  # best mark since entry, per symbol

    @property
    def required_bars(self) -> int:
        return self.long_window + 1

    def forget(self, symbol: str) -> None:
        self._extreme.pop(symbol, None)

    def decide(self, view: MarketView) -> Decision:
        stop = self._trailing_stop(view)
        if stop is not None:
            return stop
        if not view.bar_closed or len(view.bars) < self.required_bars:
            return Decision(view.symbol, Target.HOLD, "waiting for a closed bar", view.mark)
        cross = self._cross(view.bars)
        held = view.position.size if view.position else Decimal(0)
        if cross == "up":
            if view.reduce_only:
                target = Target.FLAT if held < 0 else Target.HOLD
                return Decision(view.symbol, target, "bullish cross (reduce-only)", view.mark)
            if held > 0:
                return Decision(view.symbol, Target.HOLD, "bullish cross, already long", view.mark)
            return Decision(view.symbol, Target.LONG, "bullish cross", view.mark)
        if cross == "down":
            if view.reduce_only or not view.shorts_allowed:
                target = Target.FLAT if held > 0 else Target.HOLD
                note = "reduce-only" if view.reduce_only else "shorts disabled"
                return Decision(view.symbol, target, f"bearish cross ({note})", view.mark)
            if held < 0:
                return Decision(view.symbol, Target.HOLD, "bearish cross, already short", view.mark)
            return Decision(view.symbol, Target.SHORT, "bearish cross", view.mark)
        return Decision(view.symbol, Target.HOLD, "no cross", view.mark)

    def _cross(self, bars: Sequence[Bar]) -> str | None:
        closes = [bar.close for bar in list(bars)[-self.required_bars :]]
        fast_now, slow_now = sma(closes, self.short_window), sma(closes, self.long_window)
        previous = closes[:-1]
        fast_before, slow_before = sma(previous, self.short_window), sma(previous, self.long_window)
        if fast_before <= slow_before and fast_now > slow_now:
            return "up"
        if fast_before >= slow_before and fast_now < slow_now:
            return "down"
        return None

    def _trailing_stop(self, view: MarketView) -> Decision | None:
        position = view.position
        if position is None or position.is_flat:
            self._extreme.pop(view.symbol, None)
            return None
        mark = view.mark
        long = position.size > 0
        best = self._extreme.get(view.symbol, position.entry_price or mark)
        best = max(best, mark) if long else min(best, mark)
        self._extreme[view.symbol] = best
        give_back = (best - mark) / best if long else (mark - best) / best
        if give_back >= self.trailing_stop_pct:
            self._extreme.pop(view.symbol, None)
            return Decision(
                view.symbol,
                Target.FLAT,
                f"trailing stop: {give_back:.2%} off the best mark {best}",
                mark,
            )
        return None
