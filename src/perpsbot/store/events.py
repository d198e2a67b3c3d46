"""EventStore: an append-only record of every run, decision, order, fill, risk verdict and error.

``append`` commits at once. ``append_later`` (the order path's decision, risk verdict
and ``order_submitted``) keeps the event in memory, unserialized, until the next
``append``, ``flush``, read or ``close``, which writes all of it in one transaction, in
order: the three rows
of an order cost one commit, after its request is sent instead of three before it. A
crash in between loses those rows — an audit trail's, never the order's record, which
is in ``OrdersStore`` before the request goes out.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from perpsbot.store.sqlite import dumps, open_db, where_equal

log = logging.getLogger(__name__)

# Called after every append with (kind, symbol, data): how metrics and alert delivery listen.
EventListener = Callable[[str, "str | None", dict[str, Any]], None]

_MUTABLE = (list, dict, set)

MIGRATIONS = (
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        profile TEXT NOT NULL,
        config TEXT NOT NULL,
        summary TEXT
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER REFERENCES runs(id),
        ts TEXT NOT NULL,
        kind TEXT NOT NULL,
        symbol TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX events_kind ON events(kind, id);
    CREATE INDEX events_run ON events(run_id, id)
    """,
    """
    CREATE TABLE state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE commands (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL,
        command TEXT NOT NULL,
        args TEXT NOT NULL,
        handled_at TEXT,
        result TEXT
    )
    """,
)


@dataclass(frozen=True)
class Event:
    id: int
    run_id: int | None
    ts: str
    kind: str
    symbol: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class Run:
    id: int
    started_at: str
    ended_at: str | None
    profile: str
    config: dict[str, Any]
    summary: dict[str, Any] | None


class EventStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = open_db(path, MIGRATIONS)
        self.run_id: int | None = None
        self.listeners: list[EventListener] = []
        # append_later's events, serialized at the flush (after the request, too)
        self._pending: list[tuple[int | None, datetime, str, str | None, dict[str, Any]]] = []

    def start_run(self, started_at: datetime, profile: str, config: dict[str, Any]) -> int:
        cur = self._conn.execute(
            "INSERT INTO runs(started_at, profile, config) VALUES (?, ?, ?)",
            (started_at.isoformat(), profile, dumps(config)),
        )
        self.run_id = int(cur.lastrowid or 0)
        return self.run_id

    def end_run(self, ended_at: datetime, summary: dict[str, Any]) -> None:
        if self.run_id is None:
            return
        self._conn.execute(
            "UPDATE runs SET ended_at = ?, summary = ? WHERE id = ?",
            (ended_at.isoformat(), dumps(summary), self.run_id),
        )

    def append(self, ts: datetime, kind: str, symbol: str | None = None, **data: Any) -> int:
        """Write an event now (with any kept by ``append_later`` before it); its id."""
        if self._pending:
            self._pending.append((self.run_id, ts, kind, symbol, data))
            self.flush()
            return int(self._conn.execute("SELECT last_insert_rowid()").fetchone()[0])
        cur = self._conn.execute(
            "INSERT INTO events(run_id, ts, kind, symbol, data) VALUES (?, ?, ?, ?, ?)",
            (self.run_id, ts.isoformat(), kind, symbol, dumps(data)),
        )
        if self.listeners:
            notify(self.listeners, kind, symbol, data)
        return int(cur.lastrowid or 0)

    def append_later(self, ts: datetime, kind: str, symbol: str | None = None, **data: Any) -> None:
        """An event written with the next commit (``flush``, ``append``, a read) and only
        serialized then: a list, dict or set among the values is copied as it is now."""
        for key, value in data.items():
            if type(value) in _MUTABLE:
                data[key] = type(value)(value)
        self._pending.append((self.run_id, ts, kind, symbol, data))

    def flush(self) -> None:
        """Write the events kept by ``append_later``, in one transaction."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        rows = [(run_id, ts.isoformat(), kind, symbol, dumps(data)) for run_id, ts, kind, symbol, data in pending]
        conn = self._conn
        conn.execute("BEGIN")
        try:
            conn.executemany("INSERT INTO events(run_id, ts, kind, symbol, data) VALUES (?, ?, ?, ?, ?)", rows)
        except BaseException:
            conn.execute("ROLLBACK")
            self._pending[:0] = pending  # kept, in order, for the next flush: nothing is lost
            raise
        conn.execute("COMMIT")
        if self.listeners:
            for _, _, kind, symbol, data in pending:
                notify(self.listeners, kind, symbol, data)

    def query(
        self,
        *,
        kind: str | None = None,
        symbol: str | None = None,
        run_id: int | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Events oldest first; with ``limit``, the newest ``limit`` of them."""
        self.flush()
        where, params = where_equal(kind=kind, symbol=symbol, run_id=run_id)
        sql = f"SELECT * FROM events {where} ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._conn.execute(sql, params).fetchall()
        return [_event(row) for row in reversed(rows)]

    def field_series(
        self, kind: str, key: str, *, run_id: int | None = None, after_id: int | None = None
    ) -> list[tuple[int, str, Any]]:
        """(event id, ts, data[key]) of the ``kind`` events, oldest first, read in SQL
        without decoding each event (a chart over a long run)."""
        self.flush()
        return select_field_series(self._conn, kind, key, run_id=run_id, after_id=after_id)

    def count(self, kind: str | None = None, run_id: int | None = None) -> int:
        self.flush()
        where, params = where_equal(kind=kind, run_id=run_id)
        return int(self._conn.execute(f"SELECT COUNT(*) FROM events {where}", params).fetchone()[0])

    def runs(self) -> list[Run]:
        rows = self._conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
        return [
            Run(
                id=row["id"],
                started_at=row["started_at"],
                ended_at=row["ended_at"],
                profile=row["profile"],
                config=json.loads(row["config"]),
                summary=json.loads(row["summary"]) if row["summary"] else None,
            )
            for row in rows
        ]

    # ----- durable state and commands from other processes -------------------------

    def put_state(self, key: str, value: dict[str, Any], at: datetime) -> None:
        self._conn.execute(
            "INSERT INTO state(key, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (key, dumps(value), at.isoformat()),
        )

    def get_state(self, key: str) -> tuple[dict[str, Any], str] | None:
        """The stored value and when it was written, or None."""
        row = self._conn.execute("SELECT value, updated_at FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else (json.loads(row["value"]), row["updated_at"])

    def post_command(self, at: datetime, command: str, **args: Any) -> int:
        cur = self._conn.execute(
            "INSERT INTO commands(ts, command, args) VALUES (?, ?, ?)", (at.isoformat(), command, dumps(args))
        )
        return int(cur.lastrowid or 0)

    def pending_commands(self) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self._conn.execute(
            "SELECT id, command, args FROM commands WHERE handled_at IS NULL ORDER BY id"
        ).fetchall()
        return [(row["id"], row["command"], json.loads(row["args"])) for row in rows]

    def complete_command(self, command_id: int, at: datetime, result: str) -> None:
        self._conn.execute(
            "UPDATE commands SET handled_at = ?, result = ? WHERE id = ?", (at.isoformat(), result, command_id)
        )

    def command_result(self, command_id: int) -> str | None:
        row = self._conn.execute("SELECT result FROM commands WHERE id = ?", (command_id,)).fetchone()
        return None if row is None else row["result"]

    def close(self) -> None:
        """Write what ``append_later`` kept, then close; closed also when that write fails."""
        try:
            self.flush()
        finally:
            self._conn.close()


def select_field_series(
    conn: sqlite3.Connection, kind: str, key: str, *, run_id: int | None = None, after_id: int | None = None
) -> list[tuple[int, str, Any]]:
    """``EventStore.field_series`` on any connection to an events database, e.g. a
    read-only one in a worker thread, so a long read keeps off the bot's event loop."""
    if not key.isidentifier():
        raise ValueError(f"not a data key: {key!r}")
    where, params = where_equal(kind=kind, run_id=run_id)
    if after_id is not None:
        where += " AND id > ?"
        params.append(after_id)
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: a long run has many
    return cursor.execute(
        f"SELECT id, ts, json_extract(data, '$.{key}') FROM events {where} ORDER BY id", params
    ).fetchall()


def read_field_series(
    path: Path, kind: str, key: str, *, run_id: int | None = None, after_id: int | None = None
) -> list[tuple[int, str, Any]]:
    """``select_field_series`` on a connection of its own, read-only (for a worker thread)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return select_field_series(conn, kind, key, run_id=run_id, after_id=after_id)
    finally:
        conn.close()


def notify(listeners: list[EventListener], kind: str, symbol: str | None, data: dict[str, Any]) -> None:
    """A listener's failure is logged and never reaches the code that appended the event."""
    for listener in listeners:
        try:
            listener(kind, symbol, data)
        except Exception:  # telemetry must never stop the bot
            log.exception("event listener failed on %s", kind)


def _event(row: sqlite3.Row) -> Event:
    return Event(
        id=row["id"],
        run_id=row["run_id"],
        ts=row["ts"],
        kind=row["kind"],
        symbol=row["symbol"],
        data=json.loads(row["data"]),
    )
