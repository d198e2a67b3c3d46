"""PnL per position and in total, from our own fill ledger.

Realized PnL and fees come from replaying the fills (average-cost, a flip closes the
old position and opens the rest at the fill price, as ``Position.apply_fill`` does);
unrealized from the mark; funding from what the exchange reports it settled on each
position (the port has no funding history of its own). Equity is the starting equity
plus all of it, so it can be checked against the exchange's own figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from perpsbot.domain import ZERO, AccountSnapshot, Fill, Position, Product


@dataclass(frozen=True)
class PositionPnl:
    symbol: str
    size: Decimal
    entry_price: Decimal
    mark: Decimal | None
    realized: Decimal
    unrealized: Decimal
    fees: Decimal
    funding: Decimal

    @property
    def net(self) -> Decimal:
        return self.realized + self.unrealized - self.fees + self.funding


@dataclass(frozen=True)
class PnlReport:
    positions: dict[str, PositionPnl] = field(default_factory=dict)

    def _sum(self, name: str) -> Decimal:
        return sum((getattr(p, name) for p in self.positions.values()), ZERO)

    @property
    def realized(self) -> Decimal:
        return self._sum("realized")

    @property
    def unrealized(self) -> Decimal:
        return self._sum("unrealized")

    @property
    def fees(self) -> Decimal:
        return self._sum("fees")

    @property
    def funding(self) -> Decimal:
        return self._sum("funding")

    @property
    def net(self) -> Decimal:
        return self.realized + self.unrealized - self.fees + self.funding

    def equity(self, start_equity: Decimal) -> Decimal:
        return start_equity + self.net

    def as_dict(self) -> dict[str, object]:
        return {
            "realized": self.realized, "unrealized": self.unrealized, "fees": self.fees, "funding": self.funding,
            "net": self.net,
            "positions": {
                s: {"size": p.size, "entry_price": p.entry_price, "mark": p.mark, "realized": p.realized,
                    "unrealized": p.unrealized, "fees": p.fees, "funding": p.funding, "net": p.net}
                for s, p in self.positions.items()
            },
        }


def pnl_from_fills(
    fills: Iterable[Fill],
    marks: Mapping[str, Decimal | None],
    funding: Mapping[str, Decimal] | None = None,
    contract_sizes: Mapping[str, Decimal] | None = None,
    opening: Mapping[str, tuple[Decimal, Decimal]] | None = None,
) -> PnlReport:
    """Replay ``fills`` in order; ``marks`` value what is still held; ``funding``: the
    funding settled per symbol (cash to the account, positive = received); ``opening``:
    what was held when the fills began, ``(signed size, price)`` per symbol — valued at the
    mark of that moment, so a run's PnL is what its equity moved by, not what an earlier
    run made on the position it handed over."""
    held: dict[str, Position] = {}
    for symbol, (size, price) in (opening or {}).items():
        if size:
            held[symbol] = Position(
                symbol, size=size, entry_price=price, contract_size=(contract_sizes or {}).get(symbol, Decimal(1))
            )
    for fill in fills:
        position = held.get(fill.symbol)
        if position is None:
            size = (contract_sizes or {}).get(fill.symbol, Decimal(1))
            position = held[fill.symbol] = Position(fill.symbol, contract_size=size)
        position.apply_fill(fill.side, fill.size, fill.price, fill.fee)
    for symbol in (funding or {}):
        if symbol not in held:
            held[symbol] = Position(symbol)
    out = {}
    for symbol, position in held.items():
        mark = marks.get(symbol)
        unrealized = position.unrealized_pnl(mark) if mark is not None and position.size else ZERO
        out[symbol] = PositionPnl(
            symbol, position.size, position.entry_price, mark, position.realized_pnl, unrealized, position.fees,
            (funding or {}).get(symbol, ZERO),
        )
    return PnlReport(out)


def opening_positions(recorded: Mapping[str, object] | None) -> dict[str, tuple[Decimal, Decimal]]:
    """The ``opening_positions`` a ``bot_started`` event recorded, as ``pnl_from_fills`` takes
    them; an entry that cannot be read is left out (a run recorded before they were kept has none)."""
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for symbol, held in (recorded or {}).items():
        try:
            out[symbol] = (Decimal(str(held["size"])), Decimal(str(held["price"])))  # type: ignore[index]  # any shape: the except below
        except (KeyError, TypeError, ArithmeticError, ValueError):
            continue
    return out


COLLATERAL = frozenset({"USD", "USDC"})


def collateral_equity(
    account: AccountSnapshot,
    marks: Mapping[str, Decimal | None],
    products: Mapping[str, Product],
    collateral: frozenset[str] = COLLATERAL,
) -> Decimal:
    """Equity from what the account holds: every collateral balance (available + on hold)
    at par, other currencies at the mark of a spot product that prices them in one, and
    each perpetual's isolated margin (entry notional / leverage) plus its unrealized PnL
    at the mark. A currency or position without a mark is left out."""
    total = ZERO
    spot_for = {p.base: s for s, p in products.items() if not p.is_derivative and p.quote in collateral}
    for currency, balance in account.balances.items():
        if currency in collateral:
            total += balance.total
        elif balance.total and currency in spot_for and marks.get(spot_for[currency]) is not None:
            total += balance.total * marks[spot_for[currency]]  # type: ignore[operator]  # not None: checked above
    for symbol, position in account.positions.items():
        product = products.get(symbol)
        if product is None or not product.is_derivative or position.is_flat:
            continue
        mark = marks.get(symbol)
        if mark is None:
            continue
        margin = abs(position.size) * position.entry_price * position.contract_size / position.leverage
        total += margin + position.unrealized_pnl(mark)
    return total
