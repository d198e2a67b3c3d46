"""The "never twice" checks of the CLI chaos harness, as functions of plain rows (so a
test can feed them crafted ones): exposure against the intended size, orders we closed
that filled at the venue, and two opening orders for one decision.

Each returns violations (strings); an empty list means the check passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

# How far the sizing inputs the bot saw may lie outside what the harness saw (equity
# and marks sampled every ~50 ms, the bot's mark a streamed mid a moment older): 2 %.
# A duplicate entry is 100 % over, so the margin never hides one.
SIZE_TOLERANCE = Decimal("0.02")


def intended_bound(fraction: Decimal, leverage: Decimal, max_equity: Decimal, min_mark: Decimal,
                   tolerance: Decimal = SIZE_TOLERANCE, contract_size: Decimal = Decimal(1)) -> Decimal:
    """The largest position one entry can open: ``ExecutionCoordinator.entry_size`` is
    ``position_fraction * equity * leverage / (mark * contract_size)`` quantized down, so over
    a run it is at most that at the highest equity and the lowest mark seen; plus ``tolerance``."""
    return fraction * leverage * max_equity / (min_mark * contract_size) * (1 + tolerance)


@dataclass(frozen=True, slots=True)
class Exposure:
    """One position reading: ``where`` it came from (``reconciliation 12``, ``venue sample``)."""

    where: str
    symbol: str
    size: Decimal


def exposure_violations(readings: Iterable[Exposure], bounds: Mapping[str, Decimal]) -> list[str]:
    """|position| above the symbol's bound; the worst reading per symbol and source."""
    worst: dict[tuple[str, str], Exposure] = {}
    for reading in readings:
        bound = bounds.get(reading.symbol)
        if bound is None or abs(reading.size) <= bound:
            continue
        key = (reading.symbol, reading.where.split(" ")[0])
        if key not in worst or abs(reading.size) > abs(worst[key].size):
            worst[key] = reading
    return [f"exposure: {r.symbol} position {r.size} at {r.where} is over the intended size "
            f"(bound {bounds[r.symbol]:.6g}, {abs(r.size) / bounds[r.symbol] * (1 + SIZE_TOLERANCE):.2f}x)"
            for _, r in sorted(worst.items())]


def closed_but_filled(stored: Mapping[str, str], venue: Mapping[str, tuple[str, Decimal]]) -> list[str]:
    """Orders we marked REJECTED or CANCELLED that the venue filled. ``stored``: client
    order id -> our status; ``venue``: client order id -> (venue status, filled size).
    A CANCELLED order the venue also cancelled after a partial fill (an IOC remainder)
    is consistent, not a violation."""
    problems = []
    for cid, status in sorted(stored.items()):
        if status not in ("REJECTED", "CANCELLED") or cid not in venue:
            continue
        venue_status, filled = venue[cid]
        if filled > 0 and (status == "REJECTED" or venue_status != "CANCELLED"):
            problems.append(f"closed but filled: {cid} is {status} in orders.db, {venue_status} with {filled} "
                            f"filled at the venue")
    return problems


@dataclass(frozen=True, slots=True)
class VenueFill:
    """One fill of ours at the venue, in the venue's order of execution."""

    symbol: str
    side: str  # BUY | SELL
    client_order_id: str
    reduce_only: bool


def duplicate_openings(fills: Iterable[VenueFill], live: Iterable[VenueFill] = ()) -> list[str]:
    """Two opening orders on one symbol and side with no closing fill between them: the
    second one is a decision sent twice. A closing fill is a reduce-only one or one
    against the side opened; ``live`` are opening orders still working at the venue,
    taken as coming after every fill."""
    problems = []
    opened: dict[str, VenueFill] = {}  # symbol -> the opening order since the last close
    for fill in [*fills, *live]:
        current = opened.get(fill.symbol)
        if fill.reduce_only:
            opened.pop(fill.symbol, None)
            continue
        if current is not None and current.side == fill.side and current.client_order_id != fill.client_order_id:
            problems.append(f"duplicate: {fill.symbol} {fill.side} opened by {current.client_order_id} and again by "
                            f"{fill.client_order_id} with no closing fill between")
        if current is None or current.side != fill.side or current.client_order_id != fill.client_order_id:
            opened[fill.symbol] = fill
    return problems
