"""A store that existed and is now missing or damaged stops `perpsbot run` in one line,
with the way out; nothing is recreated silently (issue 21, item 3)."""

from __future__ import annotations

import json
import os
import pty
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_cli_basics import perpsbot

RUN = ("run", "--profile", "paper", "--duration", "0.3", "--interval", "0.1", "--seed", "3")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A folder after one run of a fresh profile, and one backup of its store."""
    root = tmp_path_factory.mktemp("made")
    result = perpsbot(*RUN, cwd=root)
    assert result.returncode == 0, result.stderr
    backup = perpsbot("backup", cwd=root)
    assert backup.returncode == 0, backup.stderr
    return root, result


@pytest.fixture
def work(made: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> Path:
    shutil.copytree(made[0] / "data", tmp_path / "data")
    return tmp_path


def _store(work: Path) -> Path:
    return work / "data" / "paper"


def _prefix(orders_db: Path) -> str:
    conn = sqlite3.connect(orders_db)
    try:
        return conn.execute("SELECT value FROM meta WHERE key = 'id_prefix'").fetchone()[0]
    finally:
        conn.close()


def _runs(events_db: Path) -> int:
    conn = sqlite3.connect(events_db)
    try:
        return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    finally:
        conn.close()


def _refused(result: subprocess.CompletedProcess, problem: str) -> str:
    """The run stopped before trading with one line naming the problem and both ways out."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert problem in lines[0] and "nothing was replaced" in lines[0]
    assert "`perpsbot restore FILE`" in lines[0] and "`perpsbot run --new-store`" in lines[0]
    assert "bot_started" not in result.stdout and "run summary" not in result.stdout
    return lines[0]


def test_a_fresh_profile_starts_silently_and_records_its_store(made: tuple[Path, subprocess.CompletedProcess]):
    root, result = made
    assert result.returncode == 0 and "run summary" in result.stdout and result.stderr.count("error") == 0
    store = _store(root)
    marker = json.loads((store / "store.json").read_text())
    assert marker["id_prefix"] == _prefix(store / "orders.db")
    assert marker["created_at"].startswith("20")
    assert (store / "store.json").stat().st_mode & 0o777 == 0o600


def test_an_orders_db_truncated_to_0_bytes_is_refused_not_replaced(work: Path):
    orders_db = _store(work) / "orders.db"
    orders_db.write_bytes(b"")
    _refused(perpsbot(*RUN, cwd=work), "orders.db is empty (0 bytes)")
    assert orders_db.stat().st_size == 0
    # reading the orders does not quietly make a new empty database of it either
    _refused(perpsbot("orders", cwd=work), "orders.db is empty (0 bytes)")
    assert orders_db.stat().st_size == 0


def test_a_deleted_orders_db_is_refused_and_the_newest_backup_brings_it_back(work: Path):
    store = _store(work)
    prefix = _prefix(store / "orders.db")
    (store / "orders.db").unlink()
    line = _refused(perpsbot(*RUN, cwd=work), "orders.db is missing")
    assert not (store / "orders.db").exists()
    (backup,) = (store / "backups").glob("perpsbot-paper-*.tar.gz")
    assert f"the newest: {backup.relative_to(work)}" in line
    restored = perpsbot("restore", str(backup), cwd=work)
    assert restored.returncode == 0, restored.stderr
    again = perpsbot(*RUN, cwd=work)
    assert again.returncode == 0, again.stderr
    assert _prefix(store / "orders.db") == prefix  # the same store, so earlier orders are still ours
    assert json.loads((store / "store.json").read_text())["id_prefix"] == prefix


def test_an_orders_db_that_lost_its_id_prefix_is_refused(work: Path):
    orders_db = _store(work) / "orders.db"
    conn = sqlite3.connect(orders_db)
    conn.execute("DELETE FROM meta WHERE key = 'id_prefix'")
    conn.commit()
    conn.close()
    _refused(perpsbot(*RUN, cwd=work), "orders.db has lost its id prefix")
    conn = sqlite3.connect(orders_db)
    assert conn.execute("SELECT COUNT(*) FROM meta WHERE key = 'id_prefix'").fetchone()[0] == 0  # no new one made
    conn.close()


def test_an_events_db_truncated_to_0_bytes_is_refused(work: Path):
    events_db = _store(work) / "events.db"
    events_db.write_bytes(b"")
    _refused(perpsbot(*RUN, cwd=work), "events.db is empty (0 bytes)")
    assert events_db.stat().st_size == 0


def test_an_events_db_with_a_damaged_page_is_refused(work: Path):
    events_db = _store(work) / "events.db"
    conn = sqlite3.connect(events_db)
    conn.executemany(
        "INSERT INTO events(run_id, ts, kind, symbol, data) "
        "VALUES (1, '2026-03-02T12:00:00', 'decision', 'BTC-USD', ?)",
        [(json.dumps({"reason": f"filler {i}" * 8}),) for i in range(3000)],
    )
    conn.commit()
    conn.close()  # the last connection checkpoints: every page is in the main file
    size = events_db.stat().st_size
    pages = size // 4096
    assert pages > 50
    with open(events_db, "r+b") as handle:  # garbage over one page in the middle
        handle.seek((pages // 2) * 4096)
        handle.write(random.Random(21).randbytes(4096))
    check = sqlite3.connect(events_db)
    assert check.execute("PRAGMA quick_check").fetchone()[0] != "ok"  # the damage is real
    check.close()
    _refused(perpsbot(*RUN, cwd=work), "events.db is damaged (quick_check:")
    assert events_db.stat().st_size == size


def test_new_stores_need_confirmation_and_keep_the_old_files(work: Path):
    store = _store(work)
    old_prefix = _prefix(store / "orders.db")
    (store / "orders.db").write_bytes(b"")
    unasked = perpsbot(*RUN, "--new-store", cwd=work)  # no terminal to ask on (CI)
    assert unasked.returncode == 2
    assert (
        unasked.stderr.strip()
        == "error: --new-store needs a confirmation: run it on a terminal to answer, or add --yes"
    )
    assert (store / "orders.db").stat().st_size == 0
    assert "--yes goes with --new-store" in perpsbot(*RUN, "--yes", cwd=work).stderr

    confirmed = perpsbot(*RUN, "--new-store", "--yes", cwd=work)
    assert confirmed.returncode == 0, confirmed.stderr
    (aside,) = store.glob("replaced-*")
    assert (aside / "orders.db").stat().st_size == 0 and _runs(aside / "events.db") == 1  # kept, not deleted
    assert json.loads((aside / "store.json").read_text())["id_prefix"] == old_prefix
    new_prefix = _prefix(store / "orders.db")
    assert new_prefix != old_prefix and json.loads((store / "store.json").read_text())["id_prefix"] == new_prefix
    conn = sqlite3.connect(store / "events.db")
    (data,) = conn.execute("SELECT data FROM events WHERE kind = 'store_replaced'").fetchone()
    conn.close()
    assert json.loads(data) == {"problem": "orders.db is empty (0 bytes)", "kept_in": str(aside.relative_to(work))}

    intact = perpsbot(*RUN, "--new-store", "--yes", cwd=work)  # nothing is damaged now: nothing to replace
    assert intact.returncode == 2 and "is intact" in intact.stderr
    assert _prefix(store / "orders.db") == new_prefix and len(list(store.glob("replaced-*"))) == 1


def _on_a_terminal(work: Path, answer: bytes) -> subprocess.CompletedProcess:
    """`perpsbot run --new-store` with its stdin on a pseudo-terminal, answering ``answer``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPSBOT_")}
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "perpsbot", *RUN, "--new-store"], cwd=work, env={**env, "COLUMNS": "200"},
            stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        os.write(primary, answer + b"\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(secondary)
        os.close(primary)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_on_a_terminal_new_stores_are_asked_for_and_no_keeps_everything(work: Path):
    store = _store(work)
    (store / "events.db").write_bytes(b"")
    declined = _on_a_terminal(work, b"n")
    assert "events.db is empty (0 bytes). Move the old files aside and start new stores? [y/N]" in declined.stdout
    assert declined.returncode == 2 and "not confirmed; nothing was changed" in declined.stderr
    assert (store / "events.db").stat().st_size == 0 and not list(store.glob("replaced-*"))
    accepted = _on_a_terminal(work, b"y")
    assert accepted.returncode == 0, accepted.stderr
    (aside,) = store.glob("replaced-*")
    assert (aside / "events.db").stat().st_size == 0 and _runs(store / "events.db") == 1
