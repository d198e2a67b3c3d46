"""What one dashboard poll costs the bot's event loop.

A bot on the in-process simulator trades ``--orders`` market orders (alternating buy and
sell, so the PnL replays that many fills), then records ``--snapshots`` snapshots (a
week of the bot's 10 s snapshots by default) through ``PerpsBot.record_snapshot``.
Prints, for a page's first load (the whole equity history, thinned to 2,000 points) and
for a later poll (only new snapshots), best and median of ``--repeats``: the time the
bot's event loop is busy (``dashboard_state`` and the JSON, with the equity snapshots
already read) and the whole request's work including that read, which the server does in
a worker thread (``read_equity_series``); and the JSON size:

    python benchmarks/dashboard_state.py [--snapshots 60480] [--orders 200] [--repeats 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from perpsbot.bot import PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.dashboard.state import dashboard_state, read_equity_series
from perpsbot.domain import Side
from perpsbot.domain.clock import ManualClock
from perpsbot.store.sqlite import dumps

SYMBOL = "BIP-20DEC30-CDE"


async def timed(repeats: int, bot, health, after: int | None) -> tuple[float, float, float, float, int]:
    """(loop best, loop median, total best, total median) in ms, and the JSON size."""
    loop, total, size = [], [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        series = await read_equity_series(bot, after)  # in a worker thread
        on_loop = time.perf_counter()
        size = len(dumps(dashboard_state(bot, health, equity_after=after, equity_series=series)))
        done = time.perf_counter()
        loop.append((done - on_loop) * 1000)
        total.append((done - started) * 1000)
    return min(loop), statistics.median(loop), min(total), statistics.median(total), size


async def main(args: argparse.Namespace) -> None:
    clock = ManualClock()
    with tempfile.TemporaryDirectory() as folder:
        config = BotConfig(symbols=(SYMBOL, "ETP-20DEC30-CDE"), data_dir=Path(folder), long_window=200)
        bot = await PerpsBotBuilder(config).with_clock(clock).build()
        await bot.start()
        await bot.run_cycle()
        ex = bot.registry.execution
        product = bot.registry.products[SYMBOL]
        for n in range(args.orders):
            side = Side.BUY if n % 2 == 0 else Side.SELL
            await ex._place(ex.new_order(product, side, Decimal(1), Decimal(1), closing=False, market=True),
                            "benchmark", 0.0)
            clock.advance(1)
        await bot.run_cycle()
        for _ in range(args.snapshots):
            bot.record_snapshot()
        health = lambda: {"status": "ok", "reasons": []}  # noqa: E731
        last = dashboard_state(bot, health)["equity_history"]["last_id"]
        first = await timed(args.repeats, bot, health, None)
        poll = await timed(args.repeats, bot, health, last)
        await bot.shutdown()
    print(f"{args.snapshots} snapshots, {args.orders} fills in the run")
    for name, (lb, lm, tb, tm, size) in (("first load", first), ("later poll", poll)):
        print(f"{name}: event loop busy best {lb:.1f} ms, median {lm:.1f} ms; with the worker thread's read "
              f"best {tb:.1f} ms, median {tm:.1f} ms; {size / 1000:.1f} kB of JSON")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=60_480)
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
