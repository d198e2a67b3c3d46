"""The WebSocket feed: Coinbase's SDK clients, the envelope, snapshots and updates."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from coinbase.websocket import WebsocketResponse, WSClient, WSUserClient

from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.sim.keys import ApiKey
from perpsbot.exchange.sim.server import SimServer

from .conftest import call, parsed, sdk, wait_for

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def _channels(messages: list[dict[str, Any]]) -> set[str]:
    return {m.get("channel") for m in messages}


async def test_the_sdk_ws_client_gets_real_shaped_market_and_user_messages(server: SimServer, ed25519_key: ApiKey):
    raw: list[str] = []
    client = WSClient(api_key=ed25519_key.name, api_secret=ed25519_key.private_key_text,
                      base_url=server.plain_ws_url, on_message=raw.append, retry=False)
    await call(client.open)
    try:
        await call(client.subscribe, ["BTC-USD", "ETP-20DEC30-CDE"], ["ticker", "level2"])
        await call(client.heartbeats)
        await call(client.user, ["ETP-20DEC30-CDE"])
        await wait_for(lambda: {"ticker", "l2_data", "heartbeats", "user"} <= _channels(parsed(raw)))
        order = await call(sdk(server, ed25519_key).market_order_sell, "ws-1", "ETP-20DEC30-CDE", base_size="1",
                           leverage="2")

        def user_update_seen() -> bool:
            return any(m.get("channel") == "user" and e.get("type") == "update"
                       and any(o["order_id"] == order.success_response["order_id"] for o in e["orders"])
                       for m in parsed(raw) for e in m["events"])
        await wait_for(user_update_seen)
    finally:
        await call(client.close)

    messages = parsed(raw)
    assert [m["sequence_num"] for m in messages] == list(range(len(messages)))  # per connection, +1 each
    for m in messages:
        assert list(m) == ["channel", "client_id", "timestamp", "sequence_num", "events"]
        assert m["client_id"] == "" and STAMP.match(m["timestamp"])
        WebsocketResponse(json.loads(json.dumps(m)))  # the SDK's own parser takes every message

    subscriptions = [m for m in messages if m["channel"] == "subscriptions"]
    assert subscriptions[-1]["events"][0]["subscriptions"] == {
        "ticker": ["BTC-USD", "ETP-20DEC30-CDE"], "level2": ["BTC-USD", "ETP-20DEC30-CDE"],
        "heartbeats": [], "user": ["ETP-20DEC30-CDE"],
    }
    l2 = [m for m in messages if m["channel"] == "l2_data"]
    first_events = {}
    for m in l2:
        for e in m["events"]:
            first_events.setdefault(e["product_id"], e)
    assert {p: e["type"] for p, e in first_events.items()} == {"BTC-USD": "snapshot", "ETP-20DEC30-CDE": "snapshot"}
    level = first_events["BTC-USD"]["updates"][0]
    assert set(level) == {"side", "event_time", "price_level", "new_quantity"} and level["side"] == "bid"
    assert any(e["type"] == "update" for m in l2 for e in m["events"])

    ticker = next(t for m in messages if m["channel"] == "ticker" for e in m["events"] for t in e["tickers"])
    assert ticker["type"] == "ticker" and Decimal(ticker["best_bid"]) < Decimal(ticker["best_ask"])
    assert {"price", "volume_24_h", "low_24_h", "high_24_h", "price_percent_chg_24_h", "best_bid_quantity"} <= set(
        ticker
    )

    beat = next(m for m in messages if m["channel"] == "heartbeats")["events"][0]
    assert int(beat["heartbeat_counter"]) >= 1 and " +0000 UTC" in beat["current_time"]

    user = [e for m in messages if m["channel"] == "user" for e in m["events"]]
    assert user[0]["type"] == "snapshot" and user[0]["orders"] == []
    update = next(e for e in user if e["type"] == "update" and e["orders"])
    mine = next(o for o in update["orders"] if o["client_order_id"] == "ws-1")
    assert (mine["status"], mine["order_side"], mine["order_type"], mine["product_type"]) == \
        ("FILLED", "SELL", "Market", "FUTURE")
    assert mine["cumulative_quantity"] == "1" and mine["leaves_quantity"] == "0"
    positions = next(
        e["positions"] for e in user if e.get("positions") and e["positions"]["expiring_futures_positions"]
    )
    held = positions["expiring_futures_positions"][0]
    assert (held["product_id"], held["side"], held["number_of_contracts"]) == ("ETP-20DEC30-CDE", "Short", "1")


async def test_a_cfm_position_is_pushed_as_an_expiring_futures_position(server: SimServer, ed25519_key: ApiKey):
    raw: list[str] = []
    client = WSUserClient(api_key=ed25519_key.name, api_secret=ed25519_key.private_key_text,
                          base_url=server.plain_ws_url, on_message=raw.append, retry=False)
    await call(client.open)
    try:
        await call(client.user, ["BIP-20DEC30-CDE"])
        await wait_for(lambda: "user" in _channels(parsed(raw)))
        await call(sdk(server, ed25519_key).market_order_buy, "ws-cfm", "BIP-20DEC30-CDE", base_size="4")

        def cfm_seen() -> bool:
            return any(e.get("positions", {}).get("expiring_futures_positions")
                       for m in parsed(raw) if m.get("channel") == "user" for e in m["events"])
        await wait_for(cfm_seen)
    finally:
        await call(client.close)
    user = [e for m in parsed(raw) if m.get("channel") == "user" for e in m["events"]]
    positions = next(e["positions"] for e in user if e.get("positions", {}).get("expiring_futures_positions"))
    assert positions["perpetual_futures_positions"] == []
    held = positions["expiring_futures_positions"][0]
    assert (held["product_id"], held["side"], held["number_of_contracts"]) == ("BIP-20DEC30-CDE", "Long", "4")
    assert set(held) == {"product_id", "side", "number_of_contracts", "realized_pnl", "unrealized_pnl", "entry_price"}


async def test_the_sdk_user_client_gets_snapshots(server: SimServer, ecdsa_key: ApiKey):
    raw: list[str] = []
    client = WSUserClient(api_key=ecdsa_key.name, api_secret=ecdsa_key.private_key_text,
                          base_url=server.plain_ws_url, on_message=raw.append, retry=False)
    await call(client.open)
    try:
        await call(client.user, ["BTC-USD"])
        await call(client.futures_balance_summary)
        await wait_for(lambda: {"user", "futures_balance_summary"} <= _channels(parsed(raw)))
    finally:
        await call(client.close)
    balance = next(m for m in parsed(raw) if m["channel"] == "futures_balance_summary")["events"][0]
    assert balance["type"] == "snapshot"
    assert balance["fcm_balance_summary"]["futures_buying_power"] == "100000"
    parsed_msg = WebsocketResponse(json.loads(raw[-1]))
    assert parsed_msg.channel in ("user", "futures_balance_summary", "subscriptions")


# ----- deterministic: a manual clock, and the server stepped by the test -------------------


@pytest.fixture
async def stepped(cert_dir: Path) -> AsyncIterator[tuple[SimServer, ManualClock]]:
    clock = ManualClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    async with SimServer(seed=21, cert_dir=cert_dir, clock=clock, tick_interval=3600) as srv:
        yield srv, clock


class _Feed:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, **message: Any) -> None:
        await self.ws.send_str(json.dumps(message))

    async def next(self, timeout: float = 3.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        data = json.loads(msg.data)
        self.seen.append(data)
        return data

    async def until(self, channel: str) -> dict[str, Any]:
        while True:
            data = await self.next()
            if data.get("channel") == channel:
                return data

    async def quiet(self, wait: float = 0.15) -> list[dict[str, Any]]:
        out = []
        while True:
            try:
                msg = await self.ws.receive(timeout=wait)
            except TimeoutError:
                return out
            out.append(json.loads(msg.data))


@pytest.fixture
async def feed(stepped: tuple[SimServer, ManualClock]) -> AsyncIterator[_Feed]:
    server, _ = stepped
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(server.plain_ws_url) as ws:
            yield _Feed(ws)


def _apply(book: dict[str, dict[Decimal, Decimal]], updates: list[dict[str, str]]) -> None:
    for u in updates:
        side = book[u["side"]]
        qty = Decimal(u["new_quantity"])
        if qty == 0:
            side.pop(Decimal(u["price_level"]), None)
        else:
            side[Decimal(u["price_level"])] = qty


async def test_level2_snapshot_plus_updates_rebuild_the_book(stepped: tuple[SimServer, ManualClock], feed: _Feed):
    server, clock = stepped
    await feed.send(type="subscribe", channel="level2", product_ids=["ETH-USD"])
    await feed.until("subscriptions")
    snapshot = (await feed.until("l2_data"))["events"][0]
    assert snapshot["type"] == "snapshot" and snapshot["product_id"] == "ETH-USD"
    book: dict[str, dict[Decimal, Decimal]] = {"bid": {}, "offer": {}}
    _apply(book, snapshot["updates"])
    for _ in range(25):
        clock.advance(0.3)
        server.step()
        message = await feed.until("l2_data")
        event = message["events"][0]
        assert event["type"] == "update"
        _apply(book, event["updates"])
        truth = server.core.book("ETH-USD")
        assert book["bid"] == {level.price: level.size for level in truth.bids}
        assert book["offer"] == {level.price: level.size for level in truth.asks}


async def test_unsubscribe_stops_a_channel(stepped: tuple[SimServer, ManualClock], feed: _Feed):
    server, clock = stepped
    await feed.send(type="subscribe", channel="ticker", product_ids=["BTC-USD", "SOL-USD"])
    await feed.send(type="subscribe", channel="level2", product_ids=["BTC-USD"])
    await feed.quiet()
    await feed.send(type="unsubscribe", channel="ticker", product_ids=["SOL-USD"])
    confirm = await feed.until("subscriptions")
    assert confirm["events"][0]["subscriptions"] == {"ticker": ["BTC-USD"], "level2": ["BTC-USD"]}
    await feed.send(type="unsubscribe", channel="level2", product_ids=[])
    confirm = await feed.until("subscriptions")
    assert confirm["events"][0]["subscriptions"] == {"ticker": ["BTC-USD"]}
    for _ in range(10):
        clock.advance(0.5)
        server.step()
    after = await feed.quiet()
    assert after and {m["channel"] for m in after} == {"ticker"}
    assert {t["product_id"] for m in after for e in m["events"] for t in e["tickers"]} == {"BTC-USD"}


async def test_other_channels_answer_with_snapshots(stepped: tuple[SimServer, ManualClock], feed: _Feed):
    server, clock = stepped
    for channel in ("market_trades", "candles", "status", "ticker_batch"):
        await feed.send(type="subscribe", channel=channel, product_ids=["ETP-20DEC30-CDE"])
    got = {m["channel"]: m for m in await feed.quiet()}
    assert {"market_trades", "candles", "status", "ticker_batch"} <= set(got)
    candle = got["candles"]["events"][0]["candles"][0]
    assert candle["product_id"] == "ETP-20DEC30-CDE" and int(candle["start"]) % 300 == 0
    status = got["status"]["events"][0]["products"]
    assert [p["id"] for p in status] == ["ETP-20DEC30-CDE"] and status[0]["product_type"] == "FUTURE"
    assert "best_bid" not in got["ticker_batch"]["events"][0]["tickers"][0]
    clock.advance(5)
    server.step()
    updates = await feed.quiet()
    trades = [t for m in updates if m["channel"] == "market_trades" for e in m["events"] for t in e["trades"]]
    assert trades and all(t["product_id"] == "ETP-20DEC30-CDE" and t["side"] in ("BUY", "SELL") for t in trades)


async def test_bad_subscriptions_get_error_messages(feed: _Feed):
    for message, expected in (
        ({"type": "subscribe", "channel": "level3", "product_ids": ["BTC-USD"]}, "not supported"),
        ({"type": "subscribe", "channel": "ticker", "product_ids": ["XYZ-USD"]}, "unknown product"),
        ({"type": "subscribe", "channel": "ticker"}, "needs product_ids"),
        ({"type": "hello"}, "unknown message type"),
    ):
        await feed.send(**message)
        reply = await feed.next()
        assert reply["type"] == "error" and expected in reply["message"]
    await feed.ws.send_str("{not json")
    assert "malformed" in (await feed.next())["message"]


async def test_a_client_that_never_subscribes_is_disconnected(cert_dir: Path):
    async with SimServer(seed=1, cert_dir=cert_dir, subscribe_timeout=0.3) as server:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.plain_ws_url) as ws:
                first = await ws.receive(timeout=3)
                assert json.loads(first.data)["type"] == "error"
                closing = await ws.receive(timeout=3)
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                assert ws.close_code == 1008


async def test_the_tls_port_serves_the_websocket_too(server: SimServer):
    context = ssl.create_default_context(cafile=str(server.cert_path))
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(server.ws_url, ssl=context) as ws:
            await ws.send_str(json.dumps({"type": "subscribe", "channel": "ticker", "product_ids": ["BTC-USD"]}))
            first = json.loads((await ws.receive(timeout=5)).data)
            second = json.loads((await ws.receive(timeout=5)).data)
    assert (first["channel"], first["sequence_num"]) == ("subscriptions", 0)
    assert (second["channel"], second["events"][0]["type"]) == ("ticker", "snapshot")
