"""Injected faults, each observable from the client side."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from requests.exceptions import HTTPError

from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.sim.keys import ApiKey, sign_jwt
from perpsbot.exchange.sim.server import SimServer

from .conftest import call, sdk, wait_for

PRODUCTS = "/api/v3/brokerage/market/products"


async def _status(session: aiohttp.ClientSession, server: SimServer, path: str = PRODUCTS) -> tuple[int, Any, Any]:
    async with session.get(f"{server.plain_rest_url}{path}") as resp:
        return resp.status, json.loads(await resp.text()), resp.headers


async def test_rate_limit_bursts_answer_429_then_recover(server: SimServer):
    server.faults.force("rate_limit", param=0.4)  # the next request starts a 0.4 s burst
    async with aiohttp.ClientSession() as session:
        status, body, headers = await _status(session, server)
        assert status == 429
        assert body["error"] == "RATE_LIMIT_EXCEEDED" and body["message"] == "Too many requests"
        assert headers["x-ratelimit-remaining"] == "0" and int(headers["Retry-After"]) >= 1
        assert (await _status(session, server))[0] == 429  # still inside the burst
        await asyncio.sleep(0.45)
        assert (await _status(session, server))[0] == 200
    assert server.faults.injected["rate_limit"] == 1 and server.faults.injected["rate_limit_burst"] == 1


async def test_server_errors_are_5xx_with_a_body(server: SimServer):
    async with aiohttp.ClientSession() as session:
        server.faults.force("server_error")
        status, body, _ = await _status(session, server)
        assert status == 500 and body["error"] == "INTERNAL"
        server.faults.force("server_error", param=503)
        status, body, _ = await _status(session, server)
        assert status == 503 and body["error"] == "UNAVAILABLE"
        assert (await _status(session, server))[0] == 200


async def test_slow_responses_are_delayed(server: SimServer):
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        assert (await _status(session, server))[0] == 200
        quick = time.monotonic() - started
        server.faults.force("slow", param=0.4)
        started = time.monotonic()
        assert (await _status(session, server))[0] == 200
        assert time.monotonic() - started >= 0.4 > quick


@pytest.mark.parametrize("mode", ["drop", "error"])
async def test_a_lost_response_still_creates_the_order_once(server: SimServer, ecdsa_key: ApiKey, mode: str):
    client = sdk(server, ecdsa_key)
    server.faults.force("lost_response", param=mode)
    expected = requests.ConnectionError if mode == "drop" else HTTPError
    with pytest.raises(expected):
        await call(client.market_order_buy, f"lost-{mode}", "ETH-USD", base_size="0.2")
    order = server.venue.find_by_client_id(f"lost-{mode}")
    assert order is not None and server.venue.view(order).status == "FILLED"  # it happened
    fills = len(server.core.fills)
    retry = await call(client.market_order_buy, f"lost-{mode}", "ETH-USD", base_size="0.2")
    assert retry.success and retry.success_response["order_id"] == order.order_id
    assert len(server.core.fills) == fills and len(server.venue.orders()) == 1
    found = await call(client.get_order, order.order_id)
    assert found.order.status == "FILLED"


async def test_a_late_accepted_order_does_not_exist_until_it_is_processed(server: SimServer, ecdsa_key: ApiKey):
    client = sdk(server, ecdsa_key)
    server.faults.force("late_accept", param=0.6)
    started = time.monotonic()
    placing = asyncio.create_task(call(client.market_order_buy, "late-1", "ETH-USD", base_size="0.2"))
    await wait_for(lambda: server.faults.injected["late_accept"] == 1)  # its body has arrived
    await asyncio.sleep(0.2)
    assert server.venue.find_by_client_id("late-1") is None and server.core.fills == []
    with pytest.raises(HTTPError, match="404"):  # get-order by the client id: not there yet
        await call(client.get_order, "late-1")
    assert (await call(client.list_orders)).orders == []
    answer = await placing  # answered only once processed
    assert time.monotonic() - started >= 0.6 and answer.success
    order = server.venue.find_by_client_id("late-1")
    assert order is not None and server.venue.view(order).status == "FILLED" and len(server.core.fills) == 1
    assert [o.client_order_id for o in (await call(client.list_orders)).orders] == ["late-1"]


async def test_a_late_order_is_accepted_even_after_the_client_gave_up(server: SimServer, ecdsa_key: ApiKey):
    server.faults.force("late_accept", param=0.5)
    path = "/api/v3/brokerage/orders"
    body = json.dumps({"client_order_id": "late-2", "product_id": "ETH-USD", "side": "BUY",
                       "order_configuration": {"market_market_ioc": {"base_size": "0.1"}}})
    token = sign_jwt(ecdsa_key, uri=f"POST {server.plain_base_url}{path}")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):  # the client times out and drops the connection
            await session.post(f"{server.plain_rest_url}{path}", data=body, timeout=aiohttp.ClientTimeout(total=0.2),
                               headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert server.venue.find_by_client_id("late-2") is None
    await wait_for(lambda: server.venue.find_by_client_id("late-2") is not None, timeout=3)
    assert server.venue.view(server.venue.find_by_client_id("late-2")).status == "FILLED"


async def test_faults_configured_from_a_spec_fire_at_their_rate(cert_dir: Path):
    async with SimServer(seed=4, cert_dir=cert_dir, faults="server_error=0.5") as server:
        async with aiohttp.ClientSession() as session:
            statuses = [(await _status(session, server))[0] for _ in range(60)]
    failures = statuses.count(500)
    assert 15 <= failures <= 45 and set(statuses) == {200, 500}


# ----- WebSocket faults, on a manually stepped server ---------------------------------------


@pytest.fixture
async def stepped(cert_dir: Path) -> AsyncIterator[tuple[SimServer, ManualClock]]:
    clock = ManualClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    async with SimServer(seed=8, cert_dir=cert_dir, clock=clock, tick_interval=3600) as srv:
        yield srv, clock


async def _messages(ws: aiohttp.ClientWebSocketResponse, wait: float = 0.1) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            msg = await ws.receive(timeout=wait)
        except TimeoutError:
            return out
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return out
        out.append(json.loads(msg.data))


async def test_skipped_sequence_numbers_show_as_a_gap(stepped: tuple[SimServer, ManualClock]):
    server, clock = stepped
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(server.plain_ws_url) as ws:
            await ws.send_str(json.dumps({"type": "subscribe", "channel": "level2", "product_ids": ["BTC-USD"]}))
            seqs = [m["sequence_num"] for m in await _messages(ws)]
            for step in range(6):
                if step == 3:
                    server.faults.force("skip_sequence")
                clock.advance(0.2)
                server.step()
                seqs += [m["sequence_num"] for m in await _messages(ws)]
    gaps = [b - a for a, b in zip(seqs, seqs[1:], strict=False)]
    assert seqs[0] == 0 and gaps.count(2) == 1 and set(gaps) == {1, 2}


async def test_a_websocket_disconnect_drops_the_connection_without_a_close_frame(
        stepped: tuple[SimServer, ManualClock]):
    server, clock = stepped
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(server.plain_ws_url) as ws:
            await ws.send_str(json.dumps({"type": "subscribe", "channel": "ticker", "product_ids": ["ETH-USD"]}))
            assert await _messages(ws)
            server.faults.force("ws_disconnect")
            clock.advance(1)
            server.step()
            msg = await ws.receive(timeout=3)
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            assert ws.close_code in (None, 1006)  # abnormal: no close frame was sent
    await asyncio.sleep(0.05)
    assert server.websocket_clients == 0  # the server let go of it too
    assert server.faults.injected["ws_disconnect"] == 1
