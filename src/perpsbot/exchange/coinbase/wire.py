"""The fast path for Coinbase's public market-data messages: ``l2_data``, ``ticker``,
``ticker_batch``, ``market_trades`` and ``heartbeats``.

``mapping.parse_envelope`` turns every message into domain-grade events — ``Decimal``
prices, a parsed ``datetime`` per book level — which is right for orders and balances
and far too slow for an order book that changes hundreds of times a second. Here one
``msgspec`` decoder reads a message straight into typed structs in C: numbers that
arrive as strings become floats (``strict=False``), fields we do not read are skipped
without being built, and the envelope's timestamp is parsed once per message.

Floats are exact enough for a book: a price string of up to 15 significant digits
reads back unchanged through ``repr``, so ``Decimal(repr(price))`` restores the
exchange's own number where a ``Decimal`` is wanted (marks, the risk check's book).
The leaf structs (levels, tickers, trades) hold only strings and numbers, so they are
left out of the cycle collector (``gc=False``): a third less decode time.

Book levels are validated in the decoder too: a price must be > 0 and a size >= 0 (not
NaN), so the book's hot loop needs no per-level checks (``L2Book.apply_valid``). A
message with a level outside those bounds is decoded again without them
(``levels_checked`` False on the result) and the book's checking ``apply`` finds the bad
level and has the book resynced.

Anything the structs cannot take (another channel, an error message, a malformed
field) makes ``decode_market`` return None, and the caller falls back to the generic
``json`` + ``parse_envelope`` path, which names the bad field.
"""

from __future__ import annotations

import calendar
import math
from typing import Annotated, Any, ClassVar

import msgspec

from perpsbot.exchange.coinbase.mapping import parse_time

MARKET_CHANNELS = frozenset({"l2_data", "ticker", "ticker_batch", "market_trades", "heartbeats"})


Price = Annotated[float, msgspec.Meta(gt=0)]
Size = Annotated[float, msgspec.Meta(ge=0)]  # NaN fails both


class BidLevel(msgspec.Struct, tag_field="side", tag="bid", rename={"price": "price_level", "size": "new_quantity"},
               gc=False):
    """One bid level of an ``l2_data`` event; ``size`` 0 removes the level. The wire's
    ``side`` picks the class (a tagged union: no string is built per level)."""

    price: Price
    size: Size
    side: ClassVar[str] = "bid"


class OfferLevel(msgspec.Struct, tag_field="side", tag="offer",
                 rename={"price": "price_level", "size": "new_quantity"}, gc=False):
    """One offer (ask) level of an ``l2_data`` event."""

    price: Price
    size: Size
    side: ClassVar[str] = "offer"


Level = BidLevel | OfferLevel


class _LaxBid(BidLevel, tag="bid", gc=False):
    """A bid level as sent, out of bounds or not (the fallback decode)."""

    price: float
    size: float


class _LaxOffer(OfferLevel, tag="offer", gc=False):
    price: float
    size: float


def level(side: str, price: float, size: float) -> Level:
    """A level built by hand (``side``: ``bid`` or ``offer``)."""
    return BidLevel(price, size) if side == "bid" else OfferLevel(price, size)


class Ticker(msgspec.Struct, gc=False):
    product_id: str
    price: float = math.nan  # last trade
    best_bid: float | None = None
    best_ask: float | None = None
    best_bid_quantity: float | None = None
    best_ask_quantity: float | None = None
    volume_24_h: float | None = None


class Trade(msgspec.Struct, gc=False):
    product_id: str
    price: float
    size: float
    side: str = ""  # the maker's side, as Coinbase reports it
    trade_id: str = ""
    time: str = ""


class Event(msgspec.Struct):
    """The union of the market channels' event fields; each channel fills its own."""

    type: str = ""
    product_id: str = ""
    updates: list[BidLevel | OfferLevel] = []
    tickers: list[Ticker] = []
    trades: list[Trade] = []
    heartbeat_counter: int = 0


class MarketMessage(msgspec.Struct):
    channel: str
    timestamp: str
    sequence_num: int
    events: list[Event] = []
    epoch: float = 0.0  # ``timestamp`` as UNIX seconds, set by ``decode_market``
    # Every book level passed the decoder's bounds (price > 0, size >= 0).
    levels_checked: ClassVar[bool] = True


class _LaxEvent(Event):
    updates: list[_LaxBid | _LaxOffer] = []  # type: ignore[assignment]  # msgspec decodes by the declared type


class _LaxMessage(MarketMessage):
    """A message whose book levels were not all in bounds: the book checks each one."""

    events: list[_LaxEvent] = []  # type: ignore[assignment]  # msgspec decodes by the declared type
    levels_checked: ClassVar[bool] = False


_DECODER = msgspec.json.Decoder(MarketMessage, strict=False)
_LAX_DECODER = msgspec.json.Decoder(_LaxMessage, strict=False)
_minute_cache: dict[str, float] = {}


_last_stamp: list[Any] = ["", 0.0]  # the last stamp parsed, and its value: a burst of messages shares one


def parse_epoch(stamp: str) -> float:
    """RFC 3339 UTC (``2026-04-07T14:30:01.456789123Z``) to UNIX seconds.

    The minute prefix is converted once and cached; the seconds are one float parse.
    Other shapes (offsets, no seconds) go through ``mapping.parse_time``."""
    last = _last_stamp
    if stamp == last[0]:
        return last[1]
    epoch = _parse_epoch(stamp)
    last[0] = stamp
    last[1] = epoch
    return epoch


def _parse_epoch(stamp: str) -> float:
    if len(stamp) >= 20 and stamp[-1] == "Z" and stamp[16] == ":" and stamp[10] == "T":
        prefix = stamp[:16]
        base = _minute_cache.get(prefix)
        if base is None:
            try:
                base = float(calendar.timegm((int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]),
                                              int(stamp[11:13]), int(stamp[14:16]), 0)))
            except ValueError:
                return parse_time(stamp, "timestamp").timestamp()
            if len(_minute_cache) > 4096:
                _minute_cache.clear()
            _minute_cache[prefix] = base
        try:
            return base + float(stamp[17:-1])
        except ValueError:
            pass
    return parse_time(stamp, "timestamp").timestamp()


def decode_market(data: str | bytes, _decode: Any = _DECODER.decode) -> MarketMessage | None:
    """A market-data message, or None when it is not one this path reads."""
    try:
        message = _decode(data)
    except msgspec.ValidationError:
        try:  # a book level out of bounds? (anything else fails again)
            message = _LAX_DECODER.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
    except msgspec.DecodeError:
        return None
    if message.channel not in MARKET_CHANNELS:
        return None
    try:
        message.epoch = parse_epoch(message.timestamp)
    except Exception:  # noqa: BLE001 - a bad stamp: let the generic path name it
        return None
    return message


__all__ = ["MARKET_CHANNELS", "BidLevel", "Event", "Level", "MarketMessage", "OfferLevel", "Ticker", "Trade",
           "decode_market", "level", "parse_epoch"]
