"""Crash safety on the in-process simulator: write-ahead intents resolved on restart,
reconciliation (foreign orders, position mismatches) and order commands."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import ClassVar

import pytest

from perpsbot.domain import OrderStatus, Side, TimeInForce
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.port import OrderNotFound
from perpsbot.exchange.sim import SimCore, SimExchange
from perpsbot.risk.manager import OrderIntent
from tests.characterization.simbot import PERP, LossyExchange, as_request, crash, intent, kinds
from tests.unit.sim.simkit import build_core, request

D = Decimal


# ----- 1. write-ahead intents resolved on restart ------------------------------------------


async def test_restart_adopts_intents_that_reached_the_exchange_and_rejects_the_rest(start_bot, core, sim_clock):
    first = await start_bot()
    reached = intent(first, Side.BUY, "0.5")
    resting = intent(first, Side.BUY, "0.3", limit="50")  # far below the market: rests
    lost = intent(first, Side.SELL, "0.2")
    for order in (reached, resting, lost):
        first.registry.orders.upsert(order)  # the write-ahead record, PENDING
    core.place_order(as_request(reached), sim_clock.now())  # the request got there, the answer did not
    core.place_order(as_request(resting), sim_clock.now())
    await crash(first)

    sim_clock.advance(2)
    second = await start_bot()
    store = second.registry.orders
    done = store.get(reached.client_order_id)
    assert done.status is OrderStatus.FILLED and done.filled_size == D("0.5")
    fills = [f for f in store.fills() if f.client_order_id == reached.client_order_id]
    assert [f.trade_id for f in fills] == [f.trade_id for f in core.get_order(reached.client_order_id).fills]
    working = store.get(resting.client_order_id)
    assert working.status is OrderStatus.OPEN and working.exchange_order_id
    assert resting.client_order_id in second.registry.execution.tracked
    # not listed 2 s after it was sent: not proof of absence, the exchange may still take it
    waiting = store.get(lost.client_order_id)
    assert waiting.status is OrderStatus.PENDING
    assert store.working(PERP) is not None  # the symbol stays blocked meanwhile
    sim_clock.advance(second.config.late_acceptance_seconds + second.config.order_timeout_seconds)
    await second.registry.execution.housekeeping()  # due early: an unknown fate can be settled
    rejected = store.get(lost.client_order_id)
    assert rejected.status is OrderStatus.REJECTED
    assert rejected.reject_reason.startswith("not at the exchange 19")
    outcomes = [(e.data["client_order_id"], e.data["outcome"]) for e in kinds(second, "intent_resolved")]
    assert sorted(outcomes) == sorted([
        (reached.client_order_id, "adopted"), (resting.client_order_id, "adopted"),
        (lost.client_order_id, "waiting"), (lost.client_order_id, "rejected"),
    ])
    # the position the adopted fill made is ours: reconciliation matches, no reduce-only
    assert not second.registry.risk.reduce_only_reasons
    assert kinds(second, "reconciliation")[-1].data["matched"] is True

    # a third start resolves nothing again and records no second fill
    await second.shutdown()
    third = await start_bot()
    assert not kinds(third, "intent_resolved")[1:]  # the resting order is still followed
    assert len([f for f in third.registry.orders.fills() if f.client_order_id == reached.client_order_id]) == 1


async def test_orders_whose_write_ahead_record_a_power_cut_lost_are_found_by_prefix_and_adopted(
        start_bot, core, sim_clock):
    first = await start_bot()
    store = first.registry.orders
    prefix = store.id_prefix
    assert prefix.startswith("pb-") and store.synced_at is not None  # start-up's reconciliation marked it
    # Sent, but their write-ahead records never reached the disk (committed without an fsync,
    # then the power went): the store does not know them.
    filled = intent(first, Side.BUY, "0.5")
    resting = intent(first, Side.BUY, "0.3", limit="50")
    assert filled.client_order_id.startswith(prefix) and resting.client_order_id.startswith(prefix)
    core.place_order(as_request(filled), sim_clock.now())
    core.place_order(as_request(resting), sim_clock.now())
    # Another bot's order (another store, another prefix) on the same account: not ours.
    other = request("pb-0badc0de-" + "1" * 32, PERP, Side.BUY, "0.1", limit="40", tif=TimeInForce.GTC)
    core.place_order(other, sim_clock.now())
    await crash(first)

    sim_clock.advance(2)
    second = await start_bot()
    store = second.registry.orders
    assert store.id_prefix == prefix  # the store keeps its identity across restarts
    done = store.get(filled.client_order_id)
    assert done is not None and done.status is OrderStatus.FILLED and done.filled_size == D("0.5")
    fills = [f for f in store.fills() if f.client_order_id == filled.client_order_id]
    assert [f.trade_id for f in fills] == [f.trade_id for f in core.get_order(filled.client_order_id).fills]
    working = store.get(resting.client_order_id)
    assert working is not None and working.status is OrderStatus.OPEN
    assert resting.client_order_id in second.registry.execution.tracked
    assert store.get(other.client_order_id) is None
    adopted = {e.data["client_order_id"] for e in kinds(second, "lost_order_adopted")}
    assert adopted == {filled.client_order_id, resting.client_order_id}
    foreign = {e.data["client_order_id"] for e in kinds(second, "foreign_order")}
    assert foreign == {other.client_order_id}
    # the adopted fill explains the position: reconciliation matches, no reduce-only
    assert kinds(second, "reconciliation")[-1].data["matched"] is True
    assert not second.registry.risk.reduce_only_reasons


async def test_write_ahead_commits_without_an_fsync_and_everything_else_with_one(start_bot, sim_clock):
    bot = await start_bot()
    store = bot.registry.orders
    conn = store._conn
    order = intent(bot, Side.BUY, "0.1")
    store.write_ahead(order)
    assert store.get(order.client_order_id).status is OrderStatus.PENDING
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for what follows
    seen: list[int] = []
    conn.set_trace_callback(lambda sql: seen.append(conn.execute("PRAGMA synchronous").fetchone()[0])
                            if sql.lstrip().startswith("INSERT") else None)
    store.write_ahead(intent(bot, Side.BUY, "0.1"))
    store.upsert(order)
    conn.set_trace_callback(None)
    assert seen == [1, 2]  # NORMAL for the write-ahead record, FULL for the rest
    marked = sim_clock.now()
    store.mark_synced(marked)
    assert store.synced_at == marked


async def test_a_fill_recorded_before_the_crash_is_not_counted_twice(start_bot, core, sim_clock):
    first = await start_bot()
    order = intent(first, Side.BUY, "0.4")
    first.registry.orders.upsert(order)
    snapshot = core.place_order(as_request(order), sim_clock.now())
    first.registry.orders.add_fill(snapshot.fills[0])  # the fill made it to disk, the order update did not
    await crash(first)

    second = await start_bot()
    stored = second.registry.orders.get(order.client_order_id)
    assert stored.status is OrderStatus.FILLED
    assert stored.filled_size == snapshot.filled_size == D("0.4")
    assert stored.average_fill_price == snapshot.average_fill_price
    assert len([f for f in second.registry.orders.fills() if f.client_order_id == order.client_order_id]) == 1


async def test_an_acknowledged_order_the_exchange_no_longer_has_is_closed_forward(start_bot, sim_clock, config_for):
    first = await start_bot()
    order = intent(first, Side.BUY, "0.1", limit="50")
    order.advance_to(OrderStatus.OPEN, sim_clock.now())
    first.registry.orders.upsert(order)
    await crash(first)
    # a new simulator: the exchange has never heard of it
    fresh = SimExchange(build_core(seed=9), sim_clock)
    second = await start_bot(fresh)
    stored = second.registry.orders.get(order.client_order_id)
    assert stored.status is OrderStatus.CANCELLED  # OPEN cannot go back to REJECTED
    assert stored.reject_reason == "no longer known to the exchange"


# ----- 2. reconciliation ----------------------------------------------------------------------


async def test_a_foreign_order_is_reported_once_and_left_alone(start_bot, core, sim_clock):
    bot = await start_bot()
    core.place_order(request("manual-1", PERP, Side.BUY, "0.2", limit="50", tif=TimeInForce.GTC), sim_clock.now())
    await bot.registry.execution.reconciler.reconcile()
    await bot.registry.execution.reconciler.reconcile()
    reported = kinds(bot, "foreign_order")
    assert [(e.data["client_order_id"], e.data["action"]) for e in reported] == [("manual-1", "left alone")]
    assert bot.registry.orders.get("manual-1") is None
    assert core.get_order("manual-1").status is OrderStatus.OPEN
    # cancel_all leaves it alone too
    assert await bot.registry.execution.cancel_all() == []
    assert core.get_order("manual-1").status is OrderStatus.OPEN


async def test_a_foreign_order_is_adopted_when_configured(start_bot, core, sim_clock):
    bot = await start_bot(adopt_foreign_orders=True)
    core.place_order(request("manual-2", PERP, Side.BUY, "0.2", limit="50", tif=TimeInForce.GTC), sim_clock.now())
    await bot.registry.execution.reconciler.reconcile()
    adopted = bot.registry.orders.get("manual-2")
    assert adopted is not None and adopted.status is OrderStatus.OPEN
    assert "manual-2" in bot.registry.execution.tracked
    assert kinds(bot, "foreign_order")[-1].data["action"] == "adopted"
    cancelled = await bot.registry.execution.cancel_all(PERP)
    assert [o.client_order_id for o in cancelled] == ["manual-2"]
    assert core.get_order("manual-2").status is OrderStatus.CANCELLED


async def test_an_unexplained_position_goes_reduce_only_with_an_alert_until_it_matches(start_bot, core, sim_clock):
    exchange = LossyExchange(core, sim_clock)
    bot = await start_bot(exchange)
    risk = bot.registry.risk
    assert not risk.reduce_only_reasons
    ghost = request(bot.registry.orders.id_prefix + "ghost", PERP, Side.BUY, "0.3", leverage="2")
    snapshot = core.place_order(ghost, sim_clock.now())  # ours (our id prefix), its record lost
    exchange.hidden = {f.trade_id for f in snapshot.fills}  # and the fill never reaches us

    sim_clock.advance(31)
    await bot.registry.execution.housekeeping()  # due: reconciles
    assert risk.symbol_reduce_only == {PERP: ["reconciliation"]} and not risk.reduce_only_reasons
    alert = kinds(bot, "alert")[-1]
    assert alert.data["severity"] == "P1" and alert.data["rule"] == "reconciliation_mismatch"
    assert alert.data["mismatches"] == [f"{PERP} position: ours 0, exchange 0.300"]
    assert alert.data["symbols"] == [PERP]
    # the symbol's reduce-only now refuses an order adding exposure, and lets one reducing it through
    adding = OrderIntent(PERP, Side.BUY, D("0.1"), D(100), position_size=D("0.3"), leverage=D(2))
    verdict = risk.check(adding, D(100_000))
    assert not verdict.approved and verdict.code == "reduce_only_symbol" and "reconciliation" in verdict.detail
    reducing = OrderIntent(PERP, Side.SELL, D("0.1"), D(100), position_size=D("0.3"), leverage=D(2))
    assert risk.check(reducing, D(100_000)).approved

    sim_clock.advance(5)
    await bot.registry.execution.housekeeping()  # not due yet: nothing changes
    assert len(kinds(bot, "reconciliation")) == 2

    exchange.hidden = set()  # the exchange serves the fill again: the next reconciliation recovers it
    sim_clock.advance(30)
    await bot.registry.execution.housekeeping()
    assert not risk.symbol_reduce_only
    assert [e.data["rule"] for e in kinds(bot, "alert_cleared")] == ["reconciliation_mismatch"]
    assert kinds(bot, "fills_recovered")[-1].data["count"] == 1
    assert kinds(bot, "reconciliation")[-1].data["matched"] is True


async def test_the_reconciliation_reduce_only_outlives_a_restart_until_a_match(start_bot, core, sim_clock):
    exchange = LossyExchange(core, sim_clock)
    bot = await start_bot(exchange)
    core.place_order(
        request(bot.registry.orders.id_prefix + "ghost", PERP, Side.BUY, "0.3", leverage="2"), sim_clock.now()
    )
    exchange.hidden = {f.trade_id for f in core.fills}
    await bot.registry.execution.reconciler.reconcile()
    assert bot.registry.risk.symbol_reduce_only == {PERP: ["reconciliation"]}
    await bot.shutdown()
    blind = LossyExchange(core, sim_clock)
    blind.hidden = set(exchange.hidden)
    # restored; the start-up check finds the order by our id prefix, adopts it with its fill: explained
    again = await start_bot(blind)
    restored = [e.data for e in kinds(again, "risk_mode") if e.data.get("change") == "restored from the last run"]
    assert restored and restored[0]["symbol_reduce_only"] == {PERP: ["reconciliation"]}
    assert kinds(again, "lost_order_adopted")
    assert not again.registry.risk.symbol_reduce_only


# ----- 4. order management through commands ---------------------------------------------


async def test_cancel_replace_and_close_commands(start_bot, core, sim_clock):
    bot = await start_bot()
    ex = bot.registry.execution
    events = bot.registry.events
    first = intent(bot, Side.BUY, "0.3", limit="50")
    placed = await ex._place(first, "test", 0.0)
    assert placed.outcome == "placed" and first.status is OrderStatus.OPEN

    await bot.registry.market_data.update_marks()  # a fresh mark for the risk check of the new order
    replace_id = events.post_command(sim_clock.now(), "replace", client_order_id=first.client_order_id, new_price="60")
    await ex.housekeeping()
    assert events.command_result(replace_id).startswith("ok: ")
    assert core.get_order(first.client_order_id).status is OrderStatus.CANCELLED
    replaced = kinds(bot, "order_replaced")[-1].data
    assert replaced["replaces"] == first.client_order_id
    new_id = replaced["client_order_id"]
    new = core.get_order(new_id)
    assert new.status is OrderStatus.OPEN and new.size == D("0.3")
    assert bot.registry.orders.get(new_id).limit_price == D(60)

    cancel_id = events.post_command(sim_clock.now(), "cancel", client_order_id=new_id)
    unknown_id = events.post_command(sim_clock.now(), "cancel", client_order_id="nope")
    await ex.housekeeping()
    assert events.command_result(cancel_id).startswith(f"ok: {new_id} CANCELLED")
    assert events.command_result(unknown_id) == "failed: no order nope"
    assert bot.registry.orders.get(new_id).status is OrderStatus.CANCELLED

    buy = intent(bot, Side.BUY, "0.4")
    await ex._place(buy, "test", 0.0)
    assert ex.position_size(PERP) == D("0.4")
    close_id = events.post_command(sim_clock.now(), "close", symbol=PERP)
    again_id = events.post_command(sim_clock.now(), "close", symbol=PERP)
    await ex.housekeeping()
    assert events.command_result(close_id).startswith("ok: ")
    assert events.command_result(again_id) == f"nothing to do: no position in {PERP}"
    assert ex.position_size(PERP) == 0
    assert core.account().positions.get(PERP) is None or core.account().positions[PERP].is_flat

    all_id = events.post_command(sim_clock.now(), "cancel_all", symbol=None)
    bogus = events.post_command(sim_clock.now(), "explode")
    await ex.housekeeping()
    assert events.command_result(all_id) == "ok: 0 order(s) cancelled"
    assert events.command_result(bogus) == "unknown command explode"


class BlindExchange(SimExchange):
    """Places orders but loses every answer, and cannot look orders up, while ``blind``."""

    def __init__(self, core: SimCore, clock: ManualClock) -> None:
        super().__init__(core, clock)
        self.blind = False

    async def place_order(self, request):
        snapshot = await super().place_order(request)
        if self.blind:
            raise ConnectionError("connection reset after the request was sent")
        return snapshot

    async def get_order(self, client_order_id: str):
        if self.blind:
            raise ConnectionError("exchange unreachable")
        return await super().get_order(client_order_id)

    async def fills_since(self, cursor: int):
        if self.blind:
            return [], cursor
        return await super().fills_since(cursor)


async def test_an_order_of_unknown_fate_is_resolved_by_the_next_reconciliation(start_bot, core, sim_clock):
    exchange = BlindExchange(core, sim_clock)
    bot = await start_bot(exchange)
    ex = bot.registry.execution
    order = intent(bot, Side.BUY, "0.2")
    exchange.blind = True
    with pytest.raises(ConnectionError):
        await ex._place(order, "test", 0.0)
    assert bot.registry.orders.get(order.client_order_id).status is OrderStatus.PENDING
    assert kinds(bot, "order_unknown")
    await ex.reconciler.reconcile()  # still blind: stays PENDING, recorded as unresolved
    assert bot.registry.orders.get(order.client_order_id).status is OrderStatus.PENDING
    assert kinds(bot, "intent_resolved")[-1].data["outcome"] == "unresolved"
    assert bot.registry.risk.symbol_reduce_only == {PERP: ["reconciliation"]}  # a position we cannot explain yet

    exchange.blind = False
    report = await ex.reconciler.reconcile()
    stored = bot.registry.orders.get(order.client_order_id)
    assert stored.status is OrderStatus.FILLED and stored.filled_size == D("0.2")
    assert kinds(bot, "intent_resolved")[-1].data["outcome"] == "adopted"
    assert report.matched and ex.position_size(PERP) == D("0.2")
    assert not bot.registry.risk.symbol_reduce_only
    assert len([f for f in bot.registry.orders.fills() if f.client_order_id == order.client_order_id]) == 1


async def test_foreign_orders_without_a_client_id_are_reported_each_and_never_adopted(start_bot, core, sim_clock):
    from dataclasses import replace

    class Anonymous(SimExchange):
        async def open_orders(self):
            return [replace(s, client_order_id="") for s in await super().open_orders()]

    bot = await start_bot(Anonymous(core, sim_clock), adopt_foreign_orders=True)
    for n in (1, 2):
        core.place_order(request(f"ui-{n}", PERP, Side.BUY, "0.1", limit="50", tif=TimeInForce.GTC), sim_clock.now())
    report = await bot.registry.execution.reconciler.reconcile()
    assert report.adopted == [] and len(report.foreign_orders) == 2
    reported = kinds(bot, "foreign_order")
    assert len({e.data["exchange_order_id"] for e in reported}) == 2
    assert all(e.data["action"] == "left alone: no client_order_id to follow it by" for e in reported)
    assert bot.registry.orders.get("") is None


async def test_an_adopted_order_that_disappears_is_closed_by_the_next_reconciliation(start_bot, core, sim_clock):
    first = await start_bot()
    resting = intent(first, Side.BUY, "0.3", limit="50")
    first.registry.orders.upsert(resting)
    core.place_order(as_request(resting), sim_clock.now())
    await crash(first)

    class Forgetful(SimExchange):
        forget: ClassVar[set[str]] = set()

        async def get_order(self, client_order_id: str):
            if client_order_id in self.forget:
                raise OrderNotFound(client_order_id)
            return await super().get_order(client_order_id)

        async def open_orders(self):
            return [s for s in await super().open_orders() if s.client_order_id not in self.forget]

    exchange = Forgetful(core, sim_clock)
    second = await start_bot(exchange)
    ex = second.registry.execution
    assert resting.client_order_id in ex.tracked
    exchange.forget = {resting.client_order_id}
    await ex.sync_orders()  # no error: it stops following it
    assert resting.client_order_id not in ex.tracked
    await ex.reconciler.reconcile()
    stored = second.registry.orders.get(resting.client_order_id)
    assert stored.status is OrderStatus.CANCELLED and stored.reject_reason == "no longer known to the exchange"


async def test_an_unexplained_spot_balance_goes_reduce_only_until_it_matches(start_bot, core, sim_clock):
    exchange = LossyExchange(core, sim_clock)
    bot = await start_bot(exchange, symbols=("TST-USD",))
    risk = bot.registry.risk
    snapshot = core.place_order(
        request(bot.registry.orders.id_prefix + "ghost-spot", "TST-USD", Side.BUY, "0.5"), sim_clock.now()
    )
    exchange.hidden = {f.trade_id for f in snapshot.fills}  # bought BTC, but the fill never reaches us

    sim_clock.advance(31)
    await bot.registry.execution.housekeeping()
    assert risk.symbol_reduce_only == {"TST-USD": ["reconciliation"]}
    assert kinds(bot, "alert")[-1].data["mismatches"] == ["TST balance: ours 0, exchange 0.500"]

    exchange.hidden = set()
    sim_clock.advance(31)
    await bot.registry.execution.housekeeping()
    assert not risk.symbol_reduce_only
    assert kinds(bot, "reconciliation")[-1].data["matched"] is True


class DownAtStart(SimExchange):
    """Answers nothing about orders while ``down``: the start-up reconciliation fails."""

    down = True

    async def open_orders(self):
        if self.down:
            raise OSError("exchange unreachable")
        return await super().open_orders()


async def test_an_order_lost_before_any_reconciliation_completed_is_still_adopted(start_bot, core, sim_clock):
    # A new store whose start-up reconciliation failed has never been marked synced: the
    # first write-ahead record (no fsync) must still leave recovery a time to look from.
    exchange = DownAtStart(core, sim_clock)
    first = await start_bot(exchange)
    assert kinds(first, "error")[-1].data["stage"] == "reconcile"
    store = first.registry.orders
    order = intent(first, Side.BUY, "0.5")
    store.write_ahead(order)
    core.place_order(as_request(order), sim_clock.now())
    path = store.path
    await crash(first)
    # the power cut took the write-ahead record (committed, never fsync'd), nothing fsync'd
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM orders WHERE client_order_id = ?", (order.client_order_id,))

    sim_clock.advance(2)
    second = await start_bot()
    adopted = {e.data["client_order_id"] for e in kinds(second, "lost_order_adopted")}
    assert adopted == {order.client_order_id}
    assert second.registry.orders.get(order.client_order_id).status is OrderStatus.FILLED
    assert not second.registry.risk.reduce_only_reasons


class DownThenFlaky(SimExchange):
    """While ``down`` nothing about orders can be listed; ``lose_next`` loses one placement
    request on the way (its fate unknown to the bot)."""

    down = True
    lose_next = False

    async def orders_since(self, since, symbol=None):
        if self.down:
            raise OSError("exchange unreachable")
        return await super().orders_since(since, symbol)

    async def open_orders(self):
        if self.down:
            raise OSError("exchange unreachable")
        return await super().open_orders()

    async def place_order(self, request):
        if self.lose_next:
            self.lose_next = False
            raise OSError("connection reset")
        return await super().place_order(request)


async def test_an_unknown_fate_before_the_lost_order_check_does_not_hide_earlier_lost_orders(
        start_bot, core, sim_clock):
    first = await start_bot()
    lost = intent(first, Side.BUY, "0.5")
    core.place_order(as_request(lost), sim_clock.now())  # its write-ahead record went with the power
    await crash(first)

    sim_clock.advance(60)
    exchange = DownThenFlaky(core, sim_clock)
    second = await start_bot(exchange)  # its start-up reconciliation fails: no lost-order check yet
    assert kinds(second, "error")[-1].data["stage"] == "reconcile"
    sim_clock.advance(600)  # well past the margin
    exchange.lose_next = True
    order = intent(second, Side.BUY, "0.1")
    result = await second.registry.execution._place(order, "test", 0.0)
    assert result.outcome == "failed"  # fate unknown: left PENDING
    exchange.down = False
    await second.registry.execution.reconciler.reconcile()
    adopted = {e.data["client_order_id"] for e in kinds(second, "lost_order_adopted")}
    assert lost.client_order_id in adopted
