from __future__ import annotations

import dataclasses

import pytest

from perpsbot.bot import BotError, PerpsBot, PerpsBotBuilder
from perpsbot.execution.coordinator import ExecutionCoordinator
from perpsbot.market.data import MarketDataService
from perpsbot.risk.manager import RiskManager
from perpsbot.strategy.orchestrator import StrategyOrchestrator


async def test_builder_is_the_only_construction_path(make_bot):
    bot = await make_bot()
    with pytest.raises(TypeError, match="PerpsBotBuilder"):
        PerpsBot(bot.registry)


async def test_builder_wires_every_service_to_the_same_stores_and_clock(make_bot, clock, exchange):
    bot = await make_bot()
    reg = bot.registry
    assert isinstance(reg.market_data, MarketDataService)
    assert isinstance(reg.strategy, StrategyOrchestrator)
    assert isinstance(reg.risk, RiskManager)
    assert isinstance(reg.execution, ExecutionCoordinator)
    assert reg.clock is clock and reg.exchange is exchange
    assert reg.execution.orders is reg.orders and reg.market_data.events is reg.events
    assert reg.strategy.market_data is reg.market_data
    assert reg.market_data.symbols == reg.config.symbols


async def test_registry_is_frozen_and_with_updates_returns_a_new_one(make_bot):
    bot = await make_bot()
    reg = bot.registry
    with pytest.raises(dataclasses.FrozenInstanceError):
        reg.clock = None  # type: ignore[misc]
    sentinel = object()
    updated = reg.with_updates(risk=sentinel)
    assert updated.risk is sentinel and reg.risk is not sentinel
    assert updated.market_data is reg.market_data


async def test_a_custom_registry_is_respected(make_bot, make_config):
    bot = await make_bot()
    custom = bot.registry.with_updates(config=make_config(interval=7.0))
    other = await PerpsBotBuilder(make_config()).with_registry(custom).build()
    assert other.registry is custom
    assert other.config.interval == 7.0


async def test_unknown_symbol_fails_the_build_with_the_known_ones(clock, exchange, make_config):
    with pytest.raises(BotError, match="unknown product DOGE-USD on fake; available: BIP-20DEC30-CDE"):
        await (
            PerpsBotBuilder(make_config(symbols=("DOGE-USD",))).with_clock(clock).with_exchange(exchange).build()
        )
    assert exchange.closed
