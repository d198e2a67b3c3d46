"""The streaming pieces without a network: wire decoding, the L2 book, the lag histogram,
and the StreamingService's marks, freshness and telemetry fed by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from perpsbot.config.model import MarkSource, StreamLevel
from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.coinbase.mapping import parse_time
from perpsbot.exchange.coinbase.wire import decode_market, parse_epoch
from perpsbot.exchange.coinbase.ws import CoinbaseWebSocket, StreamNotice
from perpsbot.exchange.stream import BOOK, AskLevel, BidLevel, MarketMessage, level
from perpsbot.market.book import L2Book
from perpsbot.market.data import MarketDataService, WindowSpec
from perpsbot.market.streaming import LagHistogram, StreamingService
from perpsbot.store import EventStore
from tests.fakes import FakeExchange

T0 = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def stamp(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def message(channel: str, seq: int, events: list[dict[str, Any]], ts: datetime = T0) -> str:
    return json.dumps({"channel": channel, "client_id": "", "timestamp": stamp(ts), "sequence_num": seq,
                       "events": events})


def l2(kind: str, symbol: str, *levels: tuple[str, str, str]) -> dict[str, Any]:
    return {"type": kind, "product_id": symbol, "updates": [
        {"side": side, "event_time": "2026-11-26T09:30:00Z", "price_level": price, "new_quantity": qty}
        for side, price, qty in levels]}


# ----- wire ------------------------------------------------------------------------------


def test_the_fast_decoder_reads_market_messages_and_declines_the_rest():
    decoded = decode_market(message("l2_data", 3, [l2("update", "BTC-USD", ("bid", "68900.01", "0.5"),
                                                       ("offer", "68901.5", "0"))]))
    assert isinstance(decoded, MarketMessage) and decoded.kind == BOOK and decoded.sequence == 3
    (event,) = decoded.events
    assert event.symbol == "BTC-USD"
    assert [(type(u).__mro__[1], u.side, u.price, u.size) for u in event.updates] == [
        (BidLevel, "bid", 68900.01, 0.5), (AskLevel, "ask", 68901.5, 0)]  # the neutral types, Coinbase's names read
    assert decoded.epoch == pytest.approx(T0.timestamp() + 0.000000123, abs=1e-6)
    user = json.dumps({"channel": "user", "client_id": "", "timestamp": stamp(T0), "sequence_num": 1,
                       "events": [{"type": "snapshot", "orders": []}]})
    assert decode_market(user) is None  # the generic path reads it
    assert decode_market('{"type":"error","message":"nope"}') is None
    assert decode_market("not json") is None
    bad = message("l2_data", 4, [l2("update", "BTC-USD", ("bid", "lots", "1"))])
    assert decode_market(bad) is None  # the generic path names the bad field


def test_levels_out_of_bounds_are_decoded_unchecked_for_the_book_to_find():
    good = decode_market(message("l2_data", 1, [l2("update", "BTC-USD", ("bid", "1", "1"), ("offer", "2", "0"))]))
    assert good is not None and good.levels_checked
    for price, size in (("1", "-1"), ("0", "1"), ("-5", "1"), ("1", "nan"), ("nan", "1")):
        decoded = decode_market(message("l2_data", 1, [l2("update", "BTC-USD", ("bid", price, size))]))
        assert decoded is not None and not decoded.levels_checked, (price, size)
        book = L2Book("BTC-USD")
        assert book.reset(levels(("bid", 0.5, 1), ("offer", 2.0, 1)))
        assert not book.apply(decoded.events[0].updates) and not book.synced, (price, size)


def test_a_burst_of_messages_sharing_a_stamp_and_then_a_new_one_parse_right():
    first, second = "2026-04-07T14:30:01.5Z", "2026-04-07T14:31:02.25Z"
    for text in (first, first, second, first, second, second):
        assert parse_epoch(text) == parse_time(text, "t").timestamp()


@pytest.mark.parametrize("text", ["2026-04-07T14:30:01.456789123Z", "2026-12-31T23:59:59Z",
                                  "2024-02-29T00:00:00.5Z", "2026-04-07T14:30:01.25+02:00"])
def test_epoch_parsing_agrees_with_the_generic_parser(text: str):
    assert parse_epoch(text) == pytest.approx(parse_time(text, "t").timestamp(), abs=1e-6)


# ----- the book ------------------------------------------------------------------------------


def levels(*rows: tuple[str, float, float]) -> list[BidLevel | AskLevel]:
    return [level(side, price, size) for side, price, size in rows]


def test_the_book_keeps_snapshot_plus_updates_best_first():
    book = L2Book("ETH-USD")
    assert book.reset(levels(("bid", 100.0, 1), ("bid", 99.5, 2), ("offer", 100.5, 1), ("offer", 101.0, 3)))
    assert (book.best_bid, book.best_ask) == (100.0, 100.5)
    assert book.apply(levels(("bid", 100.25, 4), ("offer", 100.5, 0), ("offer", 100.75, 1), ("bid", 99.0, 0)))
    assert (book.best_bid, book.best_ask) == (100.25, 100.75) and book.missing_removals == 1
    bids, asks = book.top(2)
    assert bids == [(100.25, 4), (100.0, 1)] and asks == [(100.75, 1), (101.0, 3)]
    ob = book.order_book(10, T0)
    assert ob.bids[0].price == Decimal("100.25") and ob.asks[-1].price == Decimal("101") and len(ob.bids) == 3


def test_a_crossed_or_impossible_book_is_inconsistent():
    book = L2Book("ETH-USD")
    assert book.reset(levels(("bid", 100.0, 1), ("offer", 100.5, 1)))
    assert not book.apply(levels(("bid", 100.5, 1)))
    assert not book.synced and "crossed" in book.problem
    assert not book.reset(levels(("bid", 101.0, 1), ("offer", 100.5, 1)))
    assert book.reset(levels(("bid", 100.0, 1), ("offer", 100.5, 1)))
    assert not book.apply(levels(("offer", 100.6, -1))) and "size -1" in book.problem


def test_the_unchecked_and_the_checked_apply_agree_on_random_updates():
    """``apply_valid`` (levels the decoder bounded) against ``apply`` on the same seeded
    updates: same levels, best prices, counters and verdicts, shallow and deep books."""
    import random

    rng = random.Random(4)
    for depth in (10, 200):  # 20 levels: shallow; 400: deep (sorted keys)
        fast, slow = L2Book("X"), L2Book("X")
        snapshot = levels(*[("bid", 1000 - k, 1.0) for k in range(1, depth + 1)],
                          *[("offer", 1000 + k, 1.0) for k in range(1, depth + 1)])
        assert fast.reset(snapshot) and slow.reset(snapshot)
        for _ in range(300):
            rows = []
            for _ in range(rng.randint(1, 40)):
                side = rng.choice(("bid", "offer"))
                price = float(1000 + (-1 if side == "bid" else 1) * rng.randint(1, depth + 5))
                rows.append((side, price, rng.choice((0.0, 0.0, 1.5, 2.0))))
            update = levels(*rows)
            assert fast.apply_valid(update) == slow.apply(update)
            assert (fast.bids, fast.asks, fast.best_bid, fast.best_ask, fast.deep, fast.missing_removals) == \
                (slow.bids, slow.asks, slow.best_bid, slow.best_ask, slow.deep, slow.missing_removals)
        crossing = levels(("bid", float(fast.best_ask), 1.0))  # type: ignore[arg-type]
        assert not fast.apply_valid(crossing) and not slow.apply(crossing)
        assert fast.problem == slow.problem and "crossed" in fast.problem


# ----- the lag histogram ----------------------------------------------------------------------


def test_lag_histogram_quantiles_are_within_a_bucket():
    hist = LagHistogram()
    assert hist.quantile(0.95) is None
    for ms in range(1, 1001):
        hist.record(ms / 1000)
    assert hist.total == 1000
    assert 0.950 <= hist.quantile(0.95) <= 0.950 * 1.045
    assert 0.500 <= hist.quantile(0.50) <= 0.500 * 1.045
    assert hist.quantile(1.0) == pytest.approx(1.0)
    hist.record(-0.5)  # an exchange clock ahead of ours counts as no lag
    assert hist.counts[0] == 1
    hist.reset()
    assert hist.total == 0 and hist.quantile(0.5) is None


# ----- the service, fed by hand ----------------------------------------------------------------


class FakeStream:
    def __init__(self, **options: Any) -> None:
        self.options = options
        self.quiet_seconds = options.get("quiet_seconds", 5.0)
        self.connects = 1
        self.gaps = self.quiet_reconnects = self.book_resyncs = self.bad_messages = 0
        self.subscriptions: dict[str, set[str]] = {}
        self.resynced: list[str] = []
        self.awaiting_snapshot: frozenset[str] = frozenset()

    async def subscribe(self, channel: str, product_ids: Any = ()) -> None:
        self.subscriptions.setdefault(channel, set()).update(product_ids)

    async def unsubscribe(self, channel: str, product_ids: Any = None) -> None:
        self.subscriptions.get(channel, set()).difference_update(product_ids or ())

    def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def resync_book(self, symbol: str, reason: str = "") -> None:
        self.resynced.append(symbol)


@pytest.fixture
def events(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "events.db")


async def service(events: EventStore, clock: ManualClock, now: list[float], **kwargs: Any) -> StreamingService:
    md = MarketDataService(FakeExchange(clock, []), clock, events, ["BTC-USD", "ETH-USD"], WindowSpec(100, 10, 60))
    svc = StreamingService(FakeStream, md, events, clock, ["BTC-USD", "ETH-USD"], now=lambda: now[0], **kwargs)
    await svc.start()
    svc._on_notice(StreamNotice("connected", "", T0))
    return svc


def feed(svc: StreamingService, text: str) -> None:
    decoded = decode_market(text)
    assert decoded is not None
    svc.on_market(decoded)


async def test_book_marks_lag_p95_and_heartbeat_from_hand_fed_messages(events: EventStore):
    clock = ManualClock(T0)
    now = [T0.timestamp()]
    svc = await service(events, clock, now)
    md = svc.market_data
    feed(svc, message("l2_data", 1, [l2("snapshot", "BTC-USD", ("bid", "100", "1"), ("offer", "101", "1"))]))
    assert md.mark("BTC-USD") == Decimal("100.5") and md.mark("ETH-USD") is None
    # 100 updates, each taking effect k ms after its exchange timestamp: p95 is 95 ms.
    for k in range(1, 101):
        ts = T0 + timedelta(seconds=k)
        now[0] = ts.timestamp() + k / 1000 + 0.000000123
        feed(svc, message("l2_data", 1 + k, [l2("update", "BTC-USD", ("bid", f"{100 + k / 1000:.3f}", "1"))], ts))
    assert svc.books["BTC-USD"].best_bid == 100.1
    assert md.mark("BTC-USD") == Decimal("100.55") and len(md.windows["BTC-USD"].marks) == 100
    clock.advance(100)
    assert md.mark_age("BTC-USD") == pytest.approx(0.0, abs=1e-3)  # stamped with the exchange time
    data = svc.heartbeat()
    assert 95 <= data["lag_p95_ms"] <= 95 * 1.045 and data["lag_samples"] == 101
    assert data["channels"]["book"]["messages"] == 101 and data["channels"]["ticker"]["age_s"] is None
    assert svc.summary()["stream_lag_p95_ms"] == data["lag_p95_ms"]
    (recorded,) = events.query(kind="stream_heartbeat")
    assert recorded.data["lag_p95_ms"] == data["lag_p95_ms"] and recorded.data["connected"] is True
    assert svc.heartbeat()["lag_samples"] == 0  # the interval figures start over


async def test_heartbeats_keep_an_unchanged_book_fresh_and_a_crossed_book_resyncs(events: EventStore):
    clock = ManualClock(T0)
    svc = await service(events, clock, [T0.timestamp()])
    md = svc.market_data
    feed(svc, message("l2_data", 1, [l2("snapshot", "ETH-USD", ("bid", "3000", "1"), ("offer", "3001", "1"))]))
    clock.advance(30)
    assert md.mark_age("ETH-USD") == pytest.approx(30, abs=0.01)
    feed(svc, message("heartbeats", 2, [{"current_time": "x", "heartbeat_counter": "7"}], T0 + timedelta(seconds=29)))
    assert md.mark_age("ETH-USD") == pytest.approx(1, abs=0.01)  # the mark still holds at the heartbeat
    assert len(md.windows["ETH-USD"].marks) == 1  # confirmed, not appended
    feed(svc, message("l2_data", 3, [l2("update", "ETH-USD", ("offer", "2999", "2"))]))
    assert svc.stream.resynced == ["ETH-USD"] and not svc.books["ETH-USD"].synced
    (event,) = events.query(kind="stream_resync")
    assert "crossed" in event.data["reason"]
    clock.advance(10)
    feed(svc, message("heartbeats", 4, [{"current_time": "x", "heartbeat_counter": "8"}], T0 + timedelta(seconds=40)))
    assert md.mark_age("ETH-USD") == pytest.approx(11, abs=0.01)  # a book being resynced vouches for nothing
    feed(svc, message("l2_data", 5, [l2("update", "ETH-USD", ("bid", "3000.5", "1"))]))
    assert svc.books["ETH-USD"].bids == {}  # updates wait for the snapshot


async def test_a_level_out_of_bounds_resyncs_the_book(events: EventStore):
    clock = ManualClock(T0)
    svc = await service(events, clock, [T0.timestamp()])
    feed(svc, message("l2_data", 1, [l2("snapshot", "ETH-USD", ("bid", "3000", "1"), ("offer", "3001", "1"))]))
    feed(svc, message("l2_data", 2, [l2("update", "ETH-USD", ("bid", "2999", "-2"))]))
    assert svc.stream.resynced == ["ETH-USD"] and not svc.books["ETH-USD"].synced
    (event,) = events.query(kind="stream_resync")
    assert "size -2" in event.data["reason"]


async def test_last_trade_marks_and_the_ticker_level(events: EventStore):
    clock = ManualClock(T0)
    svc = await service(events, clock, [T0.timestamp()], mark_source=MarkSource.LAST)
    md = svc.market_data
    feed(svc, message("market_trades", 1, [{"type": "update", "trades": [
        {"trade_id": "1", "product_id": "BTC-USD", "price": "90000.5", "size": "0.1", "side": "BUY",
         "time": "2026-11-26T09:29:59.1Z"},
        {"trade_id": "2", "product_id": "BTC-USD", "price": "90001.5", "size": "0.1", "side": "SELL",
         "time": "2026-11-26T09:29:59.9Z"},
        {"trade_id": "3", "product_id": "DOGE-USD", "price": "0.4", "size": "10", "side": "SELL",
         "time": "2026-11-26T09:29:59.9Z"}]}]))
    assert md.mark("BTC-USD") == Decimal("90001.5") and len(svc.recent_trades("BTC-USD")) == 2
    assert "DOGE-USD" not in svc.trades
    feed(svc, message("l2_data", 2, [l2("snapshot", "BTC-USD", ("bid", "100", "1"), ("offer", "101", "1"))]))
    assert md.mark("BTC-USD") == Decimal("90001.5")  # the book does not make marks in this mode
    await svc.set_level(StreamLevel.TICKER)
    svc.set_mark_source(MarkSource.MID)
    assert not svc.stream.subscriptions.get(BOOK)
    feed(svc, message("ticker", 3, [{"type": "update", "tickers": [
        {"type": "ticker", "product_id": "ETH-USD", "price": "3000", "best_bid": "2999", "best_ask": "3001",
         "best_bid_quantity": "1", "best_ask_quantity": "1"}]}]))
    assert md.mark("ETH-USD") == Decimal("3000") and svc.ticker("ETH-USD").best_ask == 3001


async def test_the_fast_path_checks_sequence_numbers_and_drops_updates_until_a_snapshot():
    got: list[Any] = []
    ws = CoinbaseWebSocket("ws://127.0.0.1:1/", on_market=got.append, queue_events=False)
    await ws.subscribe("level2", ["BTC-USD"])
    snap = l2("snapshot", "BTC-USD", ("bid", "1", "1"), ("offer", "2", "1"))
    update = l2("update", "BTC-USD", ("bid", "1.5", "1"))
    assert ws.handle_market_text(message("l2_data", 0, [snap]))
    assert ws.handle_market_text(message("l2_data", 1, [update]))
    assert ws.handle_market_text(message("l2_data", 3, [update]))  # 2 is missing: a gap
    assert ws.gaps == 1 and ws.awaiting_snapshot == {"BTC-USD"}
    assert [len(m.events) for m in got] == [1, 1, 0]  # the update after the gap is dropped
    assert ws.handle_market_text(message("l2_data", 4, [snap, update]))
    assert [e.type for e in got[-1].events] == ["snapshot", "update"] and not ws.awaiting_snapshot
    assert not ws.handle_market_text(json.dumps({"type": "error", "message": "x"}))
    await ws.close()
