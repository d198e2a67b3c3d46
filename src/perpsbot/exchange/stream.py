"""The market stream's side of the ``Exchange`` port: what ``StreamingService`` asks of a
venue's market-data stream (``MarketStream``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol


class MarketStream(Protocol):
    """A venue's market-data stream client (``CoinbaseWebSocket`` is one)."""

    quiet_seconds: float
    connects: int
    gaps: int
    quiet_reconnects: int
    book_resyncs: int
    bad_messages: int

    async def subscribe(self, channel: str, product_ids: Iterable[str] = ()) -> None: ...

    async def unsubscribe(self, channel: str, product_ids: Iterable[str] | None = None) -> None: ...

    def start(self) -> Any: ...

    async def close(self) -> None: ...

    def resync_book(self, symbol: str, reason: str = "") -> None: ...

    @property
    def awaiting_snapshot(self) -> frozenset[str]: ...
