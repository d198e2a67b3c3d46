"""The whole bot on a US perpetual-style future (CFM, ``BIP-20DEC30-CDE``) with
``exchange = coinbase``, against the simulator server: sized in whole contracts of
0.01 BTC, its position and PnL counted in contracts x contract size."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from perpsbot.bot import PerpsBotBuilder
from perpsbot.exchange.sim.engine import SimConfig
from perpsbot.exchange.sim.keys import generate_key, write_key_file
from perpsbot.exchange.sim.server import SimServer

from .test_bot_on_coinbase import GoLong, coinbase_config

BIP = "BIP-20DEC30-CDE"
CONTRACT = Decimal("0.01")


async def test_the_bot_goes_long_a_cfm_perpetual_style_future_in_whole_contracts(tmp_path: Path):
    key = generate_key("ecdsa")
    key_file = write_key_file(tmp_path / "cdp_api_key.json", key)
    async with SimServer(seed=5, trust=[key], sim_config=SimConfig(seed=5)) as server:
        config = coinbase_config(server, tmp_path, api_key_file=key_file, symbols=(BIP,))
        bot = await PerpsBotBuilder(config).with_strategy(GoLong()).build()
        product = bot.registry.products[BIP]
        assert product.is_perpetual and product.contract_size == CONTRACT and product.base_increment == 1
        try:
            await bot.start()
            for _ in range(3):
                report = await bot.run_cycle()
                assert not report.errors, report.errors
            account = bot.registry.execution.account
            pnl = bot.registry.execution.pnl()
        finally:
            summary = await bot.shutdown()
        placed = [o for o in server.venue.orders() if o.client_order_id.startswith("pb-")]
        assert len(placed) == 1 and placed[0].spec.symbol == BIP
        # 1 % of 100 000 USD at 2x is 2 000 USD: 2 whole contracts of 0.01 BTC at ~90 000
        contracts = placed[0].spec.size
        assert contracts == 2
        held = account.positions[BIP]
        assert held.size == contracts and held.contract_size == CONTRACT
        venue = server.core.account().positions[BIP]
        assert (held.size, held.entry_price) == (venue.size, venue.entry_price)
        marked = pnl.positions[BIP]
        assert marked.mark is not None and marked.unrealized == (marked.mark - held.entry_price) * contracts * CONTRACT
        assert summary["positions"][BIP] == contracts and summary["orders_failed"] == 0


async def test_funding_on_a_cfm_position_reaches_the_bots_pnl(tmp_path: Path):
    """Funding settles every second here: the adapter reads each settlement off the product's
    listing (its funding_time moves on, its funding_rate is the rate settled) and the bot's PnL
    carries it; it matches what the venue charged, but for the mark moving between the
    settlement and the adapter's next look."""
    key = generate_key("ecdsa")
    key_file = write_key_file(tmp_path / "cdp_api_key.json", key)
    async with SimServer(seed=5, trust=[key], sim_config=SimConfig(seed=5, funding_interval_seconds=1.0)) as server:
        config = coinbase_config(server, tmp_path, api_key_file=key_file, symbols=(BIP,))
        bot = await PerpsBotBuilder(config).with_strategy(GoLong()).build()
        exchange = bot.registry.exchange
        try:
            await bot.start()
            first_look = None
            for _ in range(200):
                report = await bot.run_cycle()
                assert not report.errors, report.errors
                first_look = first_look or (exchange._accruals[BIP].seen if BIP in exchange._accruals else None)
                if first_look is not None and exchange._accruals[BIP].seen >= first_look + timedelta(seconds=3):
                    break
                await asyncio.sleep(0.05)
            last_look = exchange._accruals[BIP].seen
            pnl = bot.registry.execution.pnl()
        finally:
            await bot.shutdown()
        settled = [e for e in server.core.funding_log if e.symbol == BIP and first_look <= e.ts < last_look]
        assert len(settled) >= 3 and all(e.position_size == 2 for e in settled)
        charged = sum((e.payment for e in settled), Decimal(0))
        recorded = pnl.positions[BIP].funding
        assert recorded != 0 and pnl.funding == recorded
        assert abs(recorded - charged) <= sum((abs(e.payment) for e in settled), Decimal(0)) * Decimal("0.002")
