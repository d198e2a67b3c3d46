"""Backtest throughput: the whole ``perpsbot backtest`` command, as a user runs it.

500,000 synthetic 1-minute candles (seeded) are written to a CSV file first (not
counted), then ``perpsbot backtest --data FILE`` runs in its own process — start-up,
loading and checking the file, the replay (the bot's own MarkWindow, StrategyOrchestrator
+ MACrossover, RiskManager and ExecutionCoordinator on the ReplayExchange), the report
— with SMA(20)/SMA(100), long only (spot), market orders, 0.1 % fee, no slippage:

* cold: the first run on the file, nothing cached (it parses the CSV);
* warm: the same command again (it reads the parse cache the cold run wrote).

For each: wall time from spawn to exit, candles/s of that, the replay loop's own rate
(as the command prints it) and the process's peak RSS. Then the load step alone
(``load_candles`` in this process, cold and warm). Last, the cold and warm reports
must be byte-identical and their trades those of the crossover computed directly
with numpy (exit 1 otherwise).

    python benchmarks/backtest_throughput.py [--candles 500000] [--seed 1]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from perpsbot.backtest.data import load_candles, synthetic_candles, write_csv

SHORT, LONG = 20, 100
PARAMS = {
    "short_window": SHORT,
    "long_window": LONG,
    "trailing_stop_pct": 0,  # a plain crossover: no trailing stop
    "order_type": "market",
    # Risk controls stay on; their limits are set wide enough that they never stop the
    # strategy, so every crossover trades (the work measured is the same every run).
    "max_drawdown_pct": "0.9",
    "kill_drawdown_pct": "0.95",
    "daily_loss_limit": "1000000",
}
TARGET_RATE = 200_000  # candles/s, the whole command (issue 14)
TARGET_RSS_MB = 300
REPLAYED = re.compile(r"replayed ([\d,]+) candles in ([\d.]+) s \(([\d,]+) candles/s\)")


def run_command(data: Path, out: Path) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB, replay-loop candles/s) of one ``perpsbot backtest``."""
    args = [sys.executable, "-m", "perpsbot", "backtest", "--data", str(data), "--out", str(out),
            "--fee-bps", "10", "--slippage-bps", "0"]
    for key, value in PARAMS.items():
        args += ["--param", f"{key}={value}"]
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the children's maximum
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if proc.returncode != 0:
        sys.exit(f"backtest_throughput: the command failed ({proc.returncode}):\n{text}")
    match = REPLAYED.search(text)
    replay = float(match.group(3).replace(",", "")) if match else float("nan")
    return wall, usage.ru_maxrss / 1024, replay  # ru_maxrss: KiB on Linux


def reference_trades(closes: np.ndarray) -> tuple[list[tuple[int, int | None]], float]:
    """Long-only SMA crossover worked out directly: rolling sums over sliding windows, a
    cross where fast - slow changes sign (<= 0 to > 0 buys when flat, >= 0 to < 0 sells
    when long), acted on at the next candle's open. Returns (entry candle, exit candle
    or None) per trade and the smallest |fast - slow| (how close the closest call was)."""
    windows = np.lib.stride_tricks.sliding_window_view
    fast = windows(closes, SHORT).sum(axis=1)[LONG - SHORT:] / SHORT  # aligned: index 0 is candle LONG - 1
    slow = windows(closes, LONG).sum(axis=1) / LONG
    diff = fast - slow
    before, after = diff[:-1], diff[1:]
    at = np.arange(LONG, len(closes))  # the candle whose close decides, for diff pairs (at - 1, at)
    up = (before <= 0) & (after > 0) & (at + 1 < len(closes))
    down = (before >= 0) & (after < 0) & (at + 1 < len(closes))
    trades: list[tuple[int, int | None]] = []
    entry = None
    for i, is_up in zip(at[up | down], up[up | down], strict=True):
        if is_up and entry is None:
            entry = int(i) + 1
        elif not is_up and entry is not None:
            trades.append((entry, int(i) + 1))
            entry = None
    if entry is not None:
        trades.append((entry, None))
    return trades, float(np.abs(diff).min())


def report_trades(path: Path, first: float) -> list[tuple[int, int | None]]:
    def candle(text: str) -> int:
        return int((datetime.fromisoformat(text).timestamp() - first) // 60)

    with path.open(newline="") as handle:
        return [(candle(row["entry_time"]), None if row["exit_time"] == "open" else candle(row["exit_time"]))
                for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    n = args.candles

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        series = synthetic_candles(n, seed=args.seed, symbol="BTC-USD", bar_seconds=60)
        (root / "cmd").mkdir()
        data = root / "cmd" / "BTC-USD.csv"
        write_csv(series, data)
        (root / "load").mkdir()
        alone = root / "load" / "BTC-USD.csv"
        alone.write_bytes(data.read_bytes())
        print(f"backtest_throughput: {n:,} synthetic 1m candles written to CSV ({data.stat().st_size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - started:.1f} s (not counted)")

        print("whole command (perpsbot backtest --data FILE, load + replay + report, its own process):")
        rates = {}
        for run in ("cold", "warm"):
            wall, rss, replay = run_command(data, root / f"out-{run}")
            rates[run] = n / wall
            print(f"  1 symbol, {run} cache: {wall:.2f} s wall, {n / wall:,.0f} candles/s "
                  f"(replay loop alone {replay:,.0f} candles/s), peak RSS {rss:.0f} MB")
        print("  4 symbols: not measured — `perpsbot backtest` takes one --data file and one --symbol; "
              "the four-symbol run waits for portfolio backtests (issue 14 item 3)")

        same = all((root / "out-cold" / name).read_bytes() == (root / "out-warm" / name).read_bytes()
                   for name in ("report.json", "trades.csv", "equity.png", "report.html"))
        print(f"  cold and warm reports byte-identical: {'yes' if same else 'NO'}")

        print("load step alone (load_candles in this process):")
        started = time.perf_counter()
        import perpsbot.backtest.cache  # noqa: F401 - pyarrow and numpy, imported on the first load
        print(f"  importing the columnar reader (pyarrow): {time.perf_counter() - started:.3f} s, once a process")
        for run in ("cold", "warm"):
            started = time.perf_counter()
            loaded, _ = load_candles(alone, symbol="BTC-USD")
            took = time.perf_counter() - started
            print(f"  {run}: {took:.3f} s, {len(loaded) / took:,.0f} candles/s")
            del loaded

        expected, closest = reference_trades(np.frombuffer(series.close, dtype=np.float64))
        got = report_trades(root / "out-warm" / "trades.csv", series.start[0])
        verdict = "match" if got == expected else "DIFFER"
        print(f"trades: {len(got):,} in the report, {len(expected):,} by the numpy crossover: {verdict} "
              f"(closest call |fast - slow| = {closest:.2e})")
        best = max(rates.values())
        print(f"targets: >= {TARGET_RATE:,} candles/s whole command: {'met' if best >= TARGET_RATE else 'not met'} "
              f"(cold {rates['cold']:,.0f}, warm {rates['warm']:,.0f}); peak RSS < {TARGET_RSS_MB} MB: see above; "
              f"this process's own peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        if got != expected or not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
