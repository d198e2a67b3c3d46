"""The authenticated channels' frames against Coinbase's documented shapes: the ``user``
snapshot comes in batches of 50 open orders (the channel's reference), and the
``futures_balance_summary`` channel's margin window measures carry
``liquidation_buffer_percentage`` (the official SDK's ``FCMMarginWindowMeasure``) where
REST's carry ``liquidation_buffer``."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from perpsbot.exchange.sim.keys import ApiKey, sign_jwt
from perpsbot.exchange.sim.server import SimServer

WINDOW_FIELDS = {"margin_window_type", "margin_level", "initial_margin", "maintenance_margin",
                 "liquidation_buffer_percentage", "total_hold", "futures_buying_power"}


async def _frames(server: SimServer, key: ApiKey, channel: str, wanted: int, **subscription: Any) -> list[dict]:
    async with aiohttp.ClientSession() as session, session.ws_connect(server.plain_ws_url) as ws:
        await ws.send_str(json.dumps({"type": "subscribe", "channel": channel, "jwt": sign_jwt(key), **subscription}))
        out: list[dict] = []
        while len(out) < wanted:
            message = json.loads((await ws.receive(timeout=3)).data)
            if message.get("channel") == channel:
                out.append(message)
        return out


def _rest_order(i: int) -> dict[str, Any]:
    return {"client_order_id": f"resting-{i}", "product_id": "BTC-USD", "side": "BUY",
            "order_configuration": {"limit_limit_gtc": {"base_size": "0.0001", "limit_price": "1000"}}}


async def test_the_user_snapshot_batches_open_orders_by_fifty(server: SimServer, ecdsa_key: ApiKey):
    now = server.clock.now()
    for i in range(51):
        server.venue.create_order(_rest_order(i), now)
    first, second = await _frames(server, ecdsa_key, "user", 2, product_ids=["BTC-USD"])
    batches = [first["events"][0], second["events"][0]]
    assert [e["type"] for e in batches] == ["snapshot", "snapshot"]
    assert [len(e["orders"]) for e in batches] == [50, 1]
    ids = {o["client_order_id"] for e in batches for o in e["orders"]}
    assert ids == {f"resting-{i}" for i in range(51)}
    assert all("expiring_futures_positions" in e["positions"] for e in batches)
    assert second["sequence_num"] == first["sequence_num"] + 1


async def test_an_empty_user_snapshot_is_one_message(server: SimServer, ecdsa_key: ApiKey):
    (only,) = await _frames(server, ecdsa_key, "user", 1, product_ids=["BIP-20DEC30-CDE"])
    assert only["events"][0]["type"] == "snapshot" and only["events"][0]["orders"] == []


async def test_the_futures_balance_channel_gives_window_buffers_as_percentages(server: SimServer,
                                                                                 ecdsa_key: ApiKey):
    (snapshot,) = await _frames(server, ecdsa_key, "futures_balance_summary", 1)
    summary = snapshot["events"][0]["fcm_balance_summary"]
    for key in ("intraday_margin_window_measure", "overnight_margin_window_measure"):
        measure = summary[key]
        assert set(measure) == WINDOW_FIELDS, sorted(measure)
        assert all(isinstance(v, str) for v in measure.values())
    assert summary["intraday_margin_window_measure"]["liquidation_buffer_percentage"] == "100"  # nothing held
    assert isinstance(summary["futures_buying_power"], str)  # plain strings in the channel, Amounts in REST
