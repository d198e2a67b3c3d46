"""What the dashboard shows, read from a running bot as plain JSON-ready values.

Money (equity, PnL, fees, funding, notional) is a string to the cent; prices are
strings at the product's price increment and sizes strings as exact as they are, so
the browser never does arithmetic on money.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from perpsbot.domain import Order, Product, VenueMargin
from perpsbot.store.events import Event, read_field_series

if TYPE_CHECKING:
    from perpsbot.bot import PerpsBot

CENT = Decimal("0.01")
EQUITY_POINTS = 2_000  # most snapshots sent at once (a long run's are thinned); later polls send only new ones
ALERT_EVENTS = 100  # newest alert / alert_cleared events listed
HEALTH_STATUSES = ("ok", "degraded", "failing")
# Keys of an alert event that name what it is about; the rest are shown as details.
_ALERT_KEYS = ("rule", "severity", "message", "since")


def money(value: Decimal | None) -> str | None:
    """A USD amount to the cent ('-0.00' shows as '0.00')."""
    if value is None:
        return None
    cents = value.quantize(CENT, rounding=ROUND_HALF_EVEN)
    return f"{cents.copy_abs() if cents.is_zero() else cents:f}"


def price(value: Decimal | None, product: Product | None) -> str | None:
    """A price at the product's increment (a 0.01 increment gives two places)."""
    if value is None:
        return None
    if product is not None:
        places = max(0, -product.price_increment.normalize().as_tuple().exponent)  # type: ignore[operator]  # a finite increment: an int exponent
        try:
            value = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
        except InvalidOperation:  # more digits than the context holds: show it as it is
            pass
    return f"{value:f}"


def size(value: Decimal) -> str:
    return "0" if value.is_zero() else f"{value.normalize():f}"


def freshness(age: float | None, warn: float, stale: float) -> str:
    """'none' (no mark yet), 'fresh', 'aging' (past the warning age) or 'stale' (too old to trade on)."""
    if age is None:
        return "none"
    if age > stale:
        return "stale"
    return "aging" if age > warn else "fresh"


def checked_health(health: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    """The health callable's verdict; one that fails or answers nonsense reads as failing."""
    try:
        verdict = health()
        status = verdict["status"]
        reasons = [str(r) for r in verdict.get("reasons", [])]
    except Exception as exc:  # noqa: BLE001 - the dashboard must keep answering
        return {"status": "failing", "reasons": [f"health check error: {type(exc).__name__}: {exc}"]}
    if status not in HEALTH_STATUSES:
        return {"status": "failing", "reasons": [f"health check answered an unknown status {status!r}", *reasons]}
    return {"status": status, "reasons": reasons}


def dashboard_state(
    bot: PerpsBot,
    health: Callable[[], Mapping[str, Any]],
    *,
    equity_after: int | None = None,
    equity_series: list[tuple[int, str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything the page shows. ``equity_after``: the last snapshot event the page has
    (only newer ones are sent); None sends the whole run's, thinned to ``EQUITY_POINTS``.
    ``equity_series``: those snapshots' (id, ts, equity), already read (see
    ``read_equity_series``); None reads them here."""
    reg = bot.registry
    config = reg.config
    now = reg.clock.now()
    account = reg.execution.account
    run_id = reg.events.run_id
    return {
        "generated_at": now.isoformat(),
        "bot": {
            "profile": config.profile.value,
            "exchange": reg.exchange.name,
            "dry_run": config.dry_run,
            "run_id": run_id,
            "cycles": bot.cycles,
            "cycle_ms": round(bot.cycle_ms, 1),
            "symbols": list(reg.market_data.symbols),
        },
        "health": checked_health(health),
        "risk": {
            "mode": reg.risk.mode,
            "reduce_only_reasons": list(reg.risk.reduce_only_reasons),
            "symbol_reduce_only": {s: list(r) for s, r in sorted(reg.risk.symbol_reduce_only.items())},
            "kill_reasons": list(reg.risk.kill_reasons),
        },
        "account": {
            "equity": money(account.equity),
            "start_equity": money(bot.start_equity),
            "equity_change": money(account.equity - bot.start_equity) if bot.start_equity is not None else None,
            "margin": _venue_margin(account.margin),
        },
        **_pnl_and_positions(bot),
        "orders": [_order(o, reg.products.get(o.symbol), now) for o in reg.orders.orders(open_only=True)],
        "marks": _marks(bot),
        "alerts": _alerts(_this_run(bot, "alert") + _this_run(bot, "alert_cleared"), reg.alerts.active),
        "equity_history": _equity_history(bot, equity_after, equity_series),
    }


def _venue_margin(margin: VenueMargin | None) -> dict[str, Any] | None:
    """The venue's margin figures and pending sweeps (None: the venue states none)."""
    if margin is None:
        return None
    return {
        "window": margin.window,
        "window_ends": margin.window_ends.isoformat() if margin.window_ends else None,
        "buying_power": money(margin.buying_power),
        "liquidation_buffer": money(margin.liquidation_buffer),
        "liquidation_buffer_pct": str(margin.liquidation_buffer_pct) if margin.liquidation_buffer_pct is not None
        else None,
        "sweeps": [{"id": w.sweep_id, "status": w.status, "amount": money(w.amount),
                    "scheduled_at": w.scheduled_at.isoformat() if w.scheduled_at else None} for w in margin.sweeps],
    }


def _pnl_and_positions(bot: PerpsBot) -> dict[str, Any]:
    reg = bot.registry
    report = reg.execution.pnl() if reg.events.run_id is not None else None  # no run: no fills of ours
    rows = report.positions if report is not None else {}
    positions = []
    for symbol, position in sorted(reg.execution.positions().items()):
        if position.is_flat:
            continue
        product = reg.products.get(symbol)
        mark = reg.market_data.mark(symbol)
        pnl = rows.get(symbol)
        positions.append({
            "symbol": symbol,
            "expires": product.expiry.date().isoformat() if product is not None and product.expiry else None,
            "side": "long" if position.size > 0 else "short",
            "size": size(position.size),
            "entry_price": price(position.entry_price, product),
            "mark": price(mark, product),
            "notional": money(position.notional(mark)) if mark is not None else None,
            "unrealized": money(position.unrealized_pnl(mark)) if mark is not None else None,
            "leverage": size(position.leverage),
            "realized": money(pnl.realized) if pnl else None,
            "net": money(pnl.net) if pnl else None,
        })
    totals = {
        key: money(getattr(report, key)) if report is not None else money(Decimal(0))
        for key in ("realized", "unrealized", "fees", "funding", "net")
    }
    by_symbol = [
        {"symbol": s, **{key: money(getattr(p, key)) for key in ("realized", "unrealized", "fees", "funding", "net")}}
        for s, p in sorted(rows.items())
    ]
    return {"pnl": {**totals, "symbols": by_symbol}, "positions": positions}


def _order(order: Order, product: Product | None, now: datetime) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "type": order.type.value,
        "size": size(order.size),
        "filled_size": size(order.filled_size),
        "limit_price": price(order.limit_price, product),
        "status": order.status.value,
        "reduce_only": order.reduce_only,
        "created_at": order.created_at.isoformat(),
        "age_seconds": round(max(0.0, (now - order.created_at).total_seconds()), 1),
    }


def _marks(bot: PerpsBot) -> list[dict[str, Any]]:
    reg = bot.registry
    config = reg.config
    rows = []
    for symbol in reg.market_data.symbols:
        age = reg.market_data.mark_age(symbol)
        rows.append({
            "symbol": symbol,
            "mark": price(reg.market_data.mark(symbol), reg.products.get(symbol)),
            "age_seconds": None if age is None else round(age, 1),
            "freshness": freshness(age, config.mark_warn_seconds, config.mark_staleness_seconds),
        })
    return rows


def _this_run(bot: PerpsBot, kind: str) -> list[Event]:
    """The run's newest ``ALERT_EVENTS`` events of a kind. Asked by kind alone (the kind
    index, where run and kind together would walk the whole run's events when there are
    few), then kept to this run: its events are the newest."""
    events = bot.registry.events
    if events.run_id is None:
        return []
    return [e for e in events.query(kind=kind, limit=ALERT_EVENTS) if e.run_id == events.run_id]


def _alerts(events: list[Event], active: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``recent``: the alert events newest first. ``active``: the bot's AlertBook (what
    fired and has not resolved, from an earlier run too; one-off alerts never are), each
    shown as its newest ``alert`` event when this run has it, for the details."""
    items = [_alert(e) for e in sorted(events, key=lambda e: e.id, reverse=True)]
    raised = {}
    for item in reversed(items):  # oldest first: the newest alert of a rule wins
        if item["kind"] == "alert" and item["rule"] is not None:
            raised[item["rule"]] = item
    shown = [
        raised.get(rule) or {
            "id": None, "ts": alert.get("since"), "kind": "alert", "symbol": None, "rule": rule,
            "severity": alert.get("severity"), "message": alert.get("message"), "details": "",
        }
        for rule, alert in sorted(active.items(), key=lambda kv: str(kv[1].get("since")))
    ]
    return {"active": shown, "recent": items[:ALERT_EVENTS]}


def _alert(event: Event) -> dict[str, Any]:
    data = event.data
    rule = None if data.get("rule") is None else str(data["rule"])
    details = "; ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value, sort_keys=True)}"
        for key, value in sorted(data.items()) if key not in _ALERT_KEYS
    )
    return {
        "id": event.id,
        "ts": event.ts,
        "kind": event.kind,
        "symbol": event.symbol,
        "rule": rule,
        "severity": None if data.get("severity") is None else str(data["severity"]),
        "message": None if data.get("message") is None else str(data["message"]),
        "details": details[:500],
    }


async def read_equity_series(bot: PerpsBot, after: int | None) -> list[tuple[int, str, Any]] | None:
    """This run's equity snapshots after event ``after``, read in a worker thread on a
    read-only connection of its own when the store is a file: a week of snapshots takes
    tens of milliseconds to read, which the bot's event loop (and its orders) must not
    wait for. None: read them in ``dashboard_state``."""
    events = bot.registry.events
    path, run_id = getattr(events, "path", None), events.run_id
    if path is None or run_id is None:
        return None
    events.flush()  # events kept for later are this connection's to write first
    return await asyncio.to_thread(read_field_series, path, "snapshot", "equity", run_id=run_id, after_id=after)


def _equity_history(bot: PerpsBot, after: int | None, series: list[tuple[int, str, Any]] | None) -> dict[str, Any]:
    events = bot.registry.events
    run_id = events.run_id
    if run_id is None:
        return {"points": [], "last_id": after}
    if series is None:
        series = events.field_series("snapshot", "equity", run_id=run_id, after_id=after)
    if not series:
        return {"points": [], "last_id": after}
    points = []
    for _, ts, equity in thin(series, EQUITY_POINTS):
        try:
            points.append([ts, money(Decimal(str(equity)))])
        except ArithmeticError:  # a snapshot without a usable equity figure is left off the chart
            continue
    return {"points": points, "last_id": series[-1][0]}


def thin(items: list[Any], most: int) -> list[Any]:
    """At most ``most`` of ``items``, evenly spread, always the first and the last."""
    if len(items) <= most:
        return items
    step = (len(items) - 1) / (most - 1)
    return [items[round(i * step)] for i in range(most)]
