"""The ``perpsbot`` command: one typer app, one module per command group."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.markup import escape

from perpsbot.cli.common import UserError, err_console

# Each command: its name, the module under perpsbot.cli that holds it, the attribute, and
# whether that is a command group (a typer app). Only the module of the command asked for is
# imported: a `perpsbot backtest` does not pay for the simulator server's, the web dashboard's
# or the drift review's imports before its first candle. `--help` (or no command, or an
# unknown one) imports them all, to list them.
COMMANDS: tuple[tuple[str, str, str, bool], ...] = (
    ("run", "run", "run", False),
    ("orders", "orders_cmd", "app", True),
    ("close", "orders_cmd", "close", False),
    ("positions", "records", "positions", False),
    ("events", "records", "events", False),
    ("kill", "risk", "kill", False),
    ("resume", "risk", "resume", False),
    ("risk", "risk", "app", True),
    ("config", "config_cmd", "app", True),
    ("backtest", "backtest", "backtest", False),
    ("strategy", "strategy_cmd", "app", True),
    ("data", "data", "app", True),
    ("sim", "sim", "app", True),
    ("backup", "backup_cmd", "backup", False),
    ("restore", "backup_cmd", "restore", False),
    ("drift-review", "drift", "drift_review", False),
)
NAMES = frozenset(name for name, *_ in COMMANDS)


def build_app(argv: list[str] | None = None) -> typer.Typer:
    """The ``perpsbot`` app with the command ``argv`` asks for (all of them when it names none)."""
    args = sys.argv[1:] if argv is None else argv
    wanted = args[0] if args and args[0] in NAMES else None
    app = typer.Typer(
        name="perpsbot",
        help="A trading bot for Coinbase Advanced Trade spot and perpetual futures.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _group() -> None:  # a group even with one command registered: its name stays required
        """A trading bot for Coinbase Advanced Trade spot and perpetual futures."""

    for name, module, attribute, group in COMMANDS:
        if wanted is not None and name != wanted:
            continue
        command = getattr(importlib.import_module(f"perpsbot.cli.{module}"), attribute)
        if group:
            app.add_typer(command, name=name)
        else:
            app.command(name)(command)
    return app


def main() -> None:
    try:
        build_app()()  # usage errors and --help are handled (and exit) inside
    except UserError as exc:
        # one line, however long; the message as written (no markup, no :emoji: codes: "file.py:X:" stays)
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True, emoji=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - no traceback reaches a user
        err_console.print(f"[red]internal error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
        err_console.print("please report this with the command you ran; records on disk are intact", highlight=False)
        sys.exit(1)
