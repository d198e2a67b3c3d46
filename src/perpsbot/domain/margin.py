"""What a derivatives venue reports about an account's margin, and the funding it settled.

Coinbase's US futures (CFM) margin the whole account at once: the venue liquidates when
the account's total margin falls under the maintenance requirement of everything held,
and the margin rates change with the window (intraday on weekdays 8 am - 4 pm New York
time, overnight otherwise). The risk manager measures the distance to liquidation from
these figures when a venue gives them, and from ``Product.maintenance_margin_rate`` only
when it gives none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class MarginRates:
    """A product's listed margin requirement in one window, as a share of notional."""

    long: Decimal
    short: Decimal

    def for_side(self, long: bool) -> Decimal:
        return self.long if long else self.short


@dataclass(frozen=True, slots=True)
class Sweep:
    """A pending or processing transfer out of the futures account (``/cfm/sweeps``)."""

    sweep_id: str
    status: str
    amount: Decimal | None  # None: sweep everything
    scheduled_at: datetime | None


@dataclass(frozen=True, slots=True)
class VenueMargin:
    """The account's margin as the venue states it, in the window now in force."""

    window: str  # intraday | overnight | ... (the venue's window, lower case)
    window_ends: datetime | None
    total_balance: Decimal
    buying_power: Decimal
    initial_margin: Decimal
    maintenance_margin: Decimal
    liquidation_threshold: Decimal
    liquidation_buffer: Decimal
    liquidation_buffer_pct: Decimal | None
    rates: Mapping[str, MarginRates] = field(default_factory=dict)  # the window's listed rates per product
    sweeps: tuple[Sweep, ...] = ()

    def maintenance_rate(self, symbol: str, long: bool) -> Decimal | None:
        """The product's maintenance rate in this window: its listed (initial) rate scaled
        by the account's maintenance / initial margin; with nothing held to scale by, the
        listed rate itself (maintenance never exceeds initial). None: not listed."""
        rates = self.rates.get(symbol)
        if rates is None:
            return None
        listed = rates.for_side(long)
        if self.initial_margin > 0 and 0 < self.maintenance_margin <= self.initial_margin:
            return listed * self.maintenance_margin / self.initial_margin
        return listed


@dataclass(frozen=True, slots=True)
class FundingSettlement:
    """Funding the venue settled in cash on one product at ``at`` (received; < 0: paid)."""

    symbol: str
    at: datetime
    amount: Decimal
