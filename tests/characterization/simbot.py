"""The in-process simulator bot the crash-safety tests share: the product, a simulator
that loses fills, a crash that leaves the stores as a killed process does, and small
helpers to place intents and read events. The fixtures that start such bots are in
conftest.py."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from perpsbot.bot import PerpsBot
from perpsbot.domain import Fill, Side, TimeInForce
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.sim import SimCore, SimExchange
from tests.unit.sim.simkit import request

D = Decimal
PERP = "TST-PERP"


class LossyExchange(SimExchange):
    """Loses the fills whose trade ids are in ``hidden`` from ``fills_since``."""

    def __init__(self, core: SimCore, clock: ManualClock) -> None:
        super().__init__(core, clock)
        self.hidden: set[str] = set()

    async def fills_since(self, cursor: int) -> tuple[list[Fill], int]:
        fills, cursor = await super().fills_since(cursor)
        return [f for f in fills if f.trade_id not in self.hidden], cursor


async def crash(bot: PerpsBot) -> None:
    """Die without a shutdown: background tasks gone, stores closed as a killed process leaves them."""
    for task in bot.background_tasks:
        task.cancel()
    await asyncio.sleep(0)
    bot.registry.events._pending.clear()  # events kept for after a request die with the process
    bot.registry.events.close()
    bot.registry.orders.close()
    if bot._store_lock is not None:
        bot._store_lock.release()  # what the kernel does for a process that dies
    bot._crashed = True  # type: ignore[attr-defined]


def intent(bot: PerpsBot, side: Side, size: str, *, limit: str | None = None):
    ex = bot.registry.execution
    product = bot.registry.products[PERP]
    order = ex.new_order(product, side, D(size), D(100), closing=False)
    if limit is not None:
        order.type = request("x", PERP, side, size, limit=limit).type
        order.limit_price = D(limit)
        order.time_in_force = TimeInForce.GTC
    return order


def as_request(order):
    return request(
        order.client_order_id, order.symbol, order.side, order.size, limit=order.limit_price,
        tif=order.time_in_force, leverage=order.leverage,
    )


def kinds(bot: PerpsBot, kind: str):
    return bot.registry.events.query(kind=kind, run_id=bot.registry.events.run_id)
