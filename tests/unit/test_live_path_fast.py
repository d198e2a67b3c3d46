"""The pieces a backtest runs once per candle — the same objects a live run uses —
give the same answers as the straightforward computations they replace."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perpsbot.config import BotConfig
from perpsbot.domain import Fill, Liquidity, Order, OrderType, Position, Side
from perpsbot.domain.clock import SimulatedClock
from perpsbot.market.windows import Bar, Mark, MarkWindow
from perpsbot.risk.manager import RiskManager
from perpsbot.store import EventStore, OrdersStore
from perpsbot.store.memory import MemoryEventStore, MemoryOrdersStore
from perpsbot.strategy.base import MarketView, Target
from perpsbot.strategy.builtin.ma_crossover import MACrossover
from perpsbot.strategy.runner import StrategyRunner

T0 = datetime(2026, 1, 1, tzinfo=UTC)
E0 = T0.timestamp()


# ----- clock --------------------------------------------------------------------------


def test_simulated_clock_moves_only_forward_and_builds_the_datetime_on_demand():
    clock = SimulatedClock(E0)
    assert clock.now() == T0
    first = clock.now()
    assert clock.now() is first  # cached until the clock moves
    clock.set(E0 + 90)
    assert clock.now() == T0 + timedelta(seconds=90)
    with pytest.raises(ValueError):
        clock.set(E0)


# ----- windows ------------------------------------------------------------------------


def test_closed_candles_go_into_the_window_as_bars_and_their_close_is_the_mark():
    w = MarkWindow(max_marks=10, max_bars=3, bar_seconds=60)
    for i in range(5):
        w.append_bar(E0 + 60 * i, 10.0 + i, 12.0 + i, 9.0 + i, 11.5 + i)
    assert w.bars_closed == 5 and w.appended == 5 and w.bar_count == 3
    assert [b.close for b in w.bars] == [D("13.5"), D("14.5"), D("15.5")]
    assert w.bars[0] == Bar(T0 + timedelta(minutes=2), D(12), D(14), D(11), D("13.5"))
    assert w.closes() == [13.5, 14.5, 15.5] and w.last_closes(2) == [14.5, 15.5] and w.last_close == 15.5
    # The mark: the last close, stamped when that candle ended.
    assert w.last == Mark(T0 + timedelta(minutes=5), D("15.5"))
    assert w.price == 15.5
    # A live mark after it lands behind it in time order; an older one is ignored.
    assert not w.append(Mark(T0 + timedelta(minutes=4), D(1)))
    w.append(Mark(T0 + timedelta(minutes=5, seconds=10), D(16)))
    assert [m.price for m in w.marks] == [D("15.5"), D(16)]


def test_seeded_bars_count_as_appended_but_not_as_closed():
    w = MarkWindow(max_marks=10, max_bars=10, bar_seconds=5)
    w.seed_bars([Bar(T0, D(1), D(1), D(1), D(1)), Bar(T0 + timedelta(seconds=5), D(2), D(2), D(2), D(2))])
    assert w.appended == 2 and w.bars_closed == 0 and w.last_close == 2.0


# ----- the crossover --------------------------------------------------------------------

UP, DOWN = 1, -1


def fresh_cross(closes: list[float], short: int, long: int) -> int:
    """What the last close did, averaged afresh."""
    if len(closes) < long + 1:
        return 0
    now = math.fsum(closes[-short:]) / short - math.fsum(closes[-long:]) / long
    before = math.fsum(closes[-short - 1 : -1]) / short - math.fsum(closes[-long - 1 : -1]) / long
    if before <= 0 < now:
        return UP
    if before >= 0 > now:
        return DOWN
    return 0


def crossover(short: int, long: int) -> StrategyRunner:
    return StrategyRunner(MACrossover(short_window=short, long_window=long, trailing_stop_pct=D(0)), 60,
                          budget_ms=None, spec="ma_crossover")


def view_of(window: MarkWindow, position: Position | None = None, *, reduce_only=False, shorts=True) -> MarketView:
    return MarketView("P", None, None, True, position, reduce_only, shorts, window)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=300),
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=1, max_value=12),
)
def test_the_incremental_averages_give_the_crosses_of_fresh_averages(cents, short, extra):
    long = short + extra
    closes = [c / 4 for c in cents]  # quarters: sums are exact, so ties are real ties
    strategy = crossover(short, long)
    window = MarkWindow(max_marks=10, max_bars=long + 2, bar_seconds=60)
    for i, close in enumerate(closes):
        window.append_bar(E0 + 60 * i, close, close, close, close)
        target = strategy.decide(view_of(window)).target
        expected = {UP: Target.LONG, DOWN: Target.SHORT, 0: Target.HOLD}[fresh_cross(closes[: i + 1], short, long)]
        assert target is expected, i


def test_the_strategy_starts_over_when_the_window_is_replaced_or_runs_ahead():
    strategy = crossover(2, 4)
    window = MarkWindow(max_marks=10, max_bars=5, bar_seconds=60)
    up = [10.0, 10, 10, 10, 8, 14]  # the last bar crosses up
    for i, close in enumerate(up):
        window.append_bar(E0 + 60 * i, close, close, close, close)
    assert strategy.decide(view_of(window)).target is Target.LONG
    # Many bars at once (more than the window holds): worked out from what it holds.
    for i, close in enumerate([10.0] * 8 + [12, 6], start=6):
        window.append_bar(E0 + 60 * i, close, close, close, close)
    assert strategy.decide(view_of(window)).target is Target.SHORT
    # A new window object (bar length changed): followed from scratch.
    other = MarkWindow(max_marks=10, max_bars=5, bar_seconds=30)
    for i, close in enumerate(up):
        other.append_bar(E0 + 30 * i, close, close, close, close)
    assert strategy.decide(view_of(other)).target is Target.LONG


# ----- the equity watch ------------------------------------------------------------------


def risk_manager(tmp_path: Path, clock: SimulatedClock, daily_loss_limit: int = 300) -> RiskManager:
    config = BotConfig(data_dir=tmp_path, daily_loss_limit=D(daily_loss_limit), max_drawdown_pct=D("0.05"),
                       kill_drawdown_pct=D("0.12"))
    return RiskManager(config, clock, MemoryEventStore(), lambda symbol: 0.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-400, 400), st.integers(1, 14_400)), min_size=1, max_size=120))
def test_watching_equity_switches_modes_exactly_as_checking_every_figure(tmp_path_factory, steps):
    """``watch_equity`` (floats, a full check only when a level is crossed) and
    ``track_equity`` on every figure end up in the same mode after every step."""
    tmp = tmp_path_factory.mktemp("risk")
    clock_a, clock_b = SimulatedClock(E0), SimulatedClock(E0)
    every, watched = risk_manager(tmp, clock_a), risk_manager(tmp, clock_b)
    equity, t = 10_000.0, E0
    for delta, seconds in steps:
        equity = round(max(1.0, equity + delta * 2.5), 2)
        t += seconds
        clock_a.set(t)
        clock_b.set(t)
        every.track_equity(D(repr(equity)), clock_a.now())
        watched.watch_equity(equity, t)
        assert (watched.reduce_only_reasons, watched.kill_reasons) == (every.reduce_only_reasons, every.kill_reasons)


def test_the_watch_only_does_the_full_check_when_a_level_is_crossed(tmp_path, monkeypatch):
    clock = SimulatedClock(E0)
    risk = risk_manager(tmp_path, clock, daily_loss_limit=5000)
    calls = []
    real = risk.track_equity
    monkeypatch.setattr(risk, "track_equity", lambda equity, now: (calls.append(equity), real(equity, now)))
    for i, equity in enumerate([10_000, 10_050, 10_020, 10_100, 9_800, 9_590, 9_500, 9_700, 9_600]):
        clock.set(E0 + 60 * (i + 1))
        risk.watch_equity(float(equity), E0 + 60 * (i + 1))
        if equity == 9_590:
            assert risk.reduce_only_reasons == ["drawdown"]
    # Checked: the first figure; 9590 (5 % under the 10100 peak: reduce-only); 9700 (back
    # above the 9595 floor: cleared). New peaks, 9800, 9500 (still in it) and 9600 are not.
    assert [int(c) for c in calls] == [10_000, 9_590, 9_700]
    assert risk.reduce_only_reasons == []
    # The next UTC day is checked too (the daily loss starts over).
    clock.set(E0 + 86_400)
    risk.watch_equity(9_600.0, E0 + 86_400)
    assert [int(c) for c in calls] == [10_000, 9_590, 9_700, 9_600] and risk.day_start_equity == D("9600.0")


# ----- in-memory stores ------------------------------------------------------------------


def test_memory_stores_read_back_what_the_sqlite_stores_do(tmp_path):
    stores = [
        (EventStore(tmp_path / "e.db"), OrdersStore(tmp_path / "o.db")),
        (MemoryEventStore(), MemoryOrdersStore()),
    ]
    seen = []
    for events, orders in stores:
        run = events.start_run(T0, "paper", {"a": D("1.5")})
        orders.run_id = run
        reasons = ["config"]
        events.append(T0, "risk_mode", None, reduce_only=reasons, mode=Target.HOLD, at=T0)
        reasons.append("later")  # a caller's list changing afterwards changes nothing recorded
        events.append(T0 + timedelta(seconds=1), "fill", "BTC-USD", price=D("10.50"))
        events.put_state("risk", {"mode": "normal", "peak": D("2")}, T0)
        command = events.post_command(T0, "resume", by="cli")
        events.complete_command(command, T0, "resumed")
        order = Order("c1", "BTC-USD", Side.BUY, OrderType.MARKET, D(1), T0)
        orders.upsert(order)
        order.status = order.status.__class__("OPEN")
        fill = Fill("t1", "c1", "BTC-USD", Side.BUY, D(10), D(1), D("0.01"), Liquidity.TAKER, T0)
        first, again = orders.add_fill(fill), orders.add_fill(fill)
        order.record_fill(fill)
        orders.upsert(order)
        seen.append((
            [(e.kind, e.symbol, e.ts, e.data) for e in events.query()],
            [e.kind for e in events.query(kind="fill")], events.count(), events.get_state("risk")[0],
            events.command_result(command), [r.config for r in events.runs()],
            first, again, [(o.client_order_id, o.status, o.filled_size, o.average_fill_price) for o in orders.orders()],
            orders.orders(open_only=True), orders.fills(), orders.get("c1").status, orders.get("nope"),
        ))
        events.close()
        orders.close()
    assert seen[0] == seen[1]
    assert seen[0][0][0][3]["reduce_only"] == ["config"]
