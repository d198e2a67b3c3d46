"""Perpetual funding carry: hold the side that is paid funding."""

from __future__ import annotations

from decimal import Decimal

from perpsbot.domain import Product
from perpsbot.strategy.api import Context, Param, Signal, Strategy, flat, go_long, go_short, hold


class FundingCarry(Strategy):
    """Perpetuals only. Short while the funding rate is above enter_rate (longs pay
    shorts), long while it is below -enter_rate; flat once the side held is paid less than
    exit_rate. Sized at fraction of equity."""

    name = "funding_carry"
    enter_rate = Param(Decimal, Decimal("0.0001"), low=0, high=Decimal("0.01"), help="per funding interval")
    exit_rate = Param(Decimal, Decimal("0.00002"), low=0, high=Decimal("0.01"))
    fraction = Param(Decimal, Decimal("0.2"), low=Decimal("0.001"), high=1, help="share of equity per position")

    def check(self) -> str | None:
        return None if self.exit_rate <= self.enter_rate else "exit_rate must not exceed enter_rate"

    def trades(self, product: Product) -> bool:
        return product.is_perpetual

    def on_bar(self, ctx: Context) -> Signal | None:
        funding = ctx.funding
        if funding is None:
            return hold("no funding rate known")
        rate, held = funding.rate, ctx.size
        if (held > 0 and rate > -self.exit_rate) or (held < 0 and rate < self.exit_rate):
            return flat(f"funding {rate}: the side held is paid under {self.exit_rate}")
        if held or ctx.reduce_only:
            return hold(f"funding {rate}")
        if rate > self.enter_rate and ctx.shorts_allowed:
            return go_short(f"funding {rate}: shorts are paid", fraction=self.fraction)
        if rate < -self.enter_rate:
            return go_long(f"funding {rate}: longs are paid", fraction=self.fraction)
        return hold(f"funding {rate}")
