"""Funding the venue reports settled reaches the PnL once per settlement, however many
account snapshots list it, and stays in that run's PnL after the run."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

from perpsbot.bot import PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.domain import FundingSettlement
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.sim import SimConfig, SimCore, SimExchange, default_products
from tests.unit.sim.simkit import T0

D = Decimal
BIP = "BIP-20DEC30-CDE"


async def build(tmp_path, clock):
    core = SimCore([p for p in default_products() if p.symbol == BIP], SimConfig(seed=3))
    config = BotConfig(symbols=(BIP,), data_dir=tmp_path, bar_seconds=1, short_window=2, long_window=4)
    bot = await PerpsBotBuilder(config).with_clock(clock).with_exchange(SimExchange(core, clock)).build()
    await bot.start()
    return bot


async def test_each_settlement_is_recorded_once_and_stays_in_its_runs_pnl(tmp_path):
    clock = ManualClock(T0)
    bot = await build(tmp_path, clock)
    ex = bot.registry.execution
    noon, midnight = T0 + timedelta(hours=12), T0 + timedelta(hours=24)
    first = FundingSettlement(BIP, noon, D("-0.54"))
    try:
        run = bot.registry.events.run_id
        for listed in ((first,), (first,), (first, FundingSettlement(BIP, midnight, D("0.27")))):
            ex.account = dataclasses.replace(ex.account, funding_settled=listed)
        assert [e.data["amount"] for e in bot.registry.events.query(kind="funding_settled")] == ["-0.54", "0.27"]
        assert ex.pnl().funding == D("-0.27")
        ex.account = dataclasses.replace(ex.account, funding_settled=())  # older than a day: no longer listed
        assert ex.pnl().funding == D("-0.27")
    finally:
        await bot.shutdown()
    later = await build(tmp_path, clock)
    try:
        assert later.registry.execution.pnl().funding == 0  # a new run starts from none
        assert later.registry.execution.pnl(run_id=run).funding == D("-0.27")
    finally:
        await later.shutdown()
