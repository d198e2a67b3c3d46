"""Memory soak: the bot streaming 10 symbols from the simulator server for N minutes.

The simulator server runs in its own process (``perpsbot sim serve``, plain HTTP and
WebSocket on 127.0.0.1, a fresh key trusted); this process runs the real bot
(``exchange = coinbase`` pointed at it, paper trading, level2 + ticker + trades on 10
symbols, MA crossover on 60 s bars) and samples its own resident set size every
``--sample`` seconds. It prints RSS after start-up and at the end, and the growth slope
(least squares over the samples after the first ``--settle`` seconds, in MB per hour).

With ``--trace N`` it also runs tracemalloc (which slows the bot and adds its own
memory to RSS: read its RSS figures as inflated) and prints the N source lines whose
live Python allocations grew most between the end of ``--settle`` and the end of the run.

    python benchmarks/rss_soak.py [--minutes 2] [--sample 10] [--settle 60] [--trace 15]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from perpsbot.bot import PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.exchange.sim.keys import generate_key, write_key_file

SYMBOLS = ("BIP-20DEC30-CDE", "ETP-20DEC30-CDE", "BIT-26MAR27-CDE", "DOGE-USD", "XRP-USD",
           "BTC-USD", "ETH-USD", "SOL-USD", "AVAX-USD", "LINK-USD")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    n = len(samples)
    if n < 3:
        return float("nan")
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    cov = sum((t - mt) * (r - mr) for t, r in samples)
    return cov / var * 3600 if var else float("nan")


def start_server(tmp: Path, key_file: Path) -> tuple[subprocess.Popen[str], str, str]:
    cli = Path(sys.executable).with_name("perpsbot")
    proc = subprocess.Popen(
        [str(cli), "sim", "serve", "--port", "0", "--plain-port", "0", "--seed", "3", "--trust", str(key_file),
         "--cert-dir", str(tmp / "tls")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"\(plain\):\s+(\S+)\s+(\S+)", line)
        if match:
            return proc, match.group(1), match.group(2)
    proc.kill()
    raise RuntimeError("the simulator server did not start")


async def soak(rest_url: str, ws_url: str, key_file: Path, data_dir: Path, minutes: float, sample: float,
               settle: float, trace: int = 0) -> None:
    config = BotConfig(
        profile="paper", exchange="coinbase", symbols=SYMBOLS, data_dir=data_dir, interval=1.0, bar_seconds=60,
        short_window=2, long_window=5, position_fraction="0.02", coinbase_rest_url=rest_url,
        coinbase_ws_url=ws_url, coinbase_ws_user_url=ws_url, api_key_file=key_file,
    )
    bot = await PerpsBotBuilder(config).build()
    samples: list[tuple[float, float]] = []
    began = time.monotonic()
    settled: list[tracemalloc.Snapshot] = []

    async def sampler() -> None:
        while True:
            now = time.monotonic() - began
            samples.append((now, rss_mb()))
            if trace and not settled and now >= settle:
                settled.append(tracemalloc.take_snapshot())
            await asyncio.sleep(sample)

    await bot.start()
    await bot.run_cycle()
    start_rss = rss_mb()
    print(f"rss_soak: started, {len(SYMBOLS)} symbols streaming; RSS {start_rss:.1f} MB", flush=True)
    task = asyncio.create_task(sampler())
    try:
        await bot.run(duration=minutes * 60)
    finally:
        task.cancel()
        end_rss = rss_mb()
        grown = tracemalloc.take_snapshot().compare_to(settled[0], "lineno")[:trace] if settled else []
        streaming = bot.registry.streaming
        assert streaming is not None
        stats = streaming.summary()
        summary = await bot.shutdown()
    late = [(t, r) for t, r in samples if t >= settle]
    peak = max(r for _, r in samples) if samples else end_rss
    print(f"rss_soak: {minutes:g} min, {bot.cycles} cycles, {stats['stream_messages']:,} stream messages, "
          f"{stats['stream_level_updates']:,} L2 level updates, lag p95 {stats['stream_lag_p95_ms']} ms, "
          f"reconnects {stats['stream_reconnects']}, fallback polls {stats['stream_fallback_polls']}, "
          f"orders {summary['orders_placed']}")
    print(f"rss_soak: RSS start {start_rss:.1f} MB, end {end_rss:.1f} MB, peak {peak:.1f} MB; "
          f"slope after {settle:g} s: {slope_per_hour(late):+.2f} MB/h over {len(late)} samples")
    if samples:
        step = max(1, len(samples) // 12)
        print("rss_soak: samples (s, MB): " + ", ".join(f"{t:.0f}:{r:.1f}" for t, r in samples[::step]))
    if grown:
        print(f"rss_soak: Python allocations, growth from {settle:g} s to the end (tracemalloc, top {trace}):")
        for stat in grown:
            print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  now {stat.size / 1024:8.1f} KiB"
                  f"  {stat.traceback[0].filename}:{stat.traceback[0].lineno}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds left out of the slope")
    parser.add_argument("--trace", type=int, default=0, metavar="N",
                        help="tracemalloc: print the N lines whose allocations grew most after --settle")
    args = parser.parse_args()
    if args.trace < 0:
        parser.error("--trace must be 0 or more")
    if args.trace:
        tracemalloc.start()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="perpsbot-soak-") as tmp_dir:
        tmp = Path(tmp_dir)
        key_file = write_key_file(tmp / "key.json", generate_key("ed25519"))
        server, rest_url, ws_url = start_server(tmp, key_file)
        try:
            asyncio.run(soak(rest_url, ws_url, key_file, tmp / "data", args.minutes, args.sample, args.settle,
                             args.trace))
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
