"""Donchian channel breakout, with an ATR stop-loss level on each entry."""

from __future__ import annotations

from talipp.indicators import ATR, DonchianChannels

from perpsbot.strategy.api import Context, Param, Signal, Strategy, flat, go_long, go_short, hold


class DonchianBreakout(Strategy):
    """Long on a close above the highest high of the last entry_bars bars, short (if
    allowed) below the lowest low; out when the close breaks the exit_bars channel the
    other way. Entries carry a stop-loss atr_stop ATRs away (0: none)."""

    name = "donchian_breakout"
    entry_bars = Param(int, 20, low=2, high=1000)
    exit_bars = Param(int, 10, low=2, high=1000)
    atr_stop = Param(float, 2.0, low=0, high=20, help="stop-loss distance in ATRs (0: none)")

    def warmup(self) -> int:
        return max(self.entry_bars, self.exit_bars, 14) + 1

    def on_bar(self, ctx: Context) -> Signal | None:
        # The channels up to the bar before this one: a breakout is a close beyond them.
        entry = ctx.indicator(DonchianChannels, self.entry_bars, source="ohlcv")[-2]
        exit_ = ctx.indicator(DonchianChannels, self.exit_bars, source="ohlcv")[-2]
        close, held = ctx.bars[-1].close, ctx.size
        if held > 0 and close < exit_.lb:
            return flat(f"close {close} below the {self.exit_bars}-bar low")
        if held < 0 and close > exit_.ub:
            return flat(f"close {close} above the {self.exit_bars}-bar high")
        if held or ctx.reduce_only:
            return hold("in a position" if held else "reduce-only")
        atr = ctx.indicator(ATR, 14, source="ohlcv")[-1] if self.atr_stop else None
        if close > entry.ub:
            stop = close - self.atr_stop * atr if atr else None
            return go_long(f"close {close} above the {self.entry_bars}-bar high", stop_loss=stop)
        if close < entry.lb and ctx.shorts_allowed:
            stop = close + self.atr_stop * atr if atr else None
            return go_short(f"close {close} below the {self.entry_bars}-bar low", stop_loss=stop)
        return hold("inside the channel")
