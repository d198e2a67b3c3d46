"""The backtest: the live bot's services replayed over candles in simulated time.

``run_backtest`` builds the bot with ``PerpsBotBuilder`` — the same
``MarketDataService``, ``StrategyOrchestrator`` + strategy, ``RiskManager`` and
``ExecutionCoordinator`` a live run gets — with three things swapped: a
``SimulatedClock`` the loop moves, a ``ReplayExchange`` behind the ``Exchange``
port, and in-memory stores. Then, for every candle (one "cycle"):

1. the clock moves to the candle's close; the replay exchange fills what was
   ordered at the previous close at this candle's open, settles funding and
   liquidations — when it has anything to do (``busy``);
2. if that changed the account, ``ExecutionCoordinator.refresh_account`` and
   ``sync_orders`` pick up the fills, exactly as after a live fill;
3. the candle goes into the symbol's ``MarkWindow`` as a closed bar (its close is
   the mark);
4. ``RiskManager.watch_equity`` sees the equity (the daily-loss and drawdown
   controls, a few float comparisons unless a level is crossed);
5. ``StrategyOrchestrator.process_symbol`` asks the strategy for a decision;
6. only a decision other than HOLD goes further: the account is refreshed, the
   running risk controls are evaluated in full (``RiskManager.evaluate``: kill
   file, daily loss, drawdown, volatility), a kill with flatten closes everything,
   and ``ExecutionCoordinator.execute_decision`` sizes, risk-checks and places the
   orders through the port.

Nothing awaits a timer: the coroutines all complete without suspending, on one
event loop. HOLD candles cost steps 1, 3, 4 and 5 — a few microseconds.
"""

from __future__ import annotations

import itertools
import time
from array import array
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from perpsbot.backtest.data import CandleSeries
from perpsbot.bot import PerpsBotBuilder, strategy_fields
from perpsbot.config import BotConfig, ConfigError
from perpsbot.config.loader import Layer, build_config
from perpsbot.config.retired import retired_product
from perpsbot.domain import Fill, Order, Product, ProductType
from perpsbot.domain.clock import SimulatedClock
from perpsbot.exchange.sim.replay import FundingEvent, ReplayCosts, ReplayExchange
from perpsbot.store.memory import MemoryEventStore, MemoryOrdersStore
from perpsbot.strategy import loading
from perpsbot.strategy.base import Decision, Target
from perpsbot.strategy.runner import StrategyError

CHUNK = 8192  # candles between progress reports
# Settings a backtest decides itself; --param may set any other.
FIXED_KEYS = frozenset({"symbols", "bar_seconds", "profile", "exchange", "data_dir", "interval", "duration",
                        "dry_run", "seed", "log_level", "api_key_name", "api_private_key", "api_key_file",
                        "coinbase_rest_url", "coinbase_ws_url", "coinbase_ws_user_url", "ca_bundle",
                        "sim_order_latency_ms", "http_port", "dashboard_token", "alert_webhook_url",
                        "log_file", "log_file_max_bytes", "log_file_backups", "backup_every_minutes",
                        "backup_dir", "backup_keep", "backup_max_age_days"})


class BacktestError(ValueError):
    """A backtest that cannot run as asked, worded in one line."""


@dataclass(frozen=True)
class BacktestSpec:
    symbol: str
    costs: ReplayCosts = field(default_factory=ReplayCosts)
    params: Mapping[str, Any] = field(default_factory=dict)  # strategy parameters or bot settings (--param)
    starting_cash: Decimal | None = None  # None: the config's sim_starting_cash
    strategy: str | None = None  # None: the config's (ma_crossover by default)


@dataclass(repr=False)
class BacktestResult:
    config: BotConfig
    product: Product
    series: CandleSeries
    costs: ReplayCosts
    equity: array  # at each candle's close
    exposed_bars: int
    start_equity: Decimal
    end_equity: Decimal
    fills: list[Fill]
    orders: list[Order]
    funding: list[FundingEvent]
    liquidations: int
    events: MemoryEventStore
    risk_rejections: dict[str, int]
    reasons: dict[str, str]  # client order id -> the decision's reason
    risk_changes: list[dict[str, str]]  # every risk mode change: when, what
    risk_mode: str  # normal | reduce-only | killed, at the end
    elapsed_seconds: float  # wall time of the candle loop (not part of any report number)
    strategy_name: str = ""
    strategy_params: dict[str, Any] = field(default_factory=dict)

    @property
    def candles(self) -> int:
        return len(self.series)

    def __repr__(self) -> str:  # short: asyncio may repr a finished task's result
        return (f"BacktestResult({self.series.symbol}, {self.candles} candles, {len(self.fills)} fills, "
                f"equity {self.start_equity} -> {self.end_equity})")


def backtest_config(spec: BacktestSpec, bar_seconds: int, data_dir: Path) -> BotConfig:
    """The bot's config for a backtest: defaults, the data's symbol and bar length,
    then ``--param``: the strategy's parameters and bot settings (checked as any config is)."""
    chosen = spec.strategy or spec.params.get("strategy") or BotConfig.model_fields["strategy"].default
    settings, params = split_params(spec.params, str(chosen))
    fixed = sorted(set(settings) & FIXED_KEYS)
    if fixed:
        raise BacktestError(f"--param {fixed[0]}: a backtest sets this itself (use --symbol / --timeframe)")
    base: dict[str, Any] = {"symbols": (spec.symbol,), "bar_seconds": bar_seconds, "data_dir": data_dir,
                            "exchange": "sim"}
    flags: dict[str, Any] = {}  # the command's own flags: above --param, as on `run`
    if spec.starting_cash is not None:
        flags["sim_starting_cash"] = spec.starting_cash
    if spec.strategy is not None:
        flags["strategy"] = spec.strategy
    if params:
        settings["strategy_params"] = params
    layers = [
        Layer("backtest", base, {k: "backtest" for k in base}),
        Layer("param", settings, {k: f"--param {k}" for k in settings}),
        Layer("flag", flags, {"sim_starting_cash": "flag --cash", "strategy": "flag --strategy"}),
    ]
    try:
        return build_config(layers).config
    except ConfigError as exc:
        raise BacktestError(str(exc).splitlines()[0]) from None


def split_params(given: Mapping[str, Any], strategy: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--param`` pairs as (bot settings, strategy parameters): a name the strategy
    declares is its parameter, else it must be a bot setting."""
    try:
        declared = loading.resolve(strategy).declared()
    except StrategyError as exc:
        raise BacktestError(str(exc)) from None
    settings = {k: v for k, v in given.items() if k in BotConfig.model_fields and k not in declared}
    params = {k: v for k, v in given.items() if k in declared and k not in BotConfig.model_fields}
    settings.update({k: v for k, v in given.items() if k in declared and k in BotConfig.model_fields})
    unknown = sorted(set(given) - set(settings) - set(params))
    if unknown:
        raise BacktestError(
            f"--param {unknown[0]}: unknown setting ('perpsbot config show' lists them all) and not a parameter "
            f"of {strategy} (its parameters: {', '.join(declared) or 'none'})"
        )
    return settings, params


def product_for(symbol: str) -> Product:
    """The simulator's listing for a known symbol, else a generic product (8-decimal
    grids; ``-PERP`` in the name makes it a perpetual, 20x at most)."""
    from perpsbot.exchange.sim.products import default_products

    for spec in default_products():
        if spec.symbol == symbol:
            return spec.product
    retired = retired_product(symbol)
    if retired is not None:
        raise BacktestError(retired)
    parts = symbol.split("-")
    if len(parts) < 2:
        raise BacktestError(f"symbol '{symbol}' is not like BTC-USD or BIP-20DEC30-CDE")
    perp = "PERP" in parts[1:]
    tiny = Decimal("0.00000001")
    return Product(
        symbol=symbol, base=parts[0], quote="USD" if perp else parts[1],
        type=ProductType.PERPETUAL if perp else ProductType.SPOT, base_increment=tiny, price_increment=tiny,
        min_size=tiny, max_leverage=Decimal(20) if perp else Decimal(1),
    )


def typical_price(symbol: str, default: float = 100.0) -> float:
    """Where the simulator's market for ``symbol`` starts (synthetic candles start there too)."""
    from perpsbot.exchange.sim.products import default_products

    for spec in default_products():
        if spec.symbol == symbol:
            return spec.market.underlying.start_price
    return default


class _Ids:
    """Client order ids numbered in order: the same run gives the same ids."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def __call__(self) -> str:
        return f"bt-{next(self._next):08d}"


async def run_backtest(
    series: CandleSeries,
    spec: BacktestSpec,
    *,
    data_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    if spec.symbol != series.symbol:
        raise BacktestError(f"the candles are for {series.symbol}, the backtest for {spec.symbol}")
    config = backtest_config(spec, series.bar_seconds, data_dir)
    product = product_for(spec.symbol)
    if spec.costs.funding_rate and not product.is_perpetual:
        kind = "a dated future (no funding)" if product.is_derivative else "spot"
        raise BacktestError(f"--funding applies to perpetuals; {spec.symbol} is {kind}")
    g = series.bar_seconds
    clock = SimulatedClock(series.start[0])
    replay = ReplayExchange(
        product, clock, bar_seconds=g, starting_cash=config.sim_starting_cash, costs=spec.costs,
        cash_currency=product.quote,
    )
    try:
        strategy = loading.build(config, timed=False)  # untimed: the same candles give the same trades anywhere
    except StrategyError as exc:
        raise BacktestError(str(exc)) from None
    events, orders = MemoryEventStore(), MemoryOrdersStore()
    builder = PerpsBotBuilder(config).with_clock(clock).with_exchange(replay).with_strategy(strategy)
    # the memory stores duck-type the SQLite ones until issue 20 adds store protocols (narrow seams)
    bot = await builder.with_stores(events, orders).build()  # type: ignore[arg-type]  # no store protocol yet
    reg = bot.registry
    reg.strategy.record_holds = False
    reg.execution.new_client_order_id = _Ids()
    run_id = events.start_run(clock.now(), "backtest", config.model_dump(mode="json"))
    orders.run_id = run_id
    account = await reg.execution.refresh_account()
    start_equity = account.equity
    events.append(clock.now(), "bot_started", None, run_id=run_id, symbols=config.symbols, profile="backtest",
                  dry_run=False, equity=start_equity, **strategy_fields(strategy))

    symbol = spec.symbol
    window = reg.market_data.windows[symbol]
    execution, risk = reg.execution, reg.risk
    process = reg.strategy.process_symbol
    watch = risk.watch_equity
    hold = Target.HOLD
    vol_bars = config.vol_window + 1
    curve = array("d")
    push = curve.append
    exposed = 0
    a, b = replay.equity_a, replay.equity_b
    n = len(series)
    started = time.perf_counter()

    async def sync() -> None:
        replay.changed = False
        cursor = execution.fill_cursor
        await execution.sync_orders()  # new fills: recorded, orders brought forward, account refreshed
        if execution.fill_cursor == cursor:  # funding only: no fills, the account still changed
            await execution.refresh_account()

    async def act(decision: Decision) -> None:
        await execution.refresh_account()
        risk.evaluate(execution.account.equity, {symbol: window.last_closes(vol_bars)})
        if risk.killed and risk.flatten_requested:
            await execution.flatten_all()
        await execution.execute_decision(decision)

    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        rows = zip(series.start[lo:hi], series.open[lo:hi], series.high[lo:hi], series.low[lo:hi],
                   series.close[lo:hi], series.volume[lo:hi], strict=True)
        for t, o, h, low, c, v in rows:
            end = t + g
            clock.epoch = end  # the loop only moves forward (SimulatedClock.set, without the check)
            if replay.busy:
                replay.on_bar(t, o, h, low, c)
                if replay.changed:
                    await sync()
                    a, b = replay.equity_a, replay.equity_b
            else:
                replay.price = c
            window.append_bar(t, o, h, low, c, v)
            equity = a + b * c
            push(equity)
            watch(equity, end)
            if b:
                exposed += 1
            decision = process(symbol)
            if decision.target is not hold:
                await act(decision)
        if progress is not None:
            progress(hi)
    elapsed = time.perf_counter() - started

    final = await execution.refresh_account()
    await execution.sync_orders()
    summary = {"candles": n, "orders": execution.placed, "fills": len(replay.fills), "end_equity": final.equity,
               **strategy_fields(strategy)}
    events.append(clock.now(), "bot_stopped", None, **summary)
    events.end_run(clock.now(), summary)
    rejections = Counter(e.data.get("code", "?") for e in events.query(kind="risk_rejected"))
    reasons = {e.data["client_order_id"]: e.data.get("reason", "") for e in events.query(kind="order_submitted")}
    changes = [
        {"at": e.ts, "change": str(e.data.get("change", "")), "detail": str(e.data.get("detail", ""))}
        for e in events.query(kind="risk_mode")
    ]
    reasons_now = risk.kill_reasons if risk.killed else risk.reduce_only_reasons
    mode = f"{risk.mode} ({', '.join(reasons_now)})" if reasons_now else risk.mode
    await replay.close()
    return BacktestResult(
        config=config, product=product, series=series, costs=spec.costs, equity=curve, exposed_bars=exposed,
        start_equity=start_equity, end_equity=final.equity, fills=replay.fills,
        orders=orders.orders(run_id=run_id), funding=list(replay.funding), liquidations=replay.liquidations,
        events=events, risk_rejections=dict(sorted(rejections.items())), reasons=reasons, risk_changes=changes,
        risk_mode=mode, elapsed_seconds=elapsed, strategy_name=strategy.name, strategy_params=strategy.params,
    )
