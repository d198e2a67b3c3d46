"""``perpsbot run``: trade until Ctrl-C (or ``--duration``), showing a live status."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from perpsbot.bot import BotError, PerpsBot, PerpsBotBuilder, strategy_fields
from perpsbot.cli.common import (
    ConfigOpt,
    ParamOpt,
    ProfileOpt,
    StrategyOpt,
    UserError,
    console,
    damaged_store,
    load,
)
from perpsbot.config import BotConfig, ConfigError, LoadedConfig, load_config
from perpsbot.dashboard import token_path
from perpsbot.logs import configure_logging
from perpsbot.store import StoreError
from perpsbot.store.folder import StoreDamaged
from perpsbot.strategy.loading import with_declared_symbols
from perpsbot.strategy.runner import StrategyError

PLAIN_STATUS_EVERY_SECONDS = 10.0


def parse_sets(pairs: list[str] | None, flag: str = "--set") -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} expects KEY=VALUE, got '{pair}'")
        values[key.strip().replace("-", "_")] = value.strip()
    return values


def run_config(
    named: dict[str, Any], sets: list[str] | None, params: list[str] | None, config_file: Path | None
) -> LoadedConfig:
    """``run``'s settings: its own flags (``named``; None: not given) over ``--set`` /
    ``--param`` over the environment, the config file, the profile and the defaults."""
    flags = {key: value for key, value in named.items() if value is not None}  # a flag not given keeps --set's
    loaded = load(flags, config_file, sets=set_layer(sets, params))
    try:
        return with_declared_symbols(loaded)  # symbols nobody set: the strategy's own, if it names them
    except StrategyError as exc:
        raise UserError(str(exc)) from None


def reload_config(
    named: dict[str, Any], sets: list[str] | None, params: list[str] | None, config_file: Path | None
) -> BotConfig:
    """What SIGHUP applies: ``run_config`` again, failing with ``ConfigError`` (the bot
    records it and keeps the config in force) instead of ending the command."""
    flags = {key: value for key, value in named.items() if value is not None}
    loaded = load_config(config_file=config_file, flags=flags, sets=set_layer(sets, params))
    try:
        return with_declared_symbols(loaded).config
    except StrategyError as exc:
        raise ConfigError(str(exc)) from None


def set_layer(sets: list[str] | None, params: list[str] | None) -> dict[str, Any]:
    """``--set`` and ``--param`` as one layer: a ``--param`` naming a bot setting sets it,
    any other name is a strategy parameter (``strategy_params``)."""
    values: dict[str, Any] = parse_sets(sets)
    strategy_params: dict[str, str] = {}
    for key, value in parse_sets(params, "--param").items():
        if key in BotConfig.model_fields:
            values[key] = value
        else:
            strategy_params[key] = value
    if strategy_params:
        values["strategy_params"] = strategy_params
    return values


def run(
    profile: ProfileOpt = None,
    symbols: Annotated[str | None, typer.Option(help="comma-separated products, e.g. BIP-20DEC30-CDE,ETH-USD")] = None,
    interval: Annotated[float | None, typer.Option(help="seconds between cycles")] = None,
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    seed: Annotated[int | None, typer.Option(help="simulator seed")] = None,
    strategy: StrategyOpt = None,
    param: ParamOpt = None,
    config: ConfigOpt = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="any setting, KEY=VALUE (repeatable), e.g. --set bar_seconds=2")
    ] = None,
    new_store: Annotated[
        bool,
        typer.Option(
            "--new-store", help="start new stores in place of missing or damaged ones (kept aside); asks first"
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="with --new-store: confirmed, without asking")] = False,
) -> None:
    """Run the bot. Paper mode on the built-in simulator unless the profile says otherwise."""
    named = {"profile": profile, "symbols": symbols, "interval": interval, "duration": duration, "seed": seed,
             "strategy": strategy}
    confirm = _new_store_confirmation(new_store, yes)
    loaded = run_config(named, set_, param, config)
    cfg = loaded.config
    try:
        configure_logging(cfg, console)
    except OSError as exc:
        raise UserError(f"cannot open the log file {cfg.log_path}: {exc.strerror}") from None
    try:
        # SIGHUP re-reads the config the way it was loaded: profile, file, env, --set / --param, these flags.
        summary = asyncio.run(_run(cfg, confirm, reload=lambda: reload_config(named, set_, param, config)))
    except StoreDamaged as exc:
        raise damaged_store(exc, cfg) from None
    except (BotError, StoreError) as exc:
        raise UserError(str(exc)) from None
    console.print(_summary_table(summary))


def _new_store_confirmation(new_store: bool, yes: bool) -> Callable[[str], bool] | None:
    """How ``--new-store`` is confirmed: ``--yes``, or a y/N question on a terminal; never
    silently (a run without a terminal, e.g. CI, needs ``--yes``)."""
    if not new_store:
        if yes:
            raise UserError("--yes goes with --new-store")
        return None
    if yes:
        return lambda problem: True
    if not sys.stdin.isatty():
        raise UserError("--new-store needs a confirmation: run it on a terminal to answer, or add --yes")
    return lambda problem: typer.confirm(f"{problem}. Move the old files aside and start new stores?", default=False)


async def _run(
    cfg: BotConfig, new_store: Callable[[str], bool] | None, *, reload: Callable[[], BotConfig]
) -> dict[str, Any]:
    builder = PerpsBotBuilder(cfg)
    if new_store is not None:
        builder.with_new_store(new_store)
    bot = await builder.build()  # new stores in place of a damaged one are logged (and recorded at start)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    interrupts = 0

    def on_signal() -> None:
        nonlocal interrupts
        interrupts += 1
        bot.stop()
        if interrupts > 1 and main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(signal.SIGHUP, bot.request_reload, reload)
    mode = "dry run" if cfg.dry_run else "trading"
    console.print(
        f"perpsbot [bold]{cfg.profile.value}[/] on {cfg.exchange.value}, {mode}, strategy {_strategy_label(bot)}, "
        f"symbols {', '.join(cfg.symbols)}; data in {cfg.store_dir}, log in {cfg.log_path}. Ctrl-C stops."
    )
    try:
        await bot.start()
        if bot.web is not None:
            console.print(f"metrics {bot.web.url}/metrics  health {bot.web.url}/health", soft_wrap=True)
            where = "the dashboard_token setting" if cfg.dashboard_token is not None else str(token_path(cfg))
            console.print(
                f"dashboard {bot.web.url}/dashboard?token=TOKEN, TOKEN in {where}", highlight=False, soft_wrap=True
            )
        if console.is_terminal:
            with Live(status_view(bot), console=console, refresh_per_second=4, transient=False) as live:
                await bot.run(cfg.duration, on_cycle=lambda b: live.update(status_view(b)))
        else:
            last = [0.0]

            def plain(b: PerpsBot) -> None:
                if time.monotonic() - last[0] >= PLAIN_STATUS_EVERY_SECONDS:
                    last[0] = time.monotonic()
                    console.print(status_line(b))

            await bot.run(cfg.duration, on_cycle=plain)
    except asyncio.CancelledError:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        summary = await bot.shutdown()
    return summary


def _strategy_label(bot: PerpsBot) -> str:
    shown = strategy_fields(bot.registry.strategy.strategy)
    params = ", ".join(f"{k}={v}" for k, v in shown.get("strategy_params", {}).items())
    return f"{shown['strategy']} ({params})" if params else str(shown["strategy"])


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def status_view(bot: PerpsBot) -> Group:
    reg = bot.registry
    positions = reg.execution.positions()
    table = Table(title=f"perpsbot {bot.config.profile.value} - cycle {bot.cycles} ({bot.cycle_ms:.1f} ms)")
    for column in ("symbol", "expires", "mark", "age s", "position", "entry", "unrealized", "last decision"):
        table.add_column(column)
    for symbol in reg.market_data.symbols:
        mark = reg.market_data.mark(symbol)
        age = reg.market_data.mark_age(symbol)
        pos = positions.get(symbol)
        decision = reg.strategy.last_decision.get(symbol)
        product = reg.products.get(symbol)
        table.add_row(
            symbol,
            product.expiry.strftime("%Y-%m-%d") if product is not None and product.expiry else "-",
            _money(mark),
            "-" if age is None else f"{age:.1f}",
            "flat" if pos is None or pos.is_flat else str(pos.size),
            "-" if pos is None or pos.is_flat else _money(pos.entry_price),
            "-" if pos is None or pos.is_flat or mark is None else _money(pos.unrealized_pnl(mark)),
            f"{decision.target.value}: {decision.reason}" if decision else "-",
        )
    return Group(table, status_line(bot))


def status_line(bot: PerpsBot) -> str:
    reg = bot.registry
    equity = reg.execution.account.equity
    pnl = equity - bot.start_equity if bot.start_equity is not None else None
    risk = reg.risk
    reasons = risk.kill_reasons if risk.killed else risk.reduce_only_reasons
    mode = f"{risk.mode} ({', '.join(reasons)})" if reasons else risk.mode
    return (
        f"cycle {bot.cycles}  equity {_money(equity)}  pnl {_money(pnl)}  "
        f"orders {reg.execution.placed} placed / {reg.execution.failed} failed  risk {mode}"
    )


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="run summary", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), _shown(value))
    return table


def _shown(value: Any) -> str:
    """One readable cell: money to the cent, nested figures (like the PnL's per-position
    breakdown) left to `perpsbot positions`."""
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return _money(value)
    if isinstance(value, dict):
        flat = {k: v for k, v in value.items() if not isinstance(v, dict)}
        return ", ".join(f"{k} {_shown(v)}" for k, v in flat.items()) or "none"
    return str(value)
