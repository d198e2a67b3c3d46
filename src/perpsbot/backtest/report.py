"""The backtest report: trades, metrics, an equity and drawdown chart (PNG and HTML).

Every figure is worked out from the run's fills, funding payments and the equity
at each candle's close; nothing depends on the wall clock, so the same inputs
give the same bytes. Files written to the output folder:

* ``report.json`` — settings, data checks and repairs, every metric;
* ``trades.csv`` — one row per round trip (open to flat), the last one possibly
  still open (valued at the last close);
* ``equity.png`` — equity and drawdown;
* ``report.html`` — one self-contained page: metrics, the chart as inline SVG, trades;
* ``events.jsonl`` — every event the bot recorded (only when asked: it is large).
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from perpsbot.backtest.data import CandleSeries, DataReport, describe_timeframe
from perpsbot.backtest.png import Canvas
from perpsbot.backtest.runner import BacktestResult
from perpsbot.domain import ZERO, Liquidity, Product, Side
from perpsbot.domain.clock import EPOCH
from perpsbot.execution.ledger import position_history

SECONDS_PER_YEAR = 365 * 86_400  # crypto trades every day
FILL_CONVENTION = (
    "orders are decided on a candle's close and filled at the next candle's open; market orders pay the "
    "slippage (buy at open x (1 + slippage), sell at open x (1 - slippage), rounded to the price increment "
    "against us) and the taker fee on the notional; an order decided on the last candle is not filled; an "
    "open position at the end is valued at the last close"
)
RISK_CHANGES_SHOWN = 100
MONEY = Decimal("0.0001")


@dataclass(frozen=True)
class Trade:
    number: int
    direction: str  # long | short
    entry_time: datetime
    exit_time: datetime | None
    entry_price: Decimal
    exit_price: Decimal | None
    size: Decimal
    gross_pnl: Decimal  # price moves only (open trades: marked at the last close)
    fees: Decimal
    funding: Decimal  # received (negative: paid)
    entry_reason: str
    exit_reason: str
    bars: int

    @property
    def net_pnl(self) -> Decimal:
        return self.gross_pnl - self.fees + self.funding

    @property
    def is_open(self) -> bool:
        return self.exit_time is None



def _series(result: BacktestResult) -> CandleSeries:
    """The first symbol's candles (the report covers one symbol's market so far)."""
    return result.series[result.symbols[0]]


def _product(result: BacktestResult) -> Product:
    return result.products[result.symbols[0]]

def _dt(epoch: float) -> datetime:
    return EPOCH + timedelta(seconds=epoch)


def _iso(ts: datetime | None) -> str:
    return "" if ts is None else ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def trades_of(result: BacktestResult) -> list[Trade]:
    """Round trips rebuilt from the fills (the same ledger ``perpsbot positions`` uses)."""
    by_trade_id = {f.trade_id: f for f in result.fills}
    last_close = Decimal(repr(_series(result).close[-1]))
    cs = _product(result).contract_size
    g = _series(result).bar_seconds
    end = _series(result).end
    trades = []
    for number, episode in enumerate(position_history(result.fills, contract_sizes={_product(result).symbol: cs}),
                                     start=1):
        first = by_trade_id[episode.trade_ids[0]]
        last = by_trade_id[episode.trade_ids[-1]]
        opened, closed = episode.opened_at, episode.closed_at
        funding = sum(
            (p.payment for p in result.funding if opened < p.ts and (closed is None or p.ts <= closed)), ZERO
        )
        gross = episode.realized_pnl
        if closed is None:
            gross += (last_close - episode.entry_price) * episode.size * cs
        exit_reason = ""
        if closed is not None:
            exit_reason = "liquidated" if last.liquidity is Liquidity.LIQUIDATION else result.reasons.get(
                last.client_order_id, ""
            )
        trades.append(Trade(
            number=number,
            direction="long" if episode.direction is Side.BUY else "short",
            entry_time=opened,
            exit_time=closed,
            entry_price=episode.entry_price,
            exit_price=episode.exit_price,
            size=episode.max_size,
            gross_pnl=gross,
            fees=episode.fees,
            funding=funding,
            entry_reason=result.reasons.get(first.client_order_id, ""),
            exit_reason=exit_reason,
            bars=int(((closed or end) - opened).total_seconds() // g),
        ))
    return trades


# ----- metrics -------------------------------------------------------------------------


def _r(value: float | None, places: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, places)


def _money(value: Decimal) -> str:
    return str(value.quantize(MONEY))


def equity_stats(equity: Sequence[float], start: float, bar_seconds: int) -> dict[str, Any]:
    """Sharpe, Sortino (per-candle simple returns, annualized with sqrt(candles a year),
    no risk-free rate) and the deepest drawdown (its peak and trough candle)."""
    n = len(equity)
    per_year = SECONDS_PER_YEAR / bar_seconds
    total = total_sq = down_sq = 0.0
    previous = start
    peak, peak_at = start, -1
    worst, worst_peak, worst_at = 0.0, -1, -1
    for i, value in enumerate(equity):
        r = value / previous - 1.0 if previous else 0.0
        total += r
        total_sq += r * r
        if r < 0:
            down_sq += r * r
        previous = value
        if value > peak:
            peak, peak_at = value, i
        elif peak > 0:
            dd = 1.0 - value / peak
            if dd > worst:
                worst, worst_peak, worst_at = dd, peak_at, i
    mean = total / n
    variance = (total_sq - n * mean * mean) / (n - 1) if n > 1 else 0.0
    std = math.sqrt(max(variance, 0.0))
    downside = math.sqrt(down_sq / n)
    return {
        "sharpe": mean / std * math.sqrt(per_year) if std > 0 else None,
        "sortino": mean / downside * math.sqrt(per_year) if downside > 0 else None,
        "max_drawdown": worst,
        "max_drawdown_peak": worst_peak,
        "max_drawdown_trough": worst_at,
    }


def metrics(result: BacktestResult, trades: Sequence[Trade]) -> dict[str, Any]:
    series = _series(result)
    g = series.bar_seconds
    start, end = result.start_equity, result.end_equity
    net = end - start
    years = len(series) * g / SECONDS_PER_YEAR
    ratio = float(end / start) if start > 0 else 0.0
    cagr = None
    if ratio > 0 and years > 0:
        exponent = math.log(ratio) / years
        cagr = math.exp(exponent) - 1.0 if exponent < 700 else None
    stats = equity_stats(result.equity, float(start), g)

    def candle_time(index: int) -> str:
        return _iso(_dt(series.start[index] + g)) if index >= 0 else _iso(series.first)

    closed = [t for t in trades if not t.is_open]
    wins = [t.net_pnl for t in closed if t.net_pnl > 0]
    losses = [t.net_pnl for t in closed if t.net_pnl <= 0]
    gross_win, gross_loss = sum(wins, ZERO), -sum(losses, ZERO)
    fees = sum((f.fee for f in result.fills), ZERO)
    funding = sum((p.payment for p in result.funding), ZERO)
    open_orders = [o for o in result.orders if not o.status.is_terminal]
    return {
        "start_equity": _money(start),
        "end_equity": _money(end),
        "net_pnl": _money(net),
        "total_return": _r(float(net / start) if start > 0 else None),
        "cagr": _r(cagr),
        "sharpe": _r(stats["sharpe"], 4),
        "sortino": _r(stats["sortino"], 4),
        "max_drawdown": _r(stats["max_drawdown"]),
        "max_drawdown_peak_at": candle_time(stats["max_drawdown_peak"]),
        "max_drawdown_trough_at": candle_time(stats["max_drawdown_trough"]) if stats["max_drawdown"] > 0 else None,
        "exposure": _r(result.exposed_bars / len(series)),
        "trades": len(closed),
        "open_trades": len(trades) - len(closed),
        "win_rate": _r(len(wins) / len(closed)) if closed else None,
        "profit_factor": _r(float(gross_win / gross_loss), 4) if gross_loss > 0 else None,
        "average_trade_pnl": _money(sum((t.net_pnl for t in closed), ZERO) / len(closed)) if closed else None,
        "best_trade_pnl": _money(max(t.net_pnl for t in closed)) if closed else None,
        "worst_trade_pnl": _money(min(t.net_pnl for t in closed)) if closed else None,
        "fees_paid": _money(fees),
        "funding_paid": _money(-funding),
        "orders": len(result.orders),
        "fills": len(result.fills),
        "orders_unfilled_at_end": len(open_orders),
        "risk_rejections": dict(result.risk_rejections),
        "risk_mode_changes": len(result.risk_changes),
        "risk_mode_at_end": result.risk_mode,
        "liquidations": result.liquidations,
    }


# ----- files ---------------------------------------------------------------------------


def report_data(result: BacktestResult, data: DataReport, trades: Sequence[Trade]) -> dict[str, Any]:
    series, cfg, costs = _series(result), result.config, result.costs
    return {
        "symbol": series.symbol,
        "product": {"type": _product(result).type.value, "base_increment": str(_product(result).base_increment),
                    "price_increment": str(_product(result).price_increment)},
        "data": {
            "source": data.source,
            "timeframe": describe_timeframe(series.bar_seconds),
            "candles": len(series),
            "first_candle": _iso(series.first),
            "last_close": _iso(series.end),
            "rows_read": data.rows,
            "repairs": list(data.repairs),
            "notes": list(data.notes),
        },
        "costs": {
            "fee_bps": str(costs.fee_bps),
            "maker_fee_bps": str(costs.maker_fee_bps if costs.maker_fee_bps is not None else costs.fee_bps),
            "slippage_bps": str(costs.slippage_bps),
            "funding_rate_per_8h": str(costs.funding_rate),
        },
        "fill_convention": FILL_CONVENTION,
        "strategy": {
            "name": result.strategy_name, "selected_as": cfg.strategy,
            "params": {k: v if isinstance(v, bool | int | str) else str(v) for k, v in result.strategy_params.items()},
            "enable_shorts": cfg.enable_shorts,
            "position_fraction": str(cfg.position_fraction), "leverage": str(cfg.leverage),
            "order_type": cfg.order_type.value,
        },
        "metrics": metrics(result, trades),
        "risk_changes": result.risk_changes[:RISK_CHANGES_SHOWN],
    }


TRADE_COLUMNS = ("trade", "direction", "entry_time", "entry_price", "exit_time", "exit_price", "size", "gross_pnl",
                 "fees", "funding", "net_pnl", "return_pct", "bars", "entry_reason", "exit_reason")


def write_trades(trades: Sequence[Trade], path: Path, contract_size: Decimal) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(TRADE_COLUMNS)
        for t in trades:
            notional = t.entry_price * t.size * contract_size
            writer.writerow([
                t.number, t.direction, _iso(t.entry_time), t.entry_price, _iso(t.exit_time) or "open",
                "" if t.exit_price is None else t.exit_price.quantize(MONEY), t.size, _money(t.gross_pnl),
                _money(t.fees), _money(t.funding), _money(t.net_pnl),
                (t.net_pnl / notional * 100).quantize(MONEY) if notional else "", t.bars, t.entry_reason,
                t.exit_reason,
            ])


def _columns(values: Sequence[float], width: int) -> list[tuple[float, float, float]]:
    """Each of ``width`` columns: (first, low, high) of the values falling in it."""
    n = len(values)
    out = []
    for x in range(width):
        lo, hi = x * n // width, max(x * n // width + 1, (x + 1) * n // width)
        chunk = values[lo:hi]
        out.append((chunk[0], min(chunk), max(chunk)))
    return out


def drawdowns(equity: Sequence[float], start: float) -> list[float]:
    peak = start
    out = []
    for value in equity:
        if value > peak:
            peak = value
        out.append(1.0 - value / peak if peak > 0 else 0.0)
    return out


def _label_money(value: float, separator: str = ",") -> str:
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    return text.replace(",", separator)


def equity_png(result: BacktestResult, width: int = 1000, height: int = 600) -> bytes:
    equity = list(result.equity)
    start = float(result.start_equity)
    dds = drawdowns(equity, start)
    c = Canvas(width, height)
    left, right, top = 90, width - 20, 30
    eq_bottom = int(height * 0.62)
    dd_top, dd_bottom = eq_bottom + 40, height - 40
    grid, axis, blue, red, text = (230, 230, 230), (120, 120, 120), (31, 90, 170), (200, 50, 50), (40, 40, 40)
    plot_w = right - left
    cols = _columns(equity, min(plot_w, len(equity)))
    lo = min(min(col[1] for col in cols), start)
    hi = max(max(col[2] for col in cols), start)
    if hi - lo < 1e-9:
        hi, lo = hi + 1, lo - 1

    def ey(v: float) -> int:
        return int(round(eq_bottom - (v - lo) / (hi - lo) * (eq_bottom - top)))

    for k in range(5):
        y = top + k * (eq_bottom - top) // 4
        c.rect(left, y, right, y, grid)
        label = _label_money(hi - k * (hi - lo) / 4, " ")  # a 5x7 comma looks like a point
        c.text(left - 8 - c.text_width(label), y - 3, label, text)
    c.rect(left, ey(start), right, ey(start), (180, 180, 180))
    scale = plot_w / len(cols)
    previous = None
    for i, (first, low, high) in enumerate(cols):
        x = left + int(i * scale)
        if previous is not None:
            c.line(previous[0], previous[1], x, ey(first), blue)
        c.rect(x, ey(high), x, ey(low), blue)
        previous = (x, ey(first))
    c.text(left, 8, "EQUITY", text, 2)
    worst = max(dds) if dds else 0.0
    dd_scale = worst if worst > 0 else 0.01
    dd_cols = _columns(dds, len(cols))
    for i, (_, _, deepest) in enumerate(dd_cols):
        x = left + int(i * scale)
        c.rect(x, dd_top, x, dd_top + int(deepest / dd_scale * (dd_bottom - dd_top)), red)
    c.rect(left, dd_top, right, dd_top, axis)
    c.rect(left, dd_bottom, right, dd_bottom, grid)
    c.text(left - 8 - c.text_width("0%"), dd_top - 3, "0%", text)
    label = f"-{worst * 100:.1f}%"
    c.text(left - 8 - c.text_width(label), dd_bottom - 3, label, text)
    c.text(left, dd_top - 22, "DRAWDOWN", text, 2)
    first_day, last_day = _iso(_series(result).first)[:10], _iso(_series(result).end)[:10]
    c.text(left, height - 20, first_day, text)
    c.text(right - c.text_width(last_day), height - 20, last_day, text)
    c.rect(left, top, left, eq_bottom, axis)
    c.rect(left, eq_bottom, right, eq_bottom, axis)
    return c.png()


def equity_svg(result: BacktestResult, width: int = 960, height: int = 420) -> str:
    equity = list(result.equity)
    start = float(result.start_equity)
    dds = drawdowns(equity, start)
    pad_l, pad_r, top = 80, 10, 10
    eq_h, gap, dd_h = int(height * 0.62), 30, int(height * 0.3)
    plot_w = width - pad_l - pad_r
    cols = _columns(equity, min(plot_w, len(equity)))
    lo = min(min(col[1] for col in cols), start)
    hi = max(max(col[2] for col in cols), start)
    if hi - lo < 1e-9:
        hi, lo = hi + 1, lo - 1
    step = plot_w / len(cols)
    points = []
    for i, (_, low, high) in enumerate(cols):
        x = pad_l + i * step
        for v in (high, low) if i % 2 else (low, high):
            points.append(f"{x:.1f},{top + (hi - v) / (hi - lo) * eq_h:.1f}")
    worst = max(dds) if dds else 0.0
    dd_scale = worst if worst > 0 else 0.01
    dd_top = top + eq_h + gap
    area = [f"{pad_l:.1f},{dd_top:.1f}"]
    for i, (_, _, deepest) in enumerate(_columns(dds, len(cols))):
        area.append(f"{pad_l + i * step:.1f},{dd_top + deepest / dd_scale * dd_h:.1f}")
    area.append(f"{pad_l + (len(cols) - 1) * step:.1f},{dd_top:.1f}")
    base_y = top + (hi - start) / (hi - lo) * eq_h
    labels = "".join(
        f'<text x="{pad_l - 6}" y="{top + k * eq_h / 4 + 4:.1f}" text-anchor="end">'
        f"{_label_money(hi - k * (hi - lo) / 4)}</text>"
        for k in range(5)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">'
        f'<line x1="{pad_l}" y1="{base_y:.1f}" x2="{width - pad_r}" y2="{base_y:.1f}" stroke="#bbb" '
        'stroke-dasharray="4 3"/>'
        f'<polyline fill="none" stroke="#1f5aaa" stroke-width="1" points="{" ".join(points)}"/>{labels}'
        f'<polygon fill="#c83232" fill-opacity="0.7" points="{" ".join(area)}"/>'
        f'<text x="{pad_l - 6}" y="{dd_top + 4}" text-anchor="end">0%</text>'
        f'<text x="{pad_l - 6}" y="{dd_top + dd_h + 4}" text-anchor="end">-{worst * 100:.1f}%</text>'
        f'<text x="{pad_l}" y="{height - 4}">{_iso(_series(result).first)}</text>'
        f'<text x="{width - pad_r}" y="{height - 4}" text-anchor="end">{_iso(_series(result).end)}</text>'
        "</svg>"
    )


_HTML_TRADES = 1000


def report_html(report: dict[str, Any], result: BacktestResult, trades: Sequence[Trade]) -> str:
    esc = html.escape
    m = report["metrics"]

    def rows(items: dict[str, Any]) -> str:
        return "".join(
            f"<tr><th>{esc(k.replace('_', ' '))}</th><td>{esc(_show(v))}</td></tr>" for k, v in items.items()
        )

    shown = trades[:_HTML_TRADES]
    trade_rows = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
            t.number, t.direction, _iso(t.entry_time), t.entry_price, _iso(t.exit_time) or "open",
            "" if t.exit_price is None else t.exit_price.quantize(MONEY), t.size, _money(t.net_pnl), t.exit_reason,
        )) + "</tr>"
        for t in shown
    )
    more = (f"<p>First {_HTML_TRADES} of {len(trades)} trades; all of them are in trades.csv.</p>"
            if len(trades) > _HTML_TRADES else "")
    changes = report["risk_changes"]
    risk = ("<table>" + "".join(
        f"<tr><td>{esc(c['at'])}</td><td>{esc(c['change'])}</td><td>{esc(c['detail'])}</td></tr>" for c in changes
    ) + "</table>") if changes else "<p>none: the risk mode stayed normal.</p>"
    data = report["data"]
    repairs = "".join(f"<li>{esc(r)}</li>" for r in data["repairs"]) or "<li>none</li>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>perpsbot backtest {esc(report['symbol'])}</title>
<style>
body{{font-family:sans-serif;margin:2em;color:#222;max-width:1000px}}
table{{border-collapse:collapse;margin:1em 0}}th,td{{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}}
th{{font-weight:600}}.grid{{display:flex;gap:3em;flex-wrap:wrap}}small{{color:#666}}
</style></head><body>
<h1>Backtest: {esc(report['symbol'])}, {esc(data['timeframe'])} candles</h1>
<p>{esc(data['first_candle'])} to {esc(data['last_close'])}, {data['candles']} candles from {esc(data['source'])}.</p>
{equity_svg(result)}
<div class="grid"><div><h2>Results</h2><table>{rows(m)}</table></div>
<div><h2>Settings</h2><table>{rows(report['strategy'])}{rows(report['costs'])}</table>
<h2>Data</h2><p>Repairs:</p><ul>{repairs}</ul><p><small>{esc('; '.join(data['notes']))}</small></p></div></div>
<h2>Fills</h2><p>{esc(report['fill_convention'])}.</p>
<h2>Risk mode changes</h2>{risk}
<h2>Trades</h2>{more}<table><tr><th>#</th><th>side</th><th>entry</th><th>entry price</th><th>exit</th>
<th>exit price</th><th>size</th><th>net PnL</th><th>exit reason</th></tr>{trade_rows}</table>
</body></html>
"""


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    return str(value)


def write_report(result: BacktestResult, data: DataReport, out_dir: Path, *, events: bool = False) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    trades = trades_of(result)
    report = report_data(result, data, trades)
    paths = {
        "report": out_dir / "report.json",
        "trades": out_dir / "trades.csv",
        "chart": out_dir / "equity.png",
        "html": out_dir / "report.html",
    }
    paths["report"].write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    write_trades(trades, paths["trades"], _product(result).contract_size)
    paths["chart"].write_bytes(equity_png(result))
    paths["html"].write_text(report_html(report, result, trades), encoding="utf-8")
    if events:
        paths["events"] = out_dir / "events.jsonl"
        result.events.write_jsonl(paths["events"])
    return paths
