"""A bot on the in-process simulator with a position, an open order, equity snapshots and
alerts, and the dashboard served for it on 127.0.0.1 on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from perpsbot.bot import PerpsBot, PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.dashboard import add_dashboard
from perpsbot.domain import Side
from perpsbot.domain.clock import ManualClock
from tests.conftest import T0

D = Decimal
TOKEN = "test-dashboard-token-0123456789abcdef"
BTC, ETH = "BIP-20DEC30-CDE", "ETP-20DEC30-CDE"


@dataclass
class Served:
    bot: PerpsBot
    clock: ManualClock
    url: str  # http://127.0.0.1:PORT
    health: dict[str, Any] = field(default_factory=lambda: {"status": "ok", "reasons": []})
    limit_order_id: str = ""


async def trading_bot(data_dir: Path, clock: ManualClock) -> tuple[PerpsBot, str]:
    """Started, cycled, long 25 contracts of BIP-20DEC30-CDE (0.25 BTC) at 2x, a resting
    ETP-20DEC30-CDE limit buy of 15 contracts (1.5 ETH)
    well below the market, snapshots over 40 s and three kinds of alert events. Returns
    the bot and the limit order's client id."""
    config = BotConfig(
        symbols=(BTC, ETH), data_dir=data_dir, bar_seconds=5, short_window=5, long_window=200,
        leverage=D(2), order_type="limit", time_in_force="GTC", vol_warn=10_000, vol_reduce_only=20_000,
        vol_kill=30_000,
    )
    bot = await PerpsBotBuilder(config).with_clock(clock).build()
    await bot.start()
    await bot.run_cycle()
    reg = bot.registry
    ex = reg.execution
    btc, eth = reg.products[BTC], reg.products[ETH]
    bought = await ex._place(ex.new_order(btc, Side.BUY, D(25), reg.market_data.mark(BTC), closing=False,
                                          market=True), "test", 0.0)
    assert bought.order is not None and bought.order.filled_size == D(25)
    below = reg.market_data.mark(ETH) * D("0.8")
    resting = await ex._place(ex.new_order(eth, Side.BUY, D(15), below, closing=False), "test", 0.0)
    assert resting.order is not None and not resting.order.status.is_terminal
    for _ in range(4):
        clock.advance(10)
        await bot.run_cycle()
        bot.record_snapshot()
    alerts = reg.alerts  # as the bot raises them: fire once, clear once, one-offs only listed
    alerts.fire("mark_stale", "P1", "no mark update for 75 s on SOL-USD", "SOL-USD")
    alerts.fire("reconnects", "P2", "6 reconnects in 5 min")
    alerts.clear("reconnects")
    alerts.notify("fill_out_of_state", "P2", "a fill for an order already final")
    alerts.fire("reconciliation_mismatch", "P2", "positions disagree", action="reduce-only",
                mismatches=["BIP-20DEC30-CDE: exchange 30 vs ours 25"])
    return bot, resting.order.client_order_id


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    clock = ManualClock(T0)
    bot, limit_id = await trading_bot(tmp_path / "data", clock)
    holder = Served(bot, clock, "", limit_order_id=limit_id)
    app = web.Application()
    add_dashboard(app, bot, TOKEN, lambda: holder.health, refresh_seconds=0.3)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    holder.url = f"http://{host}:{port}"
    try:
        yield holder
    finally:
        await runner.cleanup()
        await bot.shutdown()
