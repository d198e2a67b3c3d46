"""The liquidation check fed by the venue's margin figures (Coinbase CFM), the flat
maintenance rate only where the venue gives none, and the margin window's changes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from perpsbot.config import BotConfig
from perpsbot.domain import BookLevel, MarginRates, OrderBook, Position, Product, ProductType, Side, VenueMargin
from perpsbot.domain.clock import ManualClock
from perpsbot.risk.manager import OrderIntent, RiskManager
from perpsbot.store import EventStore

BIP = "BIP-20DEC30-CDE"
CONTRACT = D("0.01")
PRODUCT = Product(BIP, "BTC", "USD", ProductType.PERPETUAL, D(1), D(5), D(1), max_leverage=D(10),
                  contract_size=CONTRACT)  # the flat default maintenance rate: 5 %
NOW = datetime(2026, 12, 4, 12, 30, tzinfo=UTC)


def venue_margin(buffer: str, window: str = "overnight", initial: str = "2250",
                 maintenance: str = "1125") -> VenueMargin:
    return VenueMargin(window=window, window_ends=None, total_balance=D(10_000), buying_power=D(7750),
                       initial_margin=D(initial), maintenance_margin=D(maintenance),
                       liquidation_threshold=D(maintenance), liquidation_buffer=D(buffer),
                       liquidation_buffer_pct=None, rates={BIP: MarginRates(D("0.25"), D("0.25"))})


@pytest.fixture
def risk(tmp_path: Path) -> RiskManager:
    config = BotConfig(data_dir=tmp_path / "data", max_leverage=D(5), max_position_notional=D(100_000),
                       max_total_notional=D(100_000), max_order_notional=D(50_000), max_position_equity_share=D(5),
                       min_liquidation_distance_pct=D("0.05"))
    return RiskManager(config, ManualClock(NOW), EventStore(tmp_path / "events.db"), lambda s: 1.0,
                       products={BIP: PRODUCT})


def buy(contracts: str, held: str) -> OrderIntent:
    return OrderIntent(BIP, Side.BUY, D(contracts), D(90_000), D(held), D(2), contract_size=CONTRACT)


def the_book() -> OrderBook:
    bids = tuple(BookLevel(D(89_995 - 5 * i), D(100)) for i in range(5))
    asks = tuple(BookLevel(D(90_005 + 5 * i), D(100)) for i in range(5))
    return OrderBook(BIP, NOW, bids, asks)


def test_an_order_the_venues_thin_buffer_cannot_carry_is_refused_though_the_flat_rate_allows_it(risk):
    held = {BIP: Position(BIP, size=D(10), entry_price=D(90_000), leverage=D(2), contract_size=CONTRACT)}
    assert risk.check(buy("5", "10"), D(10_000), held, the_book()).approved  # flat 5 %: 2x is ~47 % away
    risk.note_margin(venue_margin(buffer="1000"))
    verdict = risk.check(buy("5", "10"), D(10_000), held, the_book())
    # 5 more contracts add 5 x 900 x 12.5 % = 562.50 of maintenance: 437.50 left, over 15 x 900 x 0.875
    assert not verdict.approved and verdict.code == "liquidation_buffer"
    assert "would be 3.70% of the mark away" in verdict.detail and "overnight maintenance 12.50%" in verdict.detail
    risk.note_margin(venue_margin(buffer="5000"))
    assert risk.check(buy("5", "10"), D(10_000), held, the_book()).approved  # 4 437.50 left: ~37 %


def test_the_flat_default_applies_only_without_the_venues_figures_and_says_so(risk):
    assert risk.snapshot()["margin"] == {"source": "flat default",
                                         "maintenance_rates": {BIP: {"long": D("0.05"), "short": D("0.05")}}}
    risk.note_margin(venue_margin(buffer="5000"))
    state = risk.snapshot()["margin"]
    assert state["source"] == "venue" and state["window"] == "overnight" and state["flat_default"] == {}
    assert state["maintenance_rates"] == {BIP: {"long": D("0.125"), "short": D("0.125")}}
    assert state["liquidation_buffer"] == D(5000)


def test_a_margin_window_change_is_an_event(risk):
    risk.note_margin(venue_margin(buffer="5000", window="overnight"))
    risk.note_margin(venue_margin(buffer="5000", window="overnight"))
    assert risk.events.query(kind="margin_window_changed") == []
    risk.note_margin(venue_margin(buffer="7000", window="intraday", initial="900", maintenance="450"))
    (event,) = risk.events.query(kind="margin_window_changed")
    assert event.data["previous"] == "overnight" and event.data["window"] == "intraday"
    assert risk.snapshot()["margin"]["window_change"] == {"from": "overnight", "to": "intraday", "at": NOW,
                                                          "ends": None}
