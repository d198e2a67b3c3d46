"""Market-data ingest: decode + book + mark, ours against the official SDK's message path.

1. Records a stream from the simulator server's WebSocket: 10 symbols subscribed to
   level2, ticker, market_trades and heartbeats; the server's clock is stepped 0.1 s at a
   time (its tick), so a thousand ticks (100 s of market) take seconds. The raw frames
   are saved, one per line, to ``benchmarks/data/`` (reused on later runs).
2. Replays the frames through our real path — ``CoinbaseWebSocket.handle_market_text``
   (msgspec decode, sequence check, snapshot filtering) → ``StreamingService.on_market``
   (L2 book, mark into ``MarketDataService``'s window) — on one core, and reports
   L2 level updates per second and the p50 / p99 latency of each message to the mark
   window.
3. Replays the same frames through coinbase-advanced-py's message handling: the
   ``WSClient`` hands ``on_message`` the raw frame, and the documented way to read it
   is ``WebsocketResponse(json.loads(frame))`` (its typed response objects). Measured
   twice: decode only (the SDK does less work than we do), and decode plus the same
   book and mark work as ours, fed from the SDK's objects (like for like).

    python benchmarks/stream_ingest.py [--ticks 1000] [--passes 5] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from perpsbot.domain.clock import ManualClock, WallClock
from perpsbot.exchange.coinbase.ws import CoinbaseWebSocket
from perpsbot.exchange.sim.server import SimServer
from perpsbot.exchange.stream import BOOK, level
from perpsbot.market.data import MarketDataService, WindowSpec
from perpsbot.market.streaming import StreamingService
from perpsbot.store import EventStore

SYMBOLS = ("BIP-20DEC30-CDE", "ETP-20DEC30-CDE", "BIT-26MAR27-CDE", "DOGE-USD", "XRP-USD",
           "BTC-USD", "ETH-USD", "SOL-USD", "AVAX-USD", "LINK-USD")
DATA = Path(__file__).parent / "data"


# ----- recording -------------------------------------------------------------------------


async def record(path: Path, ticks: int, seed: int = 11) -> None:
    clock = ManualClock(datetime(2026, 11, 26, 9, 0, tzinfo=UTC))
    frames: list[str] = []
    async with SimServer(seed=seed, clock=clock, tick_interval=3600) as server:
        async with aiohttp.ClientSession() as session, session.ws_connect(server.plain_ws_url) as ws:
            for channel in ("level2", "ticker", "market_trades", "heartbeats"):
                products = list(SYMBOLS) if channel != "heartbeats" else []
                await ws.send_str(json.dumps({"type": "subscribe", "channel": channel, "product_ids": products}))

            async def drain() -> None:
                while True:
                    try:
                        msg = await ws.receive(timeout=0.05)
                    except TimeoutError:
                        return
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        return
                    frames.append(msg.data)

            await drain()
            for n in range(ticks):
                clock.advance(0.1)
                server.step()
                if n % 20 == 19:
                    await drain()
            await drain()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(frames) + "\n")


def load(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]


def describe(frames: list[str]) -> dict[str, Any]:
    channels: dict[str, int] = {}
    levels = 0
    for frame in frames:
        data = json.loads(frame)
        channels[data["channel"]] = channels.get(data["channel"], 0) + 1
        if data["channel"] == "l2_data":
            levels += sum(len(e["updates"]) for e in data["events"])
    return {"frames": len(frames), "channels": channels, "l2_levels": levels,
            "bytes": sum(len(f) for f in frames)}


# ----- the paths -------------------------------------------------------------------------


class ReplayWebSocket(CoinbaseWebSocket):
    """Our WebSocket client with no connection: frames are fed to it by hand."""

    def start(self) -> Any:
        return None


def our_path(tmp: Path) -> tuple[Callable[[str], Any], StreamingService]:
    clock = WallClock()
    events = EventStore(tmp / f"events-{time.perf_counter_ns()}.db")
    market_data = MarketDataService(None, clock, events, SYMBOLS, WindowSpec(2000, 60, 5))  # type: ignore[arg-type]
    holder: list[ReplayWebSocket] = []

    def open_stream(**options: Any) -> ReplayWebSocket:
        ws = ReplayWebSocket("ws://127.0.0.1:9/", **options)
        holder.append(ws)
        return ws

    streaming = StreamingService(open_stream, market_data, events, clock, SYMBOLS)
    asyncio.get_event_loop().run_until_complete(streaming.start())
    ws = holder[0]
    streaming.connected = True

    def on_frame(frame: str) -> Any:
        # What the connection's reader does: the fast path, else the generic one (a coroutine).
        return ws.handle_market_text(frame) or ws._handle(frame)

    return on_frame, streaming


def sdk_decode_path() -> Callable[[str], Any]:
    from coinbase.websocket import WebsocketResponse

    def on_message(frame: str) -> Any:
        return WebsocketResponse(json.loads(frame))

    return on_message


def sdk_book_path(tmp: Path) -> Callable[[str], Any]:
    """The SDK's objects driving the same book and mark code as ours."""
    from coinbase.websocket import WebsocketResponse

    _, streaming = our_path(tmp)

    class Msg:  # what StreamingService reads of a message
        __slots__ = ("epoch", "events", "kind")

    from perpsbot.exchange.coinbase.wire import parse_epoch

    def on_message(frame: str) -> Any:
        response = WebsocketResponse(json.loads(frame))
        if response.channel != "l2_data":
            return response
        epoch = parse_epoch(response.timestamp)
        msg = Msg()
        msg.kind, msg.epoch, msg.events = BOOK, epoch, []
        for event in response.events:
            levels = [level(u.side, float(u.price_level), float(u.new_quantity)) for u in event.updates]
            streaming._on_book(event.product_id, event.type, levels, msg, time.monotonic())  # type: ignore[arg-type]
        return response

    return on_message


async def _run_rate(handler: Callable[[str], Any], frames: list[str]) -> float:
    """CPU seconds of this thread for one pass: time on one core, whatever else the
    machine is doing (a shared machine preempts us; wall time would count that)."""
    started = time.thread_time()
    for frame in frames:
        result = handler(frame)
        if asyncio.iscoroutine(result):
            await result
    return time.thread_time() - started


async def _run_latency(handler: Callable[[str], Any], frames: list[str]) -> list[float]:
    """Per-frame seconds for the level2 frames (the ones that move a mark)."""
    out = []
    clock = time.perf_counter_ns
    for frame in frames:
        t0 = clock()
        result = handler(frame)
        if asyncio.iscoroutine(result):
            await result
        t1 = clock()
        if frame.startswith('{"channel":"l2_data"'):
            out.append((t1 - t0) / 1e9)
    return out


def run_rate(handler: Callable[[str], Any], frames: list[str]) -> float:
    return asyncio.get_event_loop().run_until_complete(_run_rate(handler, frames))


def run_latency(handler: Callable[[str], Any], frames: list[str]) -> list[float]:
    return asyncio.get_event_loop().run_until_complete(_run_latency(handler, frames))


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1000, help="simulator ticks to record (0.1 s each)")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="record again even if the file exists")
    args = parser.parse_args()
    path = DATA / f"sim_stream_{len(SYMBOLS)}sym_{args.ticks}ticks.jsonl"
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if args.record or not path.exists():
        loop.run_until_complete(record(path, args.ticks))
    frames = load(path)
    info = describe(frames)
    print(f"stream_ingest: {path.name}: {info['frames']} frames ({info['bytes'] / 1e6:.1f} MB), "
          f"{info['l2_levels']} L2 level updates; frames by channel {info['channels']}")
    l2_frames = info["channels"].get("l2_data", 0)

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        results: dict[str, dict[str, float]] = {}
        cases = {
            "ours (msgspec decode + book + mark)": lambda: our_path(tmp)[0],
            "sdk decode only (WebsocketResponse)": sdk_decode_path,
            "sdk decode + same book + mark": lambda: sdk_book_path(tmp),
        }
        rates: dict[str, list[float]] = {name: [] for name in cases}
        latencies: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.passes):  # interleaved, so every case sees the same machine
            for name, make in cases.items():
                gc.collect()
                rates[name].append(run_rate(make(), frames))
                gc.collect()
                latencies[name].extend(run_latency(make(), frames))
        for name in cases:
            best = min(rates[name])
            lat = latencies[name]
            results[name] = {
                "seconds": best,
                "updates_per_s": info["l2_levels"] / best,
                "frames_per_s": info["frames"] / best,
                "p50_us": statistics.median(lat) * 1e6,
                "p99_us": pct(lat, 99) * 1e6,
                "max_us": max(lat) * 1e6,
            }
            r = results[name]
            print(f"stream_ingest {name}: {r['updates_per_s']:,.0f} L2 updates/s "
                  f"({r['frames_per_s']:,.0f} frames/s; CPU time, best of {args.passes}); per level2 frame to the mark "
                  f"window p50 {r['p50_us']:.1f} us p99 {r['p99_us']:.1f} us max {r['max_us']:.0f} us "
                  f"({l2_frames} frames x {args.passes})")
        ours = results["ours (msgspec decode + book + mark)"]["updates_per_s"]
        for name in ("sdk decode only (WebsocketResponse)", "sdk decode + same book + mark"):
            print(f"stream_ingest ratio: ours / {name} = {ours / results[name]['updates_per_s']:.2f}x")
        # Sanity: our replay really built the books and marks.
        handler, streaming = our_path(tmp)
        run_rate(handler, frames)
        synced = sum(1 for b in streaming.books.values() if b.synced)
        print(f"stream_ingest check: {synced}/{len(SYMBOLS)} books synced, {streaming.market_data.streamed_total} "
              f"marks applied, {streaming.resyncs} resyncs, gaps {streaming.stream.gaps}")  # type: ignore[union-attr]
    loop.close()


if __name__ == "__main__":
    main()
