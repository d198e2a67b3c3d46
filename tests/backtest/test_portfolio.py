"""Several symbols over one account: one timeline, each symbol's own decisions and fills,
one equity."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest

from perpsbot.backtest.data import SYNTHETIC_START, synthetic_candles
from perpsbot.backtest.runner import BacktestError, BacktestSpec, run_backtest
from perpsbot.exchange.sim.replay import ReplayCosts
from tests.backtest.test_backtest import PLAIN, closest_call, reference_fills


async def test_each_symbol_trades_its_own_crossover_on_one_account_and_one_timeline(tmp_path):
    btc = synthetic_candles(6_000, seed=11, symbol="BTC-USD")
    # ETH starts 1,000 minutes later and at another price: the timeline merges the two
    eth = synthetic_candles(5_000, seed=12, symbol="ETH-USD", start_price=3_000.0,
                            start=SYNTHETIC_START + timedelta(minutes=1_000))
    for series in (btc, eth):
        assert closest_call(list(series.close), 20, 100) > 1e-6
    spec = BacktestSpec(["BTC-USD", "ETH-USD"], ReplayCosts(fee_bps=D(10)),
                        {**PLAIN, "position_fraction": "0.2"})
    result = await run_backtest([btc, eth], spec, data_dir=tmp_path)

    for series in (btc, eth):
        expected = reference_fills(list(series.open), list(series.close), 20, 100, shorts=False)
        assert len(expected) > 40
        got = [(int((f.ts.timestamp() - series.start[0]) // 60), f.side)
               for f in result.fills if f.symbol == series.symbol]
        assert got == expected, series.symbol
    # one step per distinct close, in order; one equity, ending where the account ends
    ends = sorted({t + 60 for t in btc.start} | {t + 60 for t in eth.start})
    assert list(result.times) == ends
    assert len(result.equity) == len(ends)
    assert result.equity[-1] == pytest.approx(float(result.end_equity), abs=1e-6)
    assert result.candles == 11_000 and result.symbols == ("BTC-USD", "ETH-USD")
    # both symbols' positions came out of the same cash: the fees of both are in the one equity
    fees = sum((f.fee for f in result.fills), D(0))
    assert fees > 0 and result.end_equity != result.start_equity


async def test_series_of_different_lengths_or_currencies_are_refused_naming_them(tmp_path):
    btc = synthetic_candles(300, seed=1, symbol="BTC-USD")
    eth5 = synthetic_candles(300, seed=2, symbol="ETH-USD", bar_seconds=300)
    with pytest.raises(BacktestError, match="not all of one length: BTC-USD 60 s, ETH-USD 300 s"):
        await run_backtest([btc, eth5], BacktestSpec(("BTC-USD", "ETH-USD")), data_dir=tmp_path)
    eur = synthetic_candles(300, seed=2, symbol="ETH-EUR")
    with pytest.raises(BacktestError, match="one account holds one currency: the symbols are quoted in EUR, USD"):
        await run_backtest([btc, eur], BacktestSpec(("BTC-USD", "ETH-EUR")), data_dir=tmp_path)
    with pytest.raises(BacktestError, match="a symbol given twice"):
        await run_backtest([btc, btc], BacktestSpec(("BTC-USD", "BTC-USD")), data_dir=tmp_path)


def test_one_symbol_may_be_given_as_a_string():
    assert BacktestSpec("BTC-USD").symbols == ("BTC-USD",)
    assert BacktestSpec(["BTC-USD", "ETH-USD"]).symbols == ("BTC-USD", "ETH-USD")


async def test_the_portfolio_limit_counts_every_symbol_held_on_the_one_account(tmp_path):
    # Each entry is 30 % of equity (about 30,000 USD); all positions together may reach 40,000:
    # whichever symbol enters second while the first is held is refused, alone it would pass.
    btc = synthetic_candles(3_000, seed=11, symbol="BTC-USD")
    eth = synthetic_candles(3_000, seed=12, symbol="ETH-USD", start_price=3_000.0)
    params = {**PLAIN, "position_fraction": "0.3", "max_total_notional": "40000", "max_order_notional": "40000",
              "max_position_notional": "40000"}
    together = await run_backtest([btc, eth], BacktestSpec(["BTC-USD", "ETH-USD"], params=params),
                                  data_dir=tmp_path / "both")
    alone = await run_backtest(eth, BacktestSpec("ETH-USD", params=params), data_dir=tmp_path / "eth")
    assert together.risk_rejections.get("max_total_notional", 0) > 0
    assert "max_total_notional" not in alone.risk_rejections
    refused = [e for e in together.events.query(kind="risk_rejected") if e.data.get("code") == "max_total_notional"]
    assert {e.symbol for e in refused} <= {"BTC-USD", "ETH-USD"} and refused


async def test_funding_is_counted_per_perpetual_and_never_on_spot(tmp_path):
    from perpsbot.backtest.runner import typical_price

    spot = synthetic_candles(3_000, seed=11, symbol="BTC-USD")
    perp = synthetic_candles(3_000, seed=13, symbol="BIP-20DEC30-CDE", start_price=typical_price("BIP-20DEC30-CDE"))
    spec = BacktestSpec(["BTC-USD", "BIP-20DEC30-CDE"], ReplayCosts(funding_rate=D("0.0001")),
                        {**PLAIN, "enable_shorts": "true"})
    result = await run_backtest([spot, perp], spec, data_dir=tmp_path)
    assert result.funding and {p.symbol for p in result.funding} == {"BIP-20DEC30-CDE"}
    assert any(f.symbol == "BTC-USD" for f in result.fills)  # the spot symbol traded too, without funding
