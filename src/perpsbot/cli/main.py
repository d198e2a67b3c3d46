"""The ``perpsbot`` command: one typer app, one module per command group."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from perpsbot.cli import backtest as backtest_cmd
from perpsbot.cli import backup_cmd, config_cmd, orders_cmd, records, risk, sim, strategy_cmd
from perpsbot.cli import data as data_cmd
from perpsbot.cli import drift as drift_cmd
from perpsbot.cli import run as run_cmd
from perpsbot.cli.common import UserError, err_console

app = typer.Typer(
    name="perpsbot",
    help="A trading bot for Coinbase Advanced Trade spot and perpetual futures.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("run")(run_cmd.run)
app.add_typer(orders_cmd.app, name="orders")
app.command("close")(orders_cmd.close)
app.command("positions")(records.positions)
app.command("events")(records.events)
app.command("kill")(risk.kill)
app.command("resume")(risk.resume)
app.add_typer(risk.app, name="risk")
app.add_typer(config_cmd.app, name="config")
app.command("backtest")(backtest_cmd.backtest)
app.add_typer(strategy_cmd.app, name="strategy")
app.add_typer(data_cmd.app, name="data")
app.add_typer(sim.app, name="sim")
app.command("backup")(backup_cmd.backup)
app.command("restore")(backup_cmd.restore)
app.command("drift-review")(drift_cmd.drift_review)


def main() -> None:
    try:
        app()  # usage errors and --help are handled (and exit) inside
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
