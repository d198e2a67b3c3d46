"""CFM margin in the simulator: the intraday and overnight windows and each one's rates.

Coinbase margins its US futures per window: intraday on weekdays from 8 am to 4 pm New
York time (for an account enrolled in intraday margin), overnight otherwise, at higher
rates. The simulator's rule: a product's intraday initial rate is ``1 / max_leverage``,
overnight 2.5 times that (at most 1: BIP 10 % and 25 %); maintenance is half the initial
margin; the account is liquidated when its total margin falls under the maintenance of
everything it holds — so a position at the intraday maximum does not outlive 4 pm.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from perpsbot.domain import Product

INTRADAY = "FCM_MARGIN_WINDOW_TYPE_INTRADAY"
OVERNIGHT = "FCM_MARGIN_WINDOW_TYPE_OVERNIGHT"
OVERNIGHT_FACTOR = Decimal("2.5")
MAINTENANCE_SHARE = Decimal("0.5")

_NEW_YORK = ZoneInfo("America/New_York")
_INTRADAY_OPEN, _INTRADAY_CLOSE = time(8), time(16)
_ONE = Decimal(1)


def margin_window(now: datetime) -> tuple[str, datetime]:
    """The CFM margin window at ``now`` and when it ends: intraday on weekdays from 8 am
    to 4 pm New York time, overnight the rest of the time."""
    local = now.astimezone(_NEW_YORK)
    opens = datetime.combine(local.date(), _INTRADAY_OPEN, _NEW_YORK)
    closes = datetime.combine(local.date(), _INTRADAY_CLOSE, _NEW_YORK)
    if local.weekday() < 5 and opens <= local < closes:
        return INTRADAY, closes.astimezone(now.tzinfo)
    day = local.date() + timedelta(days=0 if local < opens else 1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return OVERNIGHT, datetime.combine(day, _INTRADAY_OPEN, _NEW_YORK).astimezone(now.tzinfo)


def initial_rate(product: Product, window: str) -> Decimal:
    """The listed margin rate of ``product`` in ``window`` (the same long and short)."""
    intraday = _ONE / product.max_leverage
    return intraday if window == INTRADAY else min(_ONE, intraday * OVERNIGHT_FACTOR)


def maintenance_rate(product: Product, window: str) -> Decimal:
    return initial_rate(product, window) * MAINTENANCE_SHARE


def applicable(window: str, enrolled: bool) -> str:
    """Whose rates apply in ``window``: the intraday window's only for an account enrolled
    in intraday margin (``INTRADAY_MARGIN_SETTING_INTRADAY``); else the overnight ones."""
    return window if enrolled else OVERNIGHT


def rates_window(now: datetime, enrolled: bool) -> str:
    """Whose rates apply at ``now``."""
    return applicable(margin_window(now)[0], enrolled)
