"""A user's own strategy, end to end: written to a file, backtested by path, run in paper
mode; a failing one isolated; bad ones refused in one line; ``strategy new`` / ``list``."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from tests.integration.test_cli_backtest import one_line_error
from tests.integration.test_cli_basics import perpsbot

FLIP = '''
from perpsbot.strategy.api import Param, Strategy, flat, go_long, hold


class Flip(Strategy):
    """In for `every` bars, out for `every` bars."""

    every = Param(int, 3, low=1, high=50)

    def on_bar(self, ctx):
        ctx.state["n"] = ctx.state.get("n", 0) + 1
        if ctx.state["n"] % self.every:
            return hold()
        return flat("out") if ctx.size else go_long("in", fraction=0.05)
'''

RAISES = '''
from perpsbot.strategy.api import Strategy


class Broken(Strategy):
    def on_bar(self, ctx):
        raise RuntimeError("no idea")
'''

FAST = ["--interval", "0.05", "--set", "bar_seconds=1", "--symbols", "BTC-USD"]


def events_of(tmp_path: Path, kind: str) -> list[tuple[str | None, dict]]:
    db = sqlite3.connect(tmp_path / "data" / "paper" / "events.db")
    rows = db.execute("SELECT symbol, data FROM events WHERE kind = ?", (kind,)).fetchall()
    db.close()
    return [(symbol, json.loads(data)) for symbol, data in rows]


def test_a_strategy_file_backtests_by_path_and_runs_in_paper_mode_named_with_its_parameters(tmp_path: Path):
    (tmp_path / "mine.py").write_text(FLIP)
    out = tmp_path / "bt"
    result = perpsbot("backtest", "--synthetic", "2000", "--strategy", "mine.py:Flip", "--param", "every=4",
                      "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "strategy Flip (every=4)" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["strategy"]["name"] == "Flip" and report["strategy"]["selected_as"] == "mine.py:Flip"
    assert report["strategy"]["params"] == {"every": 4}
    assert report["metrics"]["trades"] > 100  # in and out every 4 bars
    assert "every 4" in (out / "report.html").read_text()

    run = perpsbot("run", "--strategy", "mine.py:Flip", "--param", "every=2", "--duration", "3", *FAST, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "strategy Flip (every=2)" in run.stdout
    assert re.search(r"strategy params\s+│ every 2\s", run.stdout) and re.search(r"strategy errors\s+│ 0\s", run.stdout)
    [(_, started)] = events_of(tmp_path, "bot_started")
    assert started["strategy"] == "Flip" and started["strategy_params"] == {"every": 2}
    decisions = [d for _, d in events_of(tmp_path, "decision") if d["target"] != "HOLD"]
    assert decisions and decisions[0]["fraction"] == "0.05"  # the signal's size, recorded with it
    db = sqlite3.connect(tmp_path / "data" / "paper" / "events.db")
    config = json.loads(db.execute("SELECT config FROM runs").fetchone()[0])
    db.close()
    assert config["strategy"] == "mine.py:Flip" and config["strategy_params"] == {"every": "2"}


def test_a_strategy_that_raises_on_every_bar_holds_and_the_bot_runs_on(tmp_path: Path):
    (tmp_path / "broken.py").write_text(RAISES)
    run = perpsbot("run", "--strategy", "broken.py:Broken", "--duration", "3", *FAST, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    errors = [d for s, d in events_of(tmp_path, "error") if d.get("stage") == "strategy"]
    assert len(errors) >= 2 and all("raised RuntimeError: no idea" in d["error"] for d in errors)
    [(_, stopped)] = events_of(tmp_path, "bot_stopped")
    assert stopped["strategy_errors"] == len(errors) and stopped["cycles"] > 20 and stopped["orders_placed"] == 0


@pytest.mark.parametrize(("command", "strategy", "files", "expected"), [  # both commands load strategies alike
    ("run", "nowhere.py:X", {}, "strategy file nowhere.py not found"),
    ("backtest", "nowhere.py:X", {}, "strategy file nowhere.py not found"),
    ("run", "mine.py:Nope", {"mine.py": FLIP}, "mine.py has no class 'Nope' (strategies there: Flip)"),
    ("backtest", "mine.py:Param", {"mine.py": FLIP}, "mine.py:Param is not a subclass of perpsbot.strategy.api"),
    ("run", "bad.py:X", {"bad.py": "class X(:\n"}, "strategy file bad.py: line 1:"),
    ("backtest", "boom.py:X", {"boom.py": "raise ValueError('at import')\n"}, "failed to load: ValueError: at"),
    ("run", "no_such_strategy", {}, "unknown strategy 'no_such_strategy': not a built-in"),
    ("backtest", "no_such_pkg.mod:X", {}, "strategy no_such_pkg.mod:X: cannot import no_such_pkg.mod"),
])
def test_a_bad_strategy_is_one_line_and_exit_2(tmp_path: Path, command, strategy, files, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    extra = ["--duration", "1"] if command == "run" else ["--synthetic", "100", "--out", str(tmp_path / "o")]
    one_line_error(perpsbot(command, "--strategy", strategy, *extra, cwd=tmp_path), expected)


@pytest.mark.parametrize("command", ["run", "backtest"])
def test_a_bad_parameter_is_one_line_naming_it(tmp_path: Path, command):
    (tmp_path / "mine.py").write_text(FLIP)
    extra = ["--duration", "1"] if command == "run" else ["--synthetic", "100", "--out", str(tmp_path / "o")]
    one_line_error(perpsbot(command, "--strategy", "mine.py:Flip", "--param", "every=99", *extra, cwd=tmp_path),
                   "strategy Flip: parameter every = '99': must be at most 50")


def test_strategy_new_writes_a_template_that_lists_and_backtests_and_is_not_overwritten(tmp_path: Path):
    made = perpsbot("strategy", "new", "my-trend", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "--strategy my_trend.py:MyTrend" in made.stdout
    written = (tmp_path / "my_trend.py").read_text()
    one_line_error(perpsbot("strategy", "new", "my-trend", cwd=tmp_path), "my_trend.py exists; --force overwrites it")
    assert (tmp_path / "my_trend.py").read_text() == written
    assert perpsbot("strategy", "new", "my-trend", "--force", cwd=tmp_path).returncode == 0
    listed = perpsbot("strategy", "list", cwd=tmp_path)
    assert listed.returncode == 0
    for name in ("ma_crossover", "rsi_reversion", "donchian_breakout", "funding_carry"):
        assert name in listed.stdout
    out = tmp_path / "o"
    result = perpsbot("backtest", "--synthetic", "3000", "--strategy", "my_trend.py:MyTrend", "--param", "period=20",
                      "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["strategy"]["name"] == "my_trend" and report["strategy"]["params"]["period"] == 20
    assert report["metrics"]["trades"] > 0
    one_line_error(perpsbot("strategy", "new", "9lives", cwd=tmp_path), "'9lives' does not make a class name")


def test_an_installed_entry_point_is_listed_and_selected_by_its_name(tmp_path: Path):
    site = tmp_path / "site"
    (site / "flipper-1.0.dist-info").mkdir(parents=True)
    (site / "flipper-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: flipper\nVersion: 1.0\n")
    (site / "flipper-1.0.dist-info" / "entry_points.txt").write_text("[perpsbot.strategies]\nflip = flipper:Flip\n")
    (site / "flipper.py").write_text(FLIP)
    env = {"PYTHONPATH": str(site)}
    listed = perpsbot("strategy", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"flip\s+│ flipper\s+│ flipper:Flip\s+│ In for `every` bars, out for `every` bars. \[every=3\]",
                     listed.stdout), listed.stdout
    out = tmp_path / "o"
    result = perpsbot("backtest", "--synthetic", "500", "--strategy", "flip", "--out", str(out), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "report.json").read_text())["strategy"]["params"] == {"every": 3}


def test_an_error_message_is_printed_as_written_not_as_markup_or_emoji_codes(tmp_path: Path):
    one_line_error(perpsbot("backtest", "--synthetic", "10", "--strategy", "[bold]odd:x:.py:X", cwd=tmp_path),
                   "strategy file [bold]odd:x:.py not found")
