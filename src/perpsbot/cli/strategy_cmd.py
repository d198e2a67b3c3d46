"""``perpsbot strategy``: the strategies there are, and a new one from a template."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from perpsbot.cli.common import UserError, console

app = typer.Typer(help="List strategies, start a new one.", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """The built-in strategies and those installed as entry points (group perpsbot.strategies)."""
    from perpsbot.strategy.loading import listed

    table = Table(title="strategies (select with strategy = NAME, or --strategy NAME)")
    for column in ("name", "from", "class", "what it does [parameters]"):
        table.add_column(column)
    for row in listed():
        table.add_row(row.name, row.where, row.target, escape(row.summary))  # "[period=14]" is text, not markup
    console.print(table)


@app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="the strategy's name, e.g. my-trend (the class becomes MyTrend)")],
    path: Annotated[Path | None, typer.Option("--path", help="file to write (default: NAME.py here)")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing file")] = False,
) -> None:
    """Write a commented strategy file to edit: it runs and backtests as it is."""
    from perpsbot.strategy.template import render

    target = path or Path(name.replace("-", "_") + ".py")
    try:
        cls, text = render(name, str(target))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if target.exists() and not force:
        raise UserError(f"{target} exists; --force overwrites it")
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror}") from None
    console.print(f"wrote {target}; run it with --strategy {target}:{cls}", highlight=False, soft_wrap=True)
