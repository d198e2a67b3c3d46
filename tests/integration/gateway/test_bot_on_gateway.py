"""The whole bot with ``exchange = gateway`` on a gateway perpetual, against the simulator
server's JSON-RPC front: entry, exit, funding in the PnL, reconciliation matching the core."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from perpsbot.bot import PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.exchange.sim.engine import SimConfig
from perpsbot.exchange.sim.keys import generate_key, write_key_file
from perpsbot.exchange.sim.server import SimServer
from perpsbot.strategy.base import Decision, MarketView, Target

BTC = "BTC_USDC-PERPETUAL"


class LongThenFlat:
    """Long for the first cycles, flat after."""

    name = "long-then-flat"
    required_bars = 2

    def __init__(self, long_cycles: int) -> None:
        self.left = long_cycles

    def decide(self, view: MarketView) -> Decision:
        self.left -= 1
        target = Target.LONG if self.left >= 0 else Target.FLAT
        return Decision(view.symbol, target, "test", view.mark)

    def forget(self, symbol: str) -> None:
        return None


async def test_the_bot_enters_and_exits_a_gateway_perpetual(tmp_path: Path) -> None:
    key = generate_key("ecdsa")
    key_file = write_key_file(tmp_path / "cdp_api_key.json", key)
    async with SimServer(seed=5, trust=[key], sim_config=SimConfig(seed=5, funding_interval_seconds=1.0)) as server:
        base = f"127.0.0.1:{server.plain_port}"
        config = BotConfig(
            profile="paper", exchange="gateway", symbols=(BTC,), data_dir=tmp_path / "data", interval=0.05,
            bar_seconds=60, short_window=2, long_window=3, position_fraction=Decimal("0.01"), leverage=Decimal(2),
            mark_staleness_seconds=30, api_key_file=key_file, gateway_http_url=f"http://{base}/api/v2",
            gateway_ws_url=f"ws://{base}/ws/api/v2", gateway_stream_url=f"ws://{base}/ws/api/v2",
        )
        bot = await PerpsBotBuilder(config).with_strategy(LongThenFlat(40)).build()
        assert bot.registry.exchange.name == "gateway"
        try:
            await bot.start()
            held_funding = Decimal(0)
            for _ in range(80):
                report = await bot.run_cycle()
                assert not report.errors, report.errors
                position = bot.registry.execution.account.positions.get(BTC)
                if position is not None and position.funding:
                    held_funding = position.funding
                await asyncio.sleep(0.03)
            await bot.registry.execution.reconciler.reconcile()
            pnl = bot.registry.execution.pnl()
            last = bot.registry.events.query(kind="reconciliation", limit=1)[0]
        finally:
            summary = await bot.shutdown()
        ours = [o for o in server.gateway.orders.values() if o.label.startswith("pb-")]
        assert len(ours) == 2 and [o.direction.value for o in ours] == ["BUY", "SELL"] and ours[1].reduce_only
        assert server.core.account().positions[BTC].size == 0
        assert held_funding != 0  # the venue's counted funding reached the position (and so the PnL)
        assert pnl.positions[BTC].fees == sum(f.fee for f in server.core.fills if f.symbol == BTC)
        assert summary["orders_failed"] == 0
        assert last.data["matched"] is True
