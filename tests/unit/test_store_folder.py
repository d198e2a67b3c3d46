"""What counts as a store that existed, and what as damage (store/folder.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from perpsbot.store import EventStore, OrdersStore
from perpsbot.store.folder import MARKER, StoreDamaged, inspect_store, open_stores
from tests.unit.test_backup import NOW, fill_store


def _open(store: Path) -> tuple[EventStore, OrdersStore]:
    opened = open_stores(store, NOW)
    return opened.events, opened.orders


def _close(*stores: EventStore | OrdersStore) -> None:
    for store in stores:
        store.close()


def test_a_first_start_killed_while_making_the_stores_leaves_a_fresh_profile(tmp_path: Path):
    store = tmp_path / "paper"
    store.mkdir()
    (store / "events.db").write_bytes(b"")  # the file made, not yet its schema; no orders.db, no marker
    assert inspect_store(store, thorough=True).existed is False
    EventStore(store / "events.db").close()  # its schema made, nothing recorded
    assert inspect_store(store, thorough=True).existed is False
    events, orders = _open(store)
    assert json.loads((store / MARKER).read_text())["id_prefix"] == orders.id_prefix
    _close(events, orders)


def test_a_store_from_before_the_marker_is_checked_and_gets_one(tmp_path: Path):
    store = tmp_path / "paper"
    fill_store(store, orders=2)
    assert inspect_store(store, thorough=True).problem is None
    events, orders = _open(store)
    prefix = orders.id_prefix
    _close(events, orders)
    assert json.loads((store / MARKER).read_text())["id_prefix"] == prefix
    (store / "orders.db").unlink()
    with pytest.raises(StoreDamaged, match=r"orders\.db is missing; nothing was replaced$"):
        open_stores(store, NOW)


def test_another_stores_orders_db_is_refused(tmp_path: Path):
    store, other = tmp_path / "paper", tmp_path / "other"
    for folder in (store, other):
        _close(*_open(folder))
    for suffix in ("", "-wal", "-shm"):
        if (other / f"orders.db{suffix}").exists():
            (other / f"orders.db{suffix}").replace(store / f"orders.db{suffix}")
    problem = inspect_store(store, thorough=False).problem
    assert problem is not None and problem.startswith("orders.db belongs to another store (id prefix pb-")


def test_a_marker_that_cannot_be_read_is_written_again_from_an_intact_store(tmp_path: Path):
    store = tmp_path / "paper"
    events, orders = _open(store)
    prefix = orders.id_prefix
    _close(events, orders)
    (store / MARKER).write_text("{not json")
    assert inspect_store(store, thorough=True).problem is None
    _close(*_open(store))
    assert json.loads((store / MARKER).read_text())["id_prefix"] == prefix


def test_a_file_that_is_not_sqlite_and_a_database_without_tables_are_damage(tmp_path: Path):
    store = tmp_path / "paper"
    _close(*_open(store))
    (store / "events.db").write_bytes(b"these are not the pages you are looking for" * 100)
    problem = inspect_store(store, thorough=False).problem
    assert problem == "events.db is not a readable SQLite database (file is not a database)"
    (store / "events.db").unlink()
    sqlite3.connect(store / "events.db").execute("CREATE TABLE other(x)").connection.close()
    assert inspect_store(store, thorough=False).problem == "events.db holds no perpsbot tables"
