"""RiskManager: pre-trade checks for every order, running controls every cycle, and
one mode — normal, reduce-only or killed — each with the list of reasons behind it.

Pre-trade: kill, reduce-only, error cooldown, order rate, mark staleness (soft and
hard), leverage (global, per symbol, off-hours), order value, quantity, notional and
equity-share caps per symbol, total notional, liquidation distance, slippage.
Running: daily loss, drawdown (reduce-only, then kill), volatility (warn,
reduce-only, kill, with a cooldown), kill switch from config, env or sentinel file.
Every verdict and mode change is an event; the state survives restarts.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from perpsbot.config import BotConfig
from perpsbot.domain import OrderBook, Position, Product, Side, VenueMargin
from perpsbot.domain.clock import Clock
from perpsbot.risk.measures import (
    is_off_hours,
    projected_liquidation_distance,
    realized_volatility,
    venue_liquidation_distance,
)
from perpsbot.store import EventStore

log = logging.getLogger(__name__)

STATE_KEY = "risk"
KILL_FILE = "KILL"
BPS = Decimal(10_000)
DRAWDOWN_RECOVERY = Decimal("0.8")  # drawdown reduce-only lifts below 80 % of its limit
# Kill reasons that stay until a human resumes, even when their cause has passed.
LATCHED_PREFIXES = ("drawdown", "volatility:")


@dataclass(frozen=True, slots=True)
class OrderIntent:
    symbol: str
    side: Side
    size: Decimal
    mark: Decimal
    position_size: Decimal  # signed size held before this order
    leverage: Decimal = Decimal(1)
    contract_size: Decimal = Decimal(1)
    flatten: bool = False  # a closing order sent because of a kill with --flatten

    @property
    def post_trade_size(self) -> Decimal:
        return self.position_size + self.size * self.side.sign

    @property
    def reduces(self) -> bool:
        """True when the order only shrinks the position (never flips or grows it)."""
        after = self.post_trade_size
        return self.position_size != 0 and abs(after) < abs(self.position_size) and (
            after == 0 or (after > 0) == (self.position_size > 0)
        )

    @property
    def notional(self) -> Decimal:
        return self.size * self.mark * self.contract_size


@dataclass(frozen=True, slots=True)
class RiskVerdict:
    approved: bool
    code: str
    detail: str


APPROVED = "approved"
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPS = 1e-9


def kill_file_path(config: BotConfig) -> Path:
    return config.store_dir / KILL_FILE


def read_kill_file(path: Path) -> dict[str, Any] | None:
    """The sentinel's content (empty dict for an empty file), None when absent."""
    if not os.path.lexists(path):  # the usual case, without raising and catching
        return None
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"reason": f"unreadable kill file: {exc.strerror}"}
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {"reason": text[:200]}
    return data if isinstance(data, dict) else {"reason": str(data)[:200]}


class RiskManager:
    def __init__(
        self,
        config: BotConfig,
        clock: Clock,
        events: EventStore,
        mark_age: Callable[[str], float | None],
        *,
        mark_of: Callable[[str], Decimal | None] | None = None,
        products: Mapping[str, Product] | None = None,
        account_persists: bool = True,
    ) -> None:
        self.config = config
        self.clock = clock
        self.events = events
        self._mark_age = mark_age
        self.mark_of = mark_of or (lambda symbol: None)
        self.products = dict(products or {})
        self.account_persists = account_persists
        self.reduce_only_reasons: list[str] = []
        # Reduce-only for one symbol only (a holding our records cannot explain, a late fill).
        self.symbol_reduce_only: dict[str, list[str]] = {}
        self.kill_reasons: list[str] = []
        self.flatten_requested = False
        self.day: date | None = None
        self.day_start_equity: Decimal | None = None
        self.peak_equity: Decimal | None = None
        self.equity: Decimal | None = None
        self.volatility: dict[str, float] = {}
        self._calm_since: dict[str, datetime] = {}
        self._warned: set[str] = set()
        self.error_streak = 0
        self.cooldown_until: datetime | None = None
        self._order_times: deque[datetime] = deque()
        # The venue's margin figures from the last account read (None: it gives none, and
        # the liquidation check falls back to each product's flat maintenance rate).
        self.venue_margin: VenueMargin | None = None
        self.margin_window_change: dict[str, Any] | None = None  # the last one seen
        # The equity watch (``watch_equity``): float levels between which nothing can
        # change, worked out from the state above after each full check.
        self._peak_f = -math.inf
        self._low_alarm = math.inf  # at or below: check in full (inf: always, e.g. after a mode change)
        self._high_alarm = math.inf  # above: check in full (recovery from a drawdown)
        self._day_floor = -math.inf
        self._keep = 1.0
        self._in_drawdown = False
        self._next_day = -math.inf
        self._apply_config_reasons()

    @property
    def config(self) -> BotConfig:
        return self._config

    @config.setter
    def config(self, config: BotConfig) -> None:
        self._config = config
        # Asked for on every evaluation: worked out once per config.
        self._kill_path = kill_file_path(config)
        self._vol_levels = (float(config.vol_warn), float(config.vol_reduce_only), float(config.vol_kill))

    # ----- mode -----------------------------------------------------------------------

    @property
    def reduce_only(self) -> bool:
        return bool(self.reduce_only_reasons)

    def is_reduce_only(self) -> bool:
        """``reduce_only`` as a method, for callers that keep a reference to ask with."""
        return bool(self.reduce_only_reasons)

    @property
    def killed(self) -> bool:
        return bool(self.kill_reasons)

    @property
    def mode(self) -> str:
        if self.killed:
            return "killed"
        return "reduce-only" if self.reduce_only else "normal"

    def update_config(self, config: BotConfig) -> None:
        self.config = config
        self._low_alarm = math.inf
        self._apply_config_reasons()

    def _apply_config_reasons(self) -> None:
        if self.config.reduce_only:
            self.enter_reduce_only("config")
        else:
            self.leave_reduce_only("config")
        if self.config.kill_switch:
            self.enter_kill("config", "kill_switch is set")
        else:
            self.leave_kill("config")

    def _mode_event(self, **data: Any) -> None:
        self._low_alarm = math.inf  # the watch levels depend on the mode: work them out again
        self.events.append(
            self.clock.now(), "risk_mode", None, mode=self.mode, reduce_only=self.reduce_only_reasons,
            kill=self.kill_reasons, symbol_reduce_only=self.symbol_reduce_only, **data,
        )

    def enter_reduce_only(self, reason: str, detail: str = "") -> None:
        if reason in self.reduce_only_reasons:
            return
        self.reduce_only_reasons.append(reason)
        log.warning("reduce-only: %s %s", reason, detail)
        self._mode_event(change=f"reduce-only on: {reason}", detail=detail)

    def leave_reduce_only(self, reason: str) -> None:
        if reason not in self.reduce_only_reasons:
            return
        self.reduce_only_reasons.remove(reason)
        self._mode_event(change=f"reduce-only cleared: {reason}")

    def enter_symbol_reduce_only(self, symbol: str, reason: str, detail: str = "") -> None:
        """Only orders that reduce ``symbol``'s position pass until ``leave_symbol_reduce_only``."""
        reasons = self.symbol_reduce_only.setdefault(symbol, [])
        if reason in reasons:
            return
        reasons.append(reason)
        log.warning("reduce-only for %s: %s %s", symbol, reason, detail)
        self._mode_event(change=f"reduce-only on for {symbol}: {reason}", detail=detail)
        self.save()  # a crash before the next cycle must not forget it

    def leave_symbol_reduce_only(self, symbol: str, reason: str) -> None:
        reasons = self.symbol_reduce_only.get(symbol, [])
        if reason not in reasons:
            return
        reasons.remove(reason)
        if not reasons:
            del self.symbol_reduce_only[symbol]
        self._mode_event(change=f"reduce-only cleared for {symbol}: {reason}")
        self.save()

    def enter_kill(self, reason: str, detail: str = "") -> None:
        if reason in self.kill_reasons:
            return
        self.kill_reasons.append(reason)
        log.error("KILL: %s %s", reason, detail)
        self._mode_event(change=f"kill on: {reason}", detail=detail)

    def leave_kill(self, reason: str) -> None:
        if reason not in self.kill_reasons:
            return
        self.kill_reasons.remove(reason)
        self._mode_event(change=f"kill cleared: {reason}")

    # ----- limits ---------------------------------------------------------------------

    def off_hours(self, now: datetime | None = None) -> bool:
        cfg = self.config
        if cfg.off_hours_max_leverage is None:
            return False
        return is_off_hours(now or self.clock.now(), cfg.off_hours_timezone, cfg.night_hours, cfg.weekend_off_hours)

    def leverage_cap(self, symbol: str, now: datetime | None = None) -> Decimal:
        cfg = self.config
        caps = [cfg.max_leverage]
        if symbol in cfg.symbol_max_leverage:
            caps.append(cfg.symbol_max_leverage[symbol])
        if cfg.off_hours_max_leverage is not None and self.off_hours(now):
            caps.append(cfg.off_hours_max_leverage)
        return min(caps)

    def notional_cap(self, symbol: str) -> Decimal:
        return self.config.symbol_max_notional.get(symbol, self.config.max_position_notional)

    # ----- pre-trade --------------------------------------------------------------------

    def check(
        self,
        intent: OrderIntent,
        equity: Decimal,
        positions: Mapping[str, Position] | None = None,
        book: OrderBook | None = None,
    ) -> RiskVerdict:
        verdict = self._evaluate(intent, equity, positions or {}, book)
        now = self.clock.now()
        kind = "risk_approved" if verdict.approved else "risk_rejected"
        self.events.append_later(
            now, kind, intent.symbol, code=verdict.code, detail=verdict.detail, side=intent.side,
            size=intent.size, reduces=intent.reduces,
        )
        if verdict.approved:
            self._order_times.append(now)
        else:
            log.info("risk rejected %s %s %s: %s", intent.side.value, intent.size, intent.symbol, verdict.detail)
        return verdict

    def _evaluate(
        self, intent: OrderIntent, equity: Decimal, positions: Mapping[str, Position], book: OrderBook | None
    ) -> RiskVerdict:
        cfg = self.config
        now = self.clock.now()
        if self.killed and not intent.flatten:
            return RiskVerdict(False, "kill_switch", f"killed ({', '.join(self.kill_reasons)})")
        if intent.reduces:
            return RiskVerdict(True, APPROVED, "reduces the position")
        if intent.flatten:
            return RiskVerdict(False, "kill_switch", "a flatten order may only reduce")
        if self.reduce_only:
            return RiskVerdict(False, "reduce_only_mode", f"reduce-only mode ({', '.join(self.reduce_only_reasons)})")
        if reasons := self.symbol_reduce_only.get(intent.symbol):
            return RiskVerdict(
                False, "reduce_only_symbol", f"{intent.symbol} is reduce-only ({', '.join(reasons)})"
            )
        if self.cooldown_until is not None and now < self.cooldown_until:
            left = (self.cooldown_until - now).total_seconds()
            return RiskVerdict(
                False, "error_cooldown", f"{self.error_streak} failures in a row; {left:.0f} s of cooldown left"
            )
        recent = self._orders_in_last_minute(now)
        if recent >= cfg.max_orders_per_minute:
            return RiskVerdict(
                False, "order_rate", f"{recent} orders in the last minute, limit {cfg.max_orders_per_minute}"
            )
        age = self._mark_age(intent.symbol)
        if age is None:
            return RiskVerdict(False, "stale_mark", f"no mark for {intent.symbol}")
        if age > cfg.mark_staleness_seconds:
            return RiskVerdict(False, "stale_mark", f"mark is {age:.1f} s old, limit {cfg.mark_staleness_seconds:g} s")
        if age > cfg.mark_warn_seconds:
            self.events.append(now, "risk_warning", intent.symbol, code="stale_mark_soft", age=round(age, 3))
        cap = self.leverage_cap(intent.symbol, now)
        if intent.leverage > cap:
            return RiskVerdict(False, "max_leverage", f"order leverage {intent.leverage} above the cap {cap}")
        if intent.notional > cfg.max_order_notional:
            return RiskVerdict(
                False, "max_order_value", f"order is {intent.notional:.2f} USD, cap {cfg.max_order_notional}"
            )
        after = intent.post_trade_size
        quantity_cap = cfg.symbol_max_quantity.get(intent.symbol)
        if quantity_cap is not None and abs(after) > quantity_cap:
            return RiskVerdict(False, "max_quantity", f"position would be {abs(after)}, cap {quantity_cap}")
        position_notional = abs(after) * intent.mark * intent.contract_size
        if position_notional > self.notional_cap(intent.symbol):
            return RiskVerdict(
                False, "max_position_notional",
                f"position would be {position_notional:.2f} USD, cap {self.notional_cap(intent.symbol)}",
            )
        if equity <= 0:
            return RiskVerdict(False, "max_leverage", "no equity")
        share = position_notional / equity
        if share > cfg.max_position_equity_share:
            return RiskVerdict(
                False,
                "max_position_share",
                f"position would be {share:.2f}x equity, cap {cfg.max_position_equity_share}x",
            )
        total = position_notional + self._other_notional(intent.symbol, positions)
        if total > cfg.max_total_notional:
            return RiskVerdict(
                False, "max_total_notional", f"all positions would be {total:.2f} USD, cap {cfg.max_total_notional}"
            )
        if total / equity > cap:
            return RiskVerdict(False, "max_leverage", f"account would be at {total / equity:.2f}x, cap {cap}x")
        product = self.products.get(intent.symbol)
        if product is not None and product.is_derivative:
            refused = self._liquidation_check(intent, product, positions.get(intent.symbol))
            if refused is not None:
                return refused
        if book is None:
            return RiskVerdict(False, "slippage", "no order book to estimate the fill")
        expected, filled = book.expected_fill(intent.side, intent.size)
        if expected is None or filled < intent.size:
            return RiskVerdict(False, "slippage", f"the book holds only {filled} of {intent.size}")
        slippage = abs(expected - intent.mark) / intent.mark * BPS
        if slippage > cfg.max_slippage_bps:
            return RiskVerdict(
                False,
                "slippage",
                f"expected fill {expected:.2f} is {slippage:.1f} bps from the mark, cap {cfg.max_slippage_bps}",
            )
        return RiskVerdict(True, APPROVED, "within limits")

    def _liquidation_check(self, intent: OrderIntent, product: Product, held: Position | None) -> RiskVerdict | None:
        """The distance to liquidation after the order: from the venue's liquidation buffer
        and the product's maintenance rate in the window in force when the venue states
        them; else isolated, at the product's flat ``maintenance_margin_rate``."""
        minimum = self.config.min_liquidation_distance_pct
        margin = self.venue_margin
        after = intent.post_trade_size
        rate = margin.maintenance_rate(intent.symbol, after > 0) if margin is not None and after else None
        if margin is not None and rate is not None:
            distance = venue_liquidation_distance(
                margin.liquidation_buffer, held, intent.side, intent.size, intent.mark, rate, intent.contract_size
            )
            if distance is not None and distance < minimum:
                return RiskVerdict(
                    False, "liquidation_buffer",
                    f"the venue's liquidation buffer ({margin.liquidation_buffer:.2f} USD, {margin.window} "
                    f"maintenance {rate:.2%}) would be {distance:.2%} of the mark away, minimum {minimum:.2%}",
                )
            return None
        distance = projected_liquidation_distance(
            held, intent.symbol, intent.side, intent.size, intent.mark,
            intent.leverage, product.maintenance_margin_rate, intent.contract_size,
        )
        if distance is not None and distance < minimum:
            return RiskVerdict(
                False, "liquidation_buffer",
                f"liquidation would be {distance:.2%} from the mark (flat maintenance "
                f"{product.maintenance_margin_rate:.2%}), minimum {minimum:.2%}",
            )
        return None

    def note_margin(self, margin: VenueMargin | None) -> None:
        """Take the venue's margin figures from an account read; a change of margin window
        (intraday <-> overnight) is recorded as an event."""
        before, self.venue_margin = self.venue_margin, margin
        if margin is None or before is None or before.window == margin.window:
            return
        now = self.clock.now()
        self.margin_window_change = {"from": before.window, "to": margin.window, "at": now, "ends": margin.window_ends}
        self.events.append(now, "margin_window_changed", None, previous=before.window, window=margin.window,
                           ends=margin.window_ends)
        log.info("margin window: %s -> %s (until %s)", before.window, margin.window, margin.window_ends)

    def margin_state(self) -> dict[str, Any]:
        """What ``risk status`` shows of the margin the liquidation check works from."""
        flat = {s: p.maintenance_margin_rate for s, p in self.products.items() if p.is_perpetual}
        margin = self.venue_margin
        if margin is None:
            same = {s: {"long": r, "short": r} for s, r in flat.items()}
            return {"source": "flat default", "maintenance_rates": same}
        listed = {s: {"long": margin.maintenance_rate(s, True), "short": margin.maintenance_rate(s, False)}
                  for s in margin.rates}
        return {
            "source": "venue", "window": margin.window, "window_ends": margin.window_ends,
            "window_change": self.margin_window_change, "total_balance": margin.total_balance,
            "buying_power": margin.buying_power, "initial_margin": margin.initial_margin,
            "maintenance_margin": margin.maintenance_margin, "liquidation_threshold": margin.liquidation_threshold,
            "liquidation_buffer": margin.liquidation_buffer, "liquidation_buffer_pct": margin.liquidation_buffer_pct,
            "maintenance_rates": listed,
            "flat_default": {s: r for s, r in flat.items() if s not in listed},  # products the venue gives no rate for
            "sweeps": [{"id": w.sweep_id, "status": w.status, "amount": w.amount, "scheduled_at": w.scheduled_at}
                       for w in margin.sweeps],
        }

    def _other_notional(self, symbol: str, positions: Mapping[str, Position]) -> Decimal:
        total = Decimal(0)
        for other, position in positions.items():
            if other == symbol or position.is_flat:
                continue
            from_mark = self.mark_of(other)
            total += position.notional(from_mark if from_mark is not None else position.entry_price)
        return total

    def _orders_in_last_minute(self, now: datetime) -> int:
        horizon = now - timedelta(minutes=1)
        while self._order_times and self._order_times[0] <= horizon:
            self._order_times.popleft()
        return len(self._order_times)

    # ----- results of orders --------------------------------------------------------------

    def record_order_result(self, ok: bool) -> None:
        if ok:
            if self.error_streak:
                self.error_streak = 0
            return
        self.error_streak += 1
        if self.error_streak >= self.config.error_streak_limit:
            self.cooldown_until = self.clock.now() + timedelta(seconds=self.config.error_cooldown_seconds)
            self._mode_event(change="error cooldown", streak=self.error_streak, until=self.cooldown_until)

    # ----- running controls -----------------------------------------------------------------

    def evaluate(self, equity: Decimal, closes: Mapping[str, Sequence[Decimal | float]]) -> None:
        """Run every cycle: the kill sources, daily loss, drawdown and volatility."""
        now = self.clock.now()
        self._check_kill_file()
        self.track_equity(equity, now)
        for symbol, series in closes.items():
            self._check_volatility(symbol, series[-(self.config.vol_window + 1) :], now)
        for symbol in [s for s in self.volatility if s not in closes]:
            self.forget(symbol)
        self._run_commands(now)
        self.save()

    def _check_kill_file(self) -> None:
        content = read_kill_file(self._kill_path)
        if content is None:
            self.leave_kill("kill_file")
            if not self.killed:
                self.flatten_requested = False
            return
        if content.get("flatten"):
            self.flatten_requested = True
        self.enter_kill("kill_file", str(content.get("reason", "kill file present")))

    def track_equity(self, equity: Decimal, now: datetime) -> None:
        """Daily loss since UTC midnight (realized + unrealized + fees + funding all move
        equity) switches to reduce-only until the next UTC day; drawdown from the
        equity peak switches to reduce-only, then kills."""
        cfg = self.config
        self.equity = equity
        today = now.date()
        if today != self.day or self.day_start_equity is None:
            self.day = today
            self.day_start_equity = equity
            self.leave_reduce_only("daily_loss")
        loss = self.day_start_equity - equity
        if loss >= cfg.daily_loss_limit:
            self.enter_reduce_only("daily_loss", f"lost {loss:.2f} today, limit {cfg.daily_loss_limit}")
        self.peak_equity = equity if self.peak_equity is None else max(self.peak_equity, equity)
        if self._peak_f > float(self.peak_equity):  # a higher equity seen by the watch in between
            self.peak_equity = Decimal(repr(self._peak_f))
        drawdown = self.drawdown
        if drawdown >= cfg.kill_drawdown_pct:
            self.enter_kill("drawdown", f"drawdown {drawdown:.2%}, kill at {cfg.kill_drawdown_pct:.2%}")
        if drawdown >= cfg.max_drawdown_pct:
            self.enter_reduce_only("drawdown", f"drawdown {drawdown:.2%}, limit {cfg.max_drawdown_pct:.2%}")
        elif drawdown < cfg.max_drawdown_pct * DRAWDOWN_RECOVERY:
            # Lifted only once clearly back inside the limit, so a drawdown hovering at it
            # does not switch the mode on and off every cycle.
            self.leave_reduce_only("drawdown")

    def watch_equity(self, equity: float, epoch: float) -> None:
        """The daily-loss and drawdown controls on every new equity figure, cheaply.

        A backtest calls this on every candle. Float levels (the drawdown floor under
        the peak, the day's loss floor, the next UTC midnight, the recovery level in a
        drawdown) are compared first; only crossing one of them runs ``track_equity``
        — the same code the live cycle runs — which then sets the levels again. So a
        candle that changes nothing costs a few comparisons."""
        if equity > self._peak_f:
            self._peak_f = equity
            if self._in_drawdown:
                self._full_check(equity, epoch)
                return
            floor = equity * self._keep
            self._low_alarm = floor if floor > self._day_floor else self._day_floor
        if equity <= self._low_alarm or equity > self._high_alarm or epoch >= self._next_day:
            self._full_check(equity, epoch)

    def _full_check(self, equity: float, epoch: float) -> None:
        self.track_equity(Decimal(repr(equity)), self.clock.now())
        # The levels lean a hair (_EPS) towards checking: a float rounding never skips
        # a check the Decimal one would have acted on; it only costs a spare check.
        cfg = self.config
        peak = max(self._peak_f, float(self.peak_equity)) if self.peak_equity is not None else equity
        self._peak_f = peak
        keep = 1.0 - float(cfg.max_drawdown_pct)
        self._keep = keep * (1 + _EPS)
        in_loss = "daily_loss" in self.reduce_only_reasons
        if in_loss or self.day_start_equity is None:
            self._day_floor = -math.inf
        else:
            floor = float(self.day_start_equity - cfg.daily_loss_limit)
            self._day_floor = floor + abs(floor) * _EPS
        self._in_drawdown = "drawdown" in self.reduce_only_reasons
        if self._in_drawdown:
            recovered = 1.0 - float(cfg.max_drawdown_pct * DRAWDOWN_RECOVERY)
            self._high_alarm = peak * recovered * (1 - _EPS)
            killed = "drawdown" in self.kill_reasons
            low = -math.inf if killed else peak * (1.0 - float(cfg.kill_drawdown_pct)) * (1 + _EPS)
        else:
            self._high_alarm = math.inf
            low = peak * self._keep
        self._low_alarm = max(low, self._day_floor)
        day = self.day or self.clock.now().date()
        self._next_day = (day.toordinal() - _EPOCH_ORDINAL + 1) * 86400.0

    @property
    def drawdown(self) -> Decimal:
        if not self.peak_equity or self.equity is None or self.peak_equity <= 0:
            return Decimal(0)
        return max(Decimal(0), 1 - self.equity / self.peak_equity)

    def _check_volatility(self, symbol: str, closes: Sequence[Decimal | float], now: datetime) -> None:
        cfg = self.config
        vol = realized_volatility(closes, cfg.bar_seconds)
        if vol is None:
            return
        self.volatility[symbol] = vol
        reason = f"volatility:{symbol}"
        warn, reduce_only, kill = self._vol_levels
        if vol >= kill:
            self.enter_kill(reason, f"{self._vol_detail(symbol, vol)}, kill at {cfg.vol_kill:.0%}")
        if vol >= reduce_only:
            self._calm_since.pop(symbol, None)
            self.enter_reduce_only(reason, f"{self._vol_detail(symbol, vol)}, reduce-only at {cfg.vol_reduce_only:.0%}")
        elif reason in self.reduce_only_reasons:
            calm = self._calm_since.setdefault(symbol, now)
            if (now - calm).total_seconds() >= cfg.vol_cooldown_seconds:
                self._calm_since.pop(symbol, None)
                self.leave_reduce_only(reason)
        if vol >= warn:
            if symbol not in self._warned:
                self._warned.add(symbol)
                self.events.append(now, "risk_warning", symbol, code="volatility", volatility=round(vol, 4))
        else:
            self._warned.discard(symbol)

    @staticmethod
    def _vol_detail(symbol: str, vol: float) -> str:
        return f"{symbol} realized volatility {vol:.0%} annualized"

    def forget(self, symbol: str) -> None:
        self.volatility.pop(symbol, None)
        self._calm_since.pop(symbol, None)
        self._warned.discard(symbol)
        self.leave_reduce_only(f"volatility:{symbol}")

    # ----- resume -------------------------------------------------------------------------

    def resume_blockers(self) -> list[str]:
        """Why a resume would be refused right now (empty: it would succeed)."""
        cfg = self.config
        blockers = []
        if cfg.kill_switch:
            blockers.append("kill_switch is set in the config")
        if read_kill_file(kill_file_path(cfg)) is not None:
            blockers.append(f"the kill file {kill_file_path(cfg)} is present")
        if "drawdown" in self.kill_reasons and self.drawdown >= cfg.kill_drawdown_pct:
            blockers.append(f"drawdown {self.drawdown:.2%} is still beyond {cfg.kill_drawdown_pct:.2%}")
        for reason in self.kill_reasons:
            if reason.startswith("volatility:"):
                symbol = reason.split(":", 1)[1]
                vol = self.volatility.get(symbol)
                if vol is not None and vol >= float(cfg.vol_kill):
                    blockers.append(f"{symbol} volatility {vol:.0%} is still beyond {cfg.vol_kill:.0%}")
        return blockers

    def resume(self) -> str:
        blockers = self.resume_blockers()
        if blockers:
            self._mode_event(change="resume refused", blockers=blockers)
            return "refused: " + "; ".join(blockers)
        for reason in [r for r in self.kill_reasons if r.startswith(LATCHED_PREFIXES)]:
            self.leave_kill(reason)
        self.flatten_requested = False
        self.cooldown_until = None
        self.error_streak = 0
        self._mode_event(change="resumed")
        return "resumed"

    def _run_commands(self, now: datetime) -> None:
        # Order commands (cancel, close, ...) are the ExecutionCoordinator's.
        for command_id, command, _args in self.events.pending_commands():
            if command == "resume":
                self.events.complete_command(command_id, now, self.resume())

    # ----- persistence ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reduce_only": list(self.reduce_only_reasons),
            "symbol_reduce_only": {s: list(r) for s, r in self.symbol_reduce_only.items()},
            "kill": list(self.kill_reasons),
            "flatten": self.flatten_requested,
            "day": self.day.isoformat() if self.day else None,
            "day_start_equity": self.day_start_equity,
            "peak_equity": self.peak_equity,
            "equity": self.equity,
            "drawdown": self.drawdown,
            "volatility": {s: round(v, 6) for s, v in self.volatility.items()},
            "error_streak": self.error_streak,
            "cooldown_until": self.cooldown_until,
            "orders_last_minute": self._orders_in_last_minute(self.clock.now()),
            "account_persists": self.account_persists,
            "margin": self.margin_state(),
        }

    def save(self) -> None:
        self.events.put_state(STATE_KEY, self.snapshot(), self.clock.now())

    def restore(self, *, announce: bool = True) -> None:
        """Bring back the mode and its reasons from the last run. Equity marks (day start,
        peak) come back only when the account itself outlives the process."""
        stored = self.events.get_state(STATE_KEY)
        if stored is None:
            return
        state, _ = stored
        for reason in state.get("reduce_only", []):
            if reason != "config" and reason not in self.reduce_only_reasons:
                self.reduce_only_reasons.append(reason)
        for symbol, reasons in (state.get("symbol_reduce_only") or {}).items():
            held = self.symbol_reduce_only.setdefault(symbol, [])
            held.extend(r for r in reasons if r not in held)
        for reason in state.get("kill", []):
            if reason.startswith(LATCHED_PREFIXES) and reason not in self.kill_reasons:
                self.kill_reasons.append(reason)
        self.flatten_requested = bool(state.get("flatten")) and self.killed
        self.volatility.update({s: float(v) for s, v in state.get("volatility", {}).items()})
        if self.account_persists:
            if state.get("day"):
                self.day = date.fromisoformat(state["day"])
            for key in ("day_start_equity", "peak_equity", "equity"):
                if state.get(key) is not None:
                    setattr(self, key, Decimal(state[key]))
        else:
            self.reduce_only_reasons = [
                r for r in self.reduce_only_reasons if r not in ("daily_loss", "drawdown")
            ]
        if announce and (self.reduce_only_reasons or self.kill_reasons or self.symbol_reduce_only):
            self._mode_event(change="restored from the last run")
