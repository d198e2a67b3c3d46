"""Kill/restart rounds shared by the chaos test (``test_kill_restart.py``) and the
runner (``scripts/chaos_run.py``).

A ``ChaosRun`` owns a ``SimServer`` with faults on and a bot data directory. A
*round* spawns the bot (``botproc.py``, trading) as its own process and SIGKILLs it at
a seeded random point: during start-up / recovery, a random time into trading, or
right after a new order reaches the venue. After every kill the write-ahead
invariants are checked (every venue order of ours is in ``orders.db``, no id twice).
A *verification* restarts the bot cleanly without trading (recovery and
reconciliation only, faults still on) and checks the full set: no PENDING left, open
orders equal the venue's, every venue fill of ours recorded once with the venue's
size, the position from our fills equals the exchange's, the last reconciliation
matched. Checks return violations (strings) instead of raising, so the runner can
count them; the test asserts there are none.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from perpsbot.domain import OrderStatus
from perpsbot.exchange.sim.keys import generate_key, write_key_file
from perpsbot.exchange.sim.server import SimServer

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "BIP-20DEC30-CDE"
# every fault kind on: WS drops and sequence gaps, 429 bursts, 5xx, orders accepted with
# the answer lost, slow answers
FAULTS = (
    "ws_disconnect=0.01,skip_sequence=0.01,lost_response=0.25:mixed,server_error=0.03,"
    "rate_limit=0.02:0.2,slow=0.05:0.05"
)


def bot_config(server: SimServer, data_dir: Path, key_file: Path, symbols: tuple[str, ...] = (SYMBOL,)) -> dict:
    return dict(
        profile="paper", exchange="coinbase", symbols=list(symbols), data_dir=str(data_dir), interval=0.15,
        bar_seconds=60, short_window=2, long_window=3, position_fraction="0.01", leverage="2",
        mark_staleness_seconds=30, max_orders_per_minute=1000, error_cooldown_seconds=0,
        # an unknown fate is settled 3.5 s after its send: within a verification's 4 s hold
        reconcile_every_seconds=1.0, late_acceptance_seconds=1.5, order_timeout_seconds=2.0,
        coinbase_rest_url=server.rest_url, coinbase_ws_url=server.ws_url,
        coinbase_ws_user_url=server.ws_url, ca_bundle=str(server.cert_path), api_key_file=str(key_file),
    )


async def spawn(config_file: Path, mode: str, seconds: float) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPSBOT_")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.chaos.botproc", str(config_file), mode, str(seconds),
        cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def start_server(work_dir: Path, seed: int, faults: str) -> tuple[SimServer, Path]:
    """The simulator server with ``faults`` on, trusting a new key written to ``work_dir``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    key = generate_key("ecdsa")
    key_file = write_key_file(work_dir / "key.json", key)
    server = SimServer(seed=seed, trust=[key], faults=faults)
    await server.__aenter__()
    return server, key_file


def rows(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # killed after creating the file, before its schema: no rows yet
            return []
        raise
    finally:
        conn.close()


def ours(server: SimServer) -> list:
    return [o for o in server.venue.orders() if o.client_order_id.startswith("pb-")]


def check_write_ahead(server: SimServer, orders_db: Path) -> list[str]:
    """Every venue order of ours is in our store (written before it was sent), once."""
    problems = []
    venue_ids = [o.client_order_id for o in ours(server)]
    dupes = [cid for cid, n in Counter(venue_ids).items() if n > 1]
    if dupes:
        problems.append(f"client ids twice at the venue: {dupes}")
    stored = {row[0] for row in rows(orders_db, "SELECT client_order_id FROM orders")}
    unknown = set(venue_ids) - stored
    if unknown:
        problems.append(f"venue orders not in orders.db: {sorted(unknown)}")
    return problems


def check_state(server: SimServer, orders_db: Path, events_db: Path, symbols: tuple[str, ...]) -> list[str]:
    """After a clean restart: no PENDING left, open orders equal the venue's, nothing marked
    "not found" at the venue, every venue fill of ours stored once, positions from our
    fills equal the venue's, and that restart's own reconciliation matched."""
    problems: list[str] = []
    statuses = dict(rows(orders_db, "SELECT client_order_id, status FROM orders"))
    if OrderStatus.PENDING.value in statuses.values():
        problems.append(f"PENDING left: {sorted(c for c, s in statuses.items() if s == OrderStatus.PENDING.value)}")
    open_here = {cid for cid, status in statuses.items() if not OrderStatus(status).is_terminal}
    open_there = {v.order.client_order_id for v in map(server.venue.view, ours(server)) if v.status == "OPEN"}
    if open_here != open_there:
        problems.append(f"open orders differ: ours only {sorted(open_here - open_there)}, "
                        f"venue only {sorted(open_there - open_here)}")

    # Keyed on the status, not on the wording of a reason: any order we hold as REJECTED that
    # the venue took (anything but its own refusal) was closed on a wrong conclusion.
    rejected = {row[0] for row in rows(orders_db, "SELECT client_order_id FROM orders WHERE status = 'REJECTED'")}
    taken = {v.order.client_order_id for v in map(server.venue.view, ours(server)) if v.status != "FAILED"}
    wrongly = rejected & taken
    if wrongly:
        problems.append(f"rejected as not found but at the venue: {sorted(wrongly)}")

    our_fills = {tid: (Decimal(size), cid) for tid, size, cid in
                 rows(orders_db, "SELECT trade_id, size, client_order_id FROM fills")}
    venue_fills = {}
    for fill, order_id in server.venue.fills():
        order = server.venue.order(order_id)
        if order.client_order_id.startswith("pb-"):
            venue_fills[fill.trade_id] = (Decimal(fill.size), order.client_order_id)
    lost = set(venue_fills) - set(our_fills)
    if lost:
        problems.append(f"lost fills: {sorted(lost)}")
    extra = set(our_fills) - set(venue_fills)
    if extra:
        problems.append(f"fills we hold that the venue does not: {sorted(extra)}")
    differ = {t for t in set(venue_fills) & set(our_fills) if venue_fills[t] != our_fills[t]}
    if differ:
        problems.append(f"fills differ (size/order): {[(t, our_fills[t], venue_fills[t]) for t in sorted(differ)]}")

    held_now = server.core.account().positions
    for symbol in symbols:
        signed = sum(
            (Decimal(size) * (1 if side == "BUY" else -1)
             for side, size in rows(orders_db, f"SELECT side, size FROM fills WHERE symbol = '{symbol}'")),
            Decimal(0),
        )
        held = held_now.get(symbol)
        if signed != (held.size if held else 0):
            problems.append(f"{symbol} position differs: ours {signed}, exchange {held.size if held else 0}")

    last = rows(events_db, "SELECT data, run_id FROM events WHERE kind = 'reconciliation' ORDER BY id DESC LIMIT 1")
    latest_run = rows(events_db, "SELECT MAX(id) FROM runs")
    if not last:
        problems.append("no reconciliation recorded")
    elif json.loads(last[0][0]).get("matched") is not True:
        problems.append(f"last reconciliation did not match: {last[0][0]}")
    elif last[0][1] != latest_run[0][0]:  # the clean restart's own, not an earlier run's
        problems.append(f"the clean restart (run {latest_run[0][0]}) recorded no reconciliation")
    resolved = [json.loads(r[0])["outcome"] for r in
                rows(events_db, "SELECT data FROM events WHERE kind = 'intent_resolved'")]
    if "unresolved" in resolved[-1:]:
        problems.append("last intent unresolved")
    return problems


@dataclass
class Stats:
    kills: int = 0
    restarts: int = 0  # clean verification restarts plus trading restarts after a kill
    verifications: int = 0
    kill_points: Counter = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


class ChaosRun:
    """``async with ChaosRun(tmp_dir, seed=..., faults=...) as run:`` then ``await
    run.kill_round()`` / ``await run.verify()``; ``run.stats``, ``run.figures()``."""

    def __init__(self, work_dir: Path, *, seed: int = 21, faults: str = FAULTS) -> None:
        self.work_dir = Path(work_dir)
        self.seed = seed
        self.faults_spec = faults
        self.rng = random.Random(seed)
        self.stats = Stats()
        self.server: SimServer | None = None
        data = self.work_dir / "data"
        self.config_file = self.work_dir / "config.json"
        self.orders_db = data / "paper" / "orders.db"
        self.events_db = data / "paper" / "events.db"
        self._data_dir = data
        self._spawned = 0

    async def __aenter__(self) -> ChaosRun:
        self.server, key_file = await start_server(self.work_dir, self.seed, self.faults_spec)
        self.config_file.write_text(json.dumps(bot_config(self.server, self._data_dir, key_file)), encoding="utf-8")
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        await self.server.__aexit__(*exc)

    # ----- rounds ------------------------------------------------------------------------

    def _count_start(self) -> None:
        if self._spawned:
            self.stats.restarts += 1
        self._spawned += 1

    async def _wait_for_order(self, more_than: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if len(ours(self.server)) > more_than:
                return True
            await asyncio.sleep(0.02)
        return False

    async def kill_round(self) -> str:
        """Start the trading bot and SIGKILL it at a seeded random point; check the
        write-ahead invariants. Returns the kind of kill point."""
        rng = self.rng
        point = rng.choices(["startup", "timed", "after_order"], weights=[2, 4, 4])[0]
        before = len(ours(self.server))
        self._count_start()
        proc = await spawn(self.config_file, "trade", 60)
        try:
            if point == "startup":  # somewhere in import / build / recovery / first cycles
                await asyncio.sleep(rng.uniform(0.3, 2.0))
            else:
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                if line.strip() != b"started":
                    self.stats.violations.append(f"kill {self.stats.kills}: bot did not start ({line!r})")
                if point == "timed":
                    await asyncio.sleep(rng.uniform(0.0, 1.5))
                else:
                    await self._wait_for_order(before, timeout=5)
                    await asyncio.sleep(rng.choice([0.0, 0.0, rng.uniform(0.0, 0.15)]))
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
        self.stats.kills += 1
        self.stats.kill_points[point] += 1
        self.stats.violations.extend(f"kill {self.stats.kills} ({point}): {v}" for v in self.check_write_ahead())
        return point

    def check_write_ahead(self) -> list[str]:
        return check_write_ahead(self.server, self.orders_db)

    async def verify(self, hold_seconds: float = 4.0) -> list[str]:
        """A clean restart that does not trade, then the full invariants."""
        self._count_start()
        proc = await spawn(self.config_file, "hold", hold_seconds)
        try:
            code = await asyncio.wait_for(proc.wait(), 40)
        except TimeoutError:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            code = "timeout"
        self.stats.verifications += 1
        problems = [] if code == 0 else [f"hold run exited with {code}"]
        problems += self.check_write_ahead()
        problems += self.check_state()
        self.stats.violations.extend(f"verify {self.stats.verifications} (after {self.stats.kills} kills): {p}"
                                     for p in problems)
        return problems

    def check_state(self) -> list[str]:
        return check_state(self.server, self.orders_db, self.events_db, (SYMBOL,))

    # ----- figures -----------------------------------------------------------------------

    def figures(self) -> dict:
        server = self.server
        injected = {k: v for k, v in sorted(server.faults.injected.items())}
        return dict(
            faults=sum(injected.values()), injected=injected, kills=self.stats.kills, restarts=self.stats.restarts,
            verifications=self.stats.verifications, kill_points=dict(self.stats.kill_points),
            orders=len(ours(server)), venue_fills=sum(1 for f, oid in server.venue.fills()
                                                      if server.venue.order(oid).client_order_id.startswith("pb-")),
            stored_orders=len(rows(self.orders_db, "SELECT 1 FROM orders")),
            stored_fills=len(rows(self.orders_db, "SELECT 1 FROM fills")),
            intents_resolved=dict(Counter(json.loads(r[0])["outcome"] for r in rows(
                self.events_db, "SELECT data FROM events WHERE kind = 'intent_resolved'"))),
            violations=len(self.stats.violations), seconds=round(time.monotonic() - self.stats.started, 1),
        )


def format_figures(fig: dict) -> str:
    injected = " ".join(f"{k}={v}" for k, v in fig["injected"].items())
    return (f"faults_injected={fig['faults']} ({injected}) kills={fig['kills']} restarts={fig['restarts']} "
            f"verifications={fig['verifications']} orders={fig['orders']} fills={fig['venue_fills']} "
            f"stored_orders={fig['stored_orders']} stored_fills={fig['stored_fills']} "
            f"intents_resolved={','.join(f'{k}:{v}' for k, v in sorted(fig['intents_resolved'].items())) or 0} "
            f"violations={fig['violations']} duration={fig['seconds']}s")
