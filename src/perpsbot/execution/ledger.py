"""Position history rebuilt from fills: each episode from open to flat, per symbol."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from perpsbot.domain import ZERO, Fill, Position, Product, Side


@dataclass
class PositionEpisode:
    symbol: str
    direction: Side  # BUY = long, SELL = short
    opened_at: datetime
    closed_at: datetime | None = None
    max_size: Decimal = ZERO
    entry_price: Decimal = ZERO
    exit_notional: Decimal = ZERO
    exit_size: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    fills: int = 0
    size: Decimal = ZERO  # signed, what is still held
    trade_ids: list[str] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    @property
    def exit_price(self) -> Decimal | None:
        return self.exit_notional / self.exit_size if self.exit_size else None

    @property
    def net_pnl(self) -> Decimal:
        return self.realized_pnl - self.fees


def position_history(
    fills: Iterable[Fill],
    opening: Mapping[str, tuple[Decimal, Decimal, datetime]] | None = None,
    contract_sizes: Mapping[str, Decimal] | None = None,
) -> list[PositionEpisode]:
    """Replay fills in order. A fill that flips a position closes one episode and opens the next.
    ``opening``: positions held before the first fill, ``(signed size, price, since)`` per
    symbol (a run inherits what the one before it left): each starts an episode at that price.
    ``contract_sizes``: what one unit of a future's size is in its base (1 if not given), so
    PnL is contracts x contract size x the price move."""
    sizes = contract_sizes or {}
    episodes: list[PositionEpisode] = []
    live: dict[str, tuple[Position, PositionEpisode]] = {}

    def fresh(symbol: str, size: Decimal = ZERO, price: Decimal = ZERO) -> Position:
        return Position(symbol, size=size, entry_price=price, contract_size=sizes.get(symbol, Decimal(1)))

    for symbol, (size, price, since) in (opening or {}).items():
        if size:
            side = Side.BUY if size > 0 else Side.SELL
            episode = PositionEpisode(symbol, side, opened_at=since, max_size=abs(size), entry_price=price, size=size)
            episodes.append(episode)
            live[symbol] = (fresh(symbol, size, price), episode)
    for fill in fills:
        position, episode = live.get(fill.symbol, (fresh(fill.symbol), None))  # type: ignore[assignment]  # no episode until it opens
        remaining = fill.size
        while remaining > 0:
            if episode is None or position.is_flat:
                episode = PositionEpisode(fill.symbol, fill.side, opened_at=fill.ts)
                episodes.append(episode)
                position = fresh(fill.symbol)
            held = abs(position.size)
            reducing = position.size != 0 and position.side is not fill.side
            part = min(remaining, held) if reducing else remaining
            share = part / fill.size
            fee = fill.fee * share
            episode.realized_pnl += position.apply_fill(fill.side, part, fill.price, fee)
            episode.fees += fee
            episode.fills += 1
            episode.trade_ids.append(fill.trade_id)
            if reducing:
                episode.exit_notional += part * fill.price
                episode.exit_size += part
            else:
                episode.entry_price = position.entry_price
            episode.size = position.size
            episode.max_size = max(episode.max_size, abs(position.size))
            if position.is_flat:
                episode.closed_at = fill.ts
            remaining -= part
        live[fill.symbol] = (position, episode)
    return episodes


def recorded_terms(products: Iterable[Product]) -> dict[str, dict[str, object]]:
    """What the position history of a run needs of each product beyond its fills, as its
    ``bot_started`` event records it: the contract size and, for a future, the expiry."""
    return {p.symbol: {"contract_size": p.contract_size, "expiry": p.expiry} for p in products}


def read_terms(recorded: Mapping[str, object] | None) -> dict[str, tuple[Decimal, datetime | None]]:
    """``recorded_terms`` back from an event: symbol -> (contract size, expiry). An entry
    that cannot be read is left out (a run recorded before they were kept has none)."""
    out: dict[str, tuple[Decimal, datetime | None]] = {}
    for symbol, terms in (recorded or {}).items():
        try:
            size = Decimal(str(terms["contract_size"]))  # type: ignore[index]  # any shape: the except below
            expiry = terms.get("expiry")  # type: ignore[attr-defined]  # any shape: the except below
            out[symbol] = (size, datetime.fromisoformat(expiry) if expiry else None)
        except (KeyError, TypeError, AttributeError, ArithmeticError, ValueError):
            continue
    return out
