"""``L2Book``: one product's level-2 order book, kept from a snapshot and its updates.

Built for the stream's rate: prices and sizes are floats (as the wire decoder reads
them) in one dict ``price -> size`` per side. The best prices are kept two ways,
whichever is cheaper for the book at hand:

* a *shallow* book (at most ``SHALLOW_LEVELS`` levels in all, like the simulator's
  10-a-side book, which moves as a whole every tick) takes each update into its dicts
  and reads the best bid / ask with one ``max`` / ``min`` — no ordering is kept;
* a *deep* book (a real venue's full depth, thousands of levels, a few changing near
  the top each update) keeps a sorted key list per side with the best price at its end
  (bids ascending; asks by negated price), fixed up with a bisect per price that
  appeared or went.

``top(depth)`` / ``order_book(depth)`` (the domain's ``Decimal`` ``OrderBook``, for the
risk check's slippage estimate) sort on demand for a shallow book.

A book that ends an update crossed (best bid >= best ask) or that receives a level it
cannot hold (a negative size, a non-positive price) is *inconsistent*: ``apply`` and
``reset`` return False and the caller resyncs it from a fresh snapshot.
``apply_valid`` is ``apply`` for levels already known to be in bounds (the wire decoder
checks price > 0 and size >= 0 in C): the same result without a per-level check.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from perpsbot.domain import BookLevel, OrderBook

SHALLOW_LEVELS = 128  # both sides together


class LevelLike(Protocol):
    @property
    def side(self) -> str: ...  # "bid" | "offer"
    @property
    def price(self) -> float: ...
    @property
    def size(self) -> float: ...


class L2Book:
    __slots__ = ("symbol", "bids", "asks", "_bid_keys", "_ask_keys", "_deep", "best_bid", "best_ask", "synced",
                 "updates", "missing_removals", "problem")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._bid_keys: list[float] = []  # deep books only: ascending, best bid last
        self._ask_keys: list[float] = []  # deep books only: negated prices ascending, best ask last
        self._deep = False
        self.best_bid: float | None = None
        self.best_ask: float | None = None
        self.synced = False  # a snapshot arrived and nothing has gone wrong since
        self.updates = 0  # level changes applied
        self.missing_removals = 0  # removals of levels the book did not have (harmless, counted)
        self.problem = ""  # why the book was last found inconsistent

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bid_keys = []
        self._ask_keys = []
        self._deep = False
        self.best_bid = self.best_ask = None
        self.synced = False

    def reset(self, levels: Iterable[LevelLike]) -> bool:
        """Replace the book with a snapshot; False if the snapshot is inconsistent."""
        self.clear()
        bids, asks = self.bids, self.asks
        for level in levels:
            price, size = level.price, level.size
            if size < 0 or not price > 0:
                return self._bad(f"level {price} with size {size}")
            if size == 0:
                continue
            if level.side == "bid":
                bids[price] = size
            else:
                asks[price] = size
        self.updates += len(bids) + len(asks)
        self._reindex()
        if self._crossed():
            return self._bad(f"crossed: bid {self.best_bid} >= ask {self.best_ask}")
        self.synced = True
        self.problem = ""
        return True

    def apply(self, levels: Sequence[LevelLike]) -> bool:
        """Apply one update's level changes; False if the book is now inconsistent."""
        if self._deep:
            return self._apply_deep(levels)
        bids, asks = self.bids, self.asks
        pop_bid, pop_ask = bids.pop, asks.pop
        missing = 0
        for level in levels:  # every size and price checked (``apply_valid`` is the fast one)
            size = level.size
            if not level.price > 0:
                return self._invalid(level)
            if level.side == "bid":
                if size > 0:
                    bids[level.price] = size
                elif size == 0:
                    if pop_bid(level.price, None) is None:
                        missing += 1
                else:
                    return self._invalid(level)
            else:
                if size > 0:
                    asks[level.price] = size
                elif size == 0:
                    if pop_ask(level.price, None) is None:
                        missing += 1
                else:
                    return self._invalid(level)
        self.updates += len(levels)
        self.missing_removals += missing
        best_bid = self.best_bid = max(bids) if bids else None
        best_ask = self.best_ask = min(asks) if asks else None
        if len(bids) + len(asks) > SHALLOW_LEVELS:
            self._reindex()
        if best_bid is not None and best_ask is not None and best_bid >= best_ask:
            return self._bad(f"crossed: bid {best_bid} >= ask {best_ask}")
        return True

    def apply_valid(self, levels: Sequence[LevelLike]) -> bool:
        """``apply`` for levels whose prices are > 0 and sizes >= 0 (not NaN)."""
        if self._deep:
            return self._apply_deep(levels)
        bids, asks = self.bids, self.asks
        pop_bid, pop_ask = bids.pop, asks.pop
        missing = 0
        for level in levels:  # the hottest loop of the stream: a size is either > 0 or exactly 0 here
            if level.side == "bid":
                if level.size:
                    bids[level.price] = level.size
                elif pop_bid(level.price, None) is None:
                    missing += 1
            elif level.size:
                asks[level.price] = level.size
            elif pop_ask(level.price, None) is None:
                missing += 1
        self.updates += len(levels)
        if missing:
            self.missing_removals += missing
        if len(bids) + len(asks) > SHALLOW_LEVELS:
            self._reindex()
            return self._check_crossed()
        best_bid = self.best_bid = max(bids) if bids else None
        best_ask = self.best_ask = min(asks) if asks else None
        if best_bid is not None and best_ask is not None and best_bid >= best_ask:
            return self._bad(f"crossed: bid {best_bid} >= ask {best_ask}")
        return True

    def _check_crossed(self) -> bool:
        if self._crossed():
            return self._bad(f"crossed: bid {self.best_bid} >= ask {self.best_ask}")
        return True

    def _invalid(self, level: LevelLike) -> bool:
        self._reindex()
        return self._bad(f"level {level.price} with size {level.size}")

    def _apply_deep(self, levels: Iterable[LevelLike]) -> bool:
        bids, asks = self.bids, self.asks
        bid_moves: list[float] = []  # prices that appeared in or left each side
        ask_moves: list[float] = []
        count = 0
        problem = ""
        for level in levels:
            count += 1
            price = level.price
            size = level.size
            if level.side == "bid":
                side, moves = bids, bid_moves
            else:
                side, moves = asks, ask_moves
            if size == 0:
                if side.pop(price, None) is None:
                    self.missing_removals += 1
                else:
                    moves.append(price)
            elif size > 0 and price > 0:
                if price not in side:
                    moves.append(price)
                side[price] = size
            else:
                problem = f"level {price} with size {size}"
                break
        self.updates += count
        if bid_moves:
            _sync(self._bid_keys, bids, bid_moves, 1.0)
        if ask_moves:
            _sync(self._ask_keys, asks, ask_moves, -1.0)
        self.best_bid = self._bid_keys[-1] if self._bid_keys else None
        self.best_ask = -self._ask_keys[-1] if self._ask_keys else None
        if len(bids) + len(asks) <= SHALLOW_LEVELS // 2:
            self._reindex()
        if problem:
            return self._bad(problem)
        if self._crossed():
            return self._bad(f"crossed: bid {self.best_bid} >= ask {self.best_ask}")
        return True

    def _reindex(self) -> None:
        """Choose shallow or deep for the book's current size and set the best prices."""
        bids, asks = self.bids, self.asks
        self._deep = len(bids) + len(asks) > SHALLOW_LEVELS
        if self._deep:
            self._bid_keys = sorted(bids)
            self._ask_keys = sorted([-p for p in asks])
        else:
            self._bid_keys = []
            self._ask_keys = []
        self.best_bid = max(bids) if bids else None
        self.best_ask = min(asks) if asks else None

    def _crossed(self) -> bool:
        bid, ask = self.best_bid, self.best_ask
        return bid is not None and ask is not None and bid >= ask

    def _bad(self, problem: str) -> bool:
        self.synced = False
        self.problem = problem
        return False

    @property
    def deep(self) -> bool:
        return self._deep

    def top(self, depth: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """Up to ``depth`` levels a side, best first, as (price, size) floats."""
        if depth <= 0:
            return [], []
        if self._deep:
            bid_prices = list(reversed(self._bid_keys[-depth:]))
            ask_prices = [-k for k in reversed(self._ask_keys[-depth:])]
        else:
            bid_prices = heapq.nlargest(depth, self.bids)
            ask_prices = heapq.nsmallest(depth, self.asks)
        return [(p, self.bids[p]) for p in bid_prices], [(p, self.asks[p]) for p in ask_prices]

    def order_book(self, depth: int, ts: datetime) -> OrderBook:
        """The top ``depth`` levels as the domain's ``OrderBook`` (exact ``Decimal`` values)."""
        bids, asks = self.top(depth)
        return OrderBook(
            self.symbol, ts,
            tuple(BookLevel(Decimal(repr(p)), Decimal(repr(s))) for p, s in bids),
            tuple(BookLevel(Decimal(repr(p)), Decimal(repr(s))) for p, s in asks),
        )

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    def __repr__(self) -> str:
        return (f"L2Book({self.symbol}, synced={self.synced}, bids={len(self.bids)}, asks={len(self.asks)}, "
                f"best={self.best_bid}/{self.best_ask})")


def _sync(keys: list[float], side: dict[float, float], moved: list[float], sign: float) -> None:
    """Make ``keys`` (sorted, ``sign * price``) hold exactly the moved prices still in
    ``side`` — whatever order they appeared and went in within one update."""
    for price in moved:
        key = sign * price
        index = bisect_left(keys, key)
        present = index < len(keys) and keys[index] == key
        if price in side:
            if not present:
                keys.insert(index, key)
        elif present:
            del keys[index]
