"""RSI mean reversion: buy oversold, sell overbought, out at the middle."""

from __future__ import annotations

from talipp.indicators import RSI

from perpsbot.strategy.api import Context, Param, Signal, Strategy, flat, go_long, go_short, hold


class RSIReversion(Strategy):
    """Long when the RSI falls below oversold, short (if allowed) above overbought;
    a position is closed when the RSI gets back to exit_level."""

    name = "rsi_reversion"
    period = Param(int, 14, low=2, high=500, help="RSI length, in bars")
    oversold = Param(float, 30.0, low=1, high=50)
    overbought = Param(float, 70.0, low=50, high=99)
    exit_level = Param(float, 50.0, low=1, high=99, help="RSI at which a position is closed")

    def check(self) -> str | None:
        if not self.oversold < self.exit_level < self.overbought:
            return "need oversold < exit_level < overbought"
        return None

    def warmup(self) -> int:
        return self.period + 1

    def on_bar(self, ctx: Context) -> Signal | None:
        rsi = ctx.indicator(RSI, self.period)[-1]
        held = ctx.size
        if held > 0 and rsi >= self.exit_level:
            return flat(f"RSI {rsi:.1f} back to {self.exit_level:g}")
        if held < 0 and rsi <= self.exit_level:
            return flat(f"RSI {rsi:.1f} back to {self.exit_level:g}")
        if ctx.reduce_only or held:
            return hold(f"RSI {rsi:.1f}")
        if rsi < self.oversold:
            return go_long(f"RSI {rsi:.1f} oversold")
        if rsi > self.overbought and ctx.shorts_allowed:
            return go_short(f"RSI {rsi:.1f} overbought")
        return hold(f"RSI {rsi:.1f}")
