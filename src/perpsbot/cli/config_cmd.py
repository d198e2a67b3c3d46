"""``perpsbot config``: the effective configuration and where each value came from."""

from __future__ import annotations

import typer
from rich.table import Table

from perpsbot.cli.common import ConfigOpt, ProfileOpt, console, load
from perpsbot.config import config_rows

app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


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
