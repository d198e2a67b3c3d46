"""Never twice: an order the exchange accepts late is never sent again, a fill for an order
we had closed re-opens it, and a holding our fills do not explain is caught.

``LateExchange`` holds an order's request back (the exchange has not processed it yet:
it is listed nowhere) and answers the client with a timeout; ``accept_late`` processes
it, as an exchange working through a backlog would, after the client gave up."""

from __future__ import annotations

from decimal import Decimal

from perpsbot.domain import OrderStatus, Side
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.port import OrderRequest
from perpsbot.exchange.sim import SimCore, SimExchange
from perpsbot.risk.manager import OrderIntent
from perpsbot.strategy.base import Decision, Target
from tests.characterization.simbot import PERP, as_request, crash, intent, kinds
from tests.unit.sim.simkit import request

D = Decimal
SMALL = dict(position_fraction=D("0.002"))  # orders the simulated book can fill


class LateExchange(SimExchange):
    """While ``late``, an order's request is kept unprocessed and the client times out."""

    def __init__(self, core: SimCore, clock: ManualClock) -> None:
        super().__init__(core, clock)
        self.late = False
        self.held: list[OrderRequest] = []
        self.sent: list[str] = []  # client ids of every placement request that reached us

    async def place_order(self, request: OrderRequest):
        self.sent.append(request.client_order_id)
        if self.late:
            self.held.append(request)
            raise TimeoutError("no answer within the client's timeout")
        return await super().place_order(request)

    def accept_late(self) -> None:
        for held in self.held:
            self.core.place_order(held, self.clock.now())
        self.held.clear()


def long(bot) -> Decision:
    return Decision(PERP, Target.LONG, "test", bot.registry.market_data.mark(PERP))


def held(core: SimCore) -> Decimal:
    position = core.account().positions.get(PERP)
    return position.size if position else D(0)


async def test_an_order_accepted_after_the_timeout_is_waited_for_never_sent_again(start_bot, core, sim_clock):
    exchange = LateExchange(core, sim_clock)
    bot = await start_bot(exchange, **SMALL)
    ex = bot.registry.execution
    await bot.registry.market_data.update_marks()
    exchange.late = True
    (first,) = await ex.execute_decision(long(bot))
    assert first.outcome == "failed" and "fate unknown" in first.detail, first
    intended = first.order.size

    # Reconciliation straight after (the chaos run's 14 ms): not listed is not proof of absence.
    sim_clock.advance(0.014)
    await ex.reconciler.reconcile()
    stored = bot.registry.orders.get(first.client_order_id)
    assert stored.status is OrderStatus.PENDING
    assert not kinds(bot, "intent_resolved")  # still waiting, as the placement left it
    assert kinds(bot, "order_unknown")[-1].data["absent_if_unlisted_after"]
    # The strategy still wants LONG: the symbol is blocked, nothing is sent a second time.
    for _ in range(3):
        sim_clock.advance(1)
        await bot.registry.market_data.update_marks()
        (again,) = await ex.execute_decision(long(bot))
        assert again.outcome == "skipped" and "PENDING" in again.detail
    assert exchange.sent == [first.client_order_id]

    # 12 s after the request arrived the exchange processes it, and it fills.
    sim_clock.advance(9)
    exchange.accept_late()
    await ex.reconciler.reconcile()
    stored = bot.registry.orders.get(first.client_order_id)
    assert stored.status is OrderStatus.FILLED and stored.filled_size == intended
    assert held(core) == intended  # 1.0x the intended size
    assert kinds(bot, "reconciliation")[-1].data["matched"] is True
    assert exchange.sent == [first.client_order_id]


async def test_an_order_never_taken_is_closed_once_the_bound_has_passed(start_bot, core, sim_clock):
    exchange = LateExchange(core, sim_clock)
    bot = await start_bot(exchange, late_acceptance_seconds=60, order_timeout_seconds=10, **SMALL)
    ex = bot.registry.execution
    await bot.registry.market_data.update_marks()
    exchange.late = True
    (first,) = await ex.execute_decision(long(bot))
    exchange.held.clear()  # the request was lost: the exchange never processes it
    exchange.late = False

    sim_clock.advance(69)  # the bound: 60 s after the last moment it can have been sent (10 s timeout)
    await ex.housekeeping()  # reconciles (first due) but within the bound
    assert bot.registry.orders.get(first.client_order_id).status is OrderStatus.PENDING
    sim_clock.advance(1)
    assert ex.reconciler.due(sim_clock.now())  # due early: the bound has passed
    await ex.housekeeping()
    stored = bot.registry.orders.get(first.client_order_id)
    assert (
        stored.status is OrderStatus.REJECTED and stored.reject_reason == "not at the exchange 70 s after it was sent"
    )
    await bot.registry.market_data.update_marks()
    (second,) = await ex.execute_decision(long(bot))  # the symbol is free again
    assert second.outcome == "placed" and held(core) == second.order.size, second


async def test_an_earlier_runs_unknown_order_is_waited_for_after_a_restart(start_bot, core, sim_clock):
    exchange = LateExchange(core, sim_clock)
    first = await start_bot(exchange, **SMALL)
    await first.registry.market_data.update_marks()
    exchange.late = True
    (sent,) = await first.registry.execution.execute_decision(long(first))
    await crash(first)  # kill -9 between send and answer

    sim_clock.advance(1)
    second = await start_bot(exchange, **SMALL)
    assert second.registry.orders.get(sent.client_order_id).status is OrderStatus.PENDING
    await second.registry.market_data.update_marks()
    (skipped,) = await second.registry.execution.execute_decision(long(second))
    assert skipped.outcome == "skipped"
    exchange.accept_late()
    sim_clock.advance(5)
    await second.registry.execution.reconciler.reconcile()
    assert second.registry.orders.get(sent.client_order_id).status is OrderStatus.FILLED
    assert exchange.sent == [sent.client_order_id] and held(core) == sent.order.size


async def test_a_fill_for_an_order_we_had_closed_reopens_it_and_makes_the_symbol_reduce_only(
        start_bot, core, sim_clock):
    exchange = LateExchange(core, sim_clock)
    bot = await start_bot(exchange, late_acceptance_seconds=30, **SMALL)
    ex, risk = bot.registry.execution, bot.registry.risk
    await bot.registry.market_data.update_marks()
    exchange.late = True
    (lost,) = await ex.execute_decision(long(bot))
    late_requests = list(exchange.held)
    exchange.held.clear()
    exchange.late = False
    sim_clock.advance(41)  # past 30 s + the 10 s order timeout
    await ex.housekeeping()
    assert bot.registry.orders.get(lost.client_order_id).status is OrderStatus.REJECTED
    await bot.registry.market_data.update_marks()
    (second,) = await ex.execute_decision(long(bot))
    assert second.outcome == "placed"

    # The exchange processes the first request after all, beyond any bound.
    exchange.held = late_requests
    exchange.accept_late()
    sim_clock.advance(1)
    await ex.sync_orders()
    reopened = bot.registry.orders.get(lost.client_order_id)
    assert reopened.status is OrderStatus.FILLED and reopened.filled_size == lost.order.size
    assert reopened.reject_reason.startswith("re-opened (fill ")
    assert kinds(bot, "order_reopened")[-1].data["client_order_id"] == lost.client_order_id
    alert = [e for e in kinds(bot, "alert") if e.data["rule"] == "late_fill"][-1]
    assert alert.data["severity"] == "P1" and alert.symbol == PERP
    assert risk.symbol_reduce_only == {PERP: ["late_fill"]}
    size = held(core)
    adding = OrderIntent(PERP, Side.BUY, D("0.01"), D(100), position_size=size, leverage=D(2))
    assert risk.check(adding, D(100_000)).code == "reduce_only_symbol"
    # our fills explain the position: reconciliation matches, the symbol stays reduce-only until flat
    await ex.reconciler.reconcile()
    assert kinds(bot, "reconciliation")[-1].data["matched"] is True
    assert risk.symbol_reduce_only == {PERP: ["late_fill"]}
    closed = await ex.close_position(PERP)
    assert closed.outcome == "placed" and held(core) == 0
    await ex.reconciler.reconcile()
    assert not risk.symbol_reduce_only


async def test_a_new_store_against_an_account_already_holding_a_position_does_not_take_it_as_its_own(
        start_bot, core, sim_clock, tmp_path):
    # Someone else's order, filled before this store existed.
    core.place_order(request("by-hand-1", PERP, Side.BUY, "0.4", leverage="2"), sim_clock.now())
    bot = await start_bot()
    report = kinds(bot, "reconciliation")[-1].data
    assert report["matched"] is False
    assert report["mismatches"] == [f"{PERP} position: ours 0, exchange 0.400"]
    assert bot.registry.risk.symbol_reduce_only == {PERP: ["reconciliation"]}
    alert = [e for e in kinds(bot, "alert") if e.data["rule"] == "reconciliation_mismatch"][-1]
    assert alert.data["severity"] == "P1" and alert.data["symbols"] == [PERP]
    # the strategy sizes from the exchange's position: it holds 0.4
    assert bot.registry.execution.position_size(PERP) == D("0.4")
    await bot.shutdown()
    from tests.integration.test_cli_basics import perpsbot

    shown = perpsbot("risk", "status", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert any(f"reduce-only {PERP}" in line and "reconciliation" in line for line in shown.stdout.splitlines())


async def test_an_unexplained_position_is_adopted_when_set_and_stays_adopted_across_restarts(
        start_bot, core, sim_clock):
    core.place_order(request("by-hand-1", PERP, Side.BUY, "0.4", leverage="2"), sim_clock.now())
    bot = await start_bot(unexplained_holdings="adopt")
    assert kinds(bot, "reconciliation")[-1].data["matched"] is True
    (adopted,) = kinds(bot, "holding_adopted")
    assert adopted.data["size"] == "0.400" and adopted.data["key"] == PERP
    assert not bot.registry.risk.symbol_reduce_only
    await bot.shutdown()
    again = await start_bot()  # the default policy: what was adopted is still ours, nothing adopted again
    assert kinds(again, "reconciliation")[-1].data["matched"] is True
    assert not kinds(again, "holding_adopted") and not again.registry.risk.symbol_reduce_only


async def test_someone_elses_fills_while_the_bot_runs_are_recorded_but_explain_nothing(start_bot, core, sim_clock):
    bot = await start_bot()
    core.place_order(request("by-hand-2", PERP, Side.SELL, "0.2", leverage="2"), sim_clock.now())
    await bot.registry.execution.reconciler.reconcile()
    assert [e.data["client_order_id"] for e in kinds(bot, "foreign_fill")] == ["by-hand-2"]
    assert bot.registry.risk.symbol_reduce_only == {PERP: ["reconciliation"]}
    assert kinds(bot, "reconciliation")[-1].data["mismatches"] == [f"{PERP} position: ours 0, exchange -0.200"]


async def test_a_run_inherits_the_position_the_last_one_left_in_its_pnl_and_position_history(
        start_bot, core, sim_clock, tmp_path):
    from tests.integration.test_cli_basics import perpsbot

    first = await start_bot(**SMALL)
    await first.registry.market_data.update_marks()
    (bought,) = await first.registry.execution.execute_decision(long(first))
    size = bought.order.filled_size
    assert size > 0
    await first.shutdown()

    sim_clock.advance(600)  # the market moves while no bot runs
    second = await start_bot(**SMALL)
    ex = second.registry.execution
    (started,) = kinds(second, "bot_started")
    inherited = started.data["opening_positions"][PERP]
    assert D(inherited["size"]) == size
    await second.registry.market_data.update_marks()
    results = await ex.execute_decision(
        Decision(PERP, Target.SHORT, "test", second.registry.market_data.mark(PERP)))
    assert [r.outcome for r in results] == ["placed", "placed"]  # the close, then the short
    await ex.refresh_account()
    summary = await second.shutdown()
    # The run's PnL starts from the inherited long: it holds what the exchange holds (not the
    # run's fills alone, -2x), and moves as the equity did (the sim values positions at its
    # own mark, the bot at the mid: a few cents apart on 400 USD).
    held_now = core.account().positions[PERP].size
    assert summary["pnl"]["positions"][PERP]["size"] == held_now == -results[1].order.filled_size
    notional = abs(held_now) * D(inherited["price"])
    assert abs(summary["pnl"]["net"] - summary["equity_change"]) < notional * D("0.002"), summary

    shown = perpsbot("positions", "--run", str(started.data["run_id"]), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if PERP in line]
    assert len(rows) == 2, shown.stdout
    assert "LONG" in rows[0] and "closed" in rows[0] and str(size) in rows[0]  # inherited, then closed
    assert "SHORT" in rows[1] and "open" in rows[1]


async def test_a_failing_lookup_past_the_bound_is_retried_later_not_every_cycle(start_bot, core, sim_clock):
    exchange = LateExchange(core, sim_clock)
    bot = await start_bot(exchange, late_acceptance_seconds=30, **SMALL)
    ex = bot.registry.execution
    await bot.registry.market_data.update_marks()
    exchange.late = True
    (lost,) = await ex.execute_decision(long(bot))
    exchange.held.clear()
    sim_clock.advance(41)  # past 30 s + the 10 s order timeout
    assert ex.reconciler.due(sim_clock.now())

    async def down(client_order_id):
        raise ConnectionError("exchange unreachable")

    exchange.get_order = down  # type: ignore[method-assign]
    await ex.resolve_intents(this_run_pending=True)
    assert kinds(bot, "intent_resolved")[-1].data["outcome"] == "unresolved"
    ex.reconciler.last_at = sim_clock.now()  # as a reconciliation that just ran
    assert not ex.reconciler.due(sim_clock.now())  # not again at once (every cycle would hammer the exchange)
    sim_clock.advance(10)
    assert ex.reconciler.due(sim_clock.now())
    assert bot.registry.orders.get(lost.client_order_id).status is OrderStatus.PENDING


# ----- found in review ------------------------------------------------------------------------


async def test_an_unknown_order_settled_by_its_fill_no_longer_makes_reconciliation_run_every_cycle(
        start_bot, core, sim_clock):
    exchange = LateExchange(core, sim_clock)
    bot = await start_bot(exchange, late_acceptance_seconds=30, **SMALL)
    ex = bot.registry.execution
    await bot.registry.market_data.update_marks()
    exchange.late = True
    (first,) = await ex.execute_decision(long(bot))
    exchange.late = False
    sim_clock.advance(2)
    exchange.accept_late()
    await ex.sync_orders()  # the cycle's sync sees the fill first
    assert bot.registry.orders.get(first.client_order_id).status is OrderStatus.FILLED
    await ex.reconciler.reconcile()
    sim_clock.advance(45)  # past its bound
    await ex.reconciler.reconcile()
    before = len(kinds(bot, "reconciliation"))
    for _ in range(5):
        sim_clock.advance(1)
        await ex.housekeeping()
    assert len(kinds(bot, "reconciliation")) == before  # every 30 s, as configured
    assert not ex.awaiting


def closed_as_absent(bot, limit: str):

    order = intent(bot, Side.BUY, "0.3", limit=limit)
    order.reject_reason = "not at the exchange 200 s after it was sent"
    order.advance_to(OrderStatus.REJECTED, bot.clock.now())
    bot.registry.orders.upsert(order)
    return order


async def test_an_order_closed_as_absent_that_the_exchange_lists_open_is_reopened_kept_and_blocks_its_symbol(
        start_bot, core, sim_clock):

    bot = await start_bot()
    ex, risk = bot.registry.execution, bot.registry.risk
    order = closed_as_absent(bot, "50")  # far below the market: it rests
    core.place_order(as_request(order), sim_clock.now())  # the exchange had it after all
    for _ in range(2):
        sim_clock.advance(31)
        await ex.reconciler.reconcile()
    stored = bot.registry.orders.get(order.client_order_id)
    assert stored.status is OrderStatus.OPEN  # written, not only in memory
    assert bot.registry.orders.working(PERP) is not None  # the symbol takes no second order
    assert len(kinds(bot, "order_reopened")) == 1
    assert risk.symbol_reduce_only == {PERP: ["late_fill"]}  # flat, but its order still works: not lifted
    await ex.cancel(order.client_order_id)
    await ex.reconciler.reconcile()
    assert not risk.symbol_reduce_only


async def test_an_order_cancelled_on_the_exchanges_word_and_still_listed_is_not_reopened(start_bot, core, sim_clock):

    bot = await start_bot()
    order = intent(bot, Side.BUY, "0.3", limit="50")
    order.advance_to(OrderStatus.OPEN, sim_clock.now())
    order.advance_to(OrderStatus.CANCELLED, sim_clock.now())  # as a cancel the exchange confirmed
    bot.registry.orders.upsert(order)
    core.place_order(as_request(order), sim_clock.now())  # a listing that lags behind
    await bot.registry.execution.reconciler.reconcile()
    assert bot.registry.orders.get(order.client_order_id).status is OrderStatus.CANCELLED
    assert not kinds(bot, "order_reopened")


async def test_closing_an_unexplained_position_frees_the_symbol(start_bot, core, sim_clock):
    core.place_order(request("by-hand-1", PERP, Side.BUY, "0.4", leverage="2"), sim_clock.now())
    bot = await start_bot(**SMALL)
    ex, risk = bot.registry.execution, bot.registry.risk
    assert risk.symbol_reduce_only == {PERP: ["reconciliation"]}
    await bot.registry.market_data.update_marks()
    (closed,) = await ex.execute_decision(Decision(PERP, Target.FLAT, "t", bot.registry.market_data.mark(PERP)))
    assert closed.outcome == "placed" and held(core) == 0  # a reducing order passes
    await ex.reconciler.reconcile()
    assert not risk.symbol_reduce_only and kinds(bot, "reconciliation")[-1].data["matched"] is True
    assert kinds(bot, "holding_adopted")[-1].data["reason"] == "flat at the exchange"
    await bot.registry.market_data.update_marks()
    (opened,) = await ex.execute_decision(long(bot))
    assert opened.outcome == "placed", opened


async def test_a_fill_an_earlier_run_never_heard_of_is_in_the_opening_not_counted_again(start_bot, core, sim_clock):
    exchange = LateExchange(core, sim_clock)
    first = await start_bot(exchange, **SMALL)
    await first.registry.market_data.update_marks()
    exchange.late = True
    await first.registry.execution.execute_decision(long(first))
    exchange.late = False
    exchange.accept_late()  # filled at the exchange; the first run never hears of it
    await crash(first)
    sim_clock.advance(1)
    second = await start_bot(exchange, **SMALL)
    report = second.registry.execution.pnl().as_dict()
    assert report["positions"][PERP]["size"] == held(core) != 0


async def test_a_coin_balance_of_a_product_the_bot_does_not_trade_is_not_compared(start_bot, core, sim_clock):
    core.place_order(request("by-hand-spot", "TST-USD", Side.BUY, "1"), sim_clock.now())
    bot = await start_bot()  # trades TST-PERP only
    report = kinds(bot, "reconciliation")[-1].data
    assert report["matched"] is True and "balance:TST" not in report["positions"]


async def test_more_fills_for_a_partly_filled_order_we_closed_reopen_it(start_bot, core, sim_clock):
    from perpsbot.domain import Fill, Liquidity

    bot = await start_bot()
    ex, risk = bot.registry.execution, bot.registry.risk
    order = closed_as_absent(bot, "50")
    order.reject_reason = None
    bot.registry.orders.upsert(order)
    order = bot.registry.orders.get(order.client_order_id)

    def fill(n: int, size: str) -> Fill:
        return Fill(f"t{n}", order.client_order_id, PERP, Side.BUY, D(50), D(size), D(0), Liquidity.MAKER,
                    sim_clock.now())

    stored = bot.registry.orders.get(order.client_order_id)
    stored.status = OrderStatus.OPEN
    ex.record_fill(fill(1, "0.1"), stored)
    stored.reject_reason = "no longer known to the exchange"
    stored.advance_to(OrderStatus.CANCELLED, sim_clock.now())  # closed by inference, with a fill
    bot.registry.orders.upsert(stored)
    ex.record_fill(fill(2, "0.1"), stored)
    bot.registry.orders.upsert(stored)
    again = bot.registry.orders.get(order.client_order_id)
    assert again.status is OrderStatus.PARTIALLY_FILLED and again.filled_size == D("0.2")
    assert risk.symbol_reduce_only == {PERP: ["late_fill"]}
    assert [e.data["rule"] for e in kinds(bot, "alert")][-1] == "late_fill"


async def test_a_run_inherits_the_whole_balance_of_a_traded_spot_asset_and_nothing_it_does_not_trade(
        start_bot, core, sim_clock):
    from perpsbot.domain import TimeInForce

    core.place_order(request("by-hand-spot", "TST-USD", Side.BUY, "0.5"), sim_clock.now())
    core.place_order(request("by-hand-sell", "TST-USD", Side.SELL, "0.2", limit="500", tif=TimeInForce.GTC),
                     sim_clock.now())  # rests far above the market: 0.2 of the 0.5 on hold
    core.place_order(request("by-hand-perp", PERP, Side.BUY, "0.2", leverage="2"), sim_clock.now())
    bot = await start_bot(symbols=("TST-USD",))
    (started,) = kinds(bot, "bot_started")
    assert set(started.data["opening_positions"]) == {"TST-USD"}  # the perpetual is not traded by this bot
    assert D(started.data["opening_positions"]["TST-USD"]["size"]) == D("0.5")  # on hold too
