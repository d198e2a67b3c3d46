from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest

from perpsbot.config import BotConfig
from perpsbot.domain import Side
from perpsbot.risk.manager import OrderIntent, RiskManager
from perpsbot.store import EventStore


@pytest.fixture
def events(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "events.db")


def manager(clock, events, *, age: float | None = 1.0, **cfg) -> RiskManager:
    config = BotConfig(max_leverage=D(3), max_position_notional=D(10_000), mark_staleness_seconds=10, **cfg)
    return RiskManager(config, clock, events, lambda symbol: age)


def buy(size: str, *, held: str = "0", mark: str = "100", leverage: str = "1") -> OrderIntent:
    return OrderIntent("BTC-PERP-INTX", Side.BUY, D(size), D(mark), D(held), D(leverage))


def test_an_order_within_limits_is_approved(clock, events):
    verdict = manager(clock, events).check(buy("10"), equity=D(10_000))
    assert verdict.approved and verdict.code == "approved"
    assert events.count("risk_rejected") == 0


def test_position_notional_cap_blocks_and_is_recorded(clock, events):
    verdict = manager(clock, events).check(buy("101"), equity=D(1_000_000))
    assert not verdict.approved and verdict.code == "max_position_notional"
    recorded = events.query(kind="risk_rejected")
    assert recorded[0].data["code"] == "max_position_notional"


def test_leverage_cap_blocks_on_post_trade_exposure(clock, events):
    risk = manager(clock, events)
    assert risk.check(buy("30", held="0"), equity=D(1_000)).approved  # 3x
    verdict = risk.check(buy("1", held="30"), equity=D(1_000))  # 3.1x
    assert not verdict.approved and verdict.code == "max_leverage"


def test_requested_leverage_above_cap_is_blocked(clock, events):
    verdict = manager(clock, events).check(buy("1", leverage="5"), equity=D(10_000))
    assert verdict.code == "max_leverage"


def test_stale_or_missing_mark_blocks_new_exposure(clock, events):
    assert manager(clock, events, age=10.5).check(buy("1"), D(10_000)).code == "stale_mark"
    assert manager(clock, events, age=None).check(buy("1"), D(10_000)).code == "stale_mark"


def test_reducing_orders_pass_even_with_a_stale_mark_and_in_reduce_only(clock, events):
    risk = manager(clock, events, age=999.0, reduce_only=True)
    close_long = OrderIntent("BTC-PERP-INTX", Side.SELL, D(2), D(100), D(2))
    assert risk.check(close_long, D(10_000)).approved


def test_reduce_only_blocks_opening_and_flipping(clock, events):
    risk = manager(clock, events, reduce_only=True)
    assert risk.check(buy("1"), D(10_000)).code == "reduce_only_mode"
    flip = OrderIntent("BTC-PERP-INTX", Side.SELL, D(3), D(100), D(2))
    assert risk.check(flip, D(10_000)).code == "reduce_only_mode"


def test_daily_loss_switches_to_reduce_only_until_the_next_utc_day(clock, events):
    risk = manager(clock, events, daily_loss_limit=D(500))
    risk.track_equity(D(10_000), clock.now())
    risk.track_equity(D(9_600), clock.now())
    assert not risk.reduce_only
    risk.track_equity(D(9_500), clock.now())
    assert risk.reduce_only_reasons == ["daily_loss"]
    assert risk.check(buy("1"), D(9_500)).code == "reduce_only_mode"
    assert events.query(kind="risk_mode")[-1].data["reason"] == "daily_loss"
    clock.advance(timedelta(days=1).total_seconds())
    risk.track_equity(D(9_500), clock.now())
    assert not risk.reduce_only
