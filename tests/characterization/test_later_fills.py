"""An exchange that accepts orders now and fills them later (a backtest's next-open
fills; any real venue's working orders): a reversal still sends both orders."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal as D

import pytest

from perpsbot.domain import Fill, Liquidity, OrderStatus, Position
from perpsbot.exchange.port import OrderRequest, OrderSnapshot
from perpsbot.strategy.base import Decision, Target
from tests.fakes import FakeExchange, perp

SYMBOL = "BIP-20DEC30-CDE"


@dataclass
class LaterFills(FakeExchange):
    waiting: list[OrderRequest] = field(default_factory=list)

    async def place_order(self, request: OrderRequest) -> OrderSnapshot:
        self.requests.append(request)
        self.waiting.append(request)
        snapshot = OrderSnapshot(
            request.client_order_id, f"X{len(self._orders)}", request.symbol, request.side, OrderStatus.OPEN,
            request.size, D(0), None, D(0), self.clock.now(),
        )
        self._orders[request.client_order_id] = snapshot
        return snapshot

    def fill_waiting(self) -> None:
        for request in self.waiting:
            price = self.prices[request.symbol]
            fill = Fill(f"T{len(self._fills) + 1}", request.client_order_id, request.symbol, request.side, price,
                        request.size, D(0), Liquidity.TAKER, self.clock.now())
            self._fills.append(fill)
            position = self._positions.setdefault(request.symbol, Position(request.symbol))
            position.apply_fill(request.side, request.size, price)
            if position.is_flat:
                del self._positions[request.symbol]
            self._orders[request.client_order_id] = OrderSnapshot(
                request.client_order_id, "X", request.symbol, request.side, OrderStatus.FILLED, request.size,
                request.size, price, D(0), self.clock.now(), fills=(fill,),
            )
        self.waiting.clear()


@pytest.fixture
def exchange(clock) -> LaterFills:
    return LaterFills(clock, [perp(SYMBOL)], prices={SYMBOL: D(100)})


async def test_a_reversal_sends_the_close_and_the_opening_order_behind_it(make_bot, exchange):
    bot = await make_bot(symbols=(SYMBOL,))
    await bot.registry.market_data.update_marks()
    execution = bot.registry.execution
    results = await bot.execute_decision(Decision(SYMBOL, Target.LONG, "test", D(100)))
    assert [r.outcome for r in results] == ["placed"] and execution.position_size(SYMBOL) == 0
    exchange.fill_waiting()
    await execution.sync_orders()
    held = execution.position_size(SYMBOL)
    assert held > 0

    results = await bot.execute_decision(Decision(SYMBOL, Target.SHORT, "test", D(100)))
    assert [r.outcome for r in results] == ["placed", "placed"]
    close, open_ = exchange.requests[-2:]
    assert (close.side.value, close.size, close.reduce_only) == ("SELL", held, True)
    assert (open_.side.value, open_.reduce_only) == ("SELL", False)
    # The opening order was checked against the position the close leaves: flat, so it
    # adds exposure (not "reduces"), and it was sized from equity as usual.
    verdicts = bot.registry.events.query(kind="risk_approved")[-2:]
    assert [v.data["reduces"] for v in verdicts] == [True, False]
    assert open_.size == execution.entry_size(bot.registry.products[SYMBOL], D(100))
    exchange.fill_waiting()
    await execution.sync_orders()
    assert execution.position_size(SYMBOL) == -open_.size


async def test_holds_on_bar_closes_are_events_live_and_not_when_switched_off(make_bot, exchange, clock):
    bot = await make_bot(symbols=(SYMBOL,))
    orchestrator = bot.registry.strategy
    for _ in range(3):
        await bot.run_cycle()
        clock.advance(1)
    holds = [e for e in bot.registry.events.query(kind="decision") if e.data["target"] == "HOLD"]
    assert len(holds) == 3  # the first cycle, then the bars closed by the 2nd and 3rd marks

    orchestrator.record_holds = False
    for _ in range(3):
        await bot.run_cycle()
        clock.advance(1)
    assert len([e for e in bot.registry.events.query(kind="decision") if e.data["target"] == "HOLD"]) == 3
    assert orchestrator.last_decision[SYMBOL].target is Target.HOLD  # still shown in the status
