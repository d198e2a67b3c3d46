"""Moving-average crossover on closed bars, with a trailing stop."""

from __future__ import annotations

from decimal import Decimal

from talipp.indicators import SMA

from perpsbot.strategy.api import Context, Param, Signal, Strategy, flat, go_long, go_short, hold


class MACrossover(Strategy):
    """Long when the fast average crosses above the slow one, short (if allowed) when it
    crosses below; a trailing stop closes a position that gives back trailing_stop_pct
    from its best mark (0: off). In reduce-only mode it only closes."""

    name = "ma_crossover"
    # The names are also bot settings (short_window, ...): a config that sets those sets these.
    short_window = Param(int, 5, low=1, high=1000, help="fast moving average, in bars")
    long_window = Param(int, 20, low=2, high=5000, help="slow moving average, in bars")
    trailing_stop_pct = Param(Decimal, Decimal("0.01"), low=0, high=Decimal("0.99"), help="0: no trailing stop")

    def check(self) -> str | None:
        if self.short_window >= self.long_window:
            return f"short_window ({self.short_window}) must be smaller than long_window ({self.long_window})"
        return None

    def warmup(self) -> int:
        return self.long_window + 1  # two averages in a row: the cross

    def on_mark(self, ctx: Context) -> Signal | None:
        return self.trailing_stop(ctx)

    def on_bar(self, ctx: Context) -> Signal | None:
        stop = self.trailing_stop(ctx)
        if stop is not None:
            return stop
        fast, slow = ctx.indicator(SMA, self.short_window), ctx.indicator(SMA, self.long_window)
        before, now = fast[-2] - slow[-2], fast[-1] - slow[-1]
        held = ctx.size
        if before <= 0.0 < now:
            if ctx.reduce_only:
                return flat("bullish cross (reduce-only)") if held < 0 else hold("bullish cross (reduce-only)")
            return hold("bullish cross, already long") if held > 0 else go_long("bullish cross")
        if before >= 0.0 > now:
            if ctx.reduce_only or not ctx.shorts_allowed:
                note = "reduce-only" if ctx.reduce_only else "shorts disabled"
                return flat(f"bearish cross ({note})") if held > 0 else hold(f"bearish cross ({note})")
            return hold("bearish cross, already short") if held < 0 else go_short("bearish cross")
        return hold("no cross")

    def trailing_stop(self, ctx: Context) -> Signal | None:
        """FLAT once the mark gives back trailing_stop_pct from the best mark since entry."""
        position = ctx.position
        if position is None or not position.size:
            ctx.state.pop("best", None)
            return None
        if not self.trailing_stop_pct:
            return None
        mark, long = ctx.price, position.size > 0
        best = ctx.state.get("best") or (float(position.entry_price) if position.entry_price else mark)
        best = max(best, mark) if long else min(best, mark)
        ctx.state["best"] = best
        give_back = (best - mark) / best if long else (mark - best) / best
        if give_back >= float(self.trailing_stop_pct):
            del ctx.state["best"]
            return flat(f"trailing stop: {give_back:.2%} off the best mark {best}")
        return None
