from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from perpsbot.domain import Fill, Liquidity, Side
from perpsbot.execution.ledger import position_history

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fill(n: int, side: Side, size: str, price: str, fee: str = "0", symbol: str = "BIP-20DEC30-CDE") -> Fill:
    return Fill(f"t{n}", f"c{n}", symbol, side, D(price), D(size), D(fee), Liquidity.TAKER, T0 + timedelta(seconds=n))


def test_long_then_flip_to_short_makes_two_episodes():
    episodes = position_history(
        [
            fill(1, Side.BUY, "1", "100", "0.1"),
            fill(2, Side.BUY, "1", "110", "0.1"),
            fill(3, Side.SELL, "3", "120", "0.3"),  # closes 2 long, opens 1 short
            fill(4, Side.BUY, "1", "100", "0.1"),
        ]
    )
    long, short = episodes
    assert (long.direction, long.max_size, long.entry_price, long.exit_price) == (Side.BUY, D(2), D(105), D(120))
    assert long.realized_pnl == D(30)
    assert long.fees == D("0.4")  # two entry fees plus 2/3 of the flip fill's fee
    assert long.closed_at == T0 + timedelta(seconds=3)
    assert (short.direction, short.entry_price, short.realized_pnl) == (Side.SELL, D(120), D(20))
    assert short.fees == D("0.2")
    assert not short.is_open and short.net_pnl == D("19.8")


def test_symbols_are_tracked_separately_and_open_positions_stay_open():
    episodes = position_history([fill(1, Side.BUY, "1", "100"),
                                 fill(2, Side.SELL, "2", "50", symbol="ETP-20DEC30-CDE")])
    assert [(e.symbol, e.is_open, e.size) for e in episodes] == [
        ("BIP-20DEC30-CDE", True, D(1)),
        ("ETP-20DEC30-CDE", True, D(-2)),
    ]


def test_a_future_realizes_contracts_times_their_contract_size():
    fills = [fill(1, Side.BUY, "30", "90000", "1"), fill(2, Side.SELL, "50", "90100", "2")]  # 0.01 BTC contracts
    long, short = position_history(fills, contract_sizes={"BIP-20DEC30-CDE": D("0.01")})
    assert long.realized_pnl == D(30)  # 30 contracts x 0.01 BTC x +100
    assert (short.size, short.entry_price, short.realized_pnl) == (D(-20), D(90100), D(0))
    opened = position_history([fill(3, Side.SELL, "10", "89900")],
                              {"BIP-20DEC30-CDE": (D(10), D(90000), T0)}, {"BIP-20DEC30-CDE": D("0.01")})
    assert opened[0].realized_pnl == D(-10) and opened[0].closed_at is not None
