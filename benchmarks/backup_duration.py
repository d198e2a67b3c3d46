"""Backup and restore duration for a store of a given size.

Fills a fresh store with ``--events`` events (a decision and a fill per order, like a
trading bot writes) and ``--events // 2`` orders with their fills, then times
``BackupWorkflow.backup`` (online copy, secret scrub, VACUUM, sha256, tar.gz) and
``restore_backup`` (full verification and swap). Prints store size, backup size and
seconds for each:

    python benchmarks/backup_duration.py [--events 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from perpsbot.domain import Fill, Liquidity, Order, OrderType, Side
from perpsbot.store import EventStore, OrdersStore
from perpsbot.store.backup import BackupWorkflow, restore_backup

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fill(store: Path, events: int) -> None:
    log, book = EventStore(store / "events.db"), OrdersStore(store / "orders.db")
    log.start_run(T0, "paper", {"symbols": ["BIP-20DEC30-CDE"]})
    log._conn.execute("BEGIN")
    book._conn.execute("BEGIN")
    for i in range(events // 2):
        at = T0 + timedelta(seconds=i)
        order = Order(f"pb-{i:032x}", "BIP-20DEC30-CDE", Side.BUY, OrderType.MARKET, Decimal(1), at)  # a contract
        trade = Fill(f"t-{i}", order.client_order_id, order.symbol, Side.BUY, Decimal(60000 + i % 500),
                     Decimal(1), Decimal("0.3"), Liquidity.TAKER, at)
        order.record_fill(trade)
        book.upsert(order)
        book.add_fill(trade)
        log.append(at, "decision", order.symbol, target="LONG", reason="fast above slow", mark=trade.price)
        log.append(at, "fill", order.symbol, trade_id=trade.trade_id, price=trade.price, size=trade.size)
    log._conn.execute("COMMIT")
    book._conn.execute("COMMIT")
    log.close()
    book.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = root / "store"
        fill(store, args.events)
        size = sum((store / name).stat().st_size for name in ("events.db", "orders.db"))
        flow = BackupWorkflow(store, root / "backups", "paper")
        result = flow.backup(T0)
        began = time.perf_counter()
        restore_backup(result.path, store, "paper", T0)
        restored = time.perf_counter() - began
        print(f"events {args.events:,}  stores {size / 1e6:.1f} MB  backup file {result.bytes / 1e6:.1f} MB")
        print(f"backup  {result.duration_seconds:.2f} s")
        print(f"restore {restored:.2f} s")


if __name__ == "__main__":
    main()
