"""Backtest throughput on the live code path.

500,000 synthetic 1-minute candles, SMA(20)/SMA(100) crossover, long only (spot),
market orders, 0.1 % fee, through ``perpsbot.backtest.runner.run_backtest`` — the
bot's own MarketDataService window, StrategyOrchestrator + MACrossover,
RiskManager and ExecutionCoordinator on the candle-driven ReplayExchange, exactly
what ``perpsbot backtest`` runs. Prints candles/s of the replay loop (best and
median of the repeats) and the process's peak RSS:

    python benchmarks/backtest_throughput.py [--candles 500000] [--repeats 3] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from perpsbot.backtest.data import synthetic_candles
from perpsbot.backtest.runner import BacktestSpec, run_backtest
from perpsbot.exchange.sim.replay import ReplayCosts

PARAMS = {
    "short_window": 20,
    "long_window": 100,
    "trailing_stop_pct": 0,  # a plain crossover: no trailing stop
    "order_type": "market",
    # Risk controls stay on; their limits are set wide enough that they never stop the
    # strategy, so every crossover trades (the work measured is the same every run).
    "max_drawdown_pct": "0.9",
    "kill_drawdown_pct": "0.95",
    "daily_loss_limit": "1000000",
}


def bare_loop_rate(closes) -> float:
    """Candles/s of the crossover alone — rolling sums in a bare loop, no bot, no orders:
    how fast this machine runs Python right now, to read the figure above against."""
    started = time.perf_counter()
    buf20, buf100 = [0.0] * 20, [0.0] * 100
    fast = slow = 0.0
    before = None
    crosses = 0
    for i, close in enumerate(closes):
        fast += close - buf20[i % 20]
        slow += close - buf100[i % 100]
        buf20[i % 20] = close
        buf100[i % 100] = close
        if i >= 99:
            diff = fast / 20 - slow / 100
            if before is not None and (before <= 0 < diff or before >= 0 > diff):
                crosses += 1
            before = diff
    return len(closes) / (time.perf_counter() - started)


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    started = time.perf_counter()
    series = synthetic_candles(args.candles, seed=args.seed, symbol="BTC-USD", bar_seconds=60)
    made = time.perf_counter() - started
    print(f"backtest_throughput: {args.candles:,} synthetic 1m candles made in {made:.2f} s "
          f"(not counted); peak RSS so far {peak_rss_mb():.0f} MB")
    spec = BacktestSpec("BTC-USD", ReplayCosts(fee_bps=Decimal(10), slippage_bps=Decimal(0)), PARAMS)
    rates = []
    for run in range(1, args.repeats + 1):
        with tempfile.TemporaryDirectory() as tmp:
            result = asyncio.run(run_backtest(series, spec, data_dir=Path(tmp)))
        rate = result.candles / result.elapsed_seconds
        rates.append(rate)
        print(f"  run {run}: {result.elapsed_seconds:.3f} s, {rate:,.0f} candles/s, {len(result.orders)} orders, "
              f"{len(result.fills)} fills, end equity {result.end_equity:.2f}")
        del result
    print(f"backtest_throughput: best {max(rates):,.0f} candles/s, median {statistics.median(rates):,.0f} "
          f"candles/s; peak RSS {peak_rss_mb():.0f} MB")
    print(f"  for scale, the crossover alone in a bare Python loop: {bare_loop_rate(series.close):,.0f} candles/s")


if __name__ == "__main__":
    main()
