"""``perpsbot config set`` and SIGHUP against a ``perpsbot run`` in paper mode."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from perpsbot.cli.config_cmd import running_config
from perpsbot.config import BotConfig
from perpsbot.config.diff import shown_changes
from perpsbot.redact import public_config
from perpsbot.store import EventStore
from perpsbot.store.lock import StoreLock
from tests.integration.test_cli_basics import perpsbot

FAST = ["--interval", "0.05", "--set", "bar_seconds=1", "--set", "short_window=2", "--set", "long_window=4"]


def _query(tmp_path: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(tmp_path / "data" / "paper" / "events.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _events(tmp_path: Path, kind: str) -> list[tuple[int, str | None, dict[str, Any]]]:
    rows = _query(tmp_path, f"SELECT id, symbol, data FROM events WHERE kind = '{kind}' ORDER BY id")
    return [(row[0], row[1], json.loads(row[2])) for row in rows]


def _until(check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except sqlite3.OperationalError:  # the bot has not made its tables yet
            found = None
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


@contextmanager
def running_bot(tmp_path: Path, *args: str) -> Iterator[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPSBOT_")}
    bot = subprocess.Popen(
        [sys.executable, "-m", "perpsbot", "run", "--duration", "30", *FAST, *args],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    try:
        _until(lambda: _events(tmp_path, "bot_started"))
        yield bot
        assert bot.poll() is None, "the bot stopped early"
    finally:
        bot.terminate()
        _, stderr = bot.communicate(timeout=20)
    assert "Traceback" not in stderr.decode(), stderr.decode()


def _commands(tmp_path: Path) -> int:
    return _query(tmp_path, "SELECT COUNT(*) FROM commands")[0][0]


def test_config_set_changes_a_limit_and_the_symbols_of_a_running_bot(tmp_path: Path):
    with running_bot(tmp_path, "--symbols", "BTC-USD"):
        added = perpsbot("config", "set", "max_position_notional=20000", "symbols=BTC-USD,ETH-USD", cwd=tmp_path)
        assert added.returncode == 0, added.stderr
        assert "result: ok: max_position_notional 50000 -> 20000; symbols BTC-USD -> BTC-USD,ETH-USD" in added.stdout

        # Posted, and refused by the bot as a whole: the limit stays 20000.
        unknown = perpsbot("config", "set", "symbols=ETH-USD,NOPE-USD", "max_position_notional=1000", cwd=tmp_path)
        assert unknown.returncode == 2 and unknown.stderr.strip() == "error: refused: unknown product NOPE-USD"

        removed = perpsbot("config", "set", "symbols=ETH-USD", "max_position_notional=30000", cwd=tmp_path)
        assert removed.returncode == 0, removed.stderr
        assert "ok: max_position_notional 20000 -> 30000; symbols BTC-USD,ETH-USD -> ETH-USD" in removed.stdout

        # Refused before anything is posted.
        restart = perpsbot("config", "set", "max_position_notional=5000", "margin_type=cross", cwd=tmp_path)
        assert restart.returncode == 2 and restart.stderr.strip() == "error: margin_type needs a restart"
        invalid = perpsbot("config", "set", "max_position_notional=-5", cwd=tmp_path)
        assert invalid.returncode == 2 and invalid.stderr.strip() == (
            "error: config error: max_position_notional = '-5' (config set): Input should be greater than 0"
        )
        assert _commands(tmp_path) == 3
        status = perpsbot("risk", "status", cwd=tmp_path)  # the limits in force, not the config file's
        assert status.returncode == 0, status.stderr
        assert "in force in running run 1" in status.stdout
        assert re.search(r"max_position_notional\s+│ 30000\s", status.stdout), status.stdout

    assert re.search(r"max_position_notional\s+│ 50000\s", perpsbot("risk", "status", cwd=tmp_path).stdout)
    changed = _events(tmp_path, "config_changed")
    assert [(data["source"], data["added"], data["removed"]) for _, _, data in changed] == [
        ("config set", ["ETH-USD"], []), ("config set", [], ["BTC-USD"]),
    ]
    assert changed[1][2]["changes"]["max_position_notional"] == {"old": "20000", "new": "30000"}
    decisions = _events(tmp_path, "decision")
    assert any(symbol == "ETH-USD" and event_id > changed[0][0] for event_id, symbol, _ in decisions)
    assert not any(symbol == "BTC-USD" and event_id > changed[1][0] for event_id, symbol, _ in decisions)
    results = [data["result"] for _, _, data in _events(tmp_path, "command")]
    assert [r.split(":")[0] for r in results] == ["ok", "refused", "ok"]


def test_sighup_applies_the_edited_file_and_a_broken_file_keeps_the_config(tmp_path: Path):
    config = tmp_path / "bot.toml"
    config.write_text('symbols = "BTC-USD"\nmax_order_notional = 25000\n')
    with running_bot(tmp_path, "--config", str(config), "--set", "max_position_notional=30000") as bot:
        config.write_text('symbols = "BTC-USD,ETH-USD"\nmax_order_notional = 9000\nmax_position_notional = 10\n')
        bot.send_signal(signal.SIGHUP)
        (first,) = _until(lambda: _events(tmp_path, "config_changed"))
        assert first[2]["source"] == "SIGHUP"
        assert first[2]["changes"] == {  # the --set flag keeps max_position_notional at 30000
            "max_order_notional": {"old": "25000", "new": "9000"},
            "symbols": {"old": ["BTC-USD"], "new": ["BTC-USD", "ETH-USD"]},
        }

        config.write_text("max_order_notional = = 3\n")
        bot.send_signal(signal.SIGHUP)
        (error,) = _until(lambda: _events(tmp_path, "error"))
        assert error[2]["stage"] == "config reload" and "is not valid TOML" in error[2]["error"]
        config.write_text('symbols = "BTC-USD"\nmax_order_notional = 7000\ndata_dir = "elsewhere"\n')
        bot.send_signal(signal.SIGHUP)
        _until(lambda: len(_events(tmp_path, "error")) == 2)
        alerts = [data for _, _, data in _events(tmp_path, "alert") if data["rule"] == "config_reload_failed"]
        assert len(alerts) == 2 and "data_dir needs a restart" in alerts[1]["message"]

        config.write_text('symbols = "BTC-USD,ETH-USD"\nmax_order_notional = 8000\n')
        bot.send_signal(signal.SIGHUP)
        (last,) = _until(lambda: _events(tmp_path, "config_changed")[1:])
        assert last[2]["changes"] == {"max_order_notional": {"old": "9000", "new": "8000"}}  # 9000 stayed in force


def test_config_set_refuses_without_a_running_bot_and_bad_arguments_in_one_line(tmp_path: Path):
    for args, message in (
        (("max_position_notional",), "error: config set expects KEY=VALUE, got 'max_position_notional'"),
        (("intervall=2",), "error: unknown setting 'intervall' (`perpsbot config show` lists them all)"),
        (("alert_webhook_url=https://hooks.example.com/x",), "error: alert_webhook_url is a secret"),
    ):
        result = perpsbot("config", "set", *args, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.startswith(message), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    ran = perpsbot("run", "--duration", "0.2", *FAST, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    stopped = perpsbot("config", "set", "max_position_notional=1000", cwd=tmp_path)
    assert stopped.returncode == 2 and stopped.stderr.startswith("error: no bot is running under this profile")
    assert len(stopped.stderr.strip().splitlines()) == 1
    with StoreLock(tmp_path / "data" / "paper"):  # a bot that holds the store but has not recorded its run yet
        starting = perpsbot("config", "set", "max_position_notional=1000", cwd=tmp_path)
    assert starting.returncode == 2 and "still starting" in starting.stderr
    assert _commands(tmp_path) == 0


def test_the_running_config_is_read_from_the_run_and_its_changes_with_secrets_masked(tmp_path: Path):
    started = BotConfig(
        profile="prod", exchange="coinbase", api_key_name="organizations/o/apiKeys/k", api_private_key="a" * 44,
        alert_webhook_url="https://hooks.example.com/services/T0/B0/x", symbols=("BTC-USD",),
    )
    changed = started.model_copy(update={"symbols": ("BTC-USD", "ETH-USD"), "max_order_notional": Decimal(9000)})
    events = EventStore(tmp_path / "events.db")
    try:
        run_id = events.start_run(datetime.now(UTC), "prod", public_config(started))
        changes = shown_changes(started, changed, ["symbols", "max_order_notional"])
        events.append(datetime.now(UTC), "config_changed", None, changes=changes)
        running = running_config(events, run_id, events.runs()[-1].config)
    finally:
        events.close()
    assert running.symbols == ("BTC-USD", "ETH-USD") and running.max_order_notional == 9000
    assert running.exchange.value == "coinbase" and running.alert_webhook_url is None  # masked: not known here


def test_a_users_strategy_parameter_changes_on_the_running_bot_and_the_summary_names_it(tmp_path: Path):
    from tests.integration.test_cli_strategy import FLIP

    (tmp_path / "mine.py").write_text(FLIP)
    with running_bot(tmp_path, "--symbols", "BTC-USD", "--strategy", "mine.py:Flip", "--param", "every=2"):
        changed = perpsbot("config", "set", "strategy_params=every=5", cwd=tmp_path)
        assert changed.returncode == 0, changed.stderr
        assert "result: ok: strategy_params every=2 -> every=5" in changed.stdout, changed.stdout
        refused = perpsbot("config", "set", "strategy_params=every=99", cwd=tmp_path)  # its range is 1..50
        assert refused.returncode == 2 and "every" in refused.stderr, refused.stderr
        [(_, _, event)] = _events(tmp_path, "config_changed")
        assert event["source"] == "config set" and event["strategy"] == "Flip"
        assert event["strategy_params"] == {"every": 5}
    [(_, _, stopped)] = _until(lambda: _events(tmp_path, "bot_stopped"))
    assert stopped["strategy"] == "Flip" and stopped["strategy_params"] == {"every": 5}
