"""``perpsbot drift-review``: compare two recorded runs in a Markdown report with charts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from perpsbot.cli.common import ConfigOpt, ProfileOpt, UserError, console, open_existing_stores
from perpsbot.config import ConfigError, LoadedConfig, load_config
from perpsbot.config.loader import build_config, env_layer, file_layer, flag_layer, read_toml
from perpsbot.review import drift, junit
from perpsbot.review.config_audit import ConfigAudit, audit_file


def parse_junit_args(values: list[str]) -> tuple[list[Path], list[Path]]:
    """``[baseline=|current=]FILE`` each; a bare FILE is the current run's."""
    sides: dict[str, list[Path]] = {"baseline": [], "current": []}
    for value in values:
        side, sep, rest = value.partition("=")
        if sep and side in sides and rest:
            sides[side].append(Path(rest))
        elif sep and side in sides:
            raise UserError(f"--junit {value}: a file must follow '{side}='")
        else:
            sides["current"].append(Path(value))
    return sides["baseline"], sides["current"]


def _read_junit(paths: list[Path]) -> junit.JUnitRun | None:
    if not paths:
        return None
    run = junit.JUnitRun()
    for path in paths:
        try:
            junit.parse(path, run)
        except junit.JUnitError as exc:
            raise UserError(str(exc)) from None
    return run


def _load(profile: str | None, config_file: Path | None) -> tuple[LoadedConfig, ConfigAudit | None]:
    """The config that locates the store, and the audit of the config file if there is one.
    Unknown keys in the file are reported by the audit instead of stopping the review."""
    flags = {"profile": profile}
    if config_file is None and os.environ.get("PERPSBOT_CONFIG"):
        config_file = Path(os.environ["PERPSBOT_CONFIG"])
    try:
        if config_file is None:
            return load_config(flags=flags), None
        raw = read_toml(config_file)
        layer = file_layer(config_file, raw, drop_unknown=True)
        loaded = build_config([layer, env_layer(os.environ), flag_layer(flags)])
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    return loaded, audit_file(config_file, raw, loaded)


def drift_review(
    baseline: Annotated[str, typer.Option(help="baseline run: id, 'latest' or 'previous'")] = "previous",
    current: Annotated[str, typer.Option(help="current run: id, 'latest' or 'previous'")] = "latest",
    junit_files: Annotated[
        list[str] | None,
        typer.Option("--junit", help="JUnit XML test report, [baseline=|current=]FILE (bare: current); repeatable"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Markdown report path (default drift-review-B-C.md)")] = None,
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Compare two runs' production metrics, tests, config and incidents in a Markdown report with charts."""
    loaded, file_audit = _load(profile, config)
    base_paths, cur_paths = parse_junit_args(junit_files or [])
    reports = (_read_junit(base_paths), _read_junit(cur_paths))
    events, orders = open_existing_stores(loaded)
    try:
        runs = events.runs()
        try:
            base_run = drift.resolve_run(runs, baseline, "baseline")
            cur_run = drift.resolve_run(runs, current, "current")
        except drift.ReviewError as exc:
            raise UserError(str(exc)) from None
        if base_run.id == cur_run.id:
            raise UserError(f"--baseline and --current are both run {cur_run.id}; pick two runs")
        review = drift.build(events, base_run, cur_run, junit=reports, file_audit=file_audit)
    finally:
        events.close()
        orders.close()
    target = out or Path(f"drift-review-{base_run.id}-{cur_run.id}.md")
    try:
        written = drift.write(review, target)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
    flagged = review.flagged
    console.print(f"wrote {target} and {len(written) - 1} chart(s)", highlight=False)
    if flagged:
        console.print(f"{len(flagged)} row(s) flagged: " + ", ".join(r.spec.label for r in flagged), highlight=False)
    else:
        console.print("no drift beyond thresholds", highlight=False)
