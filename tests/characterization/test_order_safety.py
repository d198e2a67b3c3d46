"""Order-path safety: no stacked orders, unknown fates stay unknown, failures never stop the loop."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal as D

from perpsbot.domain import OrderStatus
from perpsbot.exchange.port import ExchangeUnavailable, OrderSnapshot
from perpsbot.risk.manager import kill_file_path
from perpsbot.strategy.base import Decision, Target


def resting(exchange):
    """Make the fake exchange accept orders without filling them (a resting limit)."""

    async def place(request):
        exchange.requests.append(request)
        snapshot = OrderSnapshot(
            request.client_order_id, f"X{len(exchange.requests)}", request.symbol, request.side, OrderStatus.OPEN,
            request.size, D(0), None, D(0), exchange.clock.now(),
        )
        exchange._orders[request.client_order_id] = snapshot
        return snapshot

    exchange.place_order = place


async def test_a_working_order_blocks_a_second_entry_for_its_symbol(make_bot, exchange):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE",))
    await bot.registry.market_data.update_marks()
    resting(exchange)
    first = await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "cross", D(100)))
    assert [r.outcome for r in first] == ["placed"]
    again = await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "cross", D(100)))
    assert [r.outcome for r in again] == ["skipped"] and "still OPEN" in again[0].detail
    assert len(exchange.requests) == 1


async def test_not_found_right_after_a_timeout_leaves_the_order_pending_not_rejected(make_bot, exchange):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE",))
    await bot.registry.market_data.update_marks()

    async def timeout(request):
        exchange.requests.append(request)
        raise TimeoutError("no answer")

    exchange.place_order = timeout
    result = await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "cross", D(100)))
    assert result[0].outcome == "failed" and "fate unknown" in result[0].detail
    stored = bot.registry.orders.get(exchange.requests[0].client_order_id)
    assert stored.status is OrderStatus.PENDING
    assert bot.registry.risk.error_streak == 1
    # and no second order goes out while its fate is unknown
    again = await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "cross", D(100)))
    assert again[0].outcome == "skipped" and len(exchange.requests) == 1


async def test_a_placement_without_an_answer_is_given_up_after_order_timeout_seconds(make_bot, exchange):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE",), order_timeout_seconds=0.2)
    await bot.registry.market_data.update_marks()

    async def never_answers(request):
        exchange.requests.append(request)
        await asyncio.sleep(30)

    exchange.place_order = never_answers
    started = time.monotonic()
    result = await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "cross", D(100)))
    assert 0.2 <= time.monotonic() - started < 2  # the configured wait, not the 10 s default
    assert result[0].outcome == "failed" and "fate unknown" in result[0].detail
    assert bot.registry.orders.get(exchange.requests[0].client_order_id).status is OrderStatus.PENDING


async def test_an_unknown_fate_counts_toward_the_error_cooldown(make_bot, exchange):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE", "ETP-20DEC30-CDE"), error_streak_limit=2)
    await bot.registry.market_data.update_marks()

    async def down(*args):
        raise ExchangeUnavailable("down")

    exchange.place_order = down
    exchange.get_order = down
    outcomes = []
    for symbol, mark in (("BIP-20DEC30-CDE", D(100)), ("ETP-20DEC30-CDE", D(50))):
        try:
            outcomes.append(await bot.execute_decision(Decision(symbol, Target.LONG, "cross", mark)))
        except ExchangeUnavailable as exc:
            outcomes.append(str(exc))
    assert outcomes == ["down", "down"], outcomes
    assert bot.registry.risk.error_streak == 2 and bot.registry.risk.cooldown_until is not None


async def test_a_failing_flatten_does_not_stop_the_cycle(make_bot, exchange):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE",))
    await bot.registry.market_data.update_marks()
    await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "open", D(100)))
    kill_file_path(bot.config).write_text(json.dumps({"flatten": True}))

    async def down(*args):
        raise ExchangeUnavailable("down")

    exchange.place_order = down
    exchange.get_order = down
    report = await bot.run_cycle()
    assert "down" in report.errors["flatten"]
    assert bot.cycles == 1


async def test_a_working_order_the_exchange_forgot_is_closed_and_housekeeping_goes_on(make_bot, exchange):
    bot = await make_bot(symbols=("BIP-20DEC30-CDE",))
    await bot.registry.market_data.update_marks()
    resting(exchange)
    await bot.execute_decision(Decision("BIP-20DEC30-CDE", Target.LONG, "cross", D(100)))
    cid = exchange.requests[0].client_order_id
    del exchange._orders[cid]
    report = await bot.run_cycle()
    assert "account" not in report.errors and "housekeeping" not in report.errors
    assert bot.registry.orders.get(cid).status is OrderStatus.CANCELLED
    assert bot.registry.events.query(kind="order_vanished")[0].data["client_order_id"] == cid
