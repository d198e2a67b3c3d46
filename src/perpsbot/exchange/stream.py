"""The market stream's side of the ``Exchange`` port: the venue-neutral market events a
venue's stream delivers, and what ``StreamingService`` asks of the stream (``MarketStream``).

Defined once, here; a venue's decoder produces these very types. The Coinbase wire decoder
(``exchange.coinbase.wire``) reads each frame straight into subclasses of them that only
rename fields to Coinbase's names and tag each message class with its channel — so a
decoded message *is* a ``MarketMessage``, with no copy or conversion per message. They
are ``msgspec`` structs (slotted, built in C); the leaves, which hold only strings and
numbers, are left out of the cycle collector (``gc=False``).

Book prices and sizes are floats, exact enough for a book (a price of up to 15
significant digits reads back through ``repr``); a trade's are ``Decimal``, as is what
every other layer reads.

A message's ``kind`` says what it carries, one of the feeds ``BOOK``, ``TICKER``,
``TRADES`` and ``HEARTBEAT``; ``subscribe`` and ``unsubscribe`` take the same names.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol

import msgspec

from perpsbot.domain import Side

# The feeds: plain strings, compared and hashed at the stream's rate.
BOOK = "book"  # L2 book snapshots and updates
TICKER = "ticker"  # best bid / ask and last trade per symbol
TRADES = "trades"  # the market's trades
HEARTBEAT = "heartbeat"  # the venue's sign of life: every message before it was received


class BidLevel(msgspec.Struct, gc=False):
    """One bid level of a book event; ``size`` 0 removes the level."""

    price: float
    size: float
    side: ClassVar[str] = "bid"


class AskLevel(msgspec.Struct, gc=False):
    """One ask level of a book event; ``size`` 0 removes the level."""

    price: float
    size: float
    side: ClassVar[str] = "ask"


Level = BidLevel | AskLevel


def level(side: str, price: float, size: float) -> Level:
    """A level built by hand (``side``: ``bid``, else ask)."""
    return BidLevel(price, size) if side == "bid" else AskLevel(price, size)


class Ticker(msgspec.Struct, gc=False):
    symbol: str
    price: float = math.nan  # last trade
    best_bid: float | None = None
    best_ask: float | None = None
    best_bid_size: float | None = None
    best_ask_size: float | None = None
    volume_24h: float | None = None


class MarketTrade(msgspec.Struct, gc=False):
    """One trade of the market (not necessarily ours)."""

    trade_id: str
    symbol: str
    price: Decimal
    size: Decimal
    side: Side  # the maker's side, as Coinbase reports it
    time: datetime


class MarketEvent(msgspec.Struct):
    """The union of the feeds' event fields; each feed fills its own."""

    type: str = ""  # a book event: "snapshot" (the whole book) or "update"
    symbol: str = ""
    updates: list[Level] = []
    tickers: list[Ticker] = []
    trades: list[MarketTrade] = []


class MarketMessage(msgspec.Struct):
    timestamp: str  # the venue's time of the message, as sent
    sequence: int  # +1 a message on one connection
    events: list[MarketEvent] = []
    epoch: float = 0.0  # ``timestamp`` as UNIX seconds, set by the decoder
    kind: ClassVar[str] = ""  # the feed: BOOK, TICKER, TRADES or HEARTBEAT
    # Every book level passed the decoder's bounds (price > 0, size >= 0).
    levels_checked: ClassVar[bool] = True


class MarketStream(Protocol):
    """A venue's market-data stream client (``CoinbaseWebSocket`` is one)."""

    quiet_seconds: float
    connects: int
    gaps: int
    quiet_reconnects: int
    book_resyncs: int
    bad_messages: int

    async def subscribe(self, channel: str, product_ids: Iterable[str] = ()) -> None:
        """``channel``: a feed (BOOK, TICKER, TRADES, HEARTBEAT)."""
        ...

    async def unsubscribe(self, channel: str, product_ids: Iterable[str] | None = None) -> None: ...

    def start(self) -> Any: ...

    async def close(self) -> None: ...

    def resync_book(self, symbol: str, reason: str = "") -> None: ...

    @property
    def awaiting_snapshot(self) -> frozenset[str]: ...
