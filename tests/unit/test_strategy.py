from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from perpsbot.domain import Position
from perpsbot.market.windows import Bar
from perpsbot.strategy.base import MarketView, Target
from perpsbot.strategy.baseline import MACrossover

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def bars(closes: list[float]) -> list[Bar]:
    return [Bar(T0 + timedelta(seconds=i), D(str(c)), D(str(c)), D(str(c)), D(str(c))) for i, c in enumerate(closes)]


UP = [10.0, 10, 10, 10, 9, 8, 12]  # fast(2) crosses above slow(5) on the last bar
DOWN = [10.0, 10, 10, 10, 11, 12, 8]


def view(closes, *, size="0", entry="0", reduce_only=False, shorts=True, closed=True, mark=None) -> MarketView:
    series = bars(closes)
    position = Position("P", size=D(size), entry_price=D(entry)) if D(size) else None
    return MarketView(
        "P", series, D(str(mark if mark is not None else closes[-1])), closed, position, reduce_only, shorts
    )


@pytest.fixture
def strategy() -> MACrossover:
    return MACrossover(2, 5, D("0.05"))


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
    with pytest.raises(ValueError):
        MACrossover(5, 5, D("0.01"))
