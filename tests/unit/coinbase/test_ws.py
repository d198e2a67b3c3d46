from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal

import jwt
import pytest
from aiohttp import WSMsgType, web

from perpsbot.domain import OrderStatus, Side
from perpsbot.exchange.coinbase.auth import JwtSigner
from perpsbot.exchange.coinbase.mapping import (
    CandleEvent,
    FuturesBalanceEvent,
    HeartbeatEvent,
    L2Snapshot,
    L2Update,
    OrderUpdate,
    SubscriptionsEvent,
    TickerEvent,
    TradeEvent,
    parse_envelope,
)
from perpsbot.exchange.coinbase.rest import RetryPolicy
from perpsbot.exchange.coinbase.ws import CoinbaseWebSocket, StreamNotice
from perpsbot.exchange.port import AuthenticationError, BadResponse
from tests.coinbasekit import KEY_NAME, ec_credentials

D = Decimal
TS = "2026-04-07T14:30:01.456789123Z"


def envelope(channel: str, seq: int, events: list, ts: str = TS) -> dict:
    return {"channel": channel, "client_id": "", "timestamp": ts, "sequence_num": seq, "events": events}


TICKER = envelope("ticker", 12, [{"type": "snapshot", "tickers": [{
    "type": "ticker", "product_id": "BTC-USD", "price": "68900.50", "volume_24_h": "15328.12345678",
    "low_24_h": "67500.00", "high_24_h": "69200.00", "low_52_w": "25000.00", "high_52_w": "73800.00",
    "price_percent_chg_24_h": "1.85", "best_bid": "68900.00", "best_bid_quantity": "1.5",
    "best_ask": "68901.00", "best_ask_quantity": "0.5"}]}])
L2_SNAPSHOT = envelope("l2_data", 1, [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
    {"side": "bid", "event_time": TS, "price_level": "68900.00", "new_quantity": "2.0"},
    {"side": "offer", "event_time": TS, "price_level": "68901.00", "new_quantity": "0.7"}]}])
L2_UPDATE = envelope("l2_data", 2, [{"type": "update", "product_id": "BTC-USD", "updates": [
    {"side": "offer", "event_time": TS, "price_level": "68901.00", "new_quantity": "0"}]}])
TRADES = envelope("market_trades", 5, [{"type": "update", "trades": [
    {"trade_id": "995098700", "product_id": "BTC-USD", "price": "68900.50", "size": "0.0015", "side": "BUY",
     "time": "2026-04-07T14:30:02.789012Z"}]}])
CANDLES = envelope("candles", 3, [{"type": "update", "candles": [
    {"start": "1775572200", "high": "68950.00", "low": "68850.00", "open": "68900.00", "close": "68920.50",
     "volume": "42.15", "product_id": "BTC-USD"}]}])
HEARTBEAT = envelope("heartbeats", 0, [{"current_time": "2026-04-07 14:30:10.000000000 +0000 UTC",
                                        "heartbeat_counter": 42}])
USER = envelope("user", 7, [{"type": "update", "orders": [{
    "order_id": "a1b2", "client_order_id": "pb-9", "cumulative_quantity": "4", "leaves_quantity": "6",
    "avg_price": "68900", "total_fees": "0.1", "status": "OPEN", "product_id": "BIP-20DEC30-CDE",
    "creation_time": TS, "order_side": "SELL", "order_type": "Limit", "cancel_reason": "", "reject_reason": ""}],
    "positions": {"perpetual_futures_positions": [], "expiring_futures_positions": []}}])
FUTURES = envelope("futures_balance_summary", 9, [{"type": "snapshot", "fcm_balance_summary": {
    "futures_buying_power": "5000", "total_usd_balance": "10000", "unrealized_pnl": "150",
    "intraday_margin_window_measure": {"margin_window_type": "FCM_MARGIN_WINDOW_TYPE_INTRADAY"}}}])
SUBSCRIPTIONS = envelope("subscriptions", 4, [{"subscriptions": {"level2": ["BTC-USD"], "heartbeats": []}}])


def test_documented_messages_decode_into_typed_events_with_the_exchange_time():
    ts = datetime(2026, 4, 7, 14, 30, 1, 456789, tzinfo=UTC)
    ticker = parse_envelope(TICKER)
    assert (ticker.channel, ticker.sequence_num, ticker.ts) == ("ticker", 12, ts)
    (event,) = ticker.events
    assert isinstance(event, TickerEvent) and event.best_bid == D("68900.00") and event.ts == ts
    quote = event.quote()
    assert quote is not None and quote.mid == D("68900.5") and quote.last == D("68900.50")
    (snap,) = parse_envelope(L2_SNAPSHOT).events
    assert isinstance(snap, L2Snapshot) and snap.bids[0].price == D(68900) and snap.asks[0].size == D("0.7")
    (update,) = parse_envelope(L2_UPDATE).events
    assert isinstance(update, L2Update) and update.changes[0].side == "offer" and update.changes[0].size == 0
    (trade,) = parse_envelope(TRADES).events
    assert isinstance(trade, TradeEvent) and trade.trade.side is Side.BUY and trade.trade.size == D("0.0015")
    (candle,) = parse_envelope(CANDLES).events
    assert isinstance(candle, CandleEvent) and candle.candle.start.timestamp() == 1775572200
    (beat,) = parse_envelope(HEARTBEAT).events
    assert isinstance(beat, HeartbeatEvent) and beat.counter == 42
    (order,) = parse_envelope(USER).events
    assert isinstance(order, OrderUpdate) and order.status is OrderStatus.PARTIALLY_FILLED
    assert (order.client_order_id, order.side, order.filled_size) == ("pb-9", Side.SELL, D(4))
    (futures,) = parse_envelope(FUTURES).events
    assert isinstance(futures, FuturesBalanceEvent) and futures.values["total_usd_balance"] == D(10000)
    assert "intraday_margin_window_measure" not in futures.values
    (subs,) = parse_envelope(SUBSCRIPTIONS).events
    assert isinstance(subs, SubscriptionsEvent) and subs.subscriptions["level2"] == ("BTC-USD",)


def test_a_malformed_message_names_the_field():
    broken = json.loads(json.dumps(L2_UPDATE))
    broken["events"][0]["updates"][0]["side"] = "ask"
    with pytest.raises(BadResponse, match=r"message\.events\[0\]\.updates\[0\]\.side: expected bid or offer"):
        parse_envelope(broken)
    with pytest.raises(BadResponse, match=r"message\.sequence_num: missing"):
        parse_envelope({"channel": "ticker", "timestamp": TS, "events": []})


class ScriptedWs:
    """A websocket endpoint that records what clients send and plays a script per connection."""

    def __init__(self, scripts: list[list], public_key) -> None:
        self.scripts = scripts
        self.public_key = public_key
        self.received: list[list[dict]] = []
        self.port = 0

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        index = len(self.received)
        self.received.append([])
        script = self.scripts[index] if index < len(self.scripts) else []
        reader = asyncio.create_task(self._read(ws, index))
        for _ in range(50):  # let the client's subscriptions arrive before the script plays
            if self.received[index]:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        for step in script:
            if step == "close":
                await ws.close()
                break
            if isinstance(step, float):
                await asyncio.sleep(step)
                continue
            await ws.send_str(json.dumps(step))
        else:
            try:
                await asyncio.wait_for(asyncio.shield(reader), 3.0)  # until the client goes
            except TimeoutError:
                pass
        reader.cancel()
        return ws

    async def _read(self, ws: web.WebSocketResponse, index: int) -> None:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                self.received[index].append(json.loads(msg.data))

    async def __aenter__(self) -> ScriptedWs:
        app = web.Application()
        app.router.add_get("/", self.handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.shutdown()
        await self.runner.cleanup()


def seq(message: dict, n: int) -> dict:
    return dict(message, sequence_num=n)


async def collect(ws: CoinbaseWebSocket, until, timeout: float = 3.0) -> list:
    seen = []

    async def run():
        while True:
            event = await ws.next_event()
            seen.append(event)
            if until(event):
                return
    await asyncio.wait_for(run(), timeout)
    return seen


FAST_RECONNECT = RetryPolicy(attempts=10**6, base_delay=0.02, max_delay=0.05)


async def test_subscribes_with_a_fresh_jwt_and_resubscribes_on_a_sequence_gap():
    credentials, public = ec_credentials()
    script = [seq(L2_SNAPSHOT, 1), seq(L2_UPDATE, 2), seq(L2_UPDATE, 4), seq(L2_UPDATE, 5), seq(L2_SNAPSHOT, 6),
              seq(L2_UPDATE, 7)]
    async with ScriptedWs([script], public) as server:
        ws = CoinbaseWebSocket(f"ws://127.0.0.1:{server.port}/", JwtSigner(credentials), heartbeats=True,
                               reconnect=FAST_RECONNECT)
        await ws.subscribe("level2", ["BTC-USD"])
        ws.start()
        after_gap: list[object] = []

        def update_after_the_gap(event: object) -> bool:
            if isinstance(event, StreamNotice) and event.kind == "gap":
                after_gap.append(event)
            return isinstance(event, L2Update) and bool(after_gap)
        events = await collect(ws, update_after_the_gap)
        await ws.close()
    kinds = [type(e).__name__ if not isinstance(e, StreamNotice) else e.kind for e in events]
    # update 2 applies; the gap (2 -> 4) drops 4 and 5 until the fresh snapshot at 6
    assert kinds == ["connected", "L2Snapshot", "L2Update", "gap", "L2Snapshot", "L2Update"]
    sent = server.received[0]
    first = [(m["type"], m["channel"], m.get("product_ids")) for m in sent[:2]]
    assert sorted(first, key=str) == sorted([("subscribe", "heartbeats", None),
                                             ("subscribe", "level2", ["BTC-USD"])], key=str)
    after_gap = [(m["type"], m["channel"]) for m in sent[2:]]
    assert ("unsubscribe", "level2") in after_gap and after_gap[-1][0] == "subscribe"
    tokens = [m["jwt"] for m in sent]
    assert len(set(tokens)) == len(tokens)  # a fresh JWT per message
    for token in tokens:
        claims = jwt.decode(token, public, algorithms=["ES256"], issuer="cdp")
        assert claims["sub"] == KEY_NAME and "uri" not in claims


async def test_reconnects_after_a_drop_and_sends_every_subscription_again():
    credentials, public = ec_credentials()
    scripts = [[seq(TICKER, 1), "close"], [seq(TICKER, 1), seq(TICKER, 2)]]
    async with ScriptedWs(scripts, public) as server:
        ws = CoinbaseWebSocket(f"ws://127.0.0.1:{server.port}/", JwtSigner(credentials), heartbeats=False,
                               reconnect=FAST_RECONNECT)
        await ws.subscribe("ticker", ["BTC-USD", "ETH-USD"])
        await ws.subscribe("user")
        ws.start()
        await collect(ws, lambda e: isinstance(e, TickerEvent) and ws.connects == 2)
        await ws.close()
    assert ws.gaps == 0  # sequence numbers restart with each connection
    for messages in server.received[:2]:
        assert sorted((m["channel"], tuple(m.get("product_ids", []))) for m in messages) == [
            ("ticker", ("BTC-USD", "ETH-USD")), ("user", ())]


async def test_a_connection_without_any_message_is_replaced():
    credentials, public = ec_credentials()
    scripts = [[seq(HEARTBEAT, 1), 0.6], [seq(HEARTBEAT, 1), 0.05, seq(HEARTBEAT, 2)]]
    async with ScriptedWs(scripts, public) as server:
        ws = CoinbaseWebSocket(f"ws://127.0.0.1:{server.port}/", JwtSigner(credentials), quiet_seconds=0.3,
                               reconnect=FAST_RECONNECT)
        ws.start()
        events = await collect(ws, lambda e: isinstance(e, HeartbeatEvent) and ws.connects == 2)
        await ws.close()
    notices = [e.kind for e in events if isinstance(e, StreamNotice)]
    assert notices[:3] == ["connected", "quiet", "disconnected"] and ws.quiet_reconnects == 1


async def test_private_channels_need_credentials_and_unknown_channels_are_refused():
    ws = CoinbaseWebSocket("ws://127.0.0.1:1/")
    with pytest.raises(AuthenticationError, match="user channel needs API credentials"):
        await ws.subscribe("user")
    with pytest.raises(ValueError, match="unknown channel 'l2_data'"):
        await ws.subscribe("l2_data", ["BTC-USD"])
    message = ws.subscription_message("subscribe", "ticker", ["ETH-USD", "BTC-USD"])
    assert message == {"type": "subscribe", "channel": "ticker", "product_ids": ["BTC-USD", "ETH-USD"]}
