"""What the command modules share: config loading from flags, store access, errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from perpsbot.config import BotConfig, ConfigError, LoadedConfig, load_config
from perpsbot.config.model import INT_LARGEST
from perpsbot.store import EventStore, OrdersStore, StoreError
from perpsbot.store.backup import BackupWorkflow
from perpsbot.store.folder import StoreDamaged, inspect_store


def _console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    # Piped output (logs, CI) gets a wide page instead of rich's 80-column default.
    return probe if probe.is_terminal or os.environ.get("COLUMNS") else Console(stderr=stderr, width=160)


console = _console()
err_console = _console(stderr=True)

ProfileOpt = Annotated[
    str | None, typer.Option("--profile", "-p", help="paper | dev | canary | prod (default: paper)")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (or $PERPSBOT_CONFIG)")
]
# Bounds of the whole-number options: a row count a table can show, and SQLite's INTEGER.
LIMIT_MAX = 1_000_000
ID_MAX = INT_LARGEST  # the largest whole number a setting or an id may be
StrategyOpt = Annotated[
    str | None,
    typer.Option("--strategy", help="built-in name, entry point, path/to/file.py:Class or package.module:Class"),
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", metavar="NAME=VALUE", help="a strategy parameter (or a bot setting); repeatable"),
]
RunOpt = Annotated[int | None, typer.Option("--run", min=1, max=ID_MAX, help="run id (default: the latest run)")]


class UserError(Exception):
    """Printed as one line, exit code 2: a problem the user can fix."""


def fail(message: str) -> None:
    raise UserError(message)


def load(flags: Mapping[str, Any], config_file: Path | None, sets: Mapping[str, Any] | None = None) -> LoadedConfig:
    try:
        return load_config(config_file=config_file, flags=flags, sets=sets)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def damaged_store(exc: StoreDamaged, config: BotConfig) -> UserError:
    """The refusal of a damaged store, with the two ways out."""
    backups = BackupWorkflow.from_config(config).backups()
    newest = f" (the newest: {backups[0][1]})" if backups else ""
    return UserError(
        f"{exc}. Put a backup back with `perpsbot restore FILE`{newest}, or start new stores with "
        f"`perpsbot run --new-store` (the old files are kept aside)"
    )


def check_store(config: BotConfig) -> None:
    """Refuse a store that existed and is now missing or damaged before a command opens it:
    opening would make new empty databases of what is missing and hide the damage."""
    state = inspect_store(config.store_dir, thorough=False)
    if state.problem is not None:
        raise damaged_store(StoreDamaged(config.store_dir, state.problem), config)


def open_existing_stores(loaded: LoadedConfig) -> tuple[EventStore, OrdersStore]:
    """Open the profile's stores for reading; never create an empty store by looking."""
    check_store(loaded.config)
    folder = loaded.config.store_dir
    events_path, orders_path = folder / "events.db", folder / "orders.db"
    if not events_path.exists() or not orders_path.exists():
        fail(f"no runs recorded yet for profile '{loaded.config.profile.value}' (looked in {folder})")
    try:
        return EventStore(events_path), OrdersStore(orders_path)
    except StoreError as exc:
        raise UserError(str(exc)) from None


def pick_run(events: EventStore, run: int | None) -> int:
    runs = {r.id for r in events.runs()}
    if not runs:
        fail("no runs recorded yet")
    if run is None:
        return max(runs)
    if run not in runs:
        fail(f"no run {run}; runs recorded: {', '.join(str(r) for r in sorted(runs))}")
    return run
