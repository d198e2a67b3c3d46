"""``perpsbot orders cancel`` and ``perpsbot close``: commands posted to the bot's events.db."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from perpsbot.store.lock import StoreLock
from tests.integration.test_cli_basics import perpsbot
from tests.integration.test_cli_risk import FAST


def _commands(tmp_path: Path) -> list[tuple]:
    db = sqlite3.connect(tmp_path / "data" / "paper" / "events.db")
    try:
        return db.execute(
            "SELECT id, command, args, handled_at IS NOT NULL, result FROM commands ORDER BY id"
        ).fetchall()
    finally:
        db.close()


def test_usage_errors_are_one_line_exit_2(tmp_path: Path):
    for args, message in (
        (("orders", "cancel"), "give either a CLIENT_ORDER_ID or --all"),
        (("orders", "cancel", "abc", "--all"), "give either a CLIENT_ORDER_ID or --all"),
        (("orders", "cancel", "abc", "--symbol", "BIP-20DEC30-CDE"), "--symbol goes with --all"),
        (("close", "BIP-20DEC30-CDE"), "no runs recorded yet for profile 'paper'"),
        (("orders", "--profile", "dev", "cancel", "--all"), "no runs recorded yet for profile 'dev'"),
    ):
        result = perpsbot(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


def test_commands_wait_for_the_next_start_when_no_bot_runs(tmp_path: Path):
    run = perpsbot("run", "--duration", "1", "--seed", "3", *FAST, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    unknown = perpsbot("orders", "cancel", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "no order nope in this profile's order store" in unknown.stderr
    closed = perpsbot("close", "bip-20dec30-cde", cwd=tmp_path)
    assert closed.returncode == 0, closed.stderr
    assert "command 1 (close) posted" in closed.stdout and "runs when the bot next starts" in closed.stdout
    cancel_all = perpsbot("orders", "cancel", "--all", "--symbol", "BIP-20DEC30-CDE", cwd=tmp_path)
    assert cancel_all.returncode == 0 and "command 2 (cancel_all) posted" in cancel_all.stdout
    assert [(c[1], c[3]) for c in _commands(tmp_path)] == [("close", 0), ("cancel_all", 0)]
    listing = perpsbot("orders", cwd=tmp_path)  # the group still lists orders
    assert listing.returncode == 0 and "orders, run 1" in listing.stdout

    again = perpsbot("run", "--duration", "1", "--seed", "3", *FAST, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    handled = _commands(tmp_path)
    assert all(c[3] for c in handled)
    assert handled[0][4] in ("nothing to do: no position in BIP-20DEC30-CDE",) or handled[0][4].startswith("ok: ")
    assert handled[1][4].startswith("ok: ") and "order(s) cancelled" in handled[1][4]


def test_a_running_bot_answers_within_seconds(tmp_path: Path):
    first = perpsbot("run", "--duration", "0.2", "--seed", "3", *FAST, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    bot = subprocess.Popen(
        [sys.executable, "-m", "perpsbot", "run", "--duration", "12", "--seed", "3", *FAST],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    try:
        db = tmp_path / "data" / "paper" / "events.db"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            conn = sqlite3.connect(db)
            started = conn.execute("SELECT COUNT(*) FROM runs WHERE id = 2").fetchone()[0]
            cycles = conn.execute("SELECT COUNT(*) FROM events WHERE run_id = 2 AND kind = 'bot_started'").fetchone()[0]
            conn.close()
            if started and cycles:
                break
            time.sleep(0.1)
        result = perpsbot("close", "ETP-20DEC30-CDE", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "result: " in result.stdout, result.stdout
    finally:
        bot.terminate()
        bot.wait(timeout=20)


def test_a_run_killed_without_a_shutdown_is_not_taken_for_a_running_bot(tmp_path: Path):
    run = perpsbot("run", "--duration", "0.5", "--seed", "3", *FAST, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    store = tmp_path / "data" / "paper"
    db = sqlite3.connect(store / "events.db")
    db.execute("UPDATE runs SET ended_at = NULL")  # what a SIGKILL leaves
    db.commit()
    db.close()
    with StoreLock(store):  # what a running bot holds: the command waits for its answer
        held = perpsbot("close", "BIP-20DEC30-CDE", cwd=tmp_path)
    assert "no result within 3 s" in held.stdout, held.stdout
    dead = perpsbot("close", "BIP-20DEC30-CDE", cwd=tmp_path)  # the killed bot's lock died with it
    assert dead.returncode == 0 and "runs when the bot next starts" in dead.stdout, dead.stdout
