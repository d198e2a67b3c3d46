"""``perpsbot orders [cancel]`` and ``perpsbot close``: order commands for the running bot.

They post a command to the profile's events.db ``commands`` table (as ``perpsbot resume``
does); the bot carries it out on its next cycle. With a bot running we wait a few
seconds for its result; otherwise it runs when the bot next starts.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from perpsbot.cli import records
from perpsbot.cli.common import LIMIT_MAX, ConfigOpt, ProfileOpt, RunOpt, console, fail, load, open_existing_stores
from perpsbot.config.retired import retired_product
from perpsbot.store import EventStore
from perpsbot.store.lock import StoreLock, StoreLocked

WAIT_SECONDS = 3.0

app = typer.Typer(help="List a run's orders, or cancel working ones.", invoke_without_command=True)


@app.callback()
def orders(
    ctx: typer.Context,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
    run: RunOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=LIMIT_MAX, help="show at most this many, newest last")] = 50,
) -> None:
    """List the orders of a run (`perpsbot orders cancel --help` to cancel)."""
    if ctx.invoked_subcommand is None:
        records.orders(profile=profile, config=config, run=run, limit=limit)
    else:  # `perpsbot orders --profile P cancel ...` means P too
        ctx.obj = {"profile": profile, "config": config}


def bot_running(events: EventStore) -> bool:
    """A running bot holds its store's lock (the kernel drops it when the bot dies)."""
    try:
        StoreLock(events.path.parent, holder="perpsbot (looking for a running bot)").acquire().release()
    except StoreLocked:
        return True
    return False


def post_and_wait(events: EventStore, command: str, wait: float = WAIT_SECONDS, **args: Any) -> None:
    command_id = events.post_command(datetime.now(UTC), command, **args)
    console.print(f"command {command_id} ({command}) posted")
    if not bot_running(events):
        console.print("no bot is running under this profile: it runs when the bot next starts")
        return
    result = wait_for_result(events, command_id, wait)
    if result is not None:
        console.print(f"result: {result}", highlight=False)
        return
    console.print(f"no result within {wait:g} s: the bot carries it out on its next cycle "
                  f"(see `perpsbot events --kind command`)")


def wait_for_result(events: EventStore, command_id: int, wait: float) -> str | None:
    """The bot's one-line result of a command, or None when it has not answered within ``wait`` s."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        result = events.command_result(command_id)
        if result is not None:
            return result
        time.sleep(0.1)
    return None


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    client_order_id: Annotated[str | None, typer.Argument(help="the order to cancel")] = None,
    all_orders: Annotated[bool, typer.Option("--all", help="cancel every working order of ours")] = False,
    symbol: Annotated[str | None, typer.Option(help="with --all: only this symbol's orders")] = None,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Cancel one working order by client_order_id, or --all of them (optionally --symbol)."""
    if all_orders == (client_order_id is not None):
        fail("give either a CLIENT_ORDER_ID or --all")
    if symbol is not None and not all_orders:
        fail("--symbol goes with --all")
    retired = retired_product(symbol) if symbol is not None else None
    if retired is not None:
        fail(retired)
    parent = ctx.obj or {}
    profile = profile if profile is not None else parent.get("profile")
    config = config if config is not None else parent.get("config")
    events, store = open_existing_stores(load({"profile": profile}, config))
    try:
        if client_order_id is not None:
            order = store.get(client_order_id)
            if order is None:
                fail(f"no order {client_order_id} in this profile's order store")
            assert order is not None
            if order.status.is_terminal:
                fail(f"order {client_order_id} is already {order.status.value}")
            post_and_wait(events, "cancel", client_order_id=client_order_id)
        else:
            post_and_wait(events, "cancel_all", symbol=symbol.upper() if symbol else None)
    finally:
        events.close()
        store.close()


def close(
    symbol: Annotated[str, typer.Argument(help="the product whose position to close, e.g. BIP-20DEC30-CDE")],
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Close one position with a reduce-only market order, on the bot's next cycle."""
    symbol = symbol.strip().upper()
    if not symbol:
        fail("give a SYMBOL")
    retired = retired_product(symbol)
    if retired is not None:
        fail(retired)
    events, store = open_existing_stores(load({"profile": profile}, config))
    try:
        post_and_wait(events, "close", symbol=symbol)
    finally:
        events.close()
        store.close()
