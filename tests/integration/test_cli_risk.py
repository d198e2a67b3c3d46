from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

from perpsbot.config import BotConfig
from perpsbot.domain import Product, ProductType
from perpsbot.domain.clock import WallClock
from perpsbot.risk.manager import RiskManager
from perpsbot.store import EventStore, OrdersStore
from tests.integration.test_cli_basics import perpsbot

FAST = ["--interval", "0.05", "--set", "bar_seconds=1", "--set", "short_window=2", "--set", "long_window=4"]


def test_kill_before_a_run_keeps_the_bot_from_trading_and_resume_lifts_it(tmp_path: Path):
    killed = perpsbot("kill", "--flatten", "--reason", "maintenance", cwd=tmp_path)
    assert killed.returncode == 0, killed.stderr
    sentinel = tmp_path / "data" / "paper" / "KILL"
    assert json.loads(sentinel.read_text()) | {"at": None} == {"reason": "maintenance", "flatten": True, "at": None}

    run = perpsbot("run", "--duration", "4", "--seed", "3", *FAST, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    db = sqlite3.connect(tmp_path / "data" / "paper" / "orders.db")
    assert db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0
    db.close()

    status = perpsbot("risk", "status", cwd=tmp_path)
    assert status.returncode == 0
    assert "killed (kill_file)" in status.stdout
    assert "max_orders_per_minute" in status.stdout
    assert "from the venue: " in status.stdout and "liquidation buffer" in status.stdout  # the simulator's margin

    resumed = perpsbot("resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert not sentinel.exists()
    events = sqlite3.connect(tmp_path / "data" / "paper" / "events.db")
    assert events.execute("SELECT command FROM commands").fetchall() == [("resume",)]
    events.close()


def test_resume_refuses_while_the_config_kill_switch_is_set(tmp_path: Path):
    result = perpsbot("resume", cwd=tmp_path, env={"PERPSBOT_KILL_SWITCH": "true"})
    assert result.returncode == 2
    assert "kill_switch is set (env PERPSBOT_KILL_SWITCH)" in result.stderr


def test_resume_refuses_while_a_drawdown_kill_persists(tmp_path: Path):
    run = perpsbot("run", "--duration", "1", *FAST, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    db = sqlite3.connect(tmp_path / "data" / "paper" / "events.db")
    state = json.loads(db.execute("SELECT value FROM state WHERE key = 'risk'").fetchone()[0])
    state.update(kill=["drawdown"], mode="killed", equity="70000", peak_equity="100000")
    db.execute("UPDATE state SET value = ? WHERE key = 'risk'", (json.dumps(state),))
    db.commit()
    db.close()
    result = perpsbot("resume", cwd=tmp_path)
    assert result.returncode == 2
    assert "drawdown 30.00% is still beyond 20.00%" in result.stderr



def test_risk_status_says_when_the_liquidation_check_falls_back_to_the_flat_maintenance_rate(tmp_path: Path):
    """A venue that states no margin: the state the bot saves says so, and so does risk status."""
    bip = Product("BIP-20DEC30-CDE", "BTC", "USD", ProductType.PERPETUAL, Decimal(1), Decimal(5), Decimal(1),
                  max_leverage=Decimal(10), contract_size=Decimal("0.01"))
    store = tmp_path / "data" / "paper"
    events = EventStore(store / "events.db")
    OrdersStore(store / "orders.db").close()
    RiskManager(BotConfig(data_dir=tmp_path / "data"), WallClock(), events, lambda s: None,
                products={bip.symbol: bip}).save()
    events.close()
    status = perpsbot("risk", "status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "flat default: the venue reports no margin figures" in status.stdout
    assert "maintenance rate BIP-20DEC30-CDE" in status.stdout and "5.00% (flat default)" in status.stdout
