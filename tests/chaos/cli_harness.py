"""The real CLI bot against the simulator server with late acceptance on: "never twice".

``CliChaosRun`` owns an in-process ``SimServer`` (127.0.0.1, a free port, faults on —
``late_accept`` among them: an order processed after the client's timeout) and runs the
bot as users do, ``python -m perpsbot run --profile paper --config FILE --duration N``,
on Coinbase's protocol against it: three perpetuals, the built-in MA crossover on 1 s
bars with tiny windows so it trades often. A trading run can be SIGKILLed at a seeded
random point — during start-up, a random time in, right after an order's write-ahead
record (the request under way), or right after an order reached the venue — and is
started again. ``verify()`` is a clean run that does not trade (``dry_run``), repeated
(bounded) until nothing is PENDING, then every check:

(a) exposure: |position| <= the intended size (``checks.intended_bound``: the sizing
    of ``ExecutionCoordinator.entry_size`` at the highest equity and lowest mark seen,
    plus 2 %) at every ``reconciliation`` the bot recorded and in the venue's position
    sampled every 50 ms by the harness;
(b) no order we marked REJECTED / CANCELLED that filled at the venue;
(c) no duplicate: two opening orders on one symbol and side without a closing fill
    between (``checks.duplicate_openings``), no client id twice;
(d) the write-ahead and state checks of ``harness.py``.

``env`` adds variables to the bot process: a test of the test puts a ``sitecustomize.py``
on its ``PYTHONPATH`` that breaks the product on purpose.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from perpsbot.exchange.sim.server import SimServer
from tests.chaos.checks import (
    SIZE_TOLERANCE,
    Exposure,
    VenueFill,
    closed_but_filled,
    duplicate_openings,
    exposure_violations,
    intended_bound,
)
from tests.chaos.harness import ROOT, bot_config, check_state, check_write_ahead, ours, rows, start_server

SYMBOLS = ("BIP-20DEC30-CDE", "ETP-20DEC30-CDE")
FRACTION = Decimal("0.01")
LEVERAGE = Decimal(2)
SAMPLE_SECONDS = 0.05
KILL_POINTS = ("startup", "timed", "after_send", "after_order")


def late_faults(probability: float, delay: float) -> str:
    """Late acceptance plus the other order-path and stream faults, at rates that leave
    the run trading."""
    return (f"late_accept={probability:g}:{delay:g},lost_response=0.05:mixed,server_error=0.01,"
            "ws_disconnect=0.002,skip_sequence=0.002")


def toml_text(values: dict) -> str:
    """Flat ``key = value`` lines (JSON's string and array syntax is TOML's too)."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


@dataclass
class CliStats:
    kills: int = 0
    runs: int = 0
    verifications: int = 0
    kill_points: Counter = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


class CliChaosRun:
    """``async with CliChaosRun(tmp, seed=..., faults=..., order_timeout=...) as run:`` then
    ``await run.trade(seconds)`` / ``await run.kill_round()`` / ``await run.verify()``,
    ``run.check_all()``, ``run.figures()``."""

    def __init__(self, work_dir: Path, *, seed: int = 21, faults: str, order_timeout: float = 10.0,
                 late_delay: float = 12.0, env: dict[str, str] | None = None,
                 symbols: tuple[str, ...] = SYMBOLS) -> None:
        self.work_dir = Path(work_dir)
        self.seed = seed
        self.faults_spec = faults
        self.order_timeout = order_timeout
        self.late_delay = late_delay
        self.env = env or {}
        self.symbols = symbols
        self.rng = random.Random(seed)
        self.stats = CliStats()
        self.server: SimServer | None = None
        data = self.work_dir / "data"
        self._data_dir = data
        self.config_file = self.work_dir / "bot.toml"
        self.orders_db = data / "paper" / "orders.db"
        self.events_db = data / "paper" / "events.db"
        self.max_equity = Decimal(0)
        self.min_mark: dict[str, Decimal] = {}
        self.sampled: dict[str, Exposure] = {}  # the largest venue position seen per symbol
        self._sampler: asyncio.Task[None] | None = None
        self._reported: set[str] = set()  # violations counted by an earlier verification

    async def __aenter__(self) -> CliChaosRun:
        self.server, key_file = await start_server(self.work_dir, self.seed, self.faults_spec)
        self.config_file.write_text(toml_text(self._config(key_file)), encoding="utf-8")
        self._sample()
        self._sampler = asyncio.create_task(self._sample_loop())
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None and self._sampler is not None
        self._sampler.cancel()
        await self.server.__aexit__(*exc)

    def _config(self, key_file: Path) -> dict:
        assert self.server is not None
        values = bot_config(self.server, self._data_dir, key_file, self.symbols)
        values.update(
            interval=0.2, bar_seconds=1, short_window=2, long_window=3, vol_window=5, trailing_stop_pct="0",
            position_fraction=str(FRACTION), leverage=str(LEVERAGE), vol_warn="10000", vol_reduce_only="20000",
            vol_kill="30000", order_timeout_seconds=self.order_timeout, http_port="off", log_level="WARNING",
            late_acceptance_seconds=self.late_delay + 1.0,  # covers the fault's delay
        )
        return values

    # ----- the venue, sampled -----------------------------------------------------------

    def _sample(self) -> None:
        core = self.server.core
        account = core.account()
        self.max_equity = max(self.max_equity, account.equity)
        for symbol in self.symbols:
            quote = core.quote(symbol)
            mid = (quote.bid + quote.ask) / 2
            self.min_mark[symbol] = min(self.min_mark.get(symbol, mid), mid)
            held = account.positions.get(symbol)
            size = held.size if held else Decimal(0)
            if symbol not in self.sampled or abs(size) > abs(self.sampled[symbol].size):
                self.sampled[symbol] = Exposure("venue sample", symbol, size)

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            self._sample()

    # ----- bot runs -----------------------------------------------------------------------

    async def _spawn(self, seconds: float, *extra: str) -> asyncio.subprocess.Process:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERPSBOT_")}
        env.update(self.env)
        self.stats.runs += 1
        log = open(self.work_dir / f"run-{self.stats.runs}.log", "wb")  # noqa: SIM115 - the child's output
        try:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "perpsbot", "run", "--profile", "paper", "--config", str(self.config_file),
                "--duration", f"{seconds:g}", *extra, cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            log.close()

    async def _finish(self, proc: asyncio.subprocess.Process, seconds: float, what: str) -> int | None:
        try:
            return await asyncio.wait_for(proc.wait(), seconds + 30)
        except TimeoutError:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            self.stats.violations.append(f"{what}: did not stop (run {self.stats.runs})")
            return None

    async def trade(self, seconds: float) -> None:
        """One trading run to its end."""
        proc = await self._spawn(seconds)
        code = await self._finish(proc, seconds, "trading run")
        if code not in (0, None):
            self.stats.violations.append(f"trading run {self.stats.runs} exited with {code}")
        self.stats.violations.extend(f"after run {self.stats.runs}: {v}"
                                     for v in check_write_ahead(self.server, self.orders_db))

    def _pending(self) -> set[str]:
        return {row[0] for row in rows(self.orders_db, "SELECT client_order_id FROM orders WHERE status = 'PENDING'")}

    async def _wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.02)
        return False

    async def kill_round(self, point: str | None = None) -> str:
        """A trading run SIGKILLed at ``point`` (default: a seeded random one), then the
        write-ahead checks."""
        rng = self.rng
        point = point or rng.choices(KILL_POINTS, weights=[1, 2, 4, 3])[0]
        orders_before = len(ours(self.server))
        pending_before = self._pending()
        proc = await self._spawn(60)
        try:
            if point == "startup":  # import, build, recovery, first cycles
                await asyncio.sleep(rng.uniform(0.5, 3.0))
            elif point == "timed":
                await asyncio.sleep(rng.uniform(3.0, 8.0))
            elif point == "after_send":  # written ahead, the request under way (or late at the venue)
                if not await self._wait_for(lambda: bool(self._pending() - pending_before), 20):
                    self.stats.violations.append(f"kill point {point} not reached in 20 s")
                await asyncio.sleep(rng.choice([0.0, rng.uniform(0.0, self.order_timeout)]))
            else:  # the venue has just accepted it: the answer not recorded yet
                if not await self._wait_for(lambda: len(ours(self.server)) > orders_before, 20):
                    self.stats.violations.append(f"kill point {point} not reached in 20 s")
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
        self.stats.kills += 1
        self.stats.kill_points[point] += 1
        self.stats.violations.extend(f"kill {self.stats.kills} ({point}): {v}"
                                     for v in check_write_ahead(self.server, self.orders_db))
        return point

    async def verify(self, hold_seconds: float = 4.0) -> list[str]:
        """Clean runs that do not trade until nothing is PENDING — bounded by the late
        acceptance bound plus a margin — then every check."""
        deadline = time.monotonic() + self.late_delay + 2 * hold_seconds + 10
        problems: list[str] = []
        while True:
            proc = await self._spawn(hold_seconds, "--set", "dry_run=true")
            code = await self._finish(proc, hold_seconds, "hold run")
            if code not in (0, None):
                problems.append(f"hold run {self.stats.runs} exited with {code}")
                break
            if not self._pending() or time.monotonic() >= deadline:
                break
        self.stats.verifications += 1
        problems += self.check_all()
        new = [p for p in problems if p not in self._reported]  # the checks read the whole history
        self._reported.update(new)
        self.stats.violations.extend(f"verify {self.stats.verifications} (after {self.stats.kills} kills): {p}"
                                     for p in new)
        return problems

    # ----- checks -------------------------------------------------------------------------

    def bounds(self) -> dict[str, Decimal]:
        assert self.server is not None
        return {s: intended_bound(FRACTION, LEVERAGE, self.max_equity, self.min_mark[s],
                                  contract_size=self.server.venue.product(s).contract_size) for s in self.symbols}

    def reconciliation_exposures(self) -> list[Exposure]:
        out = []
        for event_id, data in rows(self.events_db, "SELECT id, data FROM events WHERE kind = 'reconciliation'"):
            record = json.loads(data)
            if record.get("equity") is not None:
                self.max_equity = max(self.max_equity, Decimal(str(record["equity"])))
            for symbol, pair in (record.get("positions") or {}).items():
                if symbol in self.symbols:
                    out.append(Exposure(f"reconciliation {event_id}", symbol, Decimal(str(pair["exchange"]))))
        return out

    def venue_fills(self) -> tuple[list[VenueFill], list[VenueFill]]:
        venue = self.server.venue
        fills = []
        for _fill, order_id in venue.fills():
            order = venue.order(order_id)
            if order.client_order_id.startswith("pb-"):
                fills.append(VenueFill(order.symbol, order.side.value, order.client_order_id, order.spec.reduce_only))
        live = [VenueFill(o.symbol, o.side.value, o.client_order_id, o.spec.reduce_only)
                for o in ours(self.server) if venue.view(o).status == "OPEN" and not venue.view(o).fills]
        return fills, live

    def check_exposure(self) -> list[str]:
        readings = self.reconciliation_exposures() + list(self.sampled.values())
        return exposure_violations(readings, self.bounds())

    def check_closed_but_filled(self) -> list[str]:
        stored = dict(rows(self.orders_db, "SELECT client_order_id, status FROM orders"))
        venue = {}
        for order in ours(self.server):
            view = self.server.venue.view(order)
            venue[order.client_order_id] = (view.status, view.filled_size)
        return closed_but_filled(stored, venue)

    def check_duplicates(self) -> list[str]:
        return duplicate_openings(*self.venue_fills())

    def check_all(self) -> list[str]:
        return (self.check_exposure() + self.check_closed_but_filled() + self.check_duplicates()
                + check_write_ahead(self.server, self.orders_db)
                + check_state(self.server, self.orders_db, self.events_db, self.symbols))

    # ----- figures ------------------------------------------------------------------------

    def figures(self) -> dict:
        bounds = self.bounds()
        at_reconciliations: dict[str, Decimal] = {}
        for reading in self.reconciliation_exposures():
            at_reconciliations[reading.symbol] = max(at_reconciliations.get(reading.symbol, Decimal(0)),
                                                     abs(reading.size))
        intended = {s: b / (1 + SIZE_TOLERANCE) for s, b in bounds.items()}
        server = self.server
        return dict(
            max_over_intended_at_reconciliations={s: round(float(at_reconciliations.get(s, 0) / intended[s]), 3)
                                                  for s in self.symbols},
            max_over_intended_sampled={s: round(float(abs(self.sampled[s].size) / intended[s]), 3)
                                       for s in self.symbols},
            closed_but_filled=len(self.check_closed_but_filled()), duplicates=len(self.check_duplicates()),
            kills=self.stats.kills, kill_points=dict(self.stats.kill_points), runs=self.stats.runs,
            faults=sum(server.faults.injected.values()), injected=dict(sorted(server.faults.injected.items())),
            orders=len(ours(server)), violations=len(self.stats.violations),
            seconds=round(time.monotonic() - self.stats.started, 1),
        )


def format_cli_figures(fig: dict) -> str:
    def per_symbol(values: dict) -> str:
        return " ".join(f"{s}={v}" for s, v in values.items())

    injected = " ".join(f"{k}={v}" for k, v in fig["injected"].items())
    return (f"max_position/intended at reconciliations: {per_symbol(fig['max_over_intended_at_reconciliations'])}; "
            f"sampled: {per_symbol(fig['max_over_intended_sampled'])}; "
            f"orders_rejected_that_filled={fig['closed_but_filled']} duplicates={fig['duplicates']} "
            f"kills={fig['kills']} runs={fig['runs']} orders={fig['orders']} "
            f"faults_injected={fig['faults']} ({injected}) violations={fig['violations']} duration={fig['seconds']}s")
