"""A tiny local stand-in for Coinbase's public candles endpoint (tests only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from perpsbot.backtest.download import MAX_CANDLES_PER_REQUEST

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
G = 60


def candle(start: int) -> dict[str, str]:
    i = (start - T0) // G
    return {"start": str(start), "low": f"{99 + i}.5", "high": f"{101 + i}", "open": f"{100 + i}",
            "close": f"{100 + i}.25", "volume": "1.5"}


class CandleServer:
    """Coinbase's public candles endpoint over ``buckets`` (a bucket without a candle: no trades)."""

    def __init__(self, buckets: list[int]) -> None:
        self.buckets = set(buckets)
        self.requests: list[dict[str, str]] = []
        self.fail_after: int | None = None  # answer 500 from this request on
        self.too_many = 0  # answer 429 this many times first
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        if self.too_many:
            self.too_many -= 1
            return web.json_response({"error": "RATE_LIMIT_EXCEEDED", "message": "Too many requests"}, status=429,
                                     headers={"Retry-After": "0"})
        if self.fail_after is not None and len(self.requests) > self.fail_after:
            return web.json_response({"error": "INTERNAL", "message": "boom"}, status=500)
        if request.match_info["product_id"] != "BTC-USD":
            return web.json_response({"error": "NOT_FOUND", "message": "product not found"}, status=404)
        start, end = int(request.query["start"]), int(request.query["end"])
        granularity = {"ONE_MINUTE": 60, "FIVE_MINUTE": 300}[request.query["granularity"]]
        if (end - start) // granularity > MAX_CANDLES_PER_REQUEST:
            return web.json_response({"error": "INVALID_ARGUMENT", "message":
                                      "number of candles requested should be less than or equal to 350"}, status=400)
        found = sorted((b for b in self.buckets if start <= b <= end), reverse=True)  # newest first
        return web.json_response({"candles": [candle(b) for b in found]})


@asynccontextmanager
async def serving(count: int = 1000) -> AsyncIterator[CandleServer]:
    """Candles for the first ``count`` minutes of 2026 on 127.0.0.1 (any free port)."""
    srv = CandleServer([T0 + G * i for i in range(count)])
    app = web.Application()
    app.router.add_get("/api/v3/brokerage/market/products/{product_id}/candles", srv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    srv.url = f"http://127.0.0.1:{port}"
    try:
        yield srv
    finally:
        await runner.cleanup()
