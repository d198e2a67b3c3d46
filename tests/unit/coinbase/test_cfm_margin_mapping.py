"""Reading the venue's CFM margin: the listing's rates per window, the current margin
window, sweeps — and a clear one-line error for each malformed answer."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from perpsbot.domain import MarginRates, Sweep
from perpsbot.exchange.coinbase.mapping import (
    MarginWindow,
    Obj,
    parse_intraday_enrolled,
    parse_margin_window,
    parse_product,
    parse_sweeps,
)
from perpsbot.exchange.port import BadResponse
from tests.coinbasekit import cfm_perp

BIP = "BIP-20DEC30-CDE"


def listing(**rates: object) -> Obj:
    body = cfm_perp(BIP, "90000")
    body["future_product_details"].update(rates)
    return Obj(body, "product")


def test_the_listing_gives_the_margin_rate_of_each_window_per_side():
    product = parse_product(listing(intraday_margin_rate={"long_margin_rate": "0.1", "short_margin_rate": "0.12"},
                                    overnight_margin_rate={"long_margin_rate": "0.25", "short_margin_rate": "0.3"}))
    assert product.intraday_margin == MarginRates(Decimal("0.1"), Decimal("0.12"))
    assert product.overnight_margin == MarginRates(Decimal("0.25"), Decimal("0.3"))
    assert parse_product(listing()).intraday_margin is None  # not listed: none


def test_a_margin_rate_outside_0_to_1_is_a_bad_response():
    bad = listing(overnight_margin_rate={"long_margin_rate": "25", "short_margin_rate": "0.3"})
    with pytest.raises(BadResponse, match="long_margin_rate: 25 is not a share of notional between 0 and 1"):
        parse_product(bad)


def test_the_current_margin_window_and_the_intraday_setting():
    body = {"margin_window": {"margin_window_type": "FCM_MARGIN_WINDOW_TYPE_OVERNIGHT",
                              "end_time": "2026-12-04T13:00:00Z"}, "is_intraday_margin_killswitch_enabled": False}
    assert parse_margin_window(body) == MarginWindow("overnight", datetime(2026, 12, 4, 13, tzinfo=UTC))
    with pytest.raises(BadResponse, match="margin_window_type: 'FCM_MARGIN_WINDOW_TYPE_UNSPECIFIED' names no"):
        parse_margin_window({"margin_window": {"margin_window_type": "FCM_MARGIN_WINDOW_TYPE_UNSPECIFIED"}})
    with pytest.raises(BadResponse, match="margin_window"):
        parse_margin_window({})
    assert parse_intraday_enrolled({"setting": "INTRADAY_MARGIN_SETTING_INTRADAY"})
    assert not parse_intraday_enrolled({"setting": "INTRADAY_MARGIN_SETTING_STANDARD"})


def test_sweeps_an_amount_or_everything():
    body = {"sweeps": [
        {"id": "a", "requested_amount": {"value": "100.5", "currency": "USD"}, "should_sweep_all": False,
         "status": "PENDING", "scheduled_time": "2026-12-05T00:00:00Z"},
        {"id": "b", "requested_amount": {"value": "0", "currency": "USD"}, "should_sweep_all": True,
         "status": "PROCESSING", "scheduled_time": ""},
    ]}
    assert parse_sweeps(body) == (Sweep("a", "PENDING", Decimal("100.5"), datetime(2026, 12, 5, tzinfo=UTC)),
                                  Sweep("b", "PROCESSING", None, None))
    assert parse_sweeps({}) == ()
