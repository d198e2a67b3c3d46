from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from perpsbot.domain import Fill, Liquidity, Order, OrderStatus, OrderType, Side
from perpsbot.store import EventStore, OrdersStore, StoreError

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_event_store_is_wal_versioned_and_keeps_events_across_reopen(tmp_path: Path):
    path = tmp_path / "events.db"
    store = EventStore(path)
    run = store.start_run(NOW, "paper", {"seed": 1})
    store.append(NOW, "decision", "BTC-USD", target="LONG", mark=D("1.5"))
    store.append(NOW, "fill", "BTC-USD", price=D("2"))
    store.end_run(NOW, {"cycles": 3})
    store.close()

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()

    again = EventStore(path)
    events = again.query(run_id=run)
    assert [e.kind for e in events] == ["decision", "fill"]
    assert events[0].data == {"target": "LONG", "mark": "1.5"}
    assert again.query(kind="fill")[0].data["price"] == "2"
    assert again.runs()[0].summary == {"cycles": 3}
    assert again.query(limit=1)[0].kind == "fill"  # the newest one


def test_events_kept_for_later_are_written_in_order_with_the_next_commit(tmp_path: Path):
    path = tmp_path / "events.db"
    store = EventStore(path)
    store.start_run(NOW, "paper", {})
    reasons = ["a"]
    store.append_later(NOW, "decision", "BTC-USD", target="LONG", reasons=reasons)
    store.append_later(NOW, "risk_approved", "BTC-USD", size=D("0.1"))
    reasons.append("changed after")  # the event keeps the list as it was
    other = sqlite3.connect(path)
    assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0  # nothing committed yet
    store.append(NOW, "order_placed", "BTC-USD")  # commits the kept ones first, in order
    assert [r[0] for r in other.execute("SELECT kind FROM events ORDER BY id")] == \
        ["decision", "risk_approved", "order_placed"]
    store.append_later(NOW, "order_submitted", "BTC-USD")
    assert [e.kind for e in store.query()][-1] == "order_submitted"  # a read writes them out
    store.append_later(NOW, "risk_rejected", "ETH-USD")
    assert store.count(kind="risk_rejected") == 1
    store.append_later(NOW, "decision", "ETH-USD")
    store.close()  # and so does closing
    assert other.execute("SELECT COUNT(*) FROM events WHERE symbol = 'ETH-USD'").fetchone()[0] == 2
    again = EventStore(path)
    assert again.query(kind="decision")[0].data == {"target": "LONG", "reasons": ["a"]}


def test_store_refuses_a_newer_schema_and_a_non_database(tmp_path: Path):
    path = tmp_path / "events.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        EventStore(path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        EventStore(junk)


def _order() -> Order:
    return Order("cid-1", "BTC-USD", Side.BUY, OrderType.MARKET, D("0.5"), NOW)


def test_orders_are_upserted_by_client_order_id(tmp_path: Path):
    store = OrdersStore(tmp_path / "orders.db")
    store.run_id = 4
    order = _order()
    store.upsert(order)
    assert store.get("cid-1").status is OrderStatus.PENDING
    order.transition(OrderStatus.OPEN)
    order.record_fill(Fill("t1", "cid-1", "BTC-USD", Side.BUY, D(100), D("0.5"), D("0.01"), Liquidity.TAKER, NOW))
    store.upsert(order)
    rows = store.orders(run_id=4)
    assert len(rows) == 1
    assert rows[0].status is OrderStatus.FILLED
    assert rows[0].average_fill_price == D(100)
    assert store.orders(run_id=4, open_only=True) == []


def test_the_order_store_keeps_its_id_prefix_and_knows_its_working_orders_without_a_query(tmp_path: Path):
    store = OrdersStore(tmp_path / "orders.db")
    prefix = store.id_prefix
    assert prefix.startswith("pb-") and len(prefix) == 12 and prefix.endswith("-")
    working = _order()
    store.write_ahead(working)
    done = Order("cid-2", "BTC-USD", Side.SELL, OrderType.MARKET, D("0.5"), NOW)
    done.transition(OrderStatus.REJECTED)
    store.upsert(done)
    eth = Order("cid-3", "ETH-USD", Side.BUY, OrderType.MARKET, D("1"), NOW)
    store.upsert(eth)
    assert store.working("BTC-USD").client_order_id == "cid-1" and store.working("SOL-USD") is None
    store.close()
    again = OrdersStore(tmp_path / "orders.db")  # rebuilt from the file
    assert again.id_prefix == prefix
    assert again.working("BTC-USD").client_order_id == "cid-1" and again.working("ETH-USD").client_order_id == "cid-3"
    working.transition(OrderStatus.OPEN)
    working.transition(OrderStatus.CANCELLED)
    again.upsert(working)
    assert again.working("BTC-USD") is None
    assert OrdersStore(tmp_path / "other.db").id_prefix != prefix  # another store, another prefix


def test_fills_are_recorded_once_per_trade_id(tmp_path: Path):
    store = OrdersStore(tmp_path / "orders.db")
    fill = Fill("t1", "cid-1", "BTC-USD", Side.BUY, D(100), D("0.5"), D("0.01"), Liquidity.TAKER, NOW)
    assert store.add_fill(fill) is True
    assert store.add_fill(fill) is False
    assert store.fills() == [fill]


def test_a_field_series_of_one_kind_in_one_run(tmp_path: Path) -> None:
    events = EventStore(tmp_path / "events.db")
    events.append(NOW, "snapshot", None, equity=D("1.5"))  # no run yet
    run = events.start_run(NOW, "paper", {})
    ids = [events.append(NOW, "snapshot", None, equity=D(n), marks={"X": "1"}) for n in range(4)]
    events.append(NOW, "fill", None, equity="not a snapshot")
    events.append(NOW, "snapshot", None)  # no equity in it
    series = events.field_series("snapshot", "equity", run_id=run)
    assert [(i, v) for i, _, v in series] == [*zip(ids, ["0", "1", "2", "3"], strict=True), (ids[-1] + 2, None)]
    assert series[0][1] == NOW.isoformat()
    assert [v for _, _, v in events.field_series("snapshot", "equity", run_id=run, after_id=ids[2])] == ["3", None]
    with pytest.raises(ValueError, match="not a data key"):
        events.field_series("snapshot", "equity') FROM events --", run_id=run)
    events.close()


def test_two_processes_opening_a_new_order_store_at_once_agree_on_one_prefix(tmp_path: Path, monkeypatch):
    first = OrdersStore(tmp_path / "orders.db")
    real = OrdersStore._meta
    # The second process read no prefix just before the first one wrote its own.
    monkeypatch.setattr(OrdersStore, "_meta", lambda self, key: None if key == "id_prefix" else real(self, key))
    second = OrdersStore(tmp_path / "orders.db")
    monkeypatch.undo()
    assert second.id_prefix == first.id_prefix


def test_deferred_events_a_failed_flush_could_not_write_are_kept_for_the_next(tmp_path: Path):
    path = tmp_path / "events.db"
    store = EventStore(path)
    store._conn.execute("PRAGMA busy_timeout=50")
    store.append_later(NOW, "decision", "BTC-USD", target="LONG")
    store.append_later(NOW, "risk_approved", "BTC-USD", code="ok")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
    with pytest.raises(sqlite3.OperationalError):
        store.flush()
    blocker.execute("ROLLBACK")
    blocker.close()
    store.append(NOW, "order_placed", "BTC-USD")  # writes the kept ones first
    assert [e.kind for e in store.query()] == ["decision", "risk_approved", "order_placed"]
    store.close()


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_stores_and_their_wal_and_shm_are_owner_only_and_older_wider_files_are_tightened(tmp_path: Path):
    import os

    old_umask = os.umask(0o022)  # the usual umask: files 0644 unless made otherwise
    try:
        events, orders = EventStore(tmp_path / "events.db"), OrdersStore(tmp_path / "orders.db")
        events.append(NOW, "decision", "BTC-USD", target="LONG")
        orders.upsert(Order("pb-1", "BTC-USD", Side.BUY, OrderType.MARKET, D("0.5"), NOW))
        for name in ("events.db", "orders.db"):
            files = [tmp_path / f"{name}{suffix}" for suffix in ("", "-wal", "-shm")]
            assert all(f.exists() for f in files), name
            assert [_mode(f) for f in files] == [0o600] * 3, name
        events.close()
        orders.close()
        for path in tmp_path.iterdir():  # as an older perpsbot left them
            path.chmod(0o644)
        events = EventStore(tmp_path / "events.db")
        assert sorted((p.name, _mode(p)) for p in tmp_path.glob("events.db*")) == [
            (f"events.db{s}", 0o600) for s in ("", "-shm", "-wal")
        ]
        events.close()
    finally:
        os.umask(old_umask)
