"""Each built-in strategy in a short backtest: it trades, for the reasons it gives, and
the result names it and its parameters."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from perpsbot.backtest.data import synthetic_candles
from perpsbot.backtest.runner import BacktestError, BacktestSpec, run_backtest
from perpsbot.exchange.sim.replay import ReplayCosts


async def backtest(tmp_path, strategy: str, symbol: str = "BTC-USD", params=None, funding: str = "0"):
    series = synthetic_candles(4_000, seed=5, symbol=symbol)
    spec = BacktestSpec((symbol,), ReplayCosts(funding_rate=D(funding)), params or {}, strategy=strategy)
    return await run_backtest(series, spec, data_dir=tmp_path)


def entry_reasons(result) -> list[str]:
    return [e.data["reason"] for e in result.events.query(kind="decision") if e.data["target"] in ("LONG", "SHORT")]


@pytest.mark.parametrize(("strategy", "params", "reason"), [
    ("ma_crossover", {"short_window": "10", "long_window": "40"}, "cross"),
    ("rsi_reversion", {"period": "10"}, "RSI"),
    ("donchian_breakout", {"entry_bars": "30"}, "-bar"),
])
async def test_a_builtin_trades_in_a_short_backtest(tmp_path, strategy, params, reason):
    result = await backtest(tmp_path, strategy, params=params)
    assert result.strategy_name == strategy
    assert all(str(result.strategy_params[k]) == v for k, v in params.items())
    reasons = entry_reasons(result)
    assert len(result.fills) >= 4 and reasons and all(reason in r for r in reasons)


async def test_the_donchian_entries_carry_a_stop_loss_below_a_long_and_above_a_short(tmp_path):
    result = await backtest(tmp_path, "donchian_breakout", params={"entry_bars": "30"})
    entries = [e.data for e in result.events.query(kind="decision") if e.data["target"] in ("LONG", "SHORT")]
    assert entries
    for entry in entries:
        below = D(str(entry["stop_loss"])) < D(str(entry["mark"]))
        assert below if entry["target"] == "LONG" else not below


async def test_funding_carry_shorts_a_perpetual_whose_longs_pay(tmp_path):
    result = await backtest(tmp_path / "perp", "funding_carry", symbol="BIP-20DEC30-CDE", funding="0.002",
                            params={"enter_rate": "0.0001"})
    assert [f.side.value for f in result.fills] == ["SELL"]  # in short once, collecting funding
    assert sum(p.payment for p in result.funding) > 0


async def test_an_unknown_parameter_names_the_strategy_and_its_parameters(tmp_path):
    with pytest.raises(BacktestError, match=r"--param perid: unknown setting .* not a parameter of rsi_reversion "
                                            r"\(its parameters: period, oversold, overbought, exit_level\)"):
        await backtest(tmp_path, "rsi_reversion", params={"perid": "3"})
