"""The whole bot with ``exchange = coinbase``, built by ``PerpsBotBuilder`` from config
alone, against the simulator server over TLS."""

from __future__ import annotations

import asyncio
import os
from decimal import Decimal
from pathlib import Path

import pytest

from perpsbot.bot import BotError, PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.exchange.coinbase import CoinbaseExchange
from perpsbot.exchange.sim.keys import generate_key, write_key_file
from perpsbot.exchange.sim.server import SimServer
from perpsbot.strategy.base import Decision, MarketView, Target


class GoLong:
    """Asks for a long position on every cycle (the bot opens it once)."""

    name = "go-long"
    required_bars = 2

    def decide(self, view: MarketView) -> Decision:
        return Decision(view.symbol, Target.LONG, "test: go long", view.mark)

    def forget(self, symbol: str) -> None:
        return None


def coinbase_config(server: SimServer, tmp_path: Path, **extra) -> BotConfig:
    values = dict(
        profile="paper", exchange="coinbase", symbols=("ETP-20DEC30-CDE",), data_dir=tmp_path / "data",
        interval=0.05, bar_seconds=60, short_window=2, long_window=3, position_fraction=Decimal("0.01"),
        leverage=Decimal(2), mark_staleness_seconds=30, coinbase_rest_url=server.rest_url,
        coinbase_ws_url=server.ws_url, coinbase_ws_user_url=server.ws_url, ca_bundle=server.cert_path,
    )
    values.update(extra)
    return BotConfig(**values)


async def test_the_bot_trades_on_coinbase_pointed_at_the_simulator_server(tmp_path: Path):
    key = generate_key("ecdsa")
    key_file = write_key_file(tmp_path / "cdp_api_key.json", key)
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    async with SimServer(seed=5, trust=[key]) as server:
        config = coinbase_config(server, tmp_path, api_key_file=key_file)
        bot = await PerpsBotBuilder(config).with_strategy(GoLong()).build()
        assert isinstance(bot.registry.exchange, CoinbaseExchange)
        try:
            await bot.start()
            for _ in range(3):
                report = await bot.run_cycle()
                assert not report.errors, report.errors
            for _ in range(100):  # streamed marks, for the run metrics' lag figures
                if bot.registry.streaming.lag.total:
                    break
                await asyncio.sleep(0.02)
        finally:
            summary = await bot.shutdown()
        assert summary["orders_placed"] == 1 and summary["orders_failed"] == 0
        assert summary["order_failure_rate_pct"] == 0.0 and summary["order_latency_p99_ms"] > 0
        assert 0 < summary["stream_heartbeat_lag_p95_ms"] <= summary["ws_message_lag_p99_ms"]
        assert summary["fills"] >= 1
        assert summary["positions"]["ETP-20DEC30-CDE"] > 0
        placed = [o for o in server.venue.orders() if o.client_order_id.startswith("pb-")]
        assert len(placed) == 1 and placed[0].spec.symbol == "ETP-20DEC30-CDE"


async def test_the_bot_refuses_to_start_when_the_server_refuses_the_key(tmp_path: Path):
    trusted, stranger = generate_key("ecdsa"), generate_key("ed25519")
    async with SimServer(seed=5, trust=[trusted]) as server:
        config = coinbase_config(server, tmp_path, api_key_name=stranger.name,
                                 api_private_key=stranger.private_key_text)
        with pytest.raises(BotError, match=r"cannot list products on coinbase: AuthenticationError: .*HTTP 401"):
            await PerpsBotBuilder(config).build()
    assert not (tmp_path / "data").exists()
