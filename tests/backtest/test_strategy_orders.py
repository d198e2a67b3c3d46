"""What a signal asks of its entry — a size, an order type — is what is ordered; the
protective levels are recorded with the decision; post-only is skipped, saying why."""

from __future__ import annotations

from decimal import Decimal as D
from typing import ClassVar

from perpsbot.backtest.data import synthetic_candles
from perpsbot.backtest.runner import BacktestSpec, run_backtest
from perpsbot.domain import OrderType
from perpsbot.strategy.api import Signal, Strategy, go_long


class EnterOnce(Strategy):
    """Answers ``signal`` on its first bar, then holds (selected as a module: package.module:Class)."""

    signal: ClassVar[Signal | None] = None

    def on_bar(self, ctx):
        if ctx.state.get("done"):
            return None
        ctx.state["done"] = True
        return EnterOnce.signal


async def entered(tmp_path, signal: Signal, **settings):
    EnterOnce.signal = signal
    spec = BacktestSpec(("BTC-USD",), params=settings, strategy=f"{__name__}:EnterOnce")
    result = await run_backtest(synthetic_candles(50, seed=4), spec, data_dir=tmp_path)
    [decision] = [e.data for e in result.events.query(kind="decision")]
    return result, decision


async def test_a_quantity_is_ordered_as_it_is(tmp_path):
    result, _ = await entered(tmp_path, go_long("in", quantity=0.2))
    assert [o.size for o in result.orders] == [D("0.2")]
    too_big, _ = await entered(tmp_path / "b", go_long("in", quantity=0.5))  # still risk-checked
    assert too_big.orders == [] and too_big.risk_rejections == {"max_order_value": 1}


async def test_a_fraction_of_equity_replaces_the_position_fraction_setting(tmp_path):
    small, decision = await entered(tmp_path / "a", go_long("in"))  # position_fraction 0.1
    large, _ = await entered(tmp_path / "b", go_long("in", fraction=0.2))
    mark = D(str(decision["mark"]))
    assert small.orders[0].size == (D(100_000) * D("0.1") / mark).quantize(D("0.00000001"), rounding="ROUND_DOWN")
    assert abs(large.orders[0].size / small.orders[0].size - 2) < D("0.0001")


async def test_a_limit_with_its_offset_and_otherwise_the_order_type_setting(tmp_path):
    result, decision = await entered(tmp_path / "a", go_long("in", order="limit", limit_offset_bps=20))
    [order] = result.orders
    assert order.type is OrderType.LIMIT
    assert order.limit_price == (D(str(decision["mark"])) * D("1.002")).quantize(D("0.01"))
    # Only protective levels: the bot's own order_type stands (limit here), the levels are recorded.
    result, decision = await entered(tmp_path / "b", go_long("in", stop_loss=1.0, take_profit=10**9),
                                     order_type="limit")
    assert result.orders[0].type is OrderType.LIMIT
    assert (decision["stop_loss"], decision["take_profit"], "order" in decision) == ("1.0", "1000000000", False)


async def test_post_only_is_not_faked_as_a_plain_limit(tmp_path):
    result, decision = await entered(tmp_path, go_long("in", order="post_only", limit_offset_bps=5))
    assert result.orders == [] and decision["order"] == "post_only"
    [skipped] = result.events.query(kind="order_skipped")
    assert "post-only orders are not supported by the exchange port yet" in skipped.data["detail"]
