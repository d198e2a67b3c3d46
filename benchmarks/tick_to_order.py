"""Tick to order: a quote arrives → decision → risk → order request bytes on the socket.

The real bot (``exchange = coinbase``, pointed at the simulator server — its own
process, ``perpsbot sim serve``, plain HTTP on 127.0.0.1, so its ticks never share our
event loop) with a strategy that flips LONG / FLAT on every quote, so each
quote makes exactly one market order. Each sample:

  t0  a level2 frame that moves the best bid is handed to the WebSocket client's
      message path (``handle_market_text``: decode, sequence check, book, mark);
      ``process_symbol`` (strategy) → ``execute_decision`` → sizing, the risk check
      (its slippage estimate on the streamed book), the write-ahead ``orders.db``
      commit, the request (its JWT signed ahead, after the previous order); the
      decision, risk verdict and ``order_submitted`` events are committed after it
  t1  the POST /orders request handed to the socket (``OrderLine.on_sent``).

The exchange's round trip is not in it (the ack, the order lookup and the account
refresh after it run but are not timed). The stream's live connection is replaced by
frames built here, so the server's own ticks cannot interleave. The REST client's
client-side rate limit (30 requests/s, a policy, not work) is lifted for the run.

Wall time is reported, and the CPU time this thread spent in the same span (what a
shared machine's preemption cannot inflate; waiting on the disk is not in it).

Run twice: as shipped (the write-ahead record committed without an fsync; the order's
outcome commit after the request fsyncs it) and, for comparison, with the write-ahead
commit fsync'd before the request goes out (as the bot did before), to show what that
costs here.

    python benchmarks/tick_to_order.py [--orders 300] [--key ed25519|ecdsa]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import statistics
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rss_soak import start_server

from perpsbot.bot import PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.exchange.coinbase.rest import TokenBucket
from perpsbot.exchange.coinbase.ws import CoinbaseWebSocket, StreamNotice
from perpsbot.exchange.sim.keys import generate_key, write_key_file
from perpsbot.strategy.base import Decision, MarketView, Target

SYMBOL = "ETP-20DEC30-CDE"


class Flip:
    """LONG, then FLAT, then LONG ...: one order per quote."""

    name = "flip"
    required_bars = 2

    def __init__(self) -> None:
        self.long = False

    def decide(self, view: MarketView) -> Decision:
        self.long = not self.long
        return Decision(view.symbol, Target.LONG if self.long else Target.FLAT, "bench: flip", view.mark)

    def forget(self, symbol: str) -> None:
        return None


class ReplayWebSocket(CoinbaseWebSocket):
    def start(self) -> Any:
        return None


def stamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def frame(seq: int, kind: str, updates: list[tuple[str, Decimal, Decimal]]) -> str:
    ts = stamp(time.time())
    return json.dumps({"channel": "l2_data", "client_id": "", "timestamp": ts, "sequence_num": seq, "events": [
        {"type": kind, "product_id": SYMBOL, "updates": [
            {"side": side, "event_time": ts, "price_level": str(price), "new_quantity": str(size)}
            for side, price, size in updates]}]}, separators=(",", ":"))


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]


async def run(orders: int, key_file: Path, rest_url: str, fsync_first: bool, tmp: Path) -> dict[str, float]:
    if True:
        config = BotConfig(
            profile="paper", exchange="coinbase", symbols=(SYMBOL,), data_dir=tmp / f"data-{fsync_first}",
            interval=1.0, bar_seconds=60, short_window=2, long_window=3, position_fraction=Decimal("0.01"),
            leverage=Decimal(2), max_orders_per_minute=1_000_000, coinbase_rest_url=rest_url,
            coinbase_ws_url="ws://127.0.0.1:9/ws", coinbase_ws_user_url="ws://127.0.0.1:9/ws", api_key_file=key_file,
            stream_quiet_seconds=60,
        )
        bot = await PerpsBotBuilder(config).with_strategy(Flip()).build()
        reg = bot.registry
        streaming = reg.streaming
        assert streaming is not None
        holder: list[ReplayWebSocket] = []

        def open_stream(**options: Any) -> ReplayWebSocket:
            holder.append(ReplayWebSocket("ws://127.0.0.1:9/", **options))
            return holder[-1]

        streaming._open = open_stream  # frames come from here, not from the server's ticks
        rest = reg.exchange.rest  # type: ignore[attr-defined]
        rest.private_bucket = TokenBucket(1e9, 1e9)
        written: list[int] = []
        written_cpu: list[int] = []

        def on_sent() -> None:  # POST /orders handed to the socket
            written.append(time.perf_counter_ns())
            written_cpu.append(time.thread_time_ns())

        rest.order_line.on_sent = on_sent
        commit_ns: list[int] = []
        write_ahead = reg.orders.upsert if fsync_first else reg.orders.write_ahead  # upsert: an fsync'd commit

        def timed_write_ahead(order: Any) -> None:
            started = time.perf_counter_ns()
            write_ahead(order)
            commit_ns.append(time.perf_counter_ns() - started)

        reg.orders.write_ahead = timed_write_ahead  # type: ignore[method-assign]
        await bot.start()
        ws = holder[0]
        streaming._on_notice(StreamNotice("connected", "", datetime.now(UTC)))
        book = await reg.exchange.book(SYMBOL, 10)  # REST: the stream does not serve it yet
        seq = 0
        ws.handle_market_text(frame(seq, "snapshot", [("bid", lv.price, lv.size) for lv in book.bids]
                                    + [("offer", lv.price, lv.size) for lv in book.asks]))
        bid = book.bids[0].price
        tick = Decimal("0.01")
        samples: list[float] = []
        cpu_samples: list[float] = []
        for n in range(orders + 10):
            seq += 1
            price = bid + tick * (1 + n % 3)  # a new best bid under the ask: the mid moves
            text = frame(seq, "update", [("bid", price, Decimal("1.5")), ("bid", bid + tick * (1 + (n - 1) % 3),
                                                                       Decimal(0))])
            before = len(written)
            t0 = time.perf_counter_ns()
            c0 = time.thread_time_ns()
            ws.handle_market_text(text)
            decision = bot.process_symbol(SYMBOL)
            results = await bot.execute_decision(decision)
            if len(written) > before and results and results[0].outcome == "placed" and n >= 10:
                samples.append((written[before] - t0) / 1000)
                cpu_samples.append((written_cpu[before] - c0) / 1000)
            streaming._last_message = time.monotonic()
        placed = reg.execution.placed
        await bot.shutdown()
    commit_us = [c / 1000 for c in commit_ns[10:]]
    return {
        "orders": placed, "samples": len(samples),
        "p50_us": statistics.median(samples), "p99_us": pct(samples, 99), "max_us": max(samples),
        "cpu_p50_us": statistics.median(cpu_samples), "cpu_p99_us": pct(cpu_samples, 99),
        "commit_p50_us": statistics.median(commit_us), "commit_p99_us": pct(commit_us, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--key", choices=("ed25519", "ecdsa"), default="ed25519")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="perpsbot-t2o-") as tmp_dir:
        tmp = Path(tmp_dir)
        key_file = write_key_file(tmp / "key.json", generate_key(args.key))
        server, rest_url, _ = start_server(tmp, key_file)
        results = {}
        try:
            for fsync_first in (False, True):
                results[fsync_first] = asyncio.run(run(args.orders, key_file, rest_url, fsync_first, tmp))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(10)
        for fsync_first, r in results.items():
            label = "write-ahead fsync'd before the request (for comparison)" if fsync_first else \
                "write-ahead committed, fsync'd after the request (as shipped)"
            print(f"tick_to_order {label}, {args.key} JWT: {r['samples']} orders: quote -> request bytes on the "
                  f"socket p50 {r['p50_us']:.0f} us p99 {r['p99_us']:.0f} us max {r['max_us']:.0f} us "
                  f"(our CPU time in it: p50 {r['cpu_p50_us']:.0f} us p99 {r['cpu_p99_us']:.0f} us); "
                  f"of which the write-ahead commit p50 {r['commit_p50_us']:.0f} us p99 {r['commit_p99_us']:.0f} us")


if __name__ == "__main__":
    main()
