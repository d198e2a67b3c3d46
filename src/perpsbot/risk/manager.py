"""RiskManager, first cut: leverage, position notional, mark staleness, daily loss,
and one reduce-only state with the reasons that put the bot in it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from perpsbot.config import BotConfig
from perpsbot.domain import Side
from perpsbot.domain.clock import Clock
from perpsbot.store import EventStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OrderIntent:
    symbol: str
    side: Side
    size: Decimal
    mark: Decimal
    position_size: Decimal  # signed size held before this order
    leverage: Decimal = Decimal(1)
    contract_size: Decimal = Decimal(1)

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


@dataclass(frozen=True, slots=True)
class RiskVerdict:
    approved: bool
    code: str
    detail: str


APPROVED = "approved"


class RiskManager:
    def __init__(
        self,
        config: BotConfig,
        clock: Clock,
        events: EventStore,
        mark_age: Callable[[str], float | None],
    ) -> None:
        self.config = config
        self.clock = clock
        self.events = events
        self._mark_age = mark_age
        self.reduce_only_reasons: list[str] = ["config"] if config.reduce_only else []
        self._day: date | None = None
        self._day_start_equity: Decimal | None = None

    @property
    def reduce_only(self) -> bool:
        return bool(self.reduce_only_reasons)

    def update_config(self, config: BotConfig) -> None:
        self.config = config
        if config.reduce_only:
            self.enter_reduce_only("config")
        else:
            self.leave_reduce_only("config")

    def enter_reduce_only(self, reason: str, detail: str = "") -> None:
        if reason in self.reduce_only_reasons:
            return
        self.reduce_only_reasons.append(reason)
        log.warning("reduce-only mode on: %s %s", reason, detail)
        self.events.append(
            self.clock.now(), "risk_mode", None, reduce_only=True, reason=reason, detail=detail,
            reasons=self.reduce_only_reasons,
        )

    def leave_reduce_only(self, reason: str) -> None:
        if reason not in self.reduce_only_reasons:
            return
        self.reduce_only_reasons.remove(reason)
        self.events.append(
            self.clock.now(), "risk_mode", None, reduce_only=self.reduce_only, reason=f"cleared {reason}",
            reasons=self.reduce_only_reasons,
        )

    def track_equity(self, equity: Decimal, now: datetime) -> None:
        """Feed equity every cycle; losing ``daily_loss_limit`` since UTC midnight
        switches to reduce-only until the next UTC day."""
        today = now.date()
        if today != self._day:
            self._day = today
            self._day_start_equity = equity
            self.leave_reduce_only("daily_loss")
            return
        assert self._day_start_equity is not None
        loss = self._day_start_equity - equity
        if loss >= self.config.daily_loss_limit:
            self.enter_reduce_only("daily_loss", f"lost {loss:.2f} today, limit {self.config.daily_loss_limit}")

    def check(self, intent: OrderIntent, equity: Decimal) -> RiskVerdict:
        verdict = self._evaluate(intent, equity)
        if not verdict.approved:
            self.events.append(
                self.clock.now(),
                "risk_rejected",
                intent.symbol,
                code=verdict.code,
                detail=verdict.detail,
                side=intent.side,
                size=intent.size,
            )
            log.info("risk rejected %s %s %s: %s", intent.side.value, intent.size, intent.symbol, verdict.detail)
        return verdict

    def _evaluate(self, intent: OrderIntent, equity: Decimal) -> RiskVerdict:
        if intent.reduces:
            return RiskVerdict(True, APPROVED, "reduces the position")
        if self.reduce_only:
            return RiskVerdict(
                False, "reduce_only_mode", f"reduce-only mode ({', '.join(self.reduce_only_reasons)})"
            )
        age = self._mark_age(intent.symbol)
        limit = self.config.mark_staleness_seconds
        if age is None:
            return RiskVerdict(False, "stale_mark", f"no mark for {intent.symbol}")
        if age > limit:
            return RiskVerdict(False, "stale_mark", f"mark is {age:.1f} s old, limit {limit:g} s")
        if intent.leverage > self.config.max_leverage:
            return RiskVerdict(
                False, "max_leverage", f"order leverage {intent.leverage} above max {self.config.max_leverage}"
            )
        notional = abs(intent.post_trade_size) * intent.mark * intent.contract_size
        if notional > self.config.max_position_notional:
            return RiskVerdict(
                False,
                "max_position_notional",
                f"position would be {notional:.2f} USD, cap {self.config.max_position_notional}",
            )
        if equity <= 0:
            return RiskVerdict(False, "max_leverage", "no equity")
        effective = notional / equity
        if effective > self.config.max_leverage:
            return RiskVerdict(
                False,
                "max_leverage",
                f"position would be {effective:.2f}x equity, max {self.config.max_leverage}x",
            )
        return RiskVerdict(True, APPROVED, "within limits")
