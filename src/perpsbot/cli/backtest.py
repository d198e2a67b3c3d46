"""``perpsbot backtest``: the bot's own strategy, risk and execution replayed over candles."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from perpsbot.backtest.data import MAX_CANDLES
from perpsbot.cli.common import StrategyOpt, UserError, console, err_console

DEFAULT_OUT = Path("backtest-out")


def _number(flag: str, text: str | None, *, low: Decimal | None = None, high: Decimal | None = None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise UserError(f"{flag} expects a number, got '{text}'") from None
    if not value.is_finite():
        raise UserError(f"{flag} expects a finite number, got '{text}'")
    if low is not None and value < low:
        raise UserError(f"{flag} must be at least {low}, got {text}")
    if high is not None and value > high:
        raise UserError(f"{flag} must be at most {high}, got {text}")
    return value


def _params(pairs: list[str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--param expects KEY=VALUE, got '{pair}'")
        params[key] = value.strip()
    return params


def backtest(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="candles: CSV or Parquet (date/timestamp, open, high, low, close, volume)"),
    ] = None,
    synthetic: Annotated[
        str | None,
        typer.Option(
            "--synthetic", metavar="N", help=f"N made-up candles (seeded; at most {MAX_CANDLES:,}) instead of a file"
        ),
    ] = None,
    symbol: Annotated[str, typer.Option(help="product the candles are for")] = "BTC-USD",
    timeframe: Annotated[
        str | None, typer.Option(help="candle length: 1m 5m 15m 1h 6h 1d (default: the data's; 1m synthetic)")
    ] = None,
    fee_bps: Annotated[str, typer.Option("--fee-bps", help="taker fee, basis points")] = "5",
    slippage_bps: Annotated[str, typer.Option("--slippage-bps", help="paid on every market fill, basis points")] = "1",
    funding: Annotated[
        str | None,
        typer.Option(
            "--funding", metavar="RATE", help="perpetuals: funding rate per 8 h, counted hourly (e.g. 0.0001)"
        ),
    ] = None,
    strategy: StrategyOpt = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", metavar="NAME=VALUE",
                     help="a strategy parameter or any bot setting, e.g. short_window=20 (repeatable)"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="folder for the report")] = DEFAULT_OUT,
    seed: Annotated[str, typer.Option(help="seed of the synthetic candles")] = "7",
    cash: Annotated[
        str | None, typer.Option("--cash", help="starting cash (default: the sim_starting_cash setting)")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="refuse data that needs any repair")] = False,
    events: Annotated[bool, typer.Option("--events", help="also write every event to events.jsonl")] = False,
) -> None:
    """Backtest the bot on candles: the live strategy, risk and execution code in simulated time."""
    from perpsbot.backtest.data import (
        DataError,
        DataReport,
        describe_timeframe,
        load_candles,
        parse_timeframe,
        synthetic_candles,
    )
    from perpsbot.backtest.report import FILL_CONVENTION, write_report
    from perpsbot.backtest.runner import BacktestError, BacktestSpec, typical_price
    from perpsbot.exchange.sim.replay import ReplayCosts

    if (data is None) == (synthetic is None):
        raise UserError("give either --data FILE or --synthetic N")
    symbol = symbol.strip().upper()
    try:
        bar_seconds = parse_timeframe(timeframe) if timeframe is not None else None
    except DataError as exc:
        raise UserError(f"--timeframe: {exc}") from None
    fee = _number("--fee-bps", fee_bps, low=Decimal(0), high=Decimal(1000))
    slip = _number("--slippage-bps", slippage_bps, low=Decimal(0), high=Decimal(1000))
    rate = _number("--funding", funding, low=Decimal("-0.1"), high=Decimal("0.1")) or Decimal(0)
    start_cash = _number("--cash", cash, low=Decimal("0.01"))
    params = _params(param)
    assert fee is not None and slip is not None
    try:
        seed_value = int(seed)
    except ValueError:
        raise UserError(f"--seed expects a whole number, got '{seed}'") from None

    try:
        if synthetic is not None:
            try:
                count = int(synthetic)
            except ValueError:
                raise UserError(f"--synthetic expects a number of candles, got '{synthetic}'") from None
            series = synthetic_candles(count, seed=seed_value, symbol=symbol, bar_seconds=bar_seconds or 60,
                                       start_price=typical_price(symbol))
            report = DataReport(source=f"synthetic (seed {seed_value})", rows=count, candles=count)
        else:
            assert data is not None
            series, report = load_candles(data, symbol=symbol, timeframe=bar_seconds, strict=strict)
    except DataError as exc:
        raise UserError(str(exc)) from None

    for line in report.warnings:
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)  # one line, however long
    for line in report.repairs:
        err_console.print(f"[yellow]data repaired:[/] {line}", highlight=False)
    spec = BacktestSpec((symbol,), ReplayCosts(fee_bps=fee, slippage_bps=slip, funding_rate=rate), params, start_cash,
                        strategy)
    console.print(
        f"backtest {symbol}: {len(series):,} {describe_timeframe(series.bar_seconds)} candles, "
        f"fee {fee} bps, slippage {slip} bps" + (f", funding {rate} per 8 h" if rate else "")
    )
    console.print(f"fills: {FILL_CONVENTION}.", highlight=False)
    logging.disable(logging.WARNING)  # the report tells what happened: no log line per risk event
    try:
        result = asyncio.run(_run(series, spec, out))
    except BacktestError as exc:
        raise UserError(str(exc)) from None
    finally:
        logging.disable(logging.NOTSET)
    paths = write_report(result, report, out, events=events)
    _summary(result, paths)


async def _run(series: Any, spec: Any, out: Path) -> Any:
    from perpsbot.backtest.runner import run_backtest

    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("candles", total=len(series))
        return await run_backtest(series, spec, data_dir=out, progress=lambda done: bar.update(task, completed=done))


def _summary(result: Any, paths: dict[str, Path]) -> None:
    import json

    metrics = json.loads(paths["report"].read_text(encoding="utf-8"))["metrics"]
    rate = result.candles / result.elapsed_seconds if result.elapsed_seconds > 0 else float("inf")
    keys = ("net_pnl", "total_return", "cagr", "sharpe", "sortino", "max_drawdown", "exposure", "trades", "win_rate",
            "profit_factor", "fees_paid", "funding_paid", "risk_rejections", "risk_mode_at_end")
    params = ", ".join(f"{k}={v}" for k, v in result.strategy_params.items())
    console.print(f"strategy {result.strategy_name}" + (f" ({params})" if params else ""), highlight=False)
    console.print("  ".join(f"{k.replace('_', ' ')} {_fmt(metrics.get(k))}" for k in keys), highlight=False)
    console.print(f"replayed {result.candles:,} candles in {result.elapsed_seconds:.2f} s ({rate:,.0f} candles/s)")
    console.print("report: " + ", ".join(str(p) for p in paths.values()), highlight=False)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    return str(value)
