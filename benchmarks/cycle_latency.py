"""Cycle and order latency of the bot on the in-process simulator.

Runs the real PerpsBot (market data → strategy → risk → execution → stores) on a
ManualClock, so only our code's time is measured, and prints one line per case:

    python benchmarks/cycle_latency.py [--cycles 2000] [--symbols 1,6]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from perpsbot.bot import PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.sim import SimConfig, SimCore, SimExchange, default_products

ALL = ("BIP-20DEC30-CDE", "ETP-20DEC30-CDE", "BIT-26MAR27-CDE", "BTC-USD", "ETH-USD", "SOL-USD")


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(round(p / 100 * len(ordered))) - 1)]


async def bench(symbols: tuple[str, ...], cycles: int, data_dir: Path) -> dict[str, float]:
    clock = ManualClock(datetime(2026, 3, 2, tzinfo=UTC))
    config = BotConfig(
        symbols=symbols, data_dir=data_dir, interval=0.2, bar_seconds=1, short_window=3, long_window=8, seed=5
    )
    core = SimCore(default_products(), SimConfig(seed=5, warmup_seconds=30), start=clock.now())
    bot = await PerpsBotBuilder(config).with_clock(clock).with_exchange(SimExchange(core, clock)).build()
    await bot.start()
    times = []
    for _ in range(cycles):
        clock.advance(config.interval)
        started = time.perf_counter()
        await bot.run_cycle()
        times.append((time.perf_counter() - started) * 1000)
    latencies = list(bot.registry.execution.latencies_ms)
    await bot.shutdown()
    return {
        "cycle_p50_ms": statistics.median(times),
        "cycle_p99_ms": pct(times, 99),
        "orders": len(latencies),
        "order_p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "order_p99_ms": pct(latencies, 99) if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--symbols", default="1,6", help="symbol counts to compare")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for count in (int(n) for n in args.symbols.split(",")):
            r = asyncio.run(bench(ALL[:count], args.cycles, Path(tmp) / str(count)))
            results[count] = r
            print(
                f"cycle_latency symbols={count} cycles={args.cycles}: cycle p50 {r['cycle_p50_ms']:.3f} ms "
                f"p99 {r['cycle_p99_ms']:.3f} ms; orders {r['orders']}: decision->ack p50 "
                f"{r['order_p50_ms']:.3f} ms p99 {r['order_p99_ms']:.3f} ms"
            )
        counts = sorted(results)
        if len(counts) > 1:
            lo, hi = counts[0], counts[-1]
            ratio = results[hi]["cycle_p50_ms"] / results[lo]["cycle_p50_ms"]
            print(
                f"cycle_latency scaling: {hi} symbols cost {ratio:.2f}x the p50 cycle of {lo} (ideal <= {hi / lo:.0f}x)"
            )


if __name__ == "__main__":
    main()
