"""The fast path for Coinbase's public market-data messages: ``l2_data``, ``ticker``,
``ticker_batch``, ``market_trades`` and ``heartbeats``.

``mapping.parse_envelope`` turns every message into domain-grade events — ``Decimal``
prices, a parsed ``datetime`` per book level — which is right for orders and balances
and far too slow for an order book that changes hundreds of times a second. Here one
``msgspec`` decoder reads a message straight into the venue-neutral market events of
``exchange.stream`` in C: the message classes are tagged by the envelope's ``channel``
(each says its feed as ``kind``), the structs are subclasses of the neutral ones that
only carry Coinbase's field names, numbers that arrive as strings become floats or
``Decimal`` (``strict=False``), fields we do not read are skipped without being built,
and the envelope's timestamp is parsed once per message.

Floats are exact enough for a book: a price string of up to 15 significant digits
reads back unchanged through ``repr``, so ``Decimal(repr(price))`` restores the
exchange's own number where a ``Decimal`` is wanted (marks, the risk check's book).

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
import functools
import operator
import types
from typing import Annotated, Any

import msgspec

from perpsbot.exchange.coinbase.mapping import parse_time
from perpsbot.exchange.stream import (
    BOOK,
    HEARTBEAT,
    TICKER,
    TRADES,
    AskLevel,
    BidLevel,
    MarketEvent,
    MarketMessage,
    MarketTrade,
    Ticker,
)

# Coinbase's market channel -> the feed its messages carry (``MarketMessage.kind``).
CHANNEL_FEEDS = {"l2_data": BOOK, "ticker": TICKER, "ticker_batch": TICKER, "market_trades": TRADES,
                 "heartbeats": HEARTBEAT}
# A feed -> the channel it is subscribed by.
FEED_CHANNELS = {BOOK: "level2", TICKER: "ticker", TRADES: "market_trades", HEARTBEAT: "heartbeats"}

Price = Annotated[float, msgspec.Meta(gt=0)]
Size = Annotated[float, msgspec.Meta(ge=0)]  # NaN fails both


def _as_sent(base: type[msgspec.Struct], name: str, rename: dict[str, str], types: dict[str, Any] | None = None,
             **config: Any) -> Any:
    """``base`` as Coinbase sends it: a subclass that renames fields to Coinbase's names and,
    where ``types`` says, decodes a field as a narrower type (bounds, a renamed nested struct).
    It adds no field, so a decoded value *is* a ``base``, with nothing copied."""
    fields: list[Any] = []
    for f in msgspec.structs.fields(base):
        kind = (types or {}).get(f.name, f.type)
        if f.default is not msgspec.NODEFAULT:
            fields.append((f.name, kind, f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, kind, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, kind))
    return msgspec.defstruct(name, fields, bases=(base,), rename=rename, module=__name__, **config)


_LEVEL_NAMES = {"price": "price_level", "size": "new_quantity"}
_BOUNDED = {"price": Price, "size": Size}
# The wire's ``side`` picks the class (a tagged union: no string is built per level).
_Bid = _as_sent(BidLevel, "_Bid", _LEVEL_NAMES, _BOUNDED, tag_field="side", tag="bid", gc=False)
_Offer = _as_sent(AskLevel, "_Offer", _LEVEL_NAMES, _BOUNDED, tag_field="side", tag="offer", gc=False)
_LaxBid = _as_sent(BidLevel, "_LaxBid", _LEVEL_NAMES, tag_field="side", tag="bid", gc=False)  # out of bounds or not
_LaxOffer = _as_sent(AskLevel, "_LaxOffer", _LEVEL_NAMES, tag_field="side", tag="offer", gc=False)
_Ticker = _as_sent(Ticker, "_Ticker", {"symbol": "product_id", "best_bid_size": "best_bid_quantity",
                                       "best_ask_size": "best_ask_quantity", "volume_24h": "volume_24_h"}, gc=False)
_Trade = _as_sent(MarketTrade, "_Trade", {"symbol": "product_id"}, gc=False)


def _list(item: Any) -> Any:
    """``list[item]`` for a struct made at run time."""
    return types.GenericAlias(list, item)


def _event(name: str, levels: Any) -> Any:
    return _as_sent(MarketEvent, name, {"symbol": "product_id"},
                    {"updates": _list(levels), "tickers": _list(_Ticker), "trades": _list(_Trade)})


def _messages(event: Any, prefix: str, **namespace: Any) -> list[Any]:
    """One message class per market channel, tagged by the envelope's ``channel``."""
    return [_as_sent(MarketMessage, f"{prefix}{channel}", {"sequence": "sequence_num"}, {"events": _list(event)},
                     tag_field="channel", tag=channel, namespace={"kind": feed, **namespace})
            for channel, feed in CHANNEL_FEEDS.items()]


def _union(classes: list[Any]) -> Any:
    return functools.reduce(operator.or_, classes)


_DECODER = msgspec.json.Decoder(_union(_messages(_event("_Event", _Bid | _Offer), "_")), strict=False)
# A message whose book levels were not all in bounds: the book checks each one.
_LAX_DECODER = msgspec.json.Decoder(
    _union(_messages(_event("_LaxEvent", _LaxBid | _LaxOffer), "_Lax", levels_checked=False)), strict=False
)
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
    try:
        message.epoch = parse_epoch(message.timestamp)
    except Exception:  # noqa: BLE001 - a bad stamp: let the generic path name it
        return None
    return message


__all__ = ["CHANNEL_FEEDS", "FEED_CHANNELS", "decode_market", "parse_epoch"]
