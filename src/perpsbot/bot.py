"""PerpsBot: the orchestration layer.

``PerpsBotBuilder`` is the only way to make a ``PerpsBot``. It assembles a frozen
``ServiceRegistry``; the bot swaps services with ``registry.with_updates`` and
never mutates the registry in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from perpsbot.config import BotConfig, ConfigError, ExchangeKind
from perpsbot.config.diff import (
    CONFIG_SET,
    ConfigChange,
    ConfigChangeRejected,
    describe_changes,
    diff_configs,
    shown_changes,
)
from perpsbot.config.loader import overlay
from perpsbot.config.model import OrderTypeSetting
from perpsbot.domain import OrderType, Product, TimeInForce
from perpsbot.domain.clock import Clock, WallClock
from perpsbot.exchange.port import Exchange, ExchangeError, StreamingExchange
from perpsbot.execution.coordinator import ExecutionCoordinator, ExecutionResult
from perpsbot.execution.ledger import recorded_terms
from perpsbot.execution.pushed import PushedUpdates
from perpsbot.market.data import MarketDataService, MarkUpdate, WindowSpec
from perpsbot.market.streaming import StreamingService
from perpsbot.redact import public_config
from perpsbot.review.runmetrics import METRIC_FIELDS, RunMetricsRecorder, percentile
from perpsbot.risk.manager import RiskManager
from perpsbot.store import EventStore, OrdersStore
from perpsbot.store.alerts import AlertBook
from perpsbot.store.backup import BackupWorkflow
from perpsbot.store.folder import StoreReplaced, open_stores
from perpsbot.store.lock import StoreLock
from perpsbot.store.spare import SpareSpace
from perpsbot.store.sqlite import DiskFull, is_disk_full
from perpsbot.strategy import loading
from perpsbot.strategy.base import Decision, Strategy
from perpsbot.strategy.orchestrator import StrategyOrchestrator
from perpsbot.strategy.runner import StrategyError, StrategyRunner, market_inputs
from perpsbot.telemetry.alerts import AlertRules, AlertWebhook
from perpsbot.telemetry.metrics import BotMetrics

if TYPE_CHECKING:
    from perpsbot.telemetry.server import TelemetryServer  # imported when the web server starts

log = logging.getLogger(__name__)

SNAPSHOT_EVERY_SECONDS = 10.0
# The running controls (kill file, daily loss, drawdown, volatility, resume) are evaluated at
# least this often (or every interval, when shorter), however long a cycle waits on the exchange.
CONTROLS_EVERY_SECONDS = 0.5
# On stop() or the end of --duration, a cycle under way gets this long to finish before it is
# cancelled where it stands (a hung exchange call).
STOP_GRACE_SECONDS = 0.5


class BotError(RuntimeError):
    """A problem that stops the bot from starting, worded for the user."""


@dataclass(frozen=True)
class ServiceRegistry:
    config: BotConfig
    clock: Clock
    exchange: Exchange
    events: EventStore
    orders: OrdersStore
    products: dict[str, Product]
    market_data: MarketDataService
    strategy: StrategyOrchestrator
    risk: RiskManager
    execution: ExecutionCoordinator
    alerts: AlertBook
    streaming: StreamingService | None = None  # when the exchange offers a market stream

    def with_updates(self, **changes: Any) -> ServiceRegistry:
        return dataclasses.replace(self, **changes)


@dataclass
class CycleReport:
    marks: MarkUpdate
    decisions: dict[str, Decision] = field(default_factory=dict)
    executions: dict[str, list[ExecutionResult]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    elapsed_ms: float = 0.0


def window_spec(config: BotConfig, strategy: Strategy) -> WindowSpec:
    bars = max(strategy.required_bars, config.vol_window + 1)  # the volatility breaker reads them too
    # Enough marks to cover the bar being built plus a little slack for the trailing stop.
    marks_per_bar = max(1, int(config.bar_seconds / config.interval) + 1)
    return WindowSpec(max_marks=min(10_000, 2 * marks_per_bar), max_bars=bars, bar_seconds=config.bar_seconds)


def streaming_service(
    exchange: Exchange, market_data: MarketDataService, events: EventStore, clock: Clock, config: BotConfig
) -> StreamingService | None:
    """Streaming market data where the venue's capabilities say it has a market stream (the
    Coinbase adapter, also when pointed at the simulator server); None: marks are polled."""
    capabilities = exchange.capabilities
    if not capabilities.market_stream:
        return None
    venue = cast(StreamingExchange, exchange)  # what capabilities.market_stream promises
    streaming = StreamingService(
        venue.market_stream, market_data, events, clock, config.symbols, level=config.stream_level,
        mark_source=config.mark_source, quiet_seconds=config.stream_quiet_seconds,
    )
    if capabilities.book_from_stream:
        venue.book_source = streaming.order_book  # the risk check's book, without a REST round trip
    return streaming


def venue_refusal(config: BotConfig, exchange: Exchange) -> str | None:
    """Why the venue cannot trade as ``config`` says (its margin and order settings), or None."""
    capabilities = exchange.capabilities
    if config.margin_type not in capabilities.margin_types:
        refused = capabilities.refusal(OrderType.MARKET, TimeInForce.IOC, False, config.margin_type)
        return f"margin_type = {config.margin_type.value}: {exchange.name} {refused}"
    if config.order_type is OrderTypeSetting.LIMIT:
        tif = TimeInForce(config.time_in_force.value)
        refused = capabilities.refusal(OrderType.LIMIT, tif, reduce_only=False)
        if refused is not None:
            return f"order_type = limit, time_in_force = {tif.value}: {exchange.name} {refused}"
    return None


_BUILDER_TOKEN = object()


class PerpsBotBuilder:
    def __init__(self, config: BotConfig) -> None:
        self._config = config
        self._clock: Clock | None = None
        self._exchange: Exchange | None = None
        self._registry: ServiceRegistry | None = None
        self._strategy: Strategy | None = None
        self._stores: tuple[EventStore, OrdersStore] | None = None
        self._new_store: Callable[[str], bool] | None = None

    def with_clock(self, clock: Clock) -> PerpsBotBuilder:
        self._clock = clock
        return self

    def with_exchange(self, exchange: Exchange) -> PerpsBotBuilder:
        self._exchange = exchange
        return self

    def with_strategy(self, strategy: Strategy) -> PerpsBotBuilder:
        self._strategy = strategy
        return self

    def with_stores(self, events: EventStore, orders: OrdersStore) -> PerpsBotBuilder:
        """Use these stores instead of opening the profile's SQLite files (a backtest
        passes in-memory ones)."""
        self._stores = (events, orders)
        return self

    def with_new_store(self, confirm: Callable[[str], bool]) -> PerpsBotBuilder:
        """Start new stores in place of a missing or damaged one once ``confirm(problem)``
        says so (its files are moved aside, never deleted); an intact store is refused."""
        self._new_store = confirm
        return self

    def with_registry(self, registry: ServiceRegistry) -> PerpsBotBuilder:
        """Use a ready registry as it is (tests swap single services this way)."""
        self._registry = registry
        return self

    async def build(self) -> PerpsBot:
        if self._registry is not None:
            return PerpsBot(self._registry, _token=_BUILDER_TOKEN)
        config = self._config
        clock = self._clock or WallClock()
        try:
            strategy = self._strategy or loading.build(config)  # a bad strategy stops the start before anything opens
        except StrategyError as exc:
            raise BotError(str(exc)) from None
        try:
            exchange = self._exchange or self._default_exchange(config, clock, strategy.required_bars)
        except ExchangeError as exc:
            raise BotError(f"cannot set up exchange {config.exchange.value}: {exc}") from None
        try:
            catalog = {p.symbol: p for p in await exchange.products()}
        except ExchangeError as exc:
            await exchange.close()
            raise BotError(f"cannot list products on {exchange.name}: {_error_text(exc)}") from None
        unknown = [s for s in config.symbols if s not in catalog]
        if unknown:
            await exchange.close()
            raise BotError(
                f"unknown product {unknown[0]} on {exchange.name}; available: {', '.join(sorted(catalog))}"
            )
        refused = venue_refusal(config, exchange)
        if refused is not None:
            await exchange.close()
            raise BotError(refused)
        lock: StoreLock | None = None
        replaced: StoreReplaced | None = None
        spare: SpareSpace | None = None
        if self._stores is not None:
            events, orders = self._stores
        else:
            store_dir = config.store_dir
            lock = StoreLock(store_dir)
            try:
                lock.acquire()  # one bot per store; held until shutdown, dropped by the kernel on a crash
                opened = open_stores(store_dir, clock.now(), self._new_store)  # a damaged store is refused
            except BaseException as exc:
                lock.release()
                await exchange.close()
                if isinstance(exc, Exception) and is_disk_full(exc):
                    raise DiskFull(f"cannot open the store in {store_dir} ({exc})") from None
                raise
            events, orders, replaced = opened.events, opened.orders, opened.replaced
            spare = SpareSpace(store_dir)
            try:
                spare.reserve()  # room for the last records should the disk fill up
            except BaseException:
                events.close()
                orders.close()
                lock.release()
                await exchange.close()
                raise
            BackupWorkflow.from_config(config).remove_abandoned_staging()  # what killed backups and restores left
        market_data = MarketDataService(exchange, clock, events, config.symbols, window_spec(config, strategy))
        streaming = streaming_service(exchange, market_data, events, clock, config)
        risk = RiskManager(
            config,
            clock,
            events,
            market_data.mark_age,
            mark_of=market_data.mark,
            products=catalog,
            account_persists=exchange.capabilities.account_persists,
        )
        alerts = AlertBook(events, clock)
        execution = ExecutionCoordinator(
            exchange, risk, orders, events, clock, config, catalog, alerts=alerts,
            fresh_venue=not exchange.capabilities.account_persists,  # e.g. the builder's own in-process simulator
        )
        execution.pushed = PushedUpdates.for_exchange(exchange, execution, events, clock, list(config.symbols),
                                                      config.stream_quiet_seconds)
        if isinstance(strategy, StrategyRunner):
            strategy.bind(
                market_inputs(exchange, market_data, streaming, clock.now, lambda: execution.account.equity, catalog),
                lambda symbol, error: events.append(clock.now(), "error", symbol, stage="strategy", error=error),
            )
        orchestrator = StrategyOrchestrator(
            strategy,
            market_data,
            events,
            clock,
            positions=execution.positions,
            reduce_only=risk.is_reduce_only,
            shorts_allowed=lambda symbol: config.enable_shorts and catalog[symbol].is_derivative,
        )
        registry = ServiceRegistry(
            config=config,
            clock=clock,
            exchange=exchange,
            events=events,
            orders=orders,
            products=catalog,
            market_data=market_data,
            strategy=orchestrator,
            risk=risk,
            execution=execution,
            alerts=alerts,
            streaming=streaming,
        )
        return PerpsBot(registry, _token=_BUILDER_TOKEN, store_lock=lock, store_replaced=replaced, spare=spare)

    @staticmethod
    def _default_exchange(config: BotConfig, clock: Clock, bars: int) -> Exchange:
        if config.exchange is ExchangeKind.COINBASE:
            from perpsbot.exchange.coinbase import CoinbaseExchange

            return CoinbaseExchange.from_config(config, clock)
        if config.exchange is ExchangeKind.GATEWAY:
            from perpsbot.exchange.gateway import GatewayExchange

            return GatewayExchange.from_config(config, clock)
        from perpsbot.exchange.sim import SimConfig, SimCore, SimExchange, default_products

        warmup = float(config.bar_seconds * (bars + 1))  # history enough for the strategy's first decision
        core = SimCore(
            default_products(),
            SimConfig(seed=config.seed, starting_cash=config.sim_starting_cash, warmup_seconds=warmup),
            start=clock.now(),
        )
        return SimExchange(  # a core made for this process: no later run finds its account
            core, clock, order_latency_seconds=config.sim_order_latency_ms / 1000, account_persists=False
        )


class PerpsBot:
    def __init__(
        self,
        registry: ServiceRegistry,
        *,
        _token: object = None,
        store_lock: StoreLock | None = None,
        store_replaced: StoreReplaced | None = None,
        spare: SpareSpace | None = None,
    ) -> None:
        if _token is not _BUILDER_TOKEN:
            raise TypeError("PerpsBot is built only through PerpsBotBuilder(config).build()")
        self._registry = registry
        self._store_lock = store_lock
        self.store_replaced = store_replaced  # new stores started in place of a damaged one (recorded at start)
        self._spare = spare
        self.disk_full: DiskFull | None = None  # why the bot stopped, when a full disk stopped it
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self.cycles = 0
        self.cycle_ms: float = 0.0
        self._controls_at: datetime | None = None  # clock time of the last evaluation of the running controls
        self._reload: Callable[[], BotConfig] | None = None  # SIGHUP's re-read, waiting for the end of a cycle
        self.started = False
        self.start_equity: Decimal | None = None
        # Telemetry listens on the event store: metrics, alert rules and the alert webhook.
        self.metrics = BotMetrics(self)
        self.alert_rules = AlertRules(self)
        self.webhook = AlertWebhook(self)
        registry.events.listeners.extend((self.metrics.on_event, self.alert_rules.on_event, self.webhook.on_event))
        self.web: TelemetryServer | None = None
        self.http_port: int | None = None  # bound by start() when http_port is not off
        self.run_metrics = RunMetricsRecorder(
            registry.clock, registry.events, registry.market_data, registry.execution, registry.streaming
        )

    # ----- registry access ----------------------------------------------------------

    @property
    def registry(self) -> ServiceRegistry:
        return self._registry

    @property
    def config(self) -> BotConfig:
        return self._registry.config

    @property
    def clock(self) -> Clock:
        return self._registry.clock

    # ----- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except Exception as exc:
            if is_disk_full(exc):
                raise self._stop_for_disk_full(exc) from None
            raise

    async def _start(self) -> None:
        reg = self._registry
        await self._start_web()
        self.spawn(self.webhook.run(), "alert-webhook")  # before anything can raise an alert
        run_id = reg.events.start_run(reg.clock.now(), reg.config.profile.value, public_config(reg.config))
        reg.orders.run_id = run_id
        if self.store_replaced is not None:
            reg.events.append(
                reg.clock.now(), "store_replaced", None, problem=self.store_replaced.problem,
                kept_in=self.store_replaced.kept_in,
            )
        reg.risk.restore()
        account = await reg.execution.refresh_account()
        self.start_equity = account.equity
        await reg.market_data.warm_up()
        opening = await reg.execution.open_run()
        if reg.streaming is not None:
            await reg.streaming.start()
            self.spawn(reg.streaming.heartbeat_loop(), "stream-heartbeat")
        if reg.execution.pushed is not None:
            await reg.execution.pushed.start()  # what it pushes meanwhile waits for the first cycle
        reg.events.append(
            reg.clock.now(), "bot_started", None, run_id=run_id, symbols=reg.config.symbols,
            profile=reg.config.profile, dry_run=reg.config.dry_run, equity=account.equity, http_port=self.http_port,
            opening_positions={s: {"size": size, "price": price} for s, (size, price) in opening.items()},
            opened_at=reg.execution.opened_at, venue=reg.exchange.capabilities.describe(),
            products=recorded_terms(reg.products[s] for s in reg.config.symbols),
            **strategy_fields(reg.strategy.strategy),
        )
        self.spawn(self._controls_loop(), "running-controls")  # from here on, whatever the exchange does
        try:
            await reg.execution.recover()  # earlier runs' open intents resolved, then reconciled
        except (ExchangeError, TimeoutError, OSError) as exc:  # retried by the periodic reconciliation
            reg.events.append(reg.clock.now(), "error", None, stage="reconcile", error=_error_text(exc))
        self.spawn(self._snapshot_loop(), "snapshots")
        self.run_metrics.begin()
        self.spawn(self.run_metrics.loop(), "run-metrics")
        if reg.config.backup_every_minutes > 0 and self._store_lock is not None:  # file stores only
            self.spawn(self._backup_loop(), "backups")
        self.started = True

    async def _start_web(self) -> None:
        """/metrics and /health on 127.0.0.1, first: a busy port stops the start before any trading."""
        port = self.config.http_port
        if port is None or self.web is not None:
            return
        from perpsbot.telemetry.server import TelemetryServer, TelemetryServerError, build_web_app

        server = TelemetryServer(build_web_app(self))
        try:
            self.http_port = await server.start(port)
        except TelemetryServerError as exc:
            raise BotError(str(exc)) from None
        self.web = server
        log.info("metrics on %s/metrics, health on %s/health", server.url, server.url)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            return
        if is_disk_full(exc):
            self._stop_for_disk_full(exc)  # e.g. a snapshot the disk had no room for
        else:  # what asyncio would say of it, later, for an exception nobody retrieved
            log.error("background task %s failed", task.get_name(), exc_info=exc)

    def _stop_for_disk_full(self, exc: BaseException) -> DiskFull:
        """Nothing the bot does can be recorded any more, so it does nothing more: stop cycling."""
        if self.disk_full is None:
            self.disk_full = DiskFull(f"cannot write to {self.config.store_dir} ({exc})")
            self._stop.set()
        return self.disk_full

    @property
    def background_tasks(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    def stop(self) -> None:
        self._stop.set()

    async def run(self, duration: float | None = None, on_cycle: Callable[[PerpsBot], None] | None = None) -> None:
        """Cycle every ``config.interval`` until ``duration`` passes or ``stop()`` is called.

        Either ends the run within ``STOP_GRACE_SECONDS`` even while a cycle waits on a hung
        exchange call: the cycle is then cancelled. An order placement cancelled that way
        stays PENDING in the store (its write-ahead record, with an ``order_unknown`` event),
        and the next start looks its fate up by ``client_order_id``. A full disk stops it
        too, with ``DiskFull`` (``shutdown`` records why)."""
        try:
            if not self.started:
                await self.start()
            began = self.clock.now()
            while not self._stop.is_set():
                left = self._time_left(began, duration)
                if left is not None and left <= 0:
                    break
                tick = time.perf_counter()
                if not await self._cycle_until_stopped(left):
                    break
                if on_cycle is not None:
                    on_cycle(self)
                if self._changes_asked() and not await self._cycle_until_stopped(
                    self._time_left(began, duration), self.apply_requested_changes()
                ):
                    break
                pause = max(0.0, self.config.interval - (time.perf_counter() - tick))
                left = self._time_left(began, duration)
                await self._pause(pause if left is None else min(pause, left))
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            raise self._stop_for_disk_full(exc) from None
        if self.disk_full is not None:
            raise self.disk_full

    def _time_left(self, began: datetime, duration: float | None) -> float | None:
        if duration is None:
            return None
        return duration - (self.clock.now() - began).total_seconds()

    async def _pause(self, seconds: float) -> None:
        """The wait between cycles; pushed order updates are applied as they come in."""
        pushed = self._registry.execution.pushed
        if pushed is None:
            await self._wait_for_stop(None, seconds)
            return
        end = self.clock.now() + timedelta(seconds=seconds)
        while not self._stop.is_set() and (left := (end - self.clock.now()).total_seconds()) > 0:
            woken = asyncio.ensure_future(pushed.ready.wait())
            try:
                await self._wait_for_stop(woken, left)
            finally:
                woken.cancel()
            if pushed.ready.is_set() and not self._stop.is_set():
                await self._cycle_until_stopped(left, pushed.apply())

    async def _cycle_until_stopped(self, seconds: float | None,
                                   work: Coroutine[Any, Any, Any] | None = None) -> bool:
        """One cycle (or ``work``), unless stop() or the end of the run (``seconds`` from now)
        comes first; then it gets the grace period and is cancelled. True when it finished."""
        cycle = asyncio.ensure_future(work if work is not None else self.run_cycle())
        try:
            await self._wait_for_stop(cycle, seconds)
            if not cycle.done():
                await asyncio.wait({cycle}, timeout=STOP_GRACE_SECONDS)
        finally:
            if not cycle.done():
                cycle.cancel("the run ended mid-cycle")
                with contextlib.suppress(asyncio.CancelledError):
                    await cycle
        if cycle.cancelled():
            return False
        cycle.result()  # a cycle's own error ends the run, as it always has
        return True

    async def _wait_for_stop(self, work: asyncio.Future[Any] | None, seconds: float | None) -> None:
        """Until ``work`` is done, ``seconds`` (clock time) have passed or stop() is called."""
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._stop.wait())}
        if seconds is not None:
            waiters.add(asyncio.ensure_future(self.clock.sleep(max(0.0, seconds))))
        try:
            await asyncio.wait(waiters | ({work} if work is not None else set()), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def run_cycle(self) -> CycleReport:
        reg = self._registry
        started = time.perf_counter()
        # With a healthy stream only the symbols it does not serve are polled (none, usually).
        polled = None if reg.streaming is None else reg.streaming.symbols_to_poll()
        marks = await reg.market_data.update_marks(polled)
        report = CycleReport(marks)
        await self._guarded(report, "account", reg.execution.refresh_account(), reg.execution.follow_orders())
        # order commands and reconciliation run even when the sync above failed
        await self._guarded(report, "housekeeping", reg.execution.housekeeping())
        self.evaluate_controls()  # also on their own task (_controls_loop), between cycles and during slow ones
        if reg.risk.killed and reg.risk.flatten_requested:
            flatten = reg.execution.flatten_all()
            results = await self._guarded(report, "flatten", flatten)
            if results is not None:
                report.executions["*flatten*"] = results
        for symbol in reg.market_data.symbols:
            try:
                decision = self.process_symbol(symbol)
                report.decisions[symbol] = decision
                results = await self.execute_decision(decision)
                if results:
                    report.executions[symbol] = results
            except Exception as exc:  # one symbol's failure never stops the others
                if is_disk_full(exc):
                    raise  # but a full disk stops everything
                report.errors[symbol] = _error_text(exc)
                reg.events.append(reg.clock.now(), "error", symbol, stage="cycle", error=_error_text(exc))
                log.exception("cycle for %s failed", symbol)
        self.cycles += 1
        elapsed = time.perf_counter() - started
        report.elapsed_ms = self.cycle_ms = elapsed * 1000
        self.metrics.observe_cycle(elapsed)
        try:
            self.alert_rules.evaluate()
        except Exception as exc:  # a broken alert rule must not stop trading
            if is_disk_full(exc):
                raise
            log.exception("alert rules failed")
        return report

    async def _guarded(self, report: CycleReport, stage: str, *steps: Coroutine[Any, Any, Any]) -> Any:
        """Run the steps in order; a failure is recorded and the cycle goes on. Returns the
        last step's result, or None when one failed."""
        reg = self._registry
        result = None
        waiting = list(steps)
        try:
            while waiting:
                result = await waiting.pop(0)
        except Exception as exc:  # keep cycling; the error is recorded
            if is_disk_full(exc):
                raise  # not an error to record and cycle on: nothing can be recorded
            report.errors[stage] = _error_text(exc)
            reg.events.append(reg.clock.now(), "error", None, stage=stage, error=_error_text(exc))
            log.error("%s failed: %s", stage, _error_text(exc))
            return None
        finally:
            for step in waiting:
                step.close()  # the steps that never ran (a failure, or the cycle cancelled at stop)
        return result

    def evaluate_controls(self) -> None:
        """The risk manager's running controls on the latest equity and bars."""
        reg = self._registry
        self._controls_at = reg.clock.now()
        closes = {s: w.closes() for s, w in reg.market_data.windows.items()}
        reg.risk.evaluate(reg.execution.account.equity, closes)

    async def _controls_loop(self) -> None:
        """The running controls on a cadence of their own, so that a cycle held up by a slow
        exchange call never holds up the kill switch: a kill seen here refuses the next
        order the cycle sends (the risk check reads the mode), flatten orders excepted."""
        while True:
            every = min(CONTROLS_EVERY_SECONDS, self.config.interval)
            last = self._controls_at
            wait = 0.0 if last is None else every - (self.clock.now() - last).total_seconds()
            if wait > 0:
                await self.clock.sleep(wait)  # then look again: a cycle may have evaluated them meanwhile
                continue
            try:
                self.evaluate_controls()
            except Exception:  # the cycle evaluates them too, and reports the failure
                log.exception("running controls failed")

    def process_symbol(self, symbol: str) -> Decision:
        return self._registry.strategy.process_symbol(symbol)

    async def execute_decision(self, decision: Decision) -> list[ExecutionResult]:
        return await self._registry.execution.execute_decision(decision)

    async def _snapshot_loop(self) -> None:
        while True:
            await self.clock.sleep(SNAPSHOT_EVERY_SECONDS)
            self.record_snapshot()

    async def _backup_loop(self) -> None:
        while True:
            await self.clock.sleep(self.config.backup_every_minutes * 60)
            workflow = BackupWorkflow.from_config(self.config)  # backup_dir / retention may have changed
            job = asyncio.ensure_future(workflow.run_and_record(self._registry.events, self.clock))
            try:
                await asyncio.shield(job)
            except asyncio.CancelledError:
                await job  # a backup under way finishes (and is recorded) before the stores close
                raise

    def record_snapshot(self) -> None:
        reg = self._registry
        account = reg.execution.account
        marks = {s: reg.market_data.mark(s) for s in reg.market_data.symbols}
        reg.events.append(
            reg.clock.now(), "snapshot", None, equity=account.equity, marks=marks,
            mark_age={s: reg.market_data.mark_age(s) for s in reg.market_data.symbols},
            positions={s: {"size": p.size, "entry_price": p.entry_price} for s, p in account.positions.items()},
            reduce_only=reg.risk.reduce_only_reasons,
            kill=reg.risk.kill_reasons,
        )

    # ----- changes while running: `perpsbot config set` and SIGHUP -----------------------

    def request_reload(self, load: Callable[[], BotConfig]) -> None:
        """SIGHUP: re-read the config with ``load`` (the start's layered load) and apply the
        difference after the cycle under way; an invalid config leaves the one in force."""
        self._reload = load

    def _changes_asked(self) -> bool:
        return self._reload is not None or any(c == CONFIG_SET for _, c, _ in self._registry.events.pending_commands())

    async def apply_requested_changes(self) -> None:
        """Between cycles: SIGHUP's re-read, then the ``config set`` commands in the order posted."""
        if self._reload is not None:
            load, self._reload = self._reload, None
            await self._reload_config(load)
        events = self._registry.events
        for command_id, command, args in events.pending_commands():
            if command != CONFIG_SET:
                continue  # the coordinator's and the risk manager's
            try:
                result = await self._config_set(args)
            except Exception as exc:  # a bad command never stops the bot
                if is_disk_full(exc):
                    raise
                log.exception("config set command %s failed", command_id)
                result = f"failed: {_error_text(exc)}"
            log.info("config set: %s", result)
            now = self.clock.now()
            events.complete_command(command_id, now, result)
            events.append(now, "command", None, id=command_id, command=command, args=args, result=result)

    async def _reload_config(self, load: Callable[[], BotConfig]) -> None:
        try:
            result = await self._change_config(load(), "SIGHUP")
        except ConfigError as exc:
            result = "refused: " + _one_line(exc)
        if result.startswith(("refused", "failed")):
            reg = self._registry
            reg.events.append(reg.clock.now(), "error", None, stage="config reload", error=result)
            reg.alerts.notify("config_reload_failed", "P2", f"SIGHUP: {result}; the config in force stays")
        else:
            log.info("SIGHUP: config re-read, %s", result)

    async def _config_set(self, args: dict[str, Any]) -> str:
        """A ``config set`` command: its keys on top of the config in force."""
        run_id = self._registry.events.run_id
        if args.get("run") != run_id:  # posted to a bot that stopped before it got to it
            return f"refused: posted for run {args.get('run')}; this is run {run_id}"
        try:
            new_config = overlay(self.config, args["values"], "config set")
        except ConfigError as exc:
            return "refused: " + _one_line(exc)
        return await self._change_config(new_config, "config set")

    async def _change_config(self, new_config: BotConfig, source: str) -> str:
        """``apply_config_change``, whole or refused whole (nothing of it applied): the result line."""
        refused = venue_refusal(new_config, self._registry.exchange)
        if refused is not None:
            return f"refused: {refused}"
        old = self.config
        try:
            change = await self.apply_config_change(new_config, source=source)
        except (ConfigChangeRejected, BotError) as exc:
            return f"refused: {exc}"
        except (ExchangeError, TimeoutError, OSError) as exc:  # e.g. the stream's resubscription
            return f"failed: {_error_text(exc)}"
        if change.is_empty:
            return "nothing to change"
        return "ok: " + describe_changes(shown_changes(old, new_config, change.changed_keys))

    async def apply_config_change(self, new_config: BotConfig, *, source: str = "apply_config_change") -> ConfigChange:
        """Apply a new config without a restart; symbols are added and removed in
        every service that keeps per-symbol state. ``source`` is recorded with the change."""
        reg = self._registry
        change = diff_configs(reg.config, new_config)
        if change.is_empty:
            return change
        unknown = [s for s in change.added_symbols if s not in reg.products]
        if unknown:
            raise BotError(f"unknown product {unknown[0]}")
        strategy = reg.strategy.strategy
        if isinstance(strategy, StrategyRunner):
            try:  # the same strategy object, its new parameters (a new strategy is refused)
                loading.change_parameters(strategy, new_config)
            except StrategyError as exc:
                raise BotError(str(exc)) from None
        spec = window_spec(new_config, strategy)
        for symbol in change.removed_symbols:
            reg.market_data.remove_symbol(symbol)
            reg.strategy.forget(symbol)
            reg.risk.forget(symbol)
            if symbol in reg.execution.account.positions:
                reg.events.append(reg.clock.now(), "symbol_removed_with_position", symbol)
        reg.market_data.resize(spec)
        for symbol in change.added_symbols:
            reg.market_data.add_symbol(symbol)
        if change.added_symbols:
            await reg.market_data.warm_up(change.added_symbols)
        if reg.streaming is not None:
            await reg.streaming.reconfigure(
                removed=change.removed_symbols, added=change.added_symbols, level=new_config.stream_level,
                mark_source=new_config.mark_source, quiet_seconds=new_config.stream_quiet_seconds,
            )
        reg.strategy.shorts_allowed = lambda symbol: new_config.enable_shorts and reg.products[symbol].is_derivative
        reg.risk.update_config(new_config)
        reg.execution.config = new_config
        self._registry = reg.with_updates(config=new_config)
        reg.events.append(
            reg.clock.now(), "config_changed", None, keys=sorted(change.changed_keys),
            added=change.added_symbols, removed=change.removed_symbols, source=source,
            changes=shown_changes(reg.config, new_config, change.changed_keys), **strategy_fields(strategy),
        )
        return change

    def summary(self) -> dict[str, Any]:
        reg = self._registry
        account = reg.execution.account
        run_id = reg.events.run_id
        fills = reg.orders.fills(run_id=run_id) if run_id is not None else []
        metrics = self.run_metrics.figures()
        return {
            "run_id": run_id,
            "cycles": self.cycles,
            "orders_placed": reg.execution.placed,
            "orders_failed": reg.execution.failed,
            "order_latency_p50_ms": percentile(reg.execution.latencies_ms, 50),
            "fills": len(fills),
            "fees": sum((f.fee for f in fills), Decimal(0)),
            "start_equity": self.start_equity,
            "end_equity": account.equity,
            "equity_change": account.equity - self.start_equity if self.start_equity is not None else None,
            "positions": {s: p.size for s, p in account.positions.items() if not p.is_flat},
            **strategy_fields(reg.strategy.strategy),
            "pnl": reg.execution.pnl().as_dict() if run_id is not None else None,
            **(reg.streaming.summary() if reg.streaming is not None else {}),
            **(reg.execution.pushed.summary() if reg.execution.pushed is not None else {}),
            **metrics,  # the drift review's production metrics (also the run_metrics event)
        }

    async def shutdown(self) -> dict[str, Any]:
        """Cancel background tasks, record the run's summary and close everything."""
        self._stop.set()
        if self.web is not None:
            await self.web.stop()
            self.web = None
        if self.started:
            await self.webhook.drain()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.difference_update(tasks)  # a task that ended meanwhile may not have run its done callback yet
        reg = self._registry
        recording = self.started and self.disk_full is None
        if self.started:
            self.run_metrics.sample()  # a short run still gets one
        summary = self.summary()
        if reg.streaming is not None:
            if recording:
                reg.streaming.heartbeat()
            await reg.streaming.close()
        if reg.execution.pushed is not None:
            await reg.execution.pushed.close()
        if recording:
            self.record_snapshot()
            reg.events.append(reg.clock.now(), "run_metrics", None, **{k: summary[k] for k in METRIC_FIELDS})
            reg.events.append(reg.clock.now(), "bot_stopped", None, **summary)
            reg.events.end_run(reg.clock.now(), summary)
        elif self.disk_full is not None:
            self._record_disk_full_stop(self.disk_full, summary)
        try:
            await reg.exchange.close()
        finally:
            self._close_stores()
        return summary

    def _record_disk_full_stop(self, disk_full: DiskFull, summary: dict[str, Any]) -> None:
        """The last records after the disk filled up, in the spare space freed for them: the
        events kept back, ``bot_stopped`` with ``reason=disk_full``, the run's end. Said on
        the log (and by the CLI) when even that cannot be written."""
        reg = self._registry
        freed = self._spare is not None and self._spare.release()
        written = False
        if reg.events.run_id is not None:  # else not even the run could be recorded
            try:
                reg.events.append(
                    reg.clock.now(), "bot_stopped", None, reason="disk_full", error=disk_full.detail, **summary
                )
                reg.events.end_run(reg.clock.now(), summary)
                written = True
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
        if written:
            disk_full.outcome = "the bot stopped; its bot_stopped event (reason disk_full) says so"
        else:
            disk_full.outcome = "the bot stopped; not even its bot_stopped event could be written"
        log.critical("%s (spare space freed: %s)", disk_full, freed)

    def _close_stores(self) -> None:
        """Close both stores and let go of the lock, whatever fails; after a full disk, events
        still kept back are given up (the bot_stopped event, or the log, says why)."""
        reg = self._registry
        try:
            reg.events.close()
        except Exception as exc:
            if self.disk_full is None or not is_disk_full(exc):
                raise
        finally:
            try:
                reg.orders.close()
            finally:
                if self._store_lock is not None:
                    self._store_lock.release()




def strategy_fields(strategy: Strategy) -> dict[str, Any]:
    """What the run's events and summary say of the strategy: its name, parameters, errors."""
    if not isinstance(strategy, StrategyRunner):
        return {"strategy": strategy.name}
    return {"strategy": strategy.name, "strategy_params": strategy.params, "strategy_errors": strategy.errors}


def _one_line(exc: BaseException) -> str:
    return "; ".join(str(exc).splitlines())


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):  # a call's deadline (asyncio.timeout) passed
        return "TimeoutError: the exchange did not answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
