from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from perpsbot.bot import PerpsBot, PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.sim import SimCore, SimExchange
from tests.characterization.simbot import PERP
from tests.fakes import FakeExchange, perp, spot
from tests.unit.sim.simkit import T0, build_core

PERPS = ("BIP-20DEC30-CDE", "ETP-20DEC30-CDE")


@pytest.fixture
def exchange(clock) -> FakeExchange:
    return FakeExchange(
        clock,
        [*(perp(s) for s in PERPS), spot("SOL-USD")],
        prices={"BIP-20DEC30-CDE": Decimal(100), "ETP-20DEC30-CDE": Decimal(50), "SOL-USD": Decimal(10)},
    )


@pytest.fixture
def make_config(tmp_path: Path):
    def make(**overrides) -> BotConfig:
        values = dict(
            symbols=("BIP-20DEC30-CDE", "ETP-20DEC30-CDE"),
            data_dir=tmp_path / "data",
            interval=1.0,
            bar_seconds=1,
            short_window=2,
            long_window=4,
            mark_staleness_seconds=5,
            # the scripted prices jump by percents a second: keep the volatility breaker out of the way
            vol_window=5,
            vol_warn=10_000,
            vol_reduce_only=20_000,
            vol_kill=30_000,
        )
        values.update(overrides)
        return BotConfig(**values)

    return make


@pytest.fixture
async def make_bot(clock, exchange, make_config):
    bots: list[PerpsBot] = []

    async def make(**overrides) -> PerpsBot:
        bot = await PerpsBotBuilder(make_config(**overrides)).with_clock(clock).with_exchange(exchange).build()
        await bot.start()
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        if not exchange.closed:
            await bot.shutdown()


# ----- the in-process simulator bot of the crash-safety tests (test_recovery, test_never_twice)


@pytest.fixture
def sim_clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def core() -> SimCore:
    return build_core(seed=5)


@pytest.fixture
def config_for(tmp_path: Path):
    def make(**overrides) -> BotConfig:
        values = dict(
            symbols=(PERP,), data_dir=tmp_path / "data", interval=1.0, bar_seconds=1, short_window=2,
            long_window=4, leverage=Decimal(2), reconcile_every_seconds=30.0,
        )
        values.update(overrides)
        return BotConfig(**values)

    return make


@pytest.fixture
async def start_bot(sim_clock, core, config_for):
    bots: list[PerpsBot] = []

    async def start(exchange: SimExchange | None = None, **overrides) -> PerpsBot:
        ex = exchange or SimExchange(core, sim_clock)
        bot = await PerpsBotBuilder(config_for(**overrides)).with_clock(sim_clock).with_exchange(ex).build()
        await bot.start()
        bots.append(bot)
        return bot

    yield start
    for bot in bots:
        if bot.started and not bot._stop.is_set() and not getattr(bot, "_crashed", False):
            await bot.shutdown()
