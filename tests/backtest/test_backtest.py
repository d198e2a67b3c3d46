"""The backtest on the live path: its trades against a plain computation of the same
crossover, the report's numbers, and byte-identical reruns."""

from __future__ import annotations

import json
import math
from decimal import ROUND_CEILING, ROUND_FLOOR
from decimal import Decimal as D
from pathlib import Path

import pytest

from perpsbot.backtest.data import DataReport, synthetic_candles
from perpsbot.backtest.report import trades_of, write_report
from perpsbot.backtest.runner import BacktestError, BacktestSpec, run_backtest
from perpsbot.domain import Side
from perpsbot.exchange.sim.replay import ReplayCosts

PLAIN = {"short_window": 20, "long_window": 100, "trailing_stop_pct": 0}


def reference_fills(opens, closes, short, long, *, shorts: bool) -> list[tuple[int, Side]]:
    """The crossover worked out directly, one bar at a time: averages of the last closes
    (math.fsum), a cross when fast - slow changes sign (from <= 0 to > 0, or >= 0 to < 0),
    acted on at the next bar's open. Returns (bar index of the fill, side) per fill."""
    fills = []
    position = 0
    previous = None
    for i in range(long - 1, len(closes)):
        fast = math.fsum(closes[i + 1 - short : i + 1]) / short
        slow = math.fsum(closes[i + 1 - long : i + 1]) / long
        diff = fast - slow
        if previous is not None and i + 1 < len(closes):
            if previous <= 0 < diff and position <= 0:  # bullish: to long
                fills += [(i + 1, Side.BUY)] * (2 if position < 0 else 1)
                position = 1
            elif previous >= 0 > diff and position >= 0:  # bearish: to short, or just out
                if position > 0:
                    fills.append((i + 1, Side.SELL))
                if shorts:
                    fills.append((i + 1, Side.SELL))
                position = -1 if shorts else 0
        previous = diff
    return fills


def closest_call(closes, short, long) -> float:
    """The smallest |fast - slow| over the series: the test data must not sit on a knife edge."""
    return min(
        abs(math.fsum(closes[i + 1 - short : i + 1]) / short - math.fsum(closes[i + 1 - long : i + 1]) / long)
        for i in range(long - 1, len(closes))
    )


async def backtest(series, tmp_path: Path, symbol="BTC-USD", params=None, **costs):
    costs = {k: D(str(v)) for k, v in costs.items()}
    spec = BacktestSpec((symbol,), ReplayCosts(**costs), {**PLAIN, **(params or {})})
    return await run_backtest(series, spec, data_dir=tmp_path)


async def test_spot_crossover_trades_are_exactly_the_plain_computation(tmp_path):
    series = synthetic_candles(20_000, seed=11)
    closes, opens = list(series.close), list(series.open)
    assert closest_call(closes, 20, 100) > 1e-6
    result = await backtest(series, tmp_path, fee_bps=10, slippage_bps=0)
    expected = reference_fills(opens, closes, 20, 100, shorts=False)
    assert len(expected) > 200  # plenty of trades to compare
    got = [(int((f.ts.timestamp() - series.start[0]) // 60), f.side) for f in result.fills]
    assert got == expected
    # ... each at that bar's open (no slippage, cent prices: exact).
    assert all(f.price == D(repr(series.open[i])) for f, (i, _) in zip(result.fills, expected, strict=True))
    assert result.risk_rejections == {}


async def test_perp_long_short_crossover_reverses_with_two_orders_at_one_open(tmp_path):
    series = synthetic_candles(8_000, seed=3, symbol="BIP-20DEC30-CDE")
    closes, opens = list(series.close), list(series.open)
    assert closest_call(closes, 10, 40) > 1e-6
    result = await backtest(series, tmp_path, symbol="BIP-20DEC30-CDE", params={"short_window": 10, "long_window": 40},
                            fee_bps=5, slippage_bps=0)
    expected = reference_fills(opens, closes, 10, 40, shorts=True)
    got = [(int((f.ts.timestamp() - series.start[0]) // 60), f.side) for f in result.fills]
    assert got == expected
    # A reversal is a reduce-only close and an opening order, filled in that order.
    by_id = {o.client_order_id: o for o in result.orders}
    pairs = [(a, b) for a, b in zip(result.fills, result.fills[1:], strict=False) if a.ts == b.ts]
    assert pairs and all(by_id[a.client_order_id].reduce_only and not by_id[b.client_order_id].reduce_only
                         for a, b in pairs)


async def test_slippage_and_fees_are_charged_on_every_fill_and_add_up_in_the_report(tmp_path):
    series = synthetic_candles(5_000, seed=2)
    result = await backtest(series, tmp_path, fee_bps=10, slippage_bps=25)
    assert result.fills
    for fill in result.fills:
        i = int((fill.ts.timestamp() - series.start[0]) // 60)
        raw = D(repr(series.open[i])) * (D("1.0025") if fill.side is Side.BUY else D("0.9975"))
        price = (raw / D("0.01")).to_integral_value(ROUND_CEILING if fill.side is Side.BUY else ROUND_FLOOR) * D(
            "0.01")
        assert fill.price == price
        assert fill.fee == fill.price * fill.size * D("0.001")
    trades = trades_of(result)
    # Every cent of the result is in some trade: gross moves, fees (and funding, none here).
    assert sum((t.net_pnl for t in trades), D(0)) == result.end_equity - result.start_equity
    assert sum((t.fees for t in trades), D(0)) == sum((f.fee for f in result.fills), D(0))


async def test_perp_funding_is_paid_while_positions_are_held_and_shows_in_the_trades(tmp_path):
    series = synthetic_candles(3_000, seed=5, symbol="ETP-20DEC30-CDE", start_price=3000.0)
    result = await backtest(series, tmp_path, symbol="ETP-20DEC30-CDE", params={"enable_shorts": "false"},
                            fee_bps=0, funding_rate="0.0008")
    assert result.funding and all(p.position_size > 0 for p in result.funding)  # long only
    # on the contracts held: contracts x 0.1 ETH x mark x (the 8-hour rate / 8)
    assert all(p.payment == -p.position_size * D("0.1") * p.mark * D("0.0001") for p in result.funding)
    trades = trades_of(result)
    assert sum((t.funding for t in trades), D(0)) == sum((p.payment for p in result.funding), D(0))
    # the venue settles funding in cash to the cent twice a day: the trades count what
    # accrued, the equity what was settled, at most half a cent apart per settlement
    settlements = len({(p.ts.date(), p.ts.hour >= 12) for p in result.funding}) + 1
    drift = abs(sum((t.net_pnl for t in trades), D(0)) - (result.end_equity - result.start_equity))
    assert drift <= settlements * D("0.005"), drift
    with pytest.raises(BacktestError, match="--funding applies to perpetuals; BTC-USD is spot"):
        await backtest(synthetic_candles(10, seed=1), tmp_path, funding_rate="0.0001")


async def test_the_live_risk_checks_apply_in_a_backtest(tmp_path):
    series = synthetic_candles(5_000, seed=2)
    result = await backtest(series, tmp_path, params={"max_order_notional": "100"})
    assert result.fills == [] and result.risk_rejections["max_order_value"] > 10


async def test_fixed_settings_and_bad_params_are_refused(tmp_path):
    series = synthetic_candles(10, seed=1)
    with pytest.raises(BacktestError, match="--param bar_seconds: a backtest sets this itself"):
        await backtest(series, tmp_path, params={"bar_seconds": "5"})
    with pytest.raises(BacktestError, match=r"short_window = 'x' \(--param short_window\)"):
        await backtest(series, tmp_path, params={"short_window": "x"})
    with pytest.raises(BacktestError, match=r"--param nope: unknown setting \('perpsbot config show' lists them all\)"):
        await backtest(series, tmp_path, params={"nope": "1"})


async def run_and_report(tmp_path: Path, name: str, seed: int) -> Path:
    series = synthetic_candles(6_000, seed=seed, symbol="BIP-20DEC30-CDE")
    result = await backtest(series, tmp_path / name, symbol="BIP-20DEC30-CDE",
                            params={"short_window": 10, "long_window": 60, "trailing_stop_pct": "0.004"},
                            fee_bps=5, slippage_bps=2, funding_rate="0.0001")
    out = tmp_path / name / "report"
    write_report(result, DataReport(source=f"synthetic (seed {seed})", rows=6000, candles=6000), out)
    return out


async def test_same_inputs_and_seed_give_byte_identical_reports(tmp_path):
    first = await run_and_report(tmp_path, "a", seed=9)
    second = await run_and_report(tmp_path, "b", seed=9)
    other = await run_and_report(tmp_path, "c", seed=10)
    for name in ("report.json", "trades.csv", "equity.png", "report.html"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "report.json").read_bytes() != (other / "report.json").read_bytes()


async def test_report_numbers_follow_from_the_equity_curve_and_trades(tmp_path):
    out = await run_and_report(tmp_path, "a", seed=9)
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    lines = (out / "trades.csv").read_text().splitlines()
    assert lines[0].startswith("trade,direction,entry_time,entry_price,exit_time,exit_price")
    closed = [line.split(",") for line in lines[1:] if ",open," not in line]
    assert m["trades"] == len(closed) > 20
    wins = [row for row in closed if D(row[10]) > 0]
    assert m["win_rate"] == round(len(wins) / len(closed), 6)
    assert D(m["net_pnl"]) == D(m["end_equity"]) - D(m["start_equity"])
    assert m["total_return"] == pytest.approx(float(D(m["net_pnl"]) / D(m["start_equity"])), abs=1e-6)
    assert 0 < m["max_drawdown"] < 1 and 0 < m["exposure"] <= 1
    assert D(m["fees_paid"]) > 0 and D(m["funding_paid"]) != 0
    assert "next candle's open" in report["fill_convention"]
    assert any("trailing stop" in row[14] for row in closed)  # exits come with the strategy's reason
    png = (out / "equity.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" in png[-12:]
    page = (out / "report.html").read_text()
    assert "<svg" in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")  # self-contained


async def test_risk_mode_changes_are_in_the_report(tmp_path):
    series = synthetic_candles(6_000, seed=2)
    result = await backtest(series, tmp_path, params={"max_drawdown_pct": "0.005", "kill_drawdown_pct": "0.5",
                                                      "position_fraction": "0.2"}, fee_bps=10)
    assert result.risk_changes[0]["change"] == "reduce-only on: drawdown"
    assert result.risk_changes[0]["detail"].startswith("drawdown 0.5")
    out = tmp_path / "report"
    write_report(result, DataReport(source="synthetic", rows=6000, candles=6000), out)
    report = json.loads((out / "report.json").read_text())
    assert report["risk_changes"][0]["change"] == "reduce-only on: drawdown"
    assert report["metrics"]["risk_mode_changes"] == len(result.risk_changes)
    assert report["metrics"]["risk_mode_at_end"] == result.risk_mode
    assert "reduce-only on: drawdown" in (out / "report.html").read_text()
