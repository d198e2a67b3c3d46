"""``perpsbot data download``: candle history from Coinbase's public API into a CSV."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Annotated

import typer

from perpsbot.cli.common import UserError, console, err_console
from perpsbot.config.retired import retired_product

app = typer.Typer(help="Market data for backtests.", no_args_is_help=True)


@app.command("download")
def download(
    symbol: Annotated[str, typer.Argument(help="product id, e.g. BTC-USD or BIP-20DEC30-CDE")],
    start: Annotated[str, typer.Option(help="first candle: ISO date/time (UTC) or unix seconds")],
    end: Annotated[
        str | None, typer.Option(help="end, exclusive: ISO date/time or unix seconds (default: now)")
    ] = None,
    granularity: Annotated[
        str, typer.Option(help="ONE_MINUTE .. ONE_DAY, or 1m 5m 15m 30m 1h 2h 6h 1d")
    ] = "ONE_MINUTE",
    out: Annotated[
        Path | None, typer.Option(help="CSV to write or extend (default: data/candles/SYMBOL-GRANULARITY.csv)")
    ] = None,
    base_url: Annotated[str, typer.Option("--base-url", help="Coinbase REST base URL")] = "https://api.coinbase.com",
    rate: Annotated[float, typer.Option(help="requests per second at most")] = 8.0,
) -> None:
    """Download candles, 350 a request; re-running continues where the file ends; gaps are reported."""
    import time

    from perpsbot.backtest.download import (
        DownloadError,
        DownloadResult,
        download_candles,
        parse_granularity,
        parse_time,
    )

    symbol = symbol.strip().upper()
    retired = retired_product(symbol)
    if retired is not None:
        raise UserError(retired)
    try:
        name, seconds = parse_granularity(granularity)
        first = parse_time(start, "--start")
        last = parse_time(end, "--end") if end is not None else int(time.time())
    except DownloadError as exc:
        raise UserError(str(exc)) from None
    if not base_url.startswith(("http://", "https://")):
        raise UserError(f"--base-url must start with http:// or https://, got '{base_url}'")
    if not (rate > 0 and math.isfinite(rate)):  # nan and inf pass a plain "> 0"
        raise UserError(f"--rate must be a finite number > 0, got {rate}")
    path = out or Path("data") / "candles" / f"{symbol}-{name}.csv"
    total = max(1, (last - first) // seconds)

    def progress(result: DownloadResult, done_until: int, stop: int) -> None:
        left = max(0, (stop - done_until) // seconds)
        if console.is_terminal:
            console.print(f"  {result.written:,} candles written, about {left:,} to go", end="\r")

    try:
        result = asyncio.run(download_candles(
            symbol, first, last, name, path, base_url=base_url, requests_per_second=rate, on_page=progress,
        ))
    except DownloadError as exc:
        raise UserError(f"{exc} (candles written so far stay in {path}; run again to continue)") from None
    if result.dropped_partial_line:
        err_console.print(f"[yellow]note:[/] dropped a half-written last line from {path}")
    if result.resumed_from is not None:
        console.print(f"resumed after the last candle in {path}")
    if result.requests == 0:
        console.print(f"{path} already holds every closed candle up to the end asked for ({total:,} at most)")
        return
    console.print(
        f"{result.written:,} candles written to {path} in {result.requests} request"
        f"{'s' if result.requests != 1 else ''}" + (f" ({result.retries} retried)" if result.retries else "")
    )
    if result.gaps:
        err_console.print(
            f"[yellow]{len(result.gaps)} gap{'s' if len(result.gaps) > 1 else ''}[/], {result.missing:,} candles "
            "missing (no trades, or not published):", highlight=False,
        )
        for gap in result.gaps[:20]:
            err_console.print(f"  {gap.describe(seconds)}", highlight=False)
        if len(result.gaps) > 20:
            err_console.print(f"  ... and {len(result.gaps) - 20} more", highlight=False)
    else:
        console.print("no gaps")
