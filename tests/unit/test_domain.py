from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from perpsbot.domain import (
    DomainError,
    Fill,
    IllegalTransition,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Product,
    ProductType,
    Quote,
    Side,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def perp() -> Product:
    """A US perpetual-style future: whole contracts of 0.01 BTC, $5 ticks."""
    return Product("BIP-20DEC30-CDE", "BTC", "USD", ProductType.PERPETUAL, D(1), D(5), D(1), D(10),
                   contract_size=D("0.01"))


def order(size: str = "1") -> Order:
    return Order("c1", "BIP-20DEC30-CDE", Side.BUY, OrderType.MARKET, D(size), NOW)


def fill(trade: str, size: str, price: str, fee: str = "0") -> Fill:
    return Fill(trade, "c1", "BIP-20DEC30-CDE", Side.BUY, D(price), D(size), D(fee), Liquidity.TAKER, NOW)


def test_quantize_size_rounds_down_and_price_to_increment():
    p = perp()
    assert p.quantize_size(D("2.99")) == D(2)
    assert p.quantize_price(D("90002.4")) == D(90000)
    assert p.quantize_price(D("90002.6")) == D(90005)


def test_spot_product_refuses_leverage():
    with pytest.raises(DomainError, match="no leverage"):
        Product("BTC-USD", "BTC", "USD", ProductType.SPOT, D("0.01"), D("0.01"), D("0.01"), D(2))


@pytest.mark.parametrize(
    ("bid", "ask", "message"),
    [("0", "1", "must be > 0"), ("2", "1", "crossed"), ("NaN", "1", "finite")],
)
def test_bad_quotes_are_refused(bid, ask, message):
    with pytest.raises(DomainError, match=message):
        Quote("X-USD", D(bid), D(ask), NOW)


def test_naive_timestamps_are_refused():
    with pytest.raises(DomainError, match="timezone-aware"):
        Quote("X-USD", D(1), D(2), datetime(2026, 1, 1))


def test_order_lifecycle_follows_the_state_machine():
    o = order("2")
    o.transition(OrderStatus.OPEN)
    o.record_fill(fill("t1", "1", "100", "0.1"))
    assert o.status is OrderStatus.PARTIALLY_FILLED
    o.record_fill(fill("t2", "1", "110", "0.1"))
    assert o.status is OrderStatus.FILLED
    assert o.average_fill_price == D(105)
    assert o.fees == D("0.2")


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], OrderStatus.FILLED),
        ([OrderStatus.OPEN, OrderStatus.FILLED], OrderStatus.CANCELLED),
        ([OrderStatus.REJECTED], OrderStatus.OPEN),
        ([OrderStatus.OPEN, OrderStatus.CANCELLED], OrderStatus.OPEN),
        ([OrderStatus.OPEN], OrderStatus.PENDING),
    ],
)
def test_illegal_transitions_raise(path, illegal):
    o = order()
    for status in path:
        o.transition(status)
    with pytest.raises(IllegalTransition):
        o.transition(illegal)


def test_advance_to_walks_through_open_but_never_backwards():
    o = order()
    o.advance_to(OrderStatus.FILLED)
    assert o.status is OrderStatus.FILLED
    with pytest.raises(IllegalTransition):
        o.advance_to(OrderStatus.OPEN)


def test_overfill_is_refused():
    o = order("1")
    with pytest.raises(DomainError, match="overfills"):
        o.record_fill(fill("t1", "2", "100"))


def test_position_realizes_pnl_on_close_and_flip():
    pos = Position("BIP-20DEC30-CDE", leverage=D(2), contract_size=D("0.01"))  # contracts of 0.01 BTC
    pos.apply_fill(Side.BUY, D(2), D(100))
    pos.apply_fill(Side.BUY, D(2), D(110))
    assert pos.entry_price == D(105)
    assert pos.unrealized_pnl(D(115)) == D("0.40")  # 4 contracts x 0.01 x +10
    assert pos.notional(D(115)) == D("4.60")
    realized = pos.apply_fill(Side.SELL, D(6), D(120))
    assert realized == D("0.60")  # 4 closed at +15
    assert pos.size == D(-2)
    assert pos.entry_price == D(120)  # the flipped remainder opened at the fill price
    pos.apply_fill(Side.BUY, D(2), D(100))
    assert pos.is_flat and pos.realized_pnl == D("1.00")


def test_liquidation_price_long_and_short():
    long = Position("P", size=D(1), entry_price=D(100), leverage=D(10))
    short = Position("P", size=D(-1), entry_price=D(100), leverage=D(10))
    mmr = D("0.05")
    assert long.liquidation_price(mmr) == pytest.approx(D(90) / D("0.95"))
    assert short.liquidation_price(mmr) == pytest.approx(D(110) / D("1.05"))
    assert long.liquidation_price(mmr) < 100 < short.liquidation_price(mmr)
    assert Position("P").liquidation_price(mmr) is None
