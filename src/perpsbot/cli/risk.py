"""``perpsbot kill | resume | risk status``: the kill switch and the risk picture."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

import typer
from rich.table import Table

from perpsbot.cli.common import ConfigOpt, ProfileOpt, check_store, console, fail, load
from perpsbot.cli.config_cmd import running_config
from perpsbot.cli.orders_cmd import bot_running
from perpsbot.config import BotConfig
from perpsbot.domain.clock import WallClock
from perpsbot.risk.manager import STATE_KEY, RiskManager, kill_file_path, read_kill_file
from perpsbot.store import EventStore, StoreError

app = typer.Typer(help="The risk picture: limits, usage and mode.", no_args_is_help=True)

LIMIT_KEYS = (
    "max_leverage", "symbol_max_leverage", "off_hours_max_leverage", "off_hours_timezone", "night_hours",
    "weekend_off_hours", "max_position_notional", "symbol_max_notional", "max_position_equity_share",
    "max_total_notional", "symbol_max_quantity", "max_order_notional", "max_slippage_bps",
    "min_liquidation_distance_pct", "mark_warn_seconds", "mark_staleness_seconds", "daily_loss_limit",
    "max_drawdown_pct", "kill_drawdown_pct", "vol_window", "vol_warn", "vol_reduce_only", "vol_kill",
    "vol_cooldown_seconds", "error_streak_limit", "error_cooldown_seconds", "max_orders_per_minute",
    "reduce_only", "kill_switch",
)


def _money(value: str | None) -> str:
    return "-" if value is None else f"{Decimal(value):,.2f}"


def _running_run_config(events: EventStore) -> tuple[int, BotConfig] | None:
    """The running bot's run and its config as changed since (``config set``, SIGHUP);
    None when no bot runs, or its run is not recorded yet."""
    runs = events.runs()
    if not runs or runs[-1].ended_at is not None or not bot_running(events):
        return None
    return runs[-1].id, running_config(events, runs[-1].id, runs[-1].config)


def _events(config: BotConfig) -> EventStore | None:
    check_store(config)
    path = config.store_dir / "events.db"
    if not path.exists():
        return None
    try:
        return EventStore(path)
    except StoreError as exc:
        fail(str(exc))
        raise AssertionError from None


def kill(
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
    flatten: Annotated[bool, typer.Option("--flatten", help="also close every position")] = False,
    reason: Annotated[str, typer.Option(help="recorded with the kill")] = "perpsbot kill",
) -> None:
    """Engage the kill switch: the bot refuses every order from its next cycle."""
    cfg = load({"profile": profile}, config).config
    path = kill_file_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"reason": reason, "flatten": flatten, "at": datetime.now(UTC).isoformat()}
    path.write_text(json.dumps(payload) + "\n", encoding="utf-8")
    what = "and closes every position" if flatten else "(positions are left as they are)"
    console.print(f"kill switch engaged for profile '{cfg.profile.value}': the bot refuses every order {what}.")
    console.print(f"sentinel: {path}; undo with `perpsbot resume`.")


def resume(profile: ProfileOpt = None, config: ConfigOpt = None) -> None:
    """Lift the kill switch; refused while its cause persists."""
    loaded = load({"profile": profile}, config)
    cfg = loaded.config
    if cfg.kill_switch:
        fail(f"kill_switch is set ({loaded.sources['kill_switch']}); unset it there, then resume")
    path = kill_file_path(cfg)
    events = _events(cfg)
    if events is None:
        path.unlink(missing_ok=True)
        console.print("no run recorded yet; kill file removed")
        return
    try:
        manager = RiskManager(cfg, WallClock(), events, lambda symbol: None)
        manager.restore(announce=False)
        killed_by_file = read_kill_file(path) is not None
        path.unlink(missing_ok=True)
        blockers = manager.resume_blockers()
        if blockers:
            if killed_by_file:
                path.write_text(json.dumps({"reason": "restored: resume refused"}) + "\n", encoding="utf-8")
            fail("resume refused: " + "; ".join(blockers))
        events.post_command(datetime.now(UTC), "resume")
    finally:
        events.close()
    console.print("resumed: the kill file is gone and the bot clears its kill state on its next cycle")


@app.command("status")
def status(profile: ProfileOpt = None, config: ConfigOpt = None) -> None:
    """Limits, current usage and mode (as of the bot's last cycle)."""
    cfg = load({"profile": profile}, config).config
    events = _events(cfg)
    in_force, title = cfg, f"risk limits ({cfg.profile.value})"
    if events is not None:
        running = _running_run_config(events)
        if running is not None:  # a running bot's limits, with the changes made to it since its start
            in_force, title = running[1], f"risk limits ({cfg.profile.value}, in force in running run {running[0]})"
    limits = Table(title=title, show_header=False)
    for key in LIMIT_KEYS:
        value = getattr(in_force, key)
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in value.items()) or "-"
        limits.add_row(key, "-" if value is None else str(value))
    console.print(limits)
    kill_file = read_kill_file(kill_file_path(cfg))
    stored = events.get_state(STATE_KEY) if events else None
    if events:
        events.close()
    if stored is None:
        console.print("no risk state recorded yet (the bot has not run under this profile)")
        if kill_file is not None:
            console.print(f"mode: killed (kill file {kill_file_path(cfg)})")
        return
    state, updated = stored
    usage = Table(title=f"risk usage as of {updated}", show_header=False)
    mode = state["mode"]
    reasons = state["kill"] if mode == "killed" else state["reduce_only"]
    usage.add_row("mode", f"{mode}" + (f" ({', '.join(reasons)})" if reasons else ""))
    if mode == "killed" and state["reduce_only"]:
        usage.add_row("reduce-only reasons", ", ".join(state["reduce_only"]))
    for symbol, symbol_reasons in sorted((state.get("symbol_reduce_only") or {}).items()):
        usage.add_row(f"reduce-only {symbol}", ", ".join(symbol_reasons))
    usage.add_row("kill file", str(kill_file_path(cfg)) if kill_file is not None else "absent")
    usage.add_row("flatten requested", str(state["flatten"]).lower())
    usage.add_row("equity", _money(state["equity"]))
    if state["day_start_equity"] is not None and state["equity"] is not None:
        day_pnl = Decimal(state["equity"]) - Decimal(state["day_start_equity"])
        usage.add_row("today (UTC)", f"{day_pnl:.2f} of -{cfg.daily_loss_limit} allowed")
    usage.add_row("peak equity", _money(state["peak_equity"]))
    usage.add_row(
        "drawdown",
        f"{float(state['drawdown']):.2%} (reduce-only {cfg.max_drawdown_pct:.0%}, kill {cfg.kill_drawdown_pct:.0%})",
    )
    for symbol, vol in state["volatility"].items():
        usage.add_row(f"volatility {symbol}", f"{vol:.0%} annualized")
    usage.add_row("orders in the last minute", f"{state['orders_last_minute']} of {cfg.max_orders_per_minute}")
    usage.add_row("error streak", f"{state['error_streak']} of {cfg.error_streak_limit}")
    if state["cooldown_until"]:
        usage.add_row("error cooldown until", str(state["cooldown_until"]))
    _margin_rows(usage, state.get("margin"))
    console.print(usage)


def _margin_rows(usage: Table, margin: dict | None) -> None:
    """The margin the liquidation check works from: the venue's figures in the window in
    force, or the flat default (said so) when the venue gives none."""
    if not margin:
        return
    if margin["source"] != "venue":
        usage.add_row("margin", "flat default: the venue reports no margin figures")
        for symbol, rates in sorted(margin["maintenance_rates"].items()):
            usage.add_row(f"maintenance rate {symbol}", f"{Decimal(rates['long']):.2%} (flat default)")
        return
    ends = f" until {margin['window_ends']}" if margin.get("window_ends") else ""
    usage.add_row("margin", f"from the venue: {margin['window']} window{ends}")
    change = margin.get("window_change")
    if change:
        usage.add_row("margin window change", f"{change['from']} -> {change['to']} at {change['at']}")
    for key in ("total_balance", "buying_power", "initial_margin", "maintenance_margin", "liquidation_threshold"):
        usage.add_row(key.replace("_", " "), _money(margin[key]))
    pct = margin.get("liquidation_buffer_pct")
    usage.add_row("liquidation buffer", _money(margin["liquidation_buffer"]) + (f" ({pct} %)" if pct else ""))
    for symbol, rates in sorted(margin["maintenance_rates"].items()):
        usage.add_row(f"maintenance rate {symbol}",
                      f"long {Decimal(rates['long']):.2%}, short {Decimal(rates['short']):.2%} ({margin['window']})")
    for symbol, rate in sorted(margin.get("flat_default", {}).items()):
        usage.add_row(f"maintenance rate {symbol}", f"{Decimal(rate):.2%} (flat default: the venue lists none)")
    sweeps = margin.get("sweeps") or []
    usage.add_row("sweeps", "; ".join(
        f"{w['id']} {w['status']} {_money(w['amount']) if w['amount'] is not None else 'all'}"
        + (f" at {w['scheduled_at']}" if w.get("scheduled_at") else "") for w in sweeps) or "none pending")
