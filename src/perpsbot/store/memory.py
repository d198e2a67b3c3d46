"""In-memory stores for backtests: the ``EventStore`` and ``OrdersStore`` interfaces
without a database.

A backtest replays months of candles in seconds; a SQLite commit per event (and an
fsync per order) would cost more than the strategy, risk and execution code
together. These keep the same records in lists and dicts — appends store the raw
values and serialize nothing until someone reads — and read back exactly what the
SQLite stores would (JSON-shaped event data, copies of orders). Nothing here is
durable: live trading always uses the SQLite stores.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from perpsbot.domain import Fill, Order
from perpsbot.store.events import _MUTABLE, Event, EventListener, Run, notify
from perpsbot.store.sqlite import dumps


class MemoryEventStore:
    def __init__(self) -> None:
        self.path: Path | None = None
        self.run_id: int | None = None
        self._events: list[tuple[int, int | None, datetime, str, str | None, dict[str, Any]]] = []
        self._runs: dict[int, dict[str, Any]] = {}
        self._state: dict[str, tuple[dict[str, Any], datetime]] = {}
        self._commands: list[dict[str, Any]] = []
        self.listeners: list[EventListener] = []

    def start_run(self, started_at: datetime, profile: str, config: dict[str, Any]) -> int:
        run_id = len(self._runs) + 1
        self._runs[run_id] = {
            "started_at": started_at.isoformat(), "ended_at": None, "profile": profile, "config": dumps(config),
            "summary": None,
        }
        self.run_id = run_id
        return run_id

    def end_run(self, ended_at: datetime, summary: dict[str, Any]) -> None:
        if self.run_id is None:
            return
        self._runs[self.run_id].update(ended_at=ended_at.isoformat(), summary=dumps(summary))

    def append(self, ts: datetime, kind: str, symbol: str | None = None, **data: Any) -> int:
        for key, value in data.items():
            if type(value) in _MUTABLE:  # a caller's live list (e.g. the risk reasons): keep it as it is now
                data[key] = type(value)(value)
        event_id = len(self._events) + 1
        self._events.append((event_id, self.run_id, ts, kind, symbol, data))
        if self.listeners:
            notify(self.listeners, kind, symbol, data)
        return event_id

    append_later = append  # nothing to commit: the same as ``append``

    def flush(self) -> None:
        return None

    def query(
        self,
        *,
        kind: str | None = None,
        symbol: str | None = None,
        run_id: int | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        rows = [
            row for row in self._events
            if (kind is None or row[3] == kind) and (symbol is None or row[4] == symbol)
            and (run_id is None or row[1] == run_id)
        ]
        if limit is not None:
            rows = rows[-limit:] if limit > 0 else []
        return [_event(row) for row in rows]

    def count(self, kind: str | None = None, run_id: int | None = None) -> int:
        return sum(
            1 for row in self._events if (kind is None or row[3] == kind) and (run_id is None or row[1] == run_id)
        )

    def runs(self) -> list[Run]:
        return [
            Run(
                id=run_id, started_at=r["started_at"], ended_at=r["ended_at"], profile=r["profile"],
                config=json.loads(r["config"]), summary=json.loads(r["summary"]) if r["summary"] else None,
            )
            for run_id, r in sorted(self._runs.items())
        ]

    def put_state(self, key: str, value: dict[str, Any], at: datetime) -> None:
        # Kept as given (the writer hands over a fresh dict of values); serialized when read.
        self._state[key] = (value, at)

    def get_state(self, key: str) -> tuple[dict[str, Any], str] | None:
        stored = self._state.get(key)
        return None if stored is None else (json.loads(dumps(stored[0])), stored[1].isoformat())

    def post_command(self, at: datetime, command: str, **args: Any) -> int:
        self._commands.append({"ts": at.isoformat(), "command": command, "args": dumps(args), "handled_at": None,
                               "result": None})
        return len(self._commands)

    def pending_commands(self) -> list[tuple[int, str, dict[str, Any]]]:
        return [
            (i, c["command"], json.loads(c["args"]))
            for i, c in enumerate(self._commands, start=1) if c["handled_at"] is None
        ]

    def complete_command(self, command_id: int, at: datetime, result: str) -> None:
        self._commands[command_id - 1].update(handled_at=at.isoformat(), result=result)

    def command_result(self, command_id: int) -> str | None:
        if not 0 < command_id <= len(self._commands):
            return None
        result: str | None = self._commands[command_id - 1]["result"]
        return result

    def write_jsonl(self, path: Path) -> int:
        """Write every event, one JSON object a line, oldest first; returns how many."""
        with path.open("w", encoding="utf-8") as out:
            for event_id, run_id, ts, kind, symbol, data in self._events:
                out.write(dumps({"id": event_id, "run_id": run_id, "ts": ts, "kind": kind, "symbol": symbol,
                                 "data": data}))
                out.write("\n")
        return len(self._events)

    def close(self) -> None:
        return None


def _event(row: tuple[int, int | None, datetime, str, str | None, dict[str, Any]]) -> Event:
    event_id, run_id, ts, kind, symbol, data = row
    return Event(id=event_id, run_id=run_id, ts=ts.isoformat(), kind=kind, symbol=symbol, data=json.loads(dumps(data)))


class MemoryOrdersStore:
    def __init__(self) -> None:
        self.path: Path | None = None
        self.run_id: int | None = None
        self._orders: dict[str, tuple[int | None, int, Order]] = {}  # cid -> (run id, sequence, copy)
        self._fills: dict[str, tuple[int | None, int, Fill]] = {}
        self._open: dict[str, None] = {}  # client ids of orders not yet final, in insertion order
        self.id_prefix = "pb-memory-"
        self.synced_at: datetime | None = None  # nothing here is lost to a power cut, nor kept after one
        self._adopted: dict[str, Decimal] = {}

    def mark_synced(self, at: datetime) -> None:
        return None

    def adopted_holdings(self) -> dict[str, Decimal]:
        return dict(self._adopted)

    def adopt_holding(self, key: str, size: Decimal) -> None:
        self._adopted[key] = self._adopted.get(key, Decimal(0)) + size

    def net_fill_sizes(self) -> dict[str, Decimal]:
        net: dict[str, Decimal] = {}
        for _, _, fill in self._fills.values():
            if fill.client_order_id not in self._orders and not fill.client_order_id.startswith(self.id_prefix):
                continue
            net[fill.symbol] = net.get(fill.symbol, Decimal(0)) + fill.size * fill.side.sign
        return net

    def write_ahead(self, order: Order) -> None:
        self.upsert(order)

    def upsert(self, order: Order) -> None:
        known = self._orders.get(order.client_order_id)
        copy = order.copy()
        if known is None:
            self._orders[order.client_order_id] = (self.run_id, len(self._orders), copy)
        else:  # as the SQLite store: the request stays, the state moves on
            run_id, seq, stored = known
            copy.created_at = stored.created_at
            self._orders[order.client_order_id] = (run_id, seq, copy)
        if copy.status.is_terminal:
            self._open.pop(order.client_order_id, None)
        else:
            self._open[order.client_order_id] = None

    def working(self, symbol: str) -> Order | None:
        for cid in self._open:
            order = self._orders[cid][2]
            if order.symbol == symbol:
                return order.copy()
        return None

    def add_fill(self, fill: Fill) -> bool:
        if fill.trade_id in self._fills:
            return False
        self._fills[fill.trade_id] = (self.run_id, len(self._fills), fill)
        return True

    def get(self, client_order_id: str) -> Order | None:
        known = self._orders.get(client_order_id)
        return None if known is None else known[2].copy()

    def run_of(self, client_order_id: str) -> int | None:
        known = self._orders.get(client_order_id)
        return None if known is None else known[0]

    def orders(self, *, run_id: int | None = None, open_only: bool = False, limit: int | None = None) -> list[Order]:
        source = (self._orders[cid] for cid in self._open) if open_only else self._orders.values()
        rows = [(order.created_at, seq, order) for rid, seq, order in source if run_id is None or rid == run_id]
        rows.sort(key=lambda row: (row[0], row[1]))
        if limit is not None:
            rows = rows[-limit:] if limit > 0 else []
        return [order.copy() for _, _, order in rows]

    def fills(self, *, run_id: int | None = None, symbol: str | None = None) -> list[Fill]:
        rows = [
            (fill.ts, seq, fill) for rid, seq, fill in self._fills.values()
            if (run_id is None or rid == run_id) and (symbol is None or fill.symbol == symbol)
        ]
        rows.sort(key=lambda row: (row[0], row[1]))
        return [fill for _, _, fill in rows]

    def close(self) -> None:
        return None
