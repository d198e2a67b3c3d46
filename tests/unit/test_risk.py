"""One test per risk control: it blocks, and a fine order still passes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from perpsbot.config import BotConfig
from perpsbot.domain import BookLevel, OrderBook, Position, Product, ProductType, Side
from perpsbot.domain.clock import ManualClock
from perpsbot.risk.manager import OrderIntent, RiskManager, kill_file_path
from perpsbot.risk.measures import is_off_hours, realized_volatility
from perpsbot.store import EventStore

SYM, ETH = "BIP-20DEC30-CDE", "ETP-20DEC30-CDE"
CONTRACT = D("0.01")  # BTC a contract: an order of N contracts at a mark of 10,000 is N x 100 USD
PERP = Product(SYM, "BTC", "USD", ProductType.PERPETUAL, D(1), D(5), D(1), D(20), CONTRACT, D("0.025"))
# Monday 2026-03-02 12:00 UTC: a weekday, midday
MONDAY_NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def events(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "events.db")


def make(clock, events, tmp_path, *, age: float | None = 1.0, marks=None, **cfg) -> RiskManager:
    defaults = dict(
        data_dir=tmp_path / "data", max_leverage=D(3), max_position_notional=D(10_000), max_total_notional=D(15_000),
        max_order_notional=D(8_000), max_position_equity_share=D(2), mark_staleness_seconds=10, mark_warn_seconds=3,
    )
    defaults.update(cfg)
    marks = marks or {}
    return RiskManager(
        BotConfig(**defaults), clock, events, lambda s: age, mark_of=marks.get, products={SYM: PERP},
    )


def book(mid: str = "10000", size: str = "1000", step: str = "1", levels: int = 5) -> OrderBook:
    m, st = D(mid), D(step)
    bids = tuple(BookLevel(m - st * (i + 1), D(size)) for i in range(levels))
    asks = tuple(BookLevel(m + st * (i + 1), D(size)) for i in range(levels))
    return OrderBook(SYM, MONDAY_NOON, bids, asks)


def buy(size: str, *, held: str = "0", mark: str = "10000", leverage: str = "1", symbol: str = SYM) -> OrderIntent:
    return OrderIntent(symbol, Side.BUY, D(size), D(mark), D(held), D(leverage), CONTRACT)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MONDAY_NOON)


def test_a_fine_order_passes_every_check(clock, events, tmp_path):
    risk = make(clock, events, tmp_path)
    verdict = risk.check(buy("10"), D(10_000), {}, book())
    assert verdict.approved and verdict.code == "approved"
    assert events.query(kind="risk_approved")[0].data["code"] == "approved"


@pytest.mark.parametrize(
    ("settings", "intent", "equity", "code"),
    [
        ({}, buy("1", leverage="5"), "10000", "max_leverage"),
        ({"symbol_max_leverage": {SYM: D(2)}}, buy("1", leverage="3"), "10000", "max_leverage"),
        ({}, buy("81"), "100000", "max_order_value"),
        ({"symbol_max_quantity": {SYM: D(5)}}, buy("2", held="4"), "10000", "max_quantity"),
        ({}, buy("30", held="75"), "100000", "max_position_notional"),
        ({"symbol_max_notional": {SYM: D(2_000)}}, buy("21"), "100000", "max_position_notional"),
        ({}, buy("25"), "1000", "max_position_share"),
        ({"max_position_equity_share": D(5)}, buy("35"), "1000", "max_leverage"),
    ],
)
def test_pre_trade_caps_block(clock, events, tmp_path, settings, intent, equity, code):
    risk = make(clock, events, tmp_path, **settings)
    verdict = risk.check(intent, D(equity), {}, book())
    assert (verdict.approved, verdict.code) == (False, code)
    assert events.query(kind="risk_rejected")[-1].data["code"] == code


def test_total_notional_counts_other_positions_at_their_marks(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, marks={ETH: D(3_000)})
    others = {ETH: Position(ETH, size=D(20), entry_price=D(2_000), contract_size=D("0.1"))}  # 2 ETH
    assert risk.check(buy("80"), D(100_000), others, book()).approved  # 8,000 + 6,000
    verdict = risk.check(buy("80"), D(100_000), {ETH: Position(ETH, size=D(30), contract_size=D("0.1"))}, book())
    assert verdict.code == "max_total_notional"  # 8,000 + 9,000


def test_account_leverage_caps_total_exposure_over_equity(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, max_position_equity_share=D(3), marks={ETH: D(100)})
    others = {ETH: Position(ETH, size=D(200), contract_size=D("0.1"))}  # 2,000
    assert risk.check(buy("10"), D(1_000), others, book()).approved  # 3,000 / 1,000 = 3x
    assert risk.check(buy("11"), D(1_000), others, book()).code == "max_leverage"


def test_off_hours_leverage_cap_applies_at_night_and_weekends_in_the_configured_zone(clock, events, tmp_path):
    risk = make(
        clock, events, tmp_path, off_hours_max_leverage=D(1), off_hours_timezone="America/New_York",
        night_hours="22:00-06:00",
    )
    assert risk.check(buy("1", leverage="2"), D(10_000), {}, book()).approved  # Monday 07:00 in New York
    clock.advance(11 * 3600)  # 23:00 UTC = 18:00 New York, still day there
    assert risk.check(buy("1", leverage="2"), D(10_000), {}, book()).approved
    clock.advance(4 * 3600)  # 03:00 UTC = 22:00 New York: night
    assert risk.check(buy("1", leverage="2"), D(10_000), {}, book()).code == "max_leverage"
    assert risk.check(buy("1", leverage="1"), D(10_000), {}, book()).approved


def test_off_hours_calendar():
    saturday = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    assert is_off_hours(saturday, "UTC", "", True)
    assert not is_off_hours(saturday, "UTC", "", False)
    assert is_off_hours(datetime(2026, 3, 2, 23, 30, tzinfo=UTC), "UTC", "22:00-06:00", False)
    assert is_off_hours(datetime(2026, 3, 2, 5, 59, tzinfo=UTC), "UTC", "22:00-06:00", False)
    assert not is_off_hours(datetime(2026, 3, 2, 6, 0, tzinfo=UTC), "UTC", "22:00-06:00", False)
    assert is_off_hours(datetime(2026, 3, 2, 13, 0, tzinfo=UTC), "UTC", "12:00-14:00", False)
    # Sunday evening in Tokyo is already Monday morning UTC-side... and vice versa
    assert is_off_hours(datetime(2026, 3, 1, 20, 0, tzinfo=UTC), "Asia/Tokyo", "", True) is False


def test_liquidation_buffer_refuses_positions_liquidated_too_close_to_the_mark(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, max_leverage=D(20), min_liquidation_distance_pct=D("0.05"),
                max_position_equity_share=D(50))
    # 10x with 2.5 % maintenance: liquidation ~7.7 % below the mark
    assert risk.check(buy("10", leverage="10"), D(10_000), {}, book()).approved
    # 20x: liquidation ~2.6 % below the mark
    verdict = risk.check(buy("10", leverage="20"), D(10_000), {}, book())
    assert verdict.code == "liquidation_buffer"


@pytest.mark.parametrize(
    ("the_book", "detail"),
    [
        (book(size="1"), "holds only 5 of 10"),
        (book(step="50"), "bps from the mark"),
        (None, "no order book"),
    ],
)
def test_slippage_guard_uses_the_live_book(clock, events, tmp_path, the_book, detail):
    risk = make(clock, events, tmp_path, max_slippage_bps=D(30))
    verdict = risk.check(buy("10"), D(10_000), {}, the_book)
    assert verdict.code == "slippage" and detail in verdict.detail


def test_mark_staleness_soft_warns_and_hard_blocks(clock, events, tmp_path):
    assert make(clock, events, tmp_path, age=4.0).check(buy("1"), D(10_000), {}, book()).approved
    assert events.query(kind="risk_warning")[0].data["code"] == "stale_mark_soft"
    assert make(clock, events, tmp_path, age=10.5).check(buy("1"), D(10_000), {}, book()).code == "stale_mark"
    assert make(clock, events, tmp_path, age=None).check(buy("1"), D(10_000), {}, book()).code == "stale_mark"


def test_reducing_orders_pass_stale_marks_caps_and_reduce_only(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, age=999.0, reduce_only=True, max_order_notional=D(1))
    close_long = OrderIntent(SYM, Side.SELL, D(200), D(10_000), D(200), contract_size=CONTRACT)
    assert risk.check(close_long, D(10_000), {}, None).approved


def test_reduce_only_blocks_opening_and_flipping(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, reduce_only=True)
    assert risk.check(buy("1"), D(10_000), {}, book()).code == "reduce_only_mode"
    flip = OrderIntent(SYM, Side.SELL, D(3), D(10_000), D(2), contract_size=CONTRACT)
    assert risk.check(flip, D(10_000), {}, book()).code == "reduce_only_mode"


def test_error_streak_starts_a_cooldown_that_expires(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, error_streak_limit=3, error_cooldown_seconds=60)
    for _ in range(2):
        risk.record_order_result(ok=False)
    assert risk.check(buy("1"), D(10_000), {}, book()).approved
    risk.record_order_result(ok=False)
    assert risk.check(buy("1"), D(10_000), {}, book()).code == "error_cooldown"
    clock.advance(61)
    assert risk.check(buy("1"), D(10_000), {}, book()).approved


def test_order_rate_limit_counts_the_last_minute(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, max_orders_per_minute=3)
    for _ in range(3):
        assert risk.check(buy("1"), D(10_000), {}, book()).approved
        clock.advance(10)
    assert risk.check(buy("1"), D(10_000), {}, book()).code == "order_rate"
    clock.advance(31)  # the first order is now over a minute old
    assert risk.check(buy("1"), D(10_000), {}, book()).approved


def test_daily_loss_switches_to_reduce_only_until_the_next_utc_day(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, daily_loss_limit=D(500), max_drawdown_pct=D("0.5"), kill_drawdown_pct=D("0.6"))
    risk.evaluate(D(10_000), {})
    risk.evaluate(D(9_600), {})
    assert not risk.reduce_only
    risk.evaluate(D(9_500), {})
    assert risk.reduce_only_reasons == ["daily_loss"]
    assert risk.check(buy("1"), D(9_500), {}, book()).code == "reduce_only_mode"
    assert events.query(kind="risk_mode")[-1].data["change"] == "reduce-only on: daily_loss"
    clock.advance(13 * 3600)  # past UTC midnight
    risk.evaluate(D(9_500), {})
    assert not risk.reduce_only


def test_drawdown_goes_reduce_only_then_kill(clock, events, tmp_path):
    risk = make(
        clock, events, tmp_path, daily_loss_limit=D(1_000_000), max_drawdown_pct=D("0.1"), kill_drawdown_pct=D("0.2")
    )
    risk.evaluate(D(10_000), {})
    risk.evaluate(D(12_000), {})  # a new peak
    risk.evaluate(D(10_900), {})  # 9.2 % off the peak
    assert risk.mode == "normal"
    risk.evaluate(D(10_700), {})  # 10.8 %
    assert risk.mode == "reduce-only" and risk.reduce_only_reasons == ["drawdown"]
    risk.evaluate(D(10_850), {})  # 9.6 %: back inside the limit, but not clearly
    assert risk.mode == "reduce-only"
    risk.evaluate(D(11_100), {})  # 7.5 %, below 80 % of the limit: lifts by itself
    assert risk.mode == "normal"
    risk.evaluate(D(9_500), {})  # 20.8 %: kill
    assert risk.mode == "killed" and risk.kill_reasons == ["drawdown"]
    assert risk.check(buy("1"), D(9_500), {}, book()).code == "kill_switch"
    risk.evaluate(D(11_900), {})
    assert risk.killed  # a kill stays until someone resumes


def noisy(vol_annual: float, bars: int, bar_seconds: int) -> list[D]:
    """Closes alternating up and down with the given annualized volatility."""
    import math

    step = vol_annual / math.sqrt(365 * 24 * 3600 / bar_seconds)
    price, out = 100.0, []
    for i in range(bars):
        price *= math.exp(step if i % 2 else -step)
        out.append(D(str(round(price, 10))))
    return out


def test_realized_volatility_is_scaled_for_the_sample_interval():
    for bar_seconds in (1, 60, 3600):
        vol = realized_volatility(noisy(0.8, 200, bar_seconds), bar_seconds)
        assert vol == pytest.approx(0.8, rel=0.02)
    assert realized_volatility([D(1), D(1)], 1) is None


def test_volatility_breaker_warns_then_reduce_only_then_kills_with_a_cooldown(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, bar_seconds=1, vol_window=30, vol_warn=D(1), vol_reduce_only=D(2),
                vol_kill=D(4), vol_cooldown_seconds=120)
    risk.evaluate(D(10_000), {SYM: noisy(0.5, 40, 1)})
    assert risk.mode == "normal" and events.count("risk_warning") == 0
    risk.evaluate(D(10_000), {SYM: noisy(1.5, 40, 1)})
    assert risk.mode == "normal" and events.query(kind="risk_warning")[0].data["code"] == "volatility"
    risk.evaluate(D(10_000), {SYM: noisy(2.5, 40, 1)})
    assert risk.reduce_only_reasons == [f"volatility:{SYM}"]
    clock.advance(60)
    risk.evaluate(D(10_000), {SYM: noisy(0.5, 40, 1)})
    assert risk.reduce_only  # calm, but the cooldown has not passed
    clock.advance(121)
    risk.evaluate(D(10_000), {SYM: noisy(0.5, 40, 1)})
    assert not risk.reduce_only
    risk.evaluate(D(10_000), {SYM: noisy(5.0, 40, 1)})
    assert risk.kill_reasons == [f"volatility:{SYM}"]


def test_kill_switch_from_config_blocks_everything_but_flatten_orders(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, kill_switch=True)
    assert risk.mode == "killed" and risk.kill_reasons == ["config"]
    assert risk.check(buy("1"), D(10_000), {}, book()).code == "kill_switch"
    close = OrderIntent(SYM, Side.SELL, D(1), D(10_000), D(1), contract_size=CONTRACT)
    assert risk.check(close, D(10_000), {}, None).code == "kill_switch"
    flatten = OrderIntent(SYM, Side.SELL, D(1), D(10_000), D(1), contract_size=CONTRACT, flatten=True)
    assert risk.check(flatten, D(10_000), {}, None).approved


def test_kill_switch_from_the_sentinel_file_with_flatten(clock, events, tmp_path):
    risk = make(clock, events, tmp_path)
    path = kill_file_path(risk.config)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"reason": "ops", "flatten": True}))
    risk.evaluate(D(10_000), {})
    assert risk.kill_reasons == ["kill_file"] and risk.flatten_requested
    path.unlink()
    risk.evaluate(D(10_000), {})
    assert risk.mode == "normal" and not risk.flatten_requested


def test_resume_refuses_while_the_cause_persists(clock, events, tmp_path):
    risk = make(
        clock, events, tmp_path, daily_loss_limit=D(1_000_000), max_drawdown_pct=D("0.1"), kill_drawdown_pct=D("0.2")
    )
    risk.evaluate(D(10_000), {})
    risk.evaluate(D(7_000), {})
    assert risk.killed
    events.post_command(clock.now(), "resume")
    risk.evaluate(D(7_000), {})
    assert risk.killed
    assert "drawdown 30.00% is still beyond 20.00%" in risk.resume()
    risk.evaluate(D(9_300), {})  # 7 % drawdown: clearly below both levels
    events.post_command(clock.now(), "resume")
    risk.evaluate(D(9_300), {})
    assert not risk.killed and risk.reduce_only_reasons == []


def test_mode_and_reasons_survive_a_restart(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, daily_loss_limit=D(100), max_drawdown_pct=D("0.1"), kill_drawdown_pct=D("0.2"))
    risk.evaluate(D(10_000), {})
    risk.evaluate(D(7_500), {})
    assert risk.kill_reasons == ["drawdown"] and set(risk.reduce_only_reasons) == {"daily_loss", "drawdown"}
    again = make(
        clock, events, tmp_path, daily_loss_limit=D(100), max_drawdown_pct=D("0.1"), kill_drawdown_pct=D("0.2")
    )
    again.restore()
    assert again.kill_reasons == ["drawdown"]
    assert set(again.reduce_only_reasons) == {"daily_loss", "drawdown"}
    assert again.peak_equity == D(10_000) and again.day_start_equity == D(10_000)
    assert events.query(kind="risk_mode")[-1].data["change"] == "restored from the last run"


def test_a_fresh_simulator_account_does_not_inherit_equity_marks(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, daily_loss_limit=D(100))
    risk.evaluate(D(10_000), {})
    risk.evaluate(D(9_800), {})
    fresh = RiskManager(risk.config, clock, events, lambda s: 1.0, account_persists=False)
    fresh.restore()
    assert fresh.reduce_only_reasons == [] and fresh.peak_equity is None


def test_leaving_config_reduce_only_keeps_other_reasons(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, reduce_only=True)
    risk.enter_reduce_only("daily_loss")
    risk.update_config(risk.config.model_copy(update={"reduce_only": False}))
    assert risk.reduce_only_reasons == ["daily_loss"]


def test_after_the_sentinel_resume_clears_the_symbol_volatility_kill(clock, events, tmp_path):
    risk = make(clock, events, tmp_path, bar_seconds=1, vol_warn=D(1), vol_reduce_only=D(2), vol_kill=D(4),
                vol_cooldown_seconds=0)
    risk.evaluate(D(10_000), {SYM: noisy(5.0, 40, 1)})
    assert risk.resume().startswith("refused")
    risk.evaluate(D(10_000), {SYM: noisy(0.5, 40, 1)})
    assert risk.resume() == "resumed" and risk.mode == "normal"
