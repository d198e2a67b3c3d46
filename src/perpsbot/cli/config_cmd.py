"""``perpsbot config``: the effective configuration and where each value came from, and
``config set``: changes to the running bot.

``config set`` checks the keys as the config loader would on top of the running bot's
config (its run's recorded config and the changes recorded since), then posts a command
to the profile's events.db, as ``perpsbot orders cancel`` does; the bot applies it
between cycles, all of it or none, and answers with a one-line result.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from perpsbot.cli.common import ConfigOpt, ProfileOpt, console, fail, load, open_existing_stores
from perpsbot.cli.orders_cmd import bot_running, wait_for_result
from perpsbot.config import BotConfig, ConfigError, config_rows
from perpsbot.config.diff import CONFIG_SET, restart_refusal
from perpsbot.config.loader import SECRET_KEYS, explain_validation, overlay
from perpsbot.redact import REDACTED
from perpsbot.store import EventStore

app = typer.Typer(help="Inspect the configuration, or change the running bot's.", no_args_is_help=True)

# Applying a change can take a few seconds: the bot warms an added symbol's bars and resubscribes the stream.
SET_WAIT_SECONDS = 10.0
CREDENTIAL_KEYS = frozenset({"api_key_name", "api_private_key", "api_key_file"})


@app.command("show")
def show(profile: ProfileOpt = None, config: ConfigOpt = None) -> None:
    """Print the effective config, secrets masked, with the source of every value."""
    loaded = load({"profile": profile}, config)
    table = Table(title=f"perpsbot config ({loaded.config.profile.value})")
    table.add_column("key")
    table.add_column("value")
    table.add_column("source")
    for key, value, source in config_rows(loaded):
        table.add_row(key, value, source)
    console.print(table)


@app.command("set")
def set_(
    pairs: Annotated[
        list[str], typer.Argument(metavar="KEY=VALUE", help="settings to change, e.g. symbols=BTC-USD,ETH-USD")
    ],
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Change settings of the running bot; it applies them between cycles, all or none."""
    values = parse_pairs(pairs)
    unknown = sorted(set(values) - set(BotConfig.model_fields))
    if unknown:
        fail(f"unknown setting '{unknown[0]}' (`perpsbot config show` lists them all)")
    refusal = restart_refusal(values)
    if refusal is not None:
        fail(refusal)
    secret = sorted(set(values) & SECRET_KEYS)
    if secret:
        fail(f"{secret[0]} is a secret and never goes through the store: set it in the config file, "
             f"then send the bot SIGHUP (kill -HUP PID)")
    events, orders = open_existing_stores(load({"profile": profile}, config))
    orders.close()
    try:
        _set(events, values)
    finally:
        events.close()


def _set(events: EventStore, values: dict[str, str]) -> None:
    if not bot_running(events):
        fail("no bot is running under this profile, so nothing was changed (for the next run: "
             "the config file or `perpsbot run --set KEY=VALUE`)")
    runs = events.runs()
    run = runs[-1] if runs else None
    if run is None or run.ended_at is not None:  # the lock is taken before the run is recorded
        fail("the bot under this profile is still starting: try again in a moment")
    assert run is not None
    running = running_config(events, run.id, run.config)
    try:
        new_config = overlay(running, values, "config set")
    except ConfigError as exc:
        fail("; ".join(str(exc).splitlines()))
    changed = [key for key in values if getattr(new_config, key) != getattr(running, key)]
    if not changed:
        console.print(f"nothing to change: the bot already runs with {', '.join(values)} as given")
        return
    command_id = events.post_command(datetime.now(UTC), CONFIG_SET, values=values, run=run.id)
    console.print(f"command {command_id} (config set) posted to run {run.id}")
    result = wait_for_result(events, command_id, SET_WAIT_SECONDS)
    if result is None:
        console.print(f"no result within {SET_WAIT_SECONDS:g} s: the bot applies it after its current cycle "
                      f"(see `perpsbot events --kind command`)")
    elif result.startswith(("refused", "failed")):
        fail(result)
    else:
        console.print(f"result: {result}", highlight=False)


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            fail(f"config set expects KEY=VALUE, got '{pair}'")
        if key in values:
            fail(f"config set: {key} is given twice")
        values[key] = value.strip()
    return values


def running_config(events: EventStore, run_id: int, recorded: dict[str, Any]) -> BotConfig:
    """The running bot's config as far as its records show it: the run's config, then the
    changes its ``config_changed`` events recorded. A secret is masked there, so it is left
    at its default, except that credentials the record shows were given stand in as a key
    file (what the model asks of a Coinbase config; ``config set`` never changes them)."""
    values = dict(recorded)
    for event in events.query(kind="config_changed", run_id=run_id):
        values.update({key: change["new"] for key, change in event.data.get("changes", {}).items()})
    masked = {key for key, value in values.items() if value == REDACTED}
    values = {key: value for key, value in values.items() if key not in masked}
    if masked & CREDENTIAL_KEYS:
        values["api_key_file"] = Path("masked-in-the-record")
    try:
        return BotConfig.model_validate(values)
    except ValidationError as exc:
        message = explain_validation(exc, values, dict.fromkeys(values, f"run {run_id}'s record"))
        fail(f"cannot read the running bot's config from its record: {message.splitlines()[0]}")
        raise AssertionError from None
