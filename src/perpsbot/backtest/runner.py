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
from collections.abc import Callable, Mapping, Sequence
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
    symbols: tuple[str, ...]  # one account over them all, one series each
    costs: ReplayCosts = field(default_factory=ReplayCosts)
    params: Mapping[str, Any] = field(default_factory=dict)  # strategy parameters or bot settings (--param)
    starting_cash: Decimal | None = None  # None: the config's sim_starting_cash
    strategy: str | None = None  # None: the config's (ma_crossover by default)

    def __post_init__(self) -> None:
        if isinstance(self.symbols, str):  # one symbol given as such, not its letters
            object.__setattr__(self, "symbols", (self.symbols,))
        object.__setattr__(self, "symbols", tuple(self.symbols))


@dataclass(repr=False)
class BacktestResult:
    config: BotConfig
    symbols: tuple[str, ...]
    products: dict[str, Product]
    series: dict[str, CandleSeries]
    costs: ReplayCosts
    times: array  # epoch seconds of each step's close: every symbol's candle ends, merged
    equity: array  # the account's equity at each step
    exposed_bars: int  # steps with a position in any symbol
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
        """Candles replayed, over every symbol."""
        return sum(len(s) for s in self.series.values())

    def __repr__(self) -> str:  # short: asyncio may repr a finished task's result
        return (f"BacktestResult({', '.join(self.symbols)}, {self.candles} candles, {len(self.fills)} fills, "
                f"equity {self.start_equity} -> {self.end_equity})")


def backtest_config(spec: BacktestSpec, bar_seconds: int, data_dir: Path) -> BotConfig:
    """The bot's config for a backtest: defaults, the data's symbol and bar length,
    then ``--param``: the strategy's parameters and bot settings (checked as any config is)."""
    chosen = spec.strategy or spec.params.get("strategy") or BotConfig.model_fields["strategy"].default
    settings, params = split_params(spec.params, str(chosen))
    fixed = sorted(set(settings) & FIXED_KEYS)
    if fixed:
        raise BacktestError(f"--param {fixed[0]}: a backtest sets this itself (use --symbol / --timeframe)")
    base: dict[str, Any] = {"symbols": tuple(spec.symbols), "bar_seconds": bar_seconds, "data_dir": data_dir,
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


def _timeline(series: Sequence[CandleSeries]) -> tuple[Any, Any]:
    """Every candle of every series in time order (ties in the series' order): the index of
    its series and its row, as numpy arrays."""
    import numpy as np

    if len(series) == 1:
        n = len(series[0])
        return np.zeros(n, dtype=np.int32), np.arange(n, dtype=np.int64)
    starts = np.concatenate([np.frombuffer(s.start, dtype=np.float64) if isinstance(s.start, array)
                             else np.asarray(s.start, dtype=np.float64) for s in series])
    which = np.concatenate([np.full(len(s), k, dtype=np.int32) for k, s in enumerate(series)])
    rows = np.concatenate([np.arange(len(s), dtype=np.int64) for s in series])
    order = np.lexsort((which, starts))
    return which[order], rows[order]


async def run_backtest(
    series: CandleSeries | Sequence[CandleSeries],
    spec: BacktestSpec,
    *,
    data_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Replay the candles of one or several symbols over one account; ``progress`` gets the
    number of candles replayed so far."""
    listed = [series] if isinstance(series, CandleSeries) else list(series)
    symbols = tuple(spec.symbols)
    if [s.symbol for s in listed] != list(symbols):
        raise BacktestError(f"the candles are for {', '.join(s.symbol for s in listed)}, "
                            f"the backtest for {', '.join(symbols)}")
    if len(set(symbols)) != len(symbols):
        raise BacktestError(f"a symbol given twice: {', '.join(symbols)}")
    lengths = {s.bar_seconds for s in listed}
    if len(lengths) > 1:
        first, other = listed[0], next(s for s in listed if s.bar_seconds != listed[0].bar_seconds)
        raise BacktestError(f"the candles are not all of one length: {first.symbol} {first.bar_seconds} s, "
                            f"{other.symbol} {other.bar_seconds} s")
    g = listed[0].bar_seconds
    config = backtest_config(spec, g, data_dir)
    products = {symbol: product_for(symbol) for symbol in symbols}
    if spec.costs.funding_rate and not any(p.is_perpetual for p in products.values()):
        if len(products) == 1:
            (p,) = products.values()
            kind = "a dated future (no funding)" if p.is_derivative else "spot"
            raise BacktestError(f"--funding applies to perpetuals; {p.symbol} is {kind}")
        raise BacktestError(f"--funding applies to perpetuals; none of {', '.join(symbols)} is one")
    currencies = {p.quote for p in products.values()}
    if len(currencies) > 1:
        raise BacktestError(
            f"one account holds one currency: the symbols are quoted in {', '.join(sorted(currencies))}"
        )
    starts = [s.start[0] for s in listed if len(s)]
    clock = SimulatedClock(min(starts) if starts else 0.0)
    replay = ReplayExchange(
        list(products.values()), clock, bar_seconds=g, starting_cash=config.sim_starting_cash, costs=spec.costs,
        cash_currency=next(iter(currencies)),
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

    windows = [reg.market_data.windows[s.symbol] for s in listed]
    lanes = [replay.lanes[s.symbol] for s in listed]
    columns = [(s.start, s.open, s.high, s.low, s.close, s.volume) for s in listed]
    execution, risk = reg.execution, reg.risk
    process = reg.strategy.process_symbol
    watch = risk.watch_equity
    hold = Target.HOLD
    vol_bars = config.vol_window + 1
    times, curve = array("d"), array("d")
    stamp, push = times.append, curve.append
    exposed = 0
    a = replay.equity_a
    which, rows = _timeline(listed)
    n = len(which)
    single = len(listed) == 1
    started = time.perf_counter()

    async def sync() -> None:
        replay.changed = False
        cursor = execution.fill_cursor
        await execution.sync_orders()  # new fills: recorded, orders brought forward, account refreshed
        if execution.fill_cursor == cursor:  # funding only: no fills, the account still changed
            await execution.refresh_account()

    async def act(decision: Decision) -> None:
        await execution.refresh_account()
        risk.evaluate(execution.account.equity, {w_symbol: w.last_closes(vol_bars)
                                                 for w_symbol, w in zip(symbols, windows, strict=True)})
        if risk.killed and risk.flatten_requested:
            await execution.flatten_all()
        await execution.execute_decision(decision)

    step_end = 0.0  # the close of the step being gathered (candles ending together are one step)
    due: list[int] = []  # the series with a candle in that step

    async def decide(end: float) -> None:
        nonlocal exposed
        equity = a
        held = False
        for lane in lanes:
            if lane.b and lane.price is not None:
                equity += lane.b * lane.price
                held = True
        stamp(end)
        push(equity)
        watch(equity, end)
        if held:
            exposed += 1
        for k in due:
            decision = process(symbols[k])
            if decision.target is not hold:
                await act(decision)
        due.clear()

    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        for k, i in zip(which[lo:hi].tolist(), rows[lo:hi].tolist(), strict=True):
            t_, o_, h_, l_, c_, v_ = columns[k]
            t, o, h, low, c, v = t_[i], o_[i], h_[i], l_[i], c_[i], v_[i]
            end = t + g
            if not single and end != step_end:
                if due:
                    await decide(step_end)
                step_end = end
            clock.epoch = end  # the loop only moves forward (SimulatedClock.set, without the check)
            lane = lanes[k]
            if lane.busy:
                lane.on_bar(t, o, h, low, c)
                if replay.changed:
                    await sync()
                    a = replay.equity_a
            else:
                lane.price = c
            windows[k].append_bar(t, o, h, low, c, v)
            due.append(k)
            if single:
                await decide(end)
        if progress is not None:
            progress(hi)
    if due:
        await decide(step_end)  # the last step of several series
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
        config=config, symbols=symbols, products=products, series={s.symbol: s for s in listed}, costs=spec.costs,
        times=times, equity=curve, exposed_bars=exposed,
        start_equity=start_equity, end_equity=final.equity, fills=replay.fills,
        orders=orders.orders(run_id=run_id), funding=list(replay.funding), liquidations=replay.liquidations,
        events=events, risk_rejections=dict(sorted(rejections.items())), reasons=reasons, risk_changes=changes,
        risk_mode=mode, elapsed_seconds=elapsed, strategy_name=strategy.name, strategy_params=strategy.params,
    )
