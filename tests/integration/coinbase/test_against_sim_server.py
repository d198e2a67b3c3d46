"""The Coinbase adapter against the simulator server (``perpsbot.exchange.sim.server``):
REST over TLS with the server's self-signed certificate as CA bundle, JWTs checked by
the server, and the server's injected faults."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import SecretStr

from perpsbot.domain import OrderStatus, OrderType, ProductType, Side, TimeInForce
from perpsbot.domain.clock import WallClock
from perpsbot.exchange.coinbase import CoinbaseExchange, CoinbaseRestClient, JwtSigner, RetryPolicy, ssl_context
from perpsbot.exchange.coinbase.auth import Credentials
from perpsbot.exchange.coinbase.mapping import L2Snapshot, L2Update, TickerEvent
from perpsbot.exchange.coinbase.ws import CoinbaseWebSocket, StreamNotice
from perpsbot.exchange.port import AuthenticationError, OrderRequest
from perpsbot.exchange.sim.keys import generate_key
from perpsbot.exchange.sim.server import SimServer

D = Decimal
FAST = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05, max_retry_after=1.0)


@pytest.fixture(params=["ecdsa", "ed25519"])
async def sim(request):
    key = generate_key(request.param)
    async with SimServer(seed=11, trust=[key]) as server:
        signer = JwtSigner(Credentials(key.name, SecretStr(key.private_key_text)))
        ssl = ssl_context(server.cert_path)
        rest = CoinbaseRestClient(signer, base_url=server.rest_url, ssl=ssl, retry=FAST, lookup_delay=0,
                                  timeout=3.0, rng=random.Random(3))
        exchange = CoinbaseExchange(rest, WallClock(), ssl=ssl)
        exchange.endpoints = type(exchange.endpoints)(server.rest_url, server.ws_url, server.ws_url)
        yield server, exchange
        await exchange.close()


def order(cid: str, symbol: str = "BIP-20DEC30-CDE", side: Side = Side.BUY, size: str = "1",
          type_: OrderType = OrderType.MARKET, price: Decimal | None = None,
          tif: TimeInForce = TimeInForce.IOC, reduce_only: bool = False) -> OrderRequest:
    return OrderRequest(cid, symbol, side, type_, D(size), price, tif, reduce_only, D(2))


async def test_products_quote_book_and_candles(sim):
    server, exchange = sim
    products = {p.symbol: p for p in await exchange.products()}
    assert products["BTC-USD"].type is ProductType.SPOT
    bip = products["BIP-20DEC30-CDE"]
    assert bip.type is ProductType.PERPETUAL and bip.max_leverage > 1 and bip.contract_size == D("0.01")
    dated = products["BIT-26MAR27-CDE"]  # a dated future: margined like a perpetual, no funding
    assert dated.type is ProductType.FUTURE and dated.contract_size == D("0.01") and dated.max_leverage == 10
    assert dated.expiry == datetime(2027, 3, 26, 16, tzinfo=UTC)
    assert bip.expiry == datetime(2030, 12, 20, 16, tzinfo=UTC)
    quote = await exchange.quote("BIP-20DEC30-CDE")
    assert 0 < quote.bid < quote.ask and quote.ts.tzinfo is not None
    book = await exchange.book("BIP-20DEC30-CDE", 5)
    assert book.bids[0].price < book.asks[0].price  # a book that is not crossed
    assert book.bids[0].price <= quote.ask and book.asks[0].price >= quote.bid
    candles = await exchange.candles("BTC-USD", 60, 5)
    assert 1 <= len(candles) <= 5
    assert [c.start for c in candles] == sorted(c.start for c in candles)
    assert all(c.start.timestamp() % 60 == 0 for c in candles)


async def test_place_get_cancel_fills_and_account(sim):
    server, exchange = sim
    before = await exchange.account()
    assert before.equity > 0 and "USD" in before.balances
    filled = await exchange.place_order(order("pb-m1"))
    assert filled.status is OrderStatus.FILLED and filled.filled_size == D(1)  # one contract: 0.01 BTC
    assert filled.fills and sum(f.size for f in filled.fills) == D(1)
    assert all(f.client_order_id == "pb-m1" for f in filled.fills)
    after = await exchange.account()
    assert after.positions["BIP-20DEC30-CDE"].size == D(1)
    assert after.positions["BIP-20DEC30-CDE"].contract_size == D("0.01")
    assert abs(after.equity - before.equity) < before.equity * D("0.01")  # fees and spread, no double count
    far = (await exchange.quote("BIP-20DEC30-CDE")).bid * D("0.8")
    resting = await exchange.place_order(order("pb-l1", type_=OrderType.LIMIT, price=(far / 5).quantize(D(1)) * 5,
                                               tif=TimeInForce.GTC))
    assert resting.status is OrderStatus.OPEN
    assert "pb-l1" in {o.client_order_id for o in await exchange.open_orders()}
    assert (await exchange.get_order("pb-l1")).status is OrderStatus.OPEN
    cancelled = await exchange.cancel_order("pb-l1")
    assert cancelled.status is OrderStatus.CANCELLED
    fills, cursor = await exchange.fills_since(0)
    assert [f.client_order_id for f in fills] == ["pb-m1"] * len(fills) and cursor == len(fills)
    again, cursor2 = await exchange.fills_since(cursor)
    assert again == [] and cursor2 == cursor
    # The order history, all of it or one product's (a late order's last check asks for its own only).
    start = filled.created_at - timedelta(minutes=1)
    spot = await exchange.place_order(order("pb-s1", symbol="BTC-USD", size="0.001"))
    assert {o.client_order_id for o in await exchange.orders_since(start)} >= {"pb-m1", "pb-l1", "pb-s1"}
    perp_only = await exchange.orders_since(start, "BIP-20DEC30-CDE")
    assert {o.client_order_id for o in perp_only} == {"pb-m1", "pb-l1"} and spot.symbol == "BTC-USD"
    # A fresh adapter (a restart) finds an order by client_order_id alone.
    fresh = CoinbaseExchange(exchange.rest, WallClock())
    assert (await fresh.get_order("pb-m1")).exchange_order_id == filled.exchange_order_id


async def test_reads_survive_429_bursts_and_5xx(sim):
    server, exchange = sim
    server.faults.force("server_error", 2)
    assert (await exchange.quote("BTC-USD")).symbol == "BTC-USD"
    server.faults.force("rate_limit", 1, 0.2)
    assert (await exchange.quote("ETH-USD")).symbol == "ETH-USD"
    assert server.faults.injected["server_error"] >= 2 and server.faults.injected["rate_limit"] >= 1


@pytest.mark.parametrize("mode", ["drop", "error"])
async def test_order_accepted_but_response_lost_is_adopted_never_duplicated(sim, mode):
    server, exchange = sim
    server.faults.force("lost_response", 1, mode)
    snapshot = await exchange.place_order(order(f"pb-lost-{mode}"))
    assert snapshot.client_order_id == f"pb-lost-{mode}" and snapshot.status is OrderStatus.FILLED
    same = [o for o in server.venue.orders() if o.client_order_id == f"pb-lost-{mode}"]
    assert len(same) == 1
    account = await exchange.account()
    assert account.positions["BIP-20DEC30-CDE"].size == D(1)  # one order's worth, not two


async def test_a_key_the_server_does_not_trust_is_refused(sim):
    server, exchange = sim
    stranger = generate_key("ecdsa")
    signer = JwtSigner(Credentials(stranger.name, SecretStr(stranger.private_key_text)))
    rest = CoinbaseRestClient(signer, base_url=server.rest_url, ssl=ssl_context(server.cert_path), retry=FAST)
    try:
        with pytest.raises(AuthenticationError, match="HTTP 401"):
            await rest.list_products()
    finally:
        await rest.close()


async def next_matching(ws: CoinbaseWebSocket, predicate, timeout: float = 5.0):
    async def scan():
        while True:
            event = await ws.next_event()
            if predicate(event):
                return event
    return await asyncio.wait_for(scan(), timeout)


async def test_websocket_market_data_reconnects_and_resyncs(sim):
    server, exchange = sim
    ws = exchange.market_stream(quiet_seconds=5.0)
    ws.reconnect = RetryPolicy(attempts=10**6, base_delay=0.05, max_delay=0.2)
    await ws.subscribe("level2", ["BTC-USD"])
    await ws.subscribe("ticker", ["BTC-USD"])
    ws.start()
    snapshot = await next_matching(ws, lambda e: isinstance(e, L2Snapshot))
    assert snapshot.symbol == "BTC-USD" and snapshot.bids and snapshot.asks
    ticker = await next_matching(ws, lambda e: isinstance(e, TickerEvent))
    assert ticker.quote() is not None and ticker.ts.tzinfo is not None

    server.faults.force("skip_sequence", 1)
    await next_matching(ws, lambda e: isinstance(e, StreamNotice) and e.kind == "gap")
    resynced = await next_matching(ws, lambda e: isinstance(e, L2Snapshot | L2Update))
    assert isinstance(resynced, L2Snapshot)  # no update is applied before the fresh snapshot
    assert ws.gaps == 1

    server.faults.force("ws_disconnect", 1)
    await next_matching(ws, lambda e: isinstance(e, StreamNotice) and e.kind == "disconnected")
    await next_matching(ws, lambda e: isinstance(e, StreamNotice) and e.kind == "connected")
    again = await next_matching(ws, lambda e: isinstance(e, L2Snapshot))
    assert again.symbol == "BTC-USD" and ws.connects == 2
    await ws.close()


async def test_a_quiet_websocket_is_replaced(sim):
    server, exchange = sim
    ws = exchange.user_stream(quiet_seconds=0.4, heartbeats=False)
    ws.reconnect = RetryPolicy(attempts=10**6, base_delay=0.05, max_delay=0.1)
    await ws.subscribe("user")
    ws.start()
    await next_matching(ws, lambda e: isinstance(e, StreamNotice) and e.kind == "quiet")
    await next_matching(ws, lambda e: isinstance(e, StreamNotice) and e.kind == "connected")
    assert ws.quiet_reconnects >= 1 and ws.connects >= 2
    await ws.close()
