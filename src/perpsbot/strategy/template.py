"""The file ``perpsbot strategy new NAME`` writes: a working strategy, commented, to edit."""

from __future__ import annotations

import keyword
import re

TEMPLATE = '''"""{title}: a perpsbot strategy.

Run it:       perpsbot run --strategy {path}:{cls}
Backtest it:  perpsbot backtest --synthetic 20000 --strategy {path}:{cls} --param period=30
The API: perpsbot.strategy.api (README, "Writing a strategy").
"""

from __future__ import annotations

# Indicators come from talipp (https://nardew.github.io/talipp): incremental, one value per bar.
from talipp.indicators import EMA

from perpsbot.strategy.api import Context, Param, Signal, Strategy, flat, go_long, go_short, hold


class {cls}(Strategy):
    """Long above a rising EMA, short below a falling one (where shorts are allowed)."""

    name = "{name}"
    # Parameters: --param period=30 on the command line, strategy_params = "period=30" in the config.
    # low/high are checked when the bot starts (and are the range an optimiser would search).
    period = Param(int, 50, low=2, high=1000, help="EMA length, in bars")
    size = Param(float, 0.1, low=0.001, high=1.0, help="fraction of equity per position")

    # Bar lengths besides the bot's bar_seconds (each a multiple of it), e.g. ("1m", "1h");
    # ctx.bars_of("1h") gives those bars, ctx.closed("1h") says whether one just closed.
    timeframes = ()

    # Only some symbols? symbols = ("BTC-USD",), or override trades(self, product).

    def warmup(self) -> int:
        # Closed bars each timeframe needs before on_bar is called.
        return self.period + 1

    def on_bar(self, ctx: Context) -> Signal | None:
        # Called on every closed bar. ctx.bars[-1] is the newest (open, high, low, close,
        # volume), ctx.mark / ctx.book / ctx.funding / ctx.position / ctx.equity the rest.
        ema = ctx.indicator(EMA, self.period)
        close, rising = ctx.bars[-1].close, ema[-1] > ema[-2]
        if ctx.size > 0 and close < ema[-1]:
            return flat("close under the EMA")
        if ctx.size < 0 and close > ema[-1]:
            return flat("close over the EMA")
        if ctx.size or ctx.reduce_only:
            return hold()
        if close > ema[-1] and rising:
            # Optional: fraction= or quantity=, order="limit" with limit_offset_bps=,
            # stop_loss= / take_profit= (prices), trailing_stop= (a fraction).
            return go_long("over a rising EMA", fraction=self.size)
        if close < ema[-1] and not rising and ctx.shorts_allowed:
            return go_short("under a falling EMA", fraction=self.size)
        return hold()  # None holds too
'''


def class_name(name: str) -> str:
    """``my-trend`` -> ``MyTrend``; ValueError for a name that makes no class name."""
    words = [w for w in re.split(r"[^0-9a-zA-Z]+", name) if w]
    cls = "".join(w[:1].upper() + w[1:] for w in words)
    if not cls.isidentifier() or keyword.iskeyword(cls):
        raise ValueError(f"'{name}' does not make a class name: use letters, digits, - or _, not starting with a digit")
    return cls


def render(name: str, path: str) -> tuple[str, str]:
    """(the class name, the file's text) for a strategy called ``name`` written to ``path``."""
    cls = class_name(name)
    snake = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
    return cls, TEMPLATE.format(title=name, path=path, cls=cls, name=snake)
