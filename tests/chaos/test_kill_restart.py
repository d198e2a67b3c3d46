"""Chaos: the bot trading on Coinbase's protocol against the simulator server with faults
on, killed with SIGKILL mid-flight and restarted. After each kill: every order at the
exchange is in our write-ahead store (no order we do not know of, no id twice); after
the restart: no lost fills, positions and open orders equal the exchange's."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from decimal import Decimal
from pathlib import Path

from perpsbot.domain import OrderStatus
from perpsbot.exchange.sim.keys import generate_key, write_key_file
from perpsbot.exchange.sim.server import SimServer

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "BTC-PERP-INTX"
FAULTS = "lost_response=0.25:mixed,server_error=0.03,rate_limit=0.02:0.2,slow=0.05:0.05"


def _config(server: SimServer, tmp_path: Path, key_file: Path) -> dict:
    return dict(
        profile="paper", exchange="coinbase", symbols=[SYMBOL], data_dir=str(tmp_path / "data"), interval=0.15,
        bar_seconds=60, short_window=2, long_window=3, position_fraction="0.01", leverage="2",
        mark_staleness_seconds=30, max_orders_per_minute=1000, error_cooldown_seconds=0,
        reconcile_every_seconds=1.0, coinbase_rest_url=server.rest_url, coinbase_ws_url=server.ws_url,
        coinbase_ws_user_url=server.ws_url, ca_bundle=str(server.cert_path), api_key_file=str(key_file),
    )


async def _spawn(config_file: Path, mode: str, seconds: float) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPSBOT_")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.chaos.botproc", str(config_file), mode, str(seconds),
        cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


def _rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _ours(server: SimServer) -> list:
    return [o for o in server.venue.orders() if o.client_order_id.startswith("pb-")]


async def _wait_for_orders(server: SimServer, more_than: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and len(_ours(server)) <= more_than:
        await asyncio.sleep(0.05)


async def test_sigkill_and_restart_lose_nothing_and_duplicate_nothing(tmp_path: Path):
    key = generate_key("ecdsa")
    key_file = write_key_file(tmp_path / "key.json", key)
    async with SimServer(seed=21, trust=[key], faults=FAULTS) as server:
        config_file = tmp_path / "config.json"
        config_file.write_text(json.dumps(_config(server, tmp_path, key_file)), encoding="utf-8")
        orders_db = tmp_path / "data" / "paper" / "orders.db"
        events_db = tmp_path / "data" / "paper" / "events.db"
        for round_no in range(3):
            before = len(_ours(server))
            proc = await _spawn(config_file, "trade", 60)
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line.strip() == b"started", line
                await _wait_for_orders(server, before + 3 + round_no, timeout=15)
                await asyncio.sleep(0.05 * round_no)  # land the kill at different points of a cycle
            finally:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            venue_ids = [o.client_order_id for o in _ours(server)]
            assert len(venue_ids) > before, f"round {round_no}: the bot placed nothing"
            assert len(venue_ids) == len(set(venue_ids))
            stored = {row[0] for row in _rows(orders_db, "SELECT client_order_id FROM orders")}
            # write-ahead: nothing reached the exchange that our store had not recorded first
            assert set(venue_ids) <= stored, f"round {round_no}: unknown orders {set(venue_ids) - stored}"

        # a clean restart that does not trade: recovery and reconciliation only
        proc = await _spawn(config_file, "hold", 2.5)
        assert await asyncio.wait_for(proc.wait(), 40) == 0

        statuses = dict(_rows(orders_db, "SELECT client_order_id, status FROM orders"))
        open_here = {cid for cid, status in statuses.items() if not OrderStatus(status).is_terminal}
        open_there = {v.order.client_order_id for v in map(server.venue.view, _ours(server)) if v.status == "OPEN"}
        assert open_here == open_there
        assert OrderStatus.PENDING.value not in statuses.values()

        not_found = {row[0] for row in _rows(
            orders_db, "SELECT client_order_id FROM orders WHERE reject_reason = 'not found at exchange after restart'")}
        assert not not_found & {o.client_order_id for o in _ours(server)}  # rejected only what never got there

        our_fills = {row[0] for row in _rows(orders_db, "SELECT trade_id FROM fills")}
        venue_fills = {fill.trade_id for fill, order_id in server.venue.fills()
                       if server.venue.order(order_id).client_order_id.startswith("pb-")}
        assert venue_fills and venue_fills <= our_fills, f"lost fills: {venue_fills - our_fills}"
        assert len(_rows(orders_db, "SELECT trade_id FROM fills")) == len(our_fills)

        signed = sum(
            (Decimal(size) * (1 if side == "BUY" else -1)
             for side, size in _rows(orders_db, f"SELECT side, size FROM fills WHERE symbol = '{SYMBOL}'")),
            Decimal(0),
        )
        held = server.core.account().positions.get(SYMBOL)
        assert signed == (held.size if held else 0)

        last = json.loads(_rows(events_db, "SELECT data FROM events WHERE kind = 'reconciliation' ORDER BY id DESC LIMIT 1")[0][0])
        assert last["matched"] is True, last
        resolved = [json.loads(r[0])["outcome"] for r in _rows(events_db, "SELECT data FROM events WHERE kind = 'intent_resolved'")]
        assert "unresolved" not in resolved[-1:]
        assert server.faults.injected["lost_response"] > 0  # the faults really were on
