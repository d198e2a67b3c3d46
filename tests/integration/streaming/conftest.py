"""The bot streaming from the simulator server (plain HTTP / WebSocket on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from perpsbot.bot import PerpsBot, PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.coinbase.rest import RetryPolicy
from perpsbot.exchange.sim.keys import ApiKey, generate_key, write_key_file
from perpsbot.exchange.sim.server import SimServer
from perpsbot.market.book import L2Book
from perpsbot.strategy.base import Decision, MarketView, Target

FAST_RECONNECT = RetryPolicy(attempts=1_000_000, base_delay=0.05, max_delay=0.2)


class Hold:
    """Never trades: these tests are about market data."""

    name = "hold"
    required_bars = 2

    def decide(self, view: MarketView) -> Decision:
        return Decision(view.symbol, Target.HOLD, "test: hold", view.mark)

    def forget(self, symbol: str) -> None:
        return None


@pytest.fixture(scope="session")
def key() -> ApiKey:
    return generate_key("ed25519")


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stream-tls")


@pytest.fixture
async def server(key: ApiKey, cert_dir: Path) -> AsyncIterator[SimServer]:
    """Ticks on the wall clock every 50 ms."""
    async with SimServer(seed=21, trust=[key], cert_dir=cert_dir, tick_interval=0.05) as srv:
        yield srv


@pytest.fixture
async def stepped(key: ApiKey, cert_dir: Path) -> AsyncIterator[tuple[SimServer, ManualClock]]:
    """Publishes only when the test steps it (its clock starts at the wall clock's now)."""
    clock = ManualClock(datetime.now(UTC))
    async with SimServer(seed=21, trust=[key], cert_dir=cert_dir, clock=clock, tick_interval=3600) as srv:
        yield srv, clock


def config(server: SimServer, tmp_path: Path, key: ApiKey, **extra: Any) -> BotConfig:
    key_file = tmp_path / "key.json"
    if not key_file.exists():
        write_key_file(key_file, key)
    values: dict[str, Any] = dict(
        profile="paper", exchange="coinbase", symbols=("BIP-20DEC30-CDE", "ETH-USD"), data_dir=tmp_path / "data",
        interval=0.05, bar_seconds=60, short_window=2, long_window=3, position_fraction=Decimal("0.01"),
        coinbase_rest_url=server.plain_rest_url, coinbase_ws_url=server.plain_ws_url,
        coinbase_ws_user_url=server.plain_ws_url, api_key_file=key_file, stream_quiet_seconds=1.0,
    )
    values.update(extra)
    return BotConfig(**values)


async def start_bot(server: SimServer, tmp_path: Path, key: ApiKey, *, reconnect: RetryPolicy = FAST_RECONNECT,
                    **extra: Any) -> PerpsBot:
    bot = await PerpsBotBuilder(config(server, tmp_path, key, **extra)).with_strategy(Hold()).build()
    assert bot.registry.streaming is not None
    bot.registry.streaming.stream_options["reconnect"] = reconnect
    await bot.start()
    return bot


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def book_equals_server(book: L2Book | None, server: SimServer, symbol: str) -> bool:
    """The client's book holds exactly the levels the server last published."""
    if book is None or not book.synced:
        return False
    bids, asks = server._books[symbol]  # what the server's level2 channel last published
    return (book.bids == {float(p): float(q) for p, q in bids.items()}
            and book.asks == {float(p): float(q) for p, q in asks.items()})


def step(server: SimServer, clock: ManualClock, seconds: float = 0.1) -> None:
    clock.advance(seconds)
    server.step()
