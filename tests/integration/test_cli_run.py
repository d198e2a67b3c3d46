from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.test_cli_basics import perpsbot

FAST = ["--interval", "0.05", "--set", "bar_seconds=1", "--set", "short_window=2", "--set", "long_window=4"]


def test_paper_run_trades_and_the_records_show_it(tmp_path: Path):
    result = perpsbot("run", "--duration", "8", "--seed", "3", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "run summary" in result.stdout
    db = sqlite3.connect(tmp_path / "data" / "paper" / "orders.db")
    orders = db.execute("SELECT status, side FROM orders").fetchall()
    fills = db.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    db.close()
    assert orders and fills >= 1
    assert all(status == "FILLED" for status, _ in orders)
    shown = perpsbot("orders", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.count("FILLED") == len(orders)
    positions = perpsbot("positions", cwd=tmp_path)
    assert positions.returncode == 0 and "BIP-20DEC30-CDE" in positions.stdout
    events = perpsbot("events", "--kind", "fill", cwd=tmp_path)
    assert events.returncode == 0 and events.stdout.count("trade_id=") == fills


def test_dev_profile_places_no_order(tmp_path: Path):
    result = perpsbot("run", "--profile", "dev", "--duration", "6", "--seed", "3", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    db = sqlite3.connect(tmp_path / "data" / "dev" / "orders.db")
    assert db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0
    db.close()
    events = sqlite3.connect(tmp_path / "data" / "dev" / "events.db")
    assert events.execute("SELECT COUNT(*) FROM events WHERE kind = 'dry_run_order'").fetchone()[0] >= 1
    events.close()


def test_canary_run_opens_no_position(tmp_path: Path):
    result = perpsbot("run", "--profile", "canary", "--duration", "6", "--seed", "3", *FAST, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    db = sqlite3.connect(tmp_path / "data" / "canary" / "orders.db")
    assert db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0
    db.close()
    events = sqlite3.connect(tmp_path / "data" / "canary" / "events.db")
    targets = {
        row[0] for row in events.execute("SELECT json_extract(data, '$.target') FROM events WHERE kind = 'decision'")
    }
    config = events.execute("SELECT json_extract(config, '$.reduce_only') FROM runs").fetchone()[0]
    events.close()
    assert targets and targets <= {"HOLD", "FLAT"}
    assert config == 1


def test_ctrl_c_stops_within_a_second_with_everything_persisted(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPSBOT_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "perpsbot", "run", "--seed", "3", *FAST],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )
    events_db = tmp_path / "data" / "paper" / "events.db"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if events_db.exists():
            conn = sqlite3.connect(events_db)
            try:
                started = conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'decision'").fetchone()[0]
            except sqlite3.OperationalError:
                started = 0
            conn.close()
            if started >= 3:
                break
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError("the bot never started deciding")
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    stopped = time.monotonic() - sent
    assert proc.returncode == 0, err
    assert stopped < 1.5, f"took {stopped:.2f} s to stop"
    assert "run summary" in out
    conn = sqlite3.connect(events_db)
    last = conn.execute("SELECT kind FROM events ORDER BY id DESC LIMIT 1").fetchone()[0]
    ended = conn.execute("SELECT ended_at FROM runs").fetchone()[0]
    conn.close()
    assert last == "bot_stopped" and ended is not None
