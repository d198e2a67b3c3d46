"""Property: whatever the market does and whatever is asked, what the RiskManager
approves never breaks a cap, the leverage limit, or the daily loss stop."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perpsbot.config import BotConfig
from perpsbot.domain import BookLevel, OrderBook, Position, Product, ProductType, Side
from perpsbot.domain.clock import ManualClock
from perpsbot.risk.manager import OrderIntent, RiskManager
from perpsbot.store import EventStore

SYM = "BIP-20DEC30-CDE"
CONTRACT = D("0.01")  # BTC a contract
PERP = Product(SYM, "BTC", "USD", ProductType.PERPETUAL, D(1), D("0.01"), D(1), D(20), CONTRACT, D("0.025"))
CAP_NOTIONAL = D(20_000)
MAX_LEVERAGE = D(3)
DAILY_LOSS = D(300)

moves = st.tuples(st.just("move"), st.integers(min_value=-80, max_value=80))  # tenths of a percent
orders = st.tuples(
    st.just("order"),
    st.sampled_from([Side.BUY, Side.SELL]),
    st.integers(min_value=1, max_value=40_000),  # contracts of 0.01: up to 40,000 USD at 100
    st.integers(min_value=1, max_value=5),  # leverage asked
)


def deep_book(mark: D) -> OrderBook:
    level = (BookLevel(mark, D(1_000_000)),)
    return OrderBook(SYM, datetime(2026, 3, 2, tzinfo=UTC), level, level)


# With 10,000 of equity the 20,000 notional cap binds before 3x leverage; with 5,000 the
# leverage limit binds first. Both are run so that either check going missing is caught.
@pytest.mark.parametrize("starting_cash", [D(10_000), D(5_000)])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.one_of(moves, orders), min_size=1, max_size=60))
def test_approved_orders_never_break_a_limit(starting_cash, steps):
    with TemporaryDirectory() as tmp:
        clock = ManualClock(datetime(2026, 3, 2, 1, 0, tzinfo=UTC))
        events = EventStore(Path(tmp) / "events.db")
        config = BotConfig(
            data_dir=Path(tmp), max_leverage=MAX_LEVERAGE, max_position_notional=CAP_NOTIONAL,
            max_position_equity_share=D(10), max_total_notional=D(1_000_000), max_order_notional=D(1_000_000),
            daily_loss_limit=DAILY_LOSS, max_drawdown_pct=D("0.9"), kill_drawdown_pct=D("0.95"),
            min_liquidation_distance_pct=D(0), max_orders_per_minute=1_000,
        )
        mark = D(100)
        risk = RiskManager(config, clock, events, lambda s: 0.0, mark_of=lambda s: mark, products={SYM: PERP})
        cash = starting_cash
        position = Position(SYM, contract_size=CONTRACT)
        day_start = cash
        loss_hit = False
        for step in steps:
            clock.advance(1)
            if step[0] == "move":
                mark = (mark * (1 + D(step[1]) / 1000)).quantize(D("0.01"))
            else:
                _, side, contracts, leverage = step
                size = D(contracts)
                equity = cash + position.unrealized_pnl(mark)
                intent = OrderIntent(SYM, side, size, mark, position.size, D(leverage), CONTRACT)
                verdict = risk.check(intent, equity, {SYM: position}, deep_book(mark))
                if verdict.approved:
                    if not intent.reduces:
                        after = abs(intent.post_trade_size) * CONTRACT * mark
                        assert after <= CAP_NOTIONAL, verdict
                        assert after / equity <= MAX_LEVERAGE, verdict
                        assert D(leverage) <= MAX_LEVERAGE, verdict
                        assert not loss_hit, "a new exposure after the daily loss limit was hit"
                    cash += position.apply_fill(side, size, mark)
            equity = cash + position.unrealized_pnl(mark)
            risk.evaluate(equity, {})
            if day_start - equity >= DAILY_LOSS:
                loss_hit = True
        events.close()
