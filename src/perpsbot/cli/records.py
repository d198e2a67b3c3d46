"""``perpsbot orders | positions | events``: what a run did, read from the stores."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import typer
from rich.table import Table

from perpsbot.cli.common import (
    LIMIT_MAX,
    ConfigOpt,
    ProfileOpt,
    RunOpt,
    console,
    load,
    open_existing_stores,
    pick_run,
)
from perpsbot.execution.ledger import position_history, read_terms
from perpsbot.execution.pnl import opening_positions


def _fmt(value: Decimal | None, places: str = "0.01") -> str:
    if value is None:
        return "-"
    return f"{value.quantize(Decimal(places)):,}"


def orders(
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
    run: RunOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=LIMIT_MAX, help="show at most this many, newest last")] = 50,
) -> None:
    """List the orders of a run."""
    events, store = open_existing_stores(load({"profile": profile}, config))
    try:
        run_id = pick_run(events, run)
        rows = store.orders(run_id=run_id, limit=limit)
        table = Table(title=f"orders, run {run_id} ({len(rows)} shown)")
        for column in ("created", "client_order_id", "symbol", "side", "type", "size", "filled", "avg price", "fees",
                       "status", "reason"):
            table.add_column(column)
        for order in rows:
            table.add_row(
                order.created_at.strftime("%H:%M:%S"),
                order.client_order_id,
                order.symbol,
                order.side.value,
                order.type.value,
                str(order.size),
                str(order.filled_size),
                _fmt(order.average_fill_price),
                _fmt(order.fees, "0.0001"),
                order.status.value,
                order.reject_reason or "",
            )
        console.print(table)
    finally:
        events.close()
        store.close()


def positions(profile: ProfileOpt = None, config: ConfigOpt = None, run: RunOpt = None) -> None:
    """Positions of a run, rebuilt from its fills: each one from open to close."""
    events, store = open_existing_stores(load({"profile": profile}, config))
    try:
        run_id = pick_run(events, run)
        started = events.query(kind="bot_started", run_id=run_id, limit=1)
        opening = opening_positions(started[0].data.get("opening_positions")) if started else {}
        since = datetime.fromisoformat(started[0].data.get("opened_at") or started[0].ts) if started else None
        fills = store.fills(run_id=run_id)
        if since is not None:  # fills from before the start (recorded late) are in the opening positions
            fills = [f for f in fills if f.ts >= since]
        terms = read_terms(started[0].data.get("products")) if started else {}
        sizes = {s: size for s, (size, _) in terms.items()}
        episodes = position_history(fills, {s: (size, price, since) for s, (size, price) in opening.items() if since},
                                    sizes)
        snapshots = events.query(kind="snapshot", run_id=run_id, limit=1)
        marks = snapshots[0].data.get("marks", {}) if snapshots else {}
        table = Table(title=f"positions, run {run_id}")
        for column in ("symbol", "expires", "side", "opened", "closed", "size", "entry", "exit", "realized", "fees",
                       "unrealized", "status"):
            table.add_column(column)
        for ep in episodes:
            unrealized = "-"
            mark = marks.get(ep.symbol)
            if ep.is_open and mark is not None:
                unrealized = _fmt((Decimal(mark) - ep.entry_price) * ep.size * sizes.get(ep.symbol, Decimal(1)))
            expiry = terms.get(ep.symbol, (None, None))[1]
            table.add_row(
                ep.symbol,
                expiry.strftime("%Y-%m-%d %H:%M UTC") if expiry else "-",
                "LONG" if ep.direction.value == "BUY" else "SHORT",
                ep.opened_at.strftime("%H:%M:%S"),
                ep.closed_at.strftime("%H:%M:%S") if ep.closed_at else "-",
                str(ep.max_size),
                _fmt(ep.entry_price),
                _fmt(ep.exit_price),
                _fmt(ep.realized_pnl),
                _fmt(ep.fees),
                unrealized,
                "open" if ep.is_open else "closed",
            )
        console.print(table)
        if not episodes:
            console.print("no fills in this run")
    finally:
        events.close()
        store.close()


def events(
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
    run: RunOpt = None,
    kind: Annotated[str | None, typer.Option(help="only events of this kind, e.g. fill, decision")] = None,
    symbol: Annotated[str | None, typer.Option(help="only events of this symbol")] = None,
    limit: Annotated[int, typer.Option(min=1, max=LIMIT_MAX, help="the newest N events")] = 50,
) -> None:
    """The events of a run: decisions, orders, fills, risk verdicts, errors."""
    store_events, store = open_existing_stores(load({"profile": profile}, config))
    try:
        run_id = pick_run(store_events, run)
        rows = store_events.query(kind=kind, symbol=symbol.upper() if symbol else None, run_id=run_id, limit=limit)
        table = Table(title=f"events, run {run_id} ({len(rows)} shown)")
        for column in ("id", "time", "kind", "symbol", "data"):
            table.add_column(column, overflow="fold")
        for event in rows:
            data = ", ".join(f"{k}={v}" for k, v in event.data.items())
            table.add_row(str(event.id), event.ts[11:23], event.kind, event.symbol or "", data)
        console.print(table)
    finally:
        store_events.close()
        store.close()
