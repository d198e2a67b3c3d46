"""The gateway adapter against the simulator server's JSON-RPC front (one SimCore)."""

from __future__ import annotations

import asyncio
import json
import socket
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from perpsbot.domain import OrderStatus, OrderType, Side, TimeInForce
from perpsbot.domain.clock import WallClock
from perpsbot.exchange.coinbase.auth import Credentials, JwtSigner
from perpsbot.exchange.gateway import FateUnknown, GatewayExchange, GatewayMarketStream, RpcClient
from perpsbot.exchange.port import AuthenticationError, InvalidOrder, OrderNotFound, OrderRequest
from perpsbot.exchange.sim.keys import generate_key
from perpsbot.exchange.sim.server import SimServer

BTC = "BTC_USDC-PERPETUAL"


def _signer(key):  # type: ignore[no-untyped-def]  # a test helper
    return JwtSigner(Credentials(key.name, SecretStr(key.private_key_text)))


def _exchange(server: SimServer, key, *, ws_url: str | None = None) -> GatewayExchange:  # type: ignore[no-untyped-def]
    base = f"127.0.0.1:{server.plain_port}"
    rpc = RpcClient(ws_url or f"ws://{base}/ws/api/v2", f"http://{base}/api/v2", _signer(key), timeout=3.0)
    return GatewayExchange(rpc, WallClock(), stream_url=f"ws://{base}/ws/api/v2")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def venue():  # type: ignore[no-untyped-def]
    key = generate_key()
    async with SimServer(seed=5, trust=[key], token_seconds=1.0, heartbeat_min_seconds=1.0) as server:
        exchange = _exchange(server, key)
        yield server, exchange, key
        await exchange.close()


async def test_instruments_orders_positions_and_fills(venue) -> None:  # type: ignore[no-untyped-def]
    server, ex, _ = venue
    products = {p.symbol: p for p in await ex.products()}
    btc = products[BTC]
    assert (btc.price_increment, btc.base_increment, btc.min_size, btc.max_leverage) == (
        Decimal(1), Decimal("0.0001"), Decimal("0.0001"), Decimal(50))
    assert btc.is_perpetual and btc.contract_size == 1
    quote = await ex.quote(BTC)
    assert isinstance(quote.bid, Decimal) and quote.bid < quote.ask

    snap = await ex.place_order(OrderRequest("pb-a", BTC, Side.BUY, OrderType.MARKET, Decimal("0.0123"),
                                             leverage=Decimal(2)))
    assert snap.status is OrderStatus.FILLED and snap.filled_size == Decimal("0.0123")
    assert sum(f.size for f in snap.fills) == Decimal("0.0123")
    core_fill = server.core.fills[-1]
    assert snap.fills[-1].price == core_fill.price and snap.fills[-1].fee == core_fill.fee  # exact, no float

    far = quote.bid - 2000
    resting = await ex.place_order(OrderRequest("pb-b", BTC, Side.BUY, OrderType.LIMIT, Decimal("0.01"), far,
                                                TimeInForce.GTC))
    assert resting.status is OrderStatus.OPEN
    assert [o.client_order_id for o in await ex.open_orders()] == ["pb-b"]
    cancelled = await ex.cancel_order("pb-b")
    assert cancelled.status is OrderStatus.CANCELLED and await ex.open_orders() == []

    account = await ex.account()
    assert account.positions[BTC].size == Decimal("0.0123")
    assert account.equity == server.core.equity()
    fills, cursor = await ex.fills_since(0)
    assert [f.client_order_id for f in fills] == ["pb-a"] and cursor == 1
    assert {o.client_order_id for o in await ex.orders_since(snap.created_at)} == {"pb-a", "pb-b"}

    with pytest.raises(InvalidOrder, match="qty_too_low"):
        await ex.place_order(OrderRequest("pb-c", BTC, Side.BUY, OrderType.MARKET, Decimal("0.00001")))


async def test_the_token_is_exchanged_again_before_it_expires(venue) -> None:  # type: ignore[no-untyped-def]
    server, ex, _ = venue
    await ex.account()
    first = ex.rpc.auths
    await asyncio.sleep(1.1)  # past the 1 s token (refreshed at 0.8 s)
    await ex.account()
    assert ex.rpc.auths > first
    assert server.gateway.refused["unauthorized"] == 0


async def test_a_key_the_gateway_does_not_trust_is_refused(venue) -> None:  # type: ignore[no-untyped-def]
    server, _, _ = venue
    stranger = _exchange(server, generate_key())
    with pytest.raises(AuthenticationError, match="invalid_credentials"):
        await stranger.account()
    await stranger.close()


async def test_http_carries_the_calls_while_the_websocket_is_down(venue) -> None:  # type: ignore[no-untyped-def]
    server, _, key = venue
    ex = _exchange(server, key, ws_url=f"ws://127.0.0.1:{_free_port()}/ws/api/v2")
    snap = await ex.place_order(OrderRequest("pb-h", BTC, Side.SELL, OrderType.MARKET, Decimal("0.002")))
    assert snap.status is OrderStatus.FILLED
    assert ex.rpc.http_calls >= 2 and ex.rpc.connects == 0
    await ex.close()


async def test_a_lost_answer_is_found_by_label_never_sent_again(venue) -> None:  # type: ignore[no-untyped-def]
    server, ex, _ = venue
    await ex.products()
    server.faults.force("lost_response", param="drop")
    with pytest.raises(FateUnknown):
        await ex.place_order(OrderRequest("pb-lost", BTC, Side.BUY, OrderType.MARKET, Decimal("0.001")))
    found = await ex.get_order("pb-lost")
    assert found.status is OrderStatus.FILLED and found.filled_size == Decimal("0.001")
    assert [o.label for o in server.gateway.orders.values()] == ["pb-lost"]  # one order: nothing resent
    with pytest.raises(OrderNotFound):
        await ex.get_order("pb-never-sent")


async def test_a_duplicate_under_one_label_is_cancelled_and_named(venue) -> None:  # type: ignore[no-untyped-def]
    server, ex, _ = venue
    quote = await ex.quote(BTC)
    await ex.products()
    price = quote.bid - 3000
    first = await ex.place_order(OrderRequest("pb-dup", BTC, Side.BUY, OrderType.LIMIT, Decimal("0.01"), price,
                                              TimeInForce.GTC))
    # the trap: a second order slips through under the same label (the gateway keeps both)
    await ex.rpc.call("private/buy", {"instrument_name": BTC, "amount": Decimal("0.01"), "type": "limit",
                                      "price": price, "label": "pb-dup"}, write=True)
    found = await ex.get_order("pb-dup")
    assert found.exchange_order_id == first.exchange_order_id and len(found.duplicates) == 1
    live = [o for o in server.gateway.orders.values() if not server.core.get_order(o.cid).status.is_terminal]
    assert [o.order_id for o in live] == [first.exchange_order_id]


async def test_book_change_id_gaps_are_resynced(venue) -> None:  # type: ignore[no-untyped-def]
    server, _, _ = venue
    messages = []
    stream = GatewayMarketStream(f"ws://127.0.0.1:{server.plain_port}/ws/api/v2", on_market=messages.append,
                                 heartbeat_seconds=1)
    await stream.subscribe("book", [BTC])
    stream.start()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if any(m.events and m.events[0].type == "update" for m in messages):
            break
    server.faults.force("skip_sequence")
    for _ in range(100):
        await asyncio.sleep(0.05)
        if stream.gaps and sum(1 for m in messages if m.events and m.events[0].type == "snapshot") >= 2:
            break
    await stream.close()
    snapshots = [m for m in messages if m.events and m.events[0].type == "snapshot"]
    assert stream.gaps == 1 and len(snapshots) >= 2 and stream.book_resyncs == 1
    assert all(isinstance(lvl.price, float) for m in snapshots for lvl in m.events[0].updates)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                     max_leaves=12)
_frames = st.one_of(
    st.text(max_size=40),
    _json.map(json.dumps),
    st.fixed_dictionaries({"jsonrpc": st.just("2.0"), "id": _json}).map(json.dumps),
    st.fixed_dictionaries({"method": st.sampled_from(["subscription", "heartbeat", "x"]), "params": _json}
                          ).map(json.dumps),
    st.fixed_dictionaries({"method": st.just("subscription"), "params": st.fixed_dictionaries({
        "channel": st.sampled_from([f"book.{BTC}.100ms", f"ticker.{BTC}.100ms", f"trades.{BTC}.100ms", "x.y"]),
        "data": _json})}).map(json.dumps),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=_frames)
def test_fuzzed_frames_are_counted_and_refused_never_raised(frame: str) -> None:
    stream = GatewayMarketStream("ws://127.0.0.1:9/ws/api/v2")
    delivered = []
    stream.on_market = delivered.append
    before = sum(stream.rpc.rejected.values())
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_feed(stream.rpc, frame))
    finally:
        loop.close()
    heartbeat = '"method": "heartbeat"' in frame
    counted = sum(stream.rpc.rejected.values()) - before
    assert counted >= 1 or delivered or heartbeat


async def _feed(rpc: RpcClient, frame: str) -> None:
    rpc.handle_text(frame)
