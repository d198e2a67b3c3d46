"""The bot as its own process, for the chaos tests: ``python -m tests.chaos.botproc CONFIG.json trade|hold SECONDS``.

``trade`` flips between long and short every cycle (as many orders as the risk limits
allow); ``hold`` never trades (a clean run that only recovers and reconciles)."""

from __future__ import annotations

import asyncio
import json
import sys

from perpsbot.bot import PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.strategy.base import Decision, MarketView, Target


class Flipper:
    name = "flipper"
    required_bars = 2

    def __init__(self) -> None:
        self.long: dict[str, bool] = {}

    def decide(self, view: MarketView) -> Decision:
        self.long[view.symbol] = not self.long.get(view.symbol, False)
        target = Target.LONG if self.long[view.symbol] else Target.SHORT
        return Decision(view.symbol, target, "chaos: flip", view.mark)

    def forget(self, symbol: str) -> None:
        self.long.pop(symbol, None)


class Hold(Flipper):
    def decide(self, view: MarketView) -> Decision:
        return Decision(view.symbol, Target.HOLD, "chaos: hold", view.mark)


async def main(config_path: str, mode: str, seconds: float) -> None:
    with open(config_path, encoding="utf-8") as handle:
        config = BotConfig(**json.load(handle))
    bot = await PerpsBotBuilder(config).with_strategy(Flipper() if mode == "trade" else Hold()).build()
    try:
        await bot.start()
        print("started", flush=True)
        await bot.run(duration=seconds)
    finally:
        await bot.shutdown()
    print("stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
