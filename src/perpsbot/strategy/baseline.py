"""The baseline strategy: moving-average crossover on closed bars with a trailing stop."""

from __future__ import annotations

import math
from decimal import Decimal

from perpsbot.market.windows import MarkWindow
from perpsbot.strategy.base import Decision, MarketView, Target

UP = 1
DOWN = -1


class CrossState:
    """Fast and slow simple moving averages over the closes pushed so far, kept as
    rolling sums: O(1) a bar, whatever the windows. ``cross`` tells what the last
    bar did: ``UP`` when the fast average went from at-or-below the slow one to
    above it, ``DOWN`` for the mirror image, 0 otherwise (or before there are
    ``long + 1`` closes). The sums are recomputed exactly (``math.fsum``) every
    ``long`` bars, so rounding never drifts over a long run."""

    __slots__ = ("short", "long", "buf", "count", "fast_sum", "slow_sum", "diff", "cross", "window", "seen",
                 "waiting", "no_cross")

    def __init__(self, short: int, long: int, symbol: str = "") -> None:
        self.short = short
        self.long = long
        self.buf = [0.0] * long
        self.count = 0
        self.fast_sum = 0.0
        self.slow_sum = 0.0
        self.diff: float | None = None  # fast - slow after the last push, once there are ``long`` closes
        self.cross = 0
        self.window: MarkWindow | None = None  # the window this state follows, and how many of its bars it saw
        self.seen = 0
        # The two HOLD answers, made once.
        self.waiting = Decision(symbol, Target.HOLD, "waiting for a closed bar")
        self.no_cross = Decision(symbol, Target.HOLD, "no cross")

    def push(self, close: float) -> int:
        short, long, buf, count = self.short, self.long, self.buf, self.count
        slot = count % long
        fast, slow = self.fast_sum, self.slow_sum
        if count >= long:  # the steady state: one close in, one out of each window
            fast += close - buf[(count - short) % long]
            slow += close - buf[slot]
        else:
            if count >= short:
                fast -= buf[(count - short) % long]
            fast += close
            slow += close
        buf[slot] = close
        count += 1
        self.count = count
        if slot == long - 1:  # exact again, once a slow window
            slow = math.fsum(buf)
            fast = math.fsum(buf[long - short :])
        self.fast_sum, self.slow_sum = fast, slow
        if count < long:
            self.cross = 0
            return 0
        # The same comparison as "fast average vs slow average": fast_sum/short vs slow_sum/long.
        diff = fast / short - slow / long
        before = self.diff
        self.diff = diff
        if before is None:
            cross = 0
        elif before <= 0.0 < diff:
            cross = UP
        elif before >= 0.0 > diff:
            cross = DOWN
        else:
            cross = 0
        self.cross = cross
        return cross

    def follow(self, window: MarkWindow) -> None:
        """Catch up with the bars ``window`` gained since the last call; start over
        from what it holds when it is another window or it moved on too far."""
        new = window.appended - self.seen
        if window is not self.window or new < 0 or new > window.bar_count:
            self._reset()
            self.window = window
            closes = window.last_closes(self.long + 1)
        elif new == 0:
            return
        else:
            closes = window.last_closes(new)
        for close in closes:
            self.push(close)
        self.seen = window.appended

    def _reset(self) -> None:
        self.buf = [0.0] * self.long
        self.count = 0
        self.fast_sum = self.slow_sum = 0.0
        self.diff = None
        self.cross = 0


class MACrossover:
    """Go long when the fast average crosses above the slow one, short (if allowed)
    when it crosses below. A trailing stop closes a position that gives back
    ``trailing_stop_pct`` from its best mark (0 turns it off). In reduce-only mode
    the only answers are FLAT and HOLD.

    The averages are kept incrementally per symbol from the view's window (floats:
    they are indicators); a view without a window (tests, one-off calls) is worked
    out from its bars alone. Either way the answer is the same as averaging the
    last closes afresh."""

    name = "ma_crossover"

    def __init__(self, short_window: int, long_window: int, trailing_stop_pct: Decimal) -> None:
        if not 0 < short_window < long_window:
            raise ValueError("need 0 < short_window < long_window")
        self.short_window = short_window
        self.long_window = long_window
        self.trailing_stop_pct = trailing_stop_pct
        self._stop = float(trailing_stop_pct)
        self._extreme: dict[str, float] = {}  # best mark since entry, per symbol
        self._states: dict[str, CrossState] = {}
        self._required = long_window + 1

    @property
    def required_bars(self) -> int:
        return self.long_window + 1

    def forget(self, symbol: str) -> None:
        self._extreme.pop(symbol, None)
        self._states.pop(symbol, None)

    def _state(self, view: MarketView) -> CrossState:
        window = view.window
        if window is None:  # no history to follow: work it out from the bars given
            built = CrossState(self.short_window, self.long_window, view.symbol)
            for bar in list(view.bars)[-self.required_bars :]:
                built.push(float(bar.close))
            return built
        state = self._states.get(view.symbol)
        if state is None:
            state = self._states[view.symbol] = CrossState(self.short_window, self.long_window, view.symbol)
        state.follow(window)
        return state

    def decide(self, view: MarketView) -> Decision:
        # The usual case, one new bar on the window already followed, inline: a
        # backtest asks this once per candle.
        window = view.window
        state = self._states.get(view.symbol) if window is not None else None
        if state is not None and state.window is window and window.appended == state.seen + 1:  # type: ignore[union-attr]  # a state follows a window
            state.push(window.last_close)  # type: ignore[union-attr]  # a state follows a window
            state.seen += 1
        else:
            state = self._state(view)
        position = view.position
        if position is not None and position.size:
            if self._stop:
                stop = self._trailing_stop(view, position.size > 0, position.entry_price)
                if stop is not None:
                    return stop
        elif self._extreme:
            self._extreme.pop(view.symbol, None)
        if not view.bar_closed or state.count < self._required:
            return state.waiting
        cross = state.cross
        if not cross:
            return state.no_cross
        held = position.size if position is not None else Decimal(0)
        if cross == UP:
            if view.reduce_only:
                target = Target.FLAT if held < 0 else Target.HOLD
                return Decision(view.symbol, target, "bullish cross (reduce-only)", view.mark)
            if held > 0:
                return Decision(view.symbol, Target.HOLD, "bullish cross, already long", view.mark)
            return Decision(view.symbol, Target.LONG, "bullish cross", view.mark)
        if view.reduce_only or not view.shorts_allowed:
            target = Target.FLAT if held > 0 else Target.HOLD
            note = "reduce-only" if view.reduce_only else "shorts disabled"
            return Decision(view.symbol, target, f"bearish cross ({note})", view.mark)
        if held < 0:
            return Decision(view.symbol, Target.HOLD, "bearish cross, already short", view.mark)
        return Decision(view.symbol, Target.SHORT, "bearish cross", view.mark)

    def _trailing_stop(self, view: MarketView, long: bool, entry: Decimal) -> Decision | None:
        mark = view.price
        if mark is None:
            return None
        symbol = view.symbol
        best = self._extreme.get(symbol)
        if best is None:
            best = float(entry) if entry else mark
        best = max(best, mark) if long else min(best, mark)
        self._extreme[symbol] = best
        give_back = (best - mark) / best if long else (mark - best) / best
        if give_back >= self._stop:
            del self._extreme[symbol]
            return Decision(symbol, Target.FLAT, f"trailing stop: {give_back:.2%} off the best mark {best}", view.mark)
        return None
