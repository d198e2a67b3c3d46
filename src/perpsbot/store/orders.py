"""OrdersStore: every order, upserted by ``client_order_id``, and every fill, once per trade id.

Durability (WAL): every commit is fsync'd (``synchronous=FULL``) except the write-ahead
record of a new order (``write_ahead``), committed without an fsync just before its
request goes out: that survives the process being killed (the OS has the write) but not
a power cut. The caller's next commit — the order's outcome, always recorded after the
request — is fsync'd and takes the write-ahead record to the disk with it. What a power
cut can lose is therefore only orders written ahead since the last fsync'd commit, and
the store's identity makes them findable at the exchange:

* ``id_prefix`` (``pb-<8 hex>-``, made once per store and fsync'd) starts every
  ``client_order_id`` this store's bot makes, so recovery can tell its own orders from
  anyone else's by id alone;
* ``synced_at`` (fsync'd, ``mark_synced``) is a time after which any order missing here
  was created: recovery asks the exchange for orders since then.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from perpsbot.domain import Fill, Liquidity, Order, OrderStatus, OrderType, Side, TimeInForce
from perpsbot.store.sqlite import open_db, where_equal

MIGRATIONS = (
    """
    CREATE TABLE orders (
        client_order_id TEXT PRIMARY KEY,
        run_id INTEGER,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        type TEXT NOT NULL,
        size TEXT NOT NULL,
        limit_price TEXT,
        time_in_force TEXT NOT NULL,
        reduce_only INTEGER NOT NULL,
        leverage TEXT NOT NULL,
        status TEXT NOT NULL,
        exchange_order_id TEXT,
        filled_size TEXT NOT NULL,
        average_fill_price TEXT,
        fees TEXT NOT NULL,
        reject_reason TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT
    );
    CREATE INDEX orders_run ON orders(run_id, created_at);
    CREATE TABLE fills (
        trade_id TEXT PRIMARY KEY,
        run_id INTEGER,
        client_order_id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        price TEXT NOT NULL,
        size TEXT NOT NULL,
        fee TEXT NOT NULL,
        liquidity TEXT NOT NULL,
        ts TEXT NOT NULL
    );
    CREATE INDEX fills_run ON fills(run_id, ts)
    """,
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )
    """,
)


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class OrdersStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Orders are the record of what we asked the exchange: fsync them (but see ``write_ahead``).
        self._conn = open_db(path, MIGRATIONS, synchronous="FULL")
        self.run_id: int | None = None
        prefix = self._meta("id_prefix")
        if prefix is None:  # another process opening the new store may make it first: its one stays
            self._conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('id_prefix', ?)", (f"pb-{secrets.token_hex(4)}-",)
            )
            prefix = str(self._conn.execute("SELECT value FROM meta WHERE key = 'id_prefix'").fetchone()[0])
        self.id_prefix = prefix
        self._marked = self._meta("synced_at") is not None
        terminal = [s.value for s in OrderStatus if s.is_terminal]
        rows = self._conn.execute(
            f"SELECT client_order_id, symbol FROM orders WHERE status NOT IN ({','.join('?' * len(terminal))}) "
            "ORDER BY created_at, rowid", terminal,
        ).fetchall()
        # Orders not final yet, by client id: their symbol (this process is the store's only writer).
        self._open: dict[str, str] = {row["client_order_id"]: row["symbol"] for row in rows}

    def working(self, symbol: str) -> Order | None:
        """The oldest order for ``symbol`` that is not final yet (None: there is none); no
        query unless there is one."""
        for cid, held in self._open.items():
            if held == symbol:
                return self.get(cid)
        return None

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    @property
    def synced_at(self) -> datetime | None:
        """Every order created before this time is on the disk (None: never marked)."""
        value = self._meta("synced_at")
        return None if value is None else datetime.fromisoformat(value)

    def mark_synced(self, at: datetime) -> None:
        """An fsync'd commit recording ``at``: everything written before it is on the
        disk, so an order a power cut takes from here was created after ``at``."""
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES ('synced_at', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (at.isoformat(),),
        )
        self._marked = True

    def adopted_holdings(self) -> dict[str, Decimal]:
        """Holdings our fills do not explain that were taken as ours (``unexplained_holdings
        = adopt``), by reconciliation key; what the store expects is these plus its fills."""
        value = self._meta("adopted_holdings")
        return {k: Decimal(v) for k, v in json.loads(value).items()} if value else {}

    def adopt_holding(self, key: str, size: Decimal) -> None:
        """Add ``size`` (signed) to the adopted holding of ``key`` (fsync'd)."""
        held = self.adopted_holdings()
        held[key] = held.get(key, Decimal(0)) + size
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES ('adopted_holdings', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (json.dumps({k: str(v) for k, v in held.items() if v}),),
        )

    def net_fill_sizes(self) -> dict[str, Decimal]:
        """Net signed size per symbol of the fills of our orders (in the store, or under its
        id prefix), every run's; fills of others' orders are recorded but not counted."""
        net: dict[str, Decimal] = {}
        rows = self._conn.execute(
            "SELECT symbol, side, size FROM fills WHERE substr(client_order_id, 1, ?) = ? "
            "OR client_order_id IN (SELECT client_order_id FROM orders)",
            (len(self.id_prefix), self.id_prefix),
        ).fetchall()
        for symbol, side, size in rows:
            net[symbol] = net.get(symbol, Decimal(0)) + Decimal(size) * Side(side).sign
        return net

    def write_ahead(self, order: Order) -> None:
        """The record of a new order, made just before its request is sent: committed
        without an fsync (survives a killed process, not a power cut; the next commit
        fsyncs it). A store never marked synced is marked first (fsync'd, once), so that
        recovery always has a time to look for lost orders from."""
        if not self._marked:
            self.mark_synced(order.created_at)
        conn = self._conn
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            self.upsert(order)
        finally:
            conn.execute("PRAGMA synchronous=FULL")

    def upsert(self, order: Order) -> None:
        self._conn.execute(
            """
            INSERT INTO orders(client_order_id, run_id, symbol, side, type, size, limit_price,
                time_in_force, reduce_only, leverage, status, exchange_order_id, filled_size,
                average_fill_price, fees, reject_reason, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(client_order_id) DO UPDATE SET
                status = excluded.status,
                exchange_order_id = excluded.exchange_order_id,
                filled_size = excluded.filled_size,
                average_fill_price = excluded.average_fill_price,
                fees = excluded.fees,
                reject_reason = excluded.reject_reason,
                updated_at = excluded.updated_at
            """,
            (
                order.client_order_id,
                self.run_id,
                order.symbol,
                order.side.value,
                order.type.value,
                str(order.size),
                _str(order.limit_price),
                order.time_in_force.value,
                int(order.reduce_only),
                str(order.leverage),
                order.status.value,
                order.exchange_order_id,
                str(order.filled_size),
                _str(order.average_fill_price),
                str(order.fees),
                order.reject_reason,
                order.created_at.isoformat(),
                order.updated_at.isoformat() if order.updated_at else None,
            ),
        )
        if order.status.is_terminal:
            self._open.pop(order.client_order_id, None)
        else:
            self._open.setdefault(order.client_order_id, order.symbol)

    def add_fill(self, fill: Fill) -> bool:
        """Record a fill; False when its trade id was already recorded."""
        cur = self._conn.execute(
            """
            INSERT OR IGNORE INTO fills(trade_id, run_id, client_order_id, symbol, side, price,
                size, fee, liquidity, ts)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            (
                fill.trade_id,
                self.run_id,
                fill.client_order_id,
                fill.symbol,
                fill.side.value,
                str(fill.price),
                str(fill.size),
                str(fill.fee),
                fill.liquidity.value,
                fill.ts.isoformat(),
            ),
        )
        return cur.rowcount == 1

    def get(self, client_order_id: str) -> Order | None:
        row = self._conn.execute(
            "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)
        ).fetchone()
        return None if row is None else _order(row)

    def run_of(self, client_order_id: str) -> int | None:
        """The run that placed an order (None: unknown order or no run)."""
        row = self._conn.execute("SELECT run_id FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
        return None if row is None else row["run_id"]

    def orders(self, *, run_id: int | None = None, open_only: bool = False, limit: int | None = None) -> list[Order]:
        where, params = where_equal(run_id=run_id)
        if open_only:
            terminal = [s.value for s in OrderStatus if s.is_terminal]
            where += (" AND " if where else "WHERE ") + f"status NOT IN ({','.join('?' * len(terminal))})"
            params.extend(terminal)
        sql = f"SELECT * FROM orders {where} ORDER BY created_at DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_order(row) for row in reversed(self._conn.execute(sql, params).fetchall())]

    def fills(self, *, run_id: int | None = None, symbol: str | None = None) -> list[Fill]:
        where, params = where_equal(run_id=run_id, symbol=symbol)
        rows = self._conn.execute(f"SELECT * FROM fills {where} ORDER BY ts, rowid", params).fetchall()
        return [_fill(row) for row in rows]

    def close(self) -> None:
        self._conn.close()


def _order(row: sqlite3.Row) -> Order:
    return Order(
        client_order_id=row["client_order_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        type=OrderType(row["type"]),
        size=Decimal(row["size"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        limit_price=_dec(row["limit_price"]),
        time_in_force=TimeInForce(row["time_in_force"]),
        reduce_only=bool(row["reduce_only"]),
        leverage=Decimal(row["leverage"]),
        status=OrderStatus(row["status"]),
        exchange_order_id=row["exchange_order_id"],
        filled_size=Decimal(row["filled_size"]),
        average_fill_price=_dec(row["average_fill_price"]),
        fees=Decimal(row["fees"]),
        reject_reason=row["reject_reason"],
        updated_at=datetime.fromisoformat(row["updated_at"]) if row["updated_at"] else None,
    )


def _fill(row: sqlite3.Row) -> Fill:
    return Fill(
        trade_id=row["trade_id"],
        client_order_id=row["client_order_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        price=Decimal(row["price"]),
        size=Decimal(row["size"]),
        fee=Decimal(row["fee"]),
        liquidity=Liquidity(row["liquidity"]),
        ts=datetime.fromisoformat(row["ts"]),
    )
