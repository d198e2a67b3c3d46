"""The MA crossover (the built-in, on the strategy API): crosses, reduce-only, shorts,
the trailing stop."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from perpsbot.domain import Position
from perpsbot.market.windows import MarkWindow
from perpsbot.strategy.base import MarketView, Target
from perpsbot.strategy.builtin.ma_crossover import MACrossover
from perpsbot.strategy.runner import StrategyRunner

E0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def ma(short: int, long: int, stop: str, base: int = 1) -> StrategyRunner:
    strategy = MACrossover(short_window=short, long_window=long, trailing_stop_pct=D(stop))
    assert strategy.check() is None
    return StrategyRunner(strategy, base, budget_ms=None, spec="ma_crossover")


def window_of(closes: list[float], seconds: int = 1) -> MarkWindow:
    window = MarkWindow(max_marks=10, max_bars=100, bar_seconds=seconds)
    for i, close in enumerate(closes):
        window.append_bar(E0 + seconds * i, close, close, close, close)
    return window


UP = [10.0, 10, 10, 10, 9, 8, 12]  # fast(2) crosses above slow(5) on the last bar
DOWN = [10.0, 10, 10, 10, 11, 12, 8]


def view(closes, *, size="0", entry="0", reduce_only=False, shorts=True, closed=True, mark=None) -> MarketView:
    position = Position("P", size=D(size), entry_price=D(entry)) if D(size) else None
    price = D(str(mark if mark is not None else closes[-1]))
    return MarketView("P", None, price, closed, position, reduce_only, shorts, window_of(closes))


@pytest.fixture
def strategy() -> StrategyRunner:
    return ma(2, 5, "0.05")


def test_bullish_cross_goes_long_and_bearish_goes_short(strategy):
    assert strategy.decide(view(UP)).target is Target.LONG
    assert strategy.decide(view(DOWN)).target is Target.SHORT


def test_no_decision_without_a_closed_bar_or_enough_bars(strategy):
    assert strategy.decide(view(UP, closed=False)).target is Target.HOLD
    assert strategy.decide(view(UP[-4:])).target is Target.HOLD


def test_flat_series_holds(strategy):
    assert strategy.decide(view([10.0] * 8)).target is Target.HOLD


def test_shorts_disabled_only_closes_longs(strategy):
    assert strategy.decide(view(DOWN, shorts=False)).target is Target.HOLD
    assert strategy.decide(view(DOWN, shorts=False, size="1", entry="8")).target is Target.FLAT


def test_reduce_only_never_opens(strategy):
    assert strategy.decide(view(UP, reduce_only=True)).target is Target.HOLD
    assert strategy.decide(view(DOWN, reduce_only=True)).target is Target.HOLD
    assert strategy.decide(view(UP, reduce_only=True, size="-1", entry="12")).target is Target.FLAT
    assert strategy.decide(view(DOWN, reduce_only=True, size="1", entry="8")).target is Target.FLAT


def test_cross_against_a_position_reverses_it(strategy):
    assert strategy.decide(view(UP, size="-1", entry="12")).target is Target.LONG
    assert strategy.decide(view(UP, size="1", entry="8")).target is Target.HOLD


def test_trailing_stop_closes_a_long_that_gives_back_from_its_best_mark(strategy):
    flat = [10.0] * 8
    assert strategy.decide(view(flat, size="1", entry="100", mark=100, closed=False)).target is Target.HOLD
    assert strategy.decide(view(flat, size="1", entry="100", mark=110, closed=False)).target is Target.HOLD
    # 110 -> 104.4 is 5.1 % off the best mark
    decision = strategy.decide(view(flat, size="1", entry="100", mark=104.4, closed=False))
    assert decision.target is Target.FLAT
    assert "trailing stop" in decision.reason


def test_trailing_stop_for_a_short_tracks_the_lowest_mark(strategy):
    flat = [10.0] * 8
    strategy.decide(view(flat, size="-1", entry="100", mark=90, closed=False))
    assert strategy.decide(view(flat, size="-1", entry="100", mark=94, closed=False)).target is Target.HOLD  # 4.4 %
    assert strategy.decide(view(flat, size="-1", entry="100", mark=95, closed=False)).target is Target.FLAT  # 5.6 %


def test_windows_must_be_ordered():
    assert MACrossover(short_window=5, long_window=5, trailing_stop_pct=D("0.01")).check() is not None


def test_a_zero_trailing_stop_is_off():
    strategy = ma(2, 5, "0")
    held = Position("P", size=D(1), entry_price=D(100))
    window = window_of([100.0] * 6 + [50.0])
    decision = strategy.decide(MarketView("P", None, D(50), True, held, False, True, window))
    assert "trailing stop" not in decision.reason
