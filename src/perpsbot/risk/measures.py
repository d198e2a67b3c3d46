"""The numbers risk decisions are made from: realized volatility, off-hours, liquidation distance."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from perpsbot.config.model import parse_hours
from perpsbot.domain import ZERO, Position, Side

SECONDS_PER_YEAR = 365 * 24 * 3600


def realized_volatility(closes: Sequence[Decimal | float], sample_seconds: float) -> float | None:
    """Annualized volatility of log returns sampled every ``sample_seconds``.

    The per-sample standard deviation scales with the square root of the number of
    samples in a year, so 1 s bars and 1 h bars of the same market give the same figure.
    """
    prices = [float(c) for c in closes]
    if len(prices) < 3 or min(prices) <= 0:
        return None
    returns = list(map(math.log, map(operator.truediv, prices[1:], prices)))
    mean = sum(returns) / len(returns)
    variance = sum([(r - mean) ** 2 for r in returns]) / (len(returns) - 1)
    return math.sqrt(variance) * math.sqrt(SECONDS_PER_YEAR / sample_seconds)


def is_off_hours(now: datetime, zone: str, night_hours: str, weekends: bool) -> bool:
    local = now.astimezone(ZoneInfo(zone))
    if weekends and local.weekday() >= 5:
        return True
    hours = parse_hours(night_hours) if night_hours else None
    if hours is None:
        return False
    start, end = hours
    t = local.time().replace(tzinfo=None)
    if start <= end:
        return start <= t < end
    return t >= start or t < end  # the night wraps past midnight


def projected_liquidation_distance(
    position: Position | None,
    symbol: str,
    side: Side,
    size: Decimal,
    mark: Decimal,
    leverage: Decimal,
    maintenance_margin_rate: Decimal,
    contract_size: Decimal,
) -> Decimal | None:
    """Distance from the mark to the liquidation price after the order, as a share of
    the mark; None when the order leaves no position."""
    after = position.copy() if position is not None else Position(symbol, contract_size=contract_size)
    after.apply_fill(side, size, mark)
    if after.is_flat:
        return None
    after.leverage = leverage
    liquidation = after.liquidation_price(maintenance_margin_rate)
    if liquidation is None:
        return None
    return abs(mark - liquidation) / mark


def venue_liquidation_distance(
    buffer: Decimal,
    position: Position | None,
    side: Side,
    size: Decimal,
    mark: Decimal,
    maintenance_rate: Decimal,
    contract_size: Decimal,
) -> Decimal | None:
    """Cross margin, as the venue reports it: how far the mark may move against the
    position after the order, as a share of the mark, before the account's liquidation
    buffer (its total margin over the maintenance of everything held) is gone — other
    positions held still. The order adds (or frees) maintenance at the product's rate; a
    move of x loses notional * x and changes the maintenance by -/+ notional * x * rate.
    None when the order leaves no position."""
    before = position.size if position is not None else ZERO
    after = before + size * side.sign
    if after == 0:
        return None
    unit = contract_size * mark
    left = buffer - (abs(after) - abs(before)) * unit * maintenance_rate
    if left <= 0:
        return ZERO
    lost_per_move = abs(after) * unit * (1 - maintenance_rate if after > 0 else 1 + maintenance_rate)
    return left / lost_per_move if lost_per_move > 0 else None
