"""Every private request needs a JWT signed by a trusted key, made the way Coinbase wants it."""

from __future__ import annotations

import json
import secrets
import ssl
import time
from typing import Any

import aiohttp
import jwt
import pytest

from perpsbot.exchange.sim.keys import ApiKey, generate_key, sign_jwt
from perpsbot.exchange.sim.products import default_products
from perpsbot.exchange.sim.server import SimServer

ACCOUNTS = "/api/v3/brokerage/accounts"


def _uri(server: SimServer, path: str = ACCOUNTS, method: str = "GET") -> str:
    return f"{method} {server.plain_base_url}{path}"


async def _get(server: SimServer, headers: dict[str, str], path: str = ACCOUNTS) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.plain_rest_url}{path}", headers=headers) as resp:
            return resp.status, json.loads(await resp.text())


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_well_made_token_is_accepted(server: SimServer, any_key: ApiKey):
    status, body = await _get(server, _bearer(sign_jwt(any_key, uri=_uri(server))))
    assert status == 200 and body["accounts"]


async def test_a_token_made_like_the_cdp_sdks_is_accepted_and_logged(server: SimServer, any_key: ApiKey,
                                                                      caplog: pytest.LogCaptureFixture):
    """CDP's SDKs name the request in a ``uris`` list, with an ``aud`` and a ``typ`` header;
    Coinbase documents only ``uri``, so the difference is tolerated and logged (once per key)."""
    now = int(time.time())
    claims = {"sub": any_key.name, "iss": "cdp", "aud": ["cdp_service"], "nbf": now, "exp": now + 120,
              "uris": [_uri(server)]}
    token = jwt.encode(claims, any_key.private_key(), algorithm=any_key.algorithm,
                       headers={"kid": any_key.name, "nonce": secrets.token_hex(), "typ": "JWT"})
    with caplog.at_level("INFO", logger="perpsbot.sim.keys"):
        for _ in range(2):
            status, body = await _get(server, _bearer(token))
            assert status == 200 and body["accounts"]
    assert [r.getMessage() for r in caplog.records if "uris" in r.getMessage()] == [
        f"JWT of key {any_key.name} names the request in a 'uris' list, not the documented 'uri': accepted"]

    elsewhere = sign_jwt(any_key, uris=[_uri(server, "/api/v3/brokerage/portfolios")])
    status, body = await _get(server, _bearer(elsewhere))
    assert status == 401 and "uri" in body["error_details"]


def _unnonced(key: ApiKey, uri: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": key.name, "iss": "cdp", "nbf": now, "exp": now + 120, "uri": uri},
                      key.private_key(), algorithm="ES256", headers={"kid": key.name})


def _foreign_signature(key: ApiKey, uri: str) -> str:
    impostor = generate_key("ecdsa")
    now = int(time.time())
    return jwt.encode(
        {"sub": key.name, "iss": "cdp", "nbf": now, "exp": now + 120, "uri": uri},
        impostor.private_key(),
        algorithm="ES256",
        headers={"kid": key.name, "nonce": secrets.token_hex()},
    )


REFUSED = {
    "untrusted key": (lambda s, k: _bearer(sign_jwt(generate_key("ecdsa"), uri=_uri(s))), "unknown API key"),
    "signed by another key": (lambda s, k: _bearer(_foreign_signature(k, _uri(s))), "signature"),
    "expired": (lambda s, k: _bearer(sign_jwt(k, uri=_uri(s), now=time.time() - 600)), "expired"),
    "not yet valid": (lambda s, k: _bearer(sign_jwt(k, uri=_uri(s), now=time.time() + 600)), "not valid yet"),
    "lives too long": (lambda s, k: _bearer(sign_jwt(k, uri=_uri(s), lifetime=3600)), "lifetime"),
    "wrong path in uri": (lambda s, k: _bearer(sign_jwt(k, uri=_uri(s, "/api/v3/brokerage/portfolios"))), "uri"),
    "wrong method in uri": (lambda s, k: _bearer(sign_jwt(k, uri=_uri(s, method="POST"))), "uri"),
    "wrong host in uri": (lambda s, k: _bearer(sign_jwt(k, uri=f"GET api.coinbase.com{ACCOUNTS}")), "uri"),
    "no uri claim": (lambda s, k: _bearer(sign_jwt(k)), "uri"),
    "wrong issuer": (lambda s, k: _bearer(sign_jwt(k, uri=_uri(s), iss="coinbase-cloud")), "issuer"),
    "sub is not the key": (lambda s, k: _bearer(sign_jwt(k, uri=_uri(s), sub="organizations/x/apiKeys/y")), "sub"),
    "no exp": (lambda s, k: _bearer(sign_jwt(k, uri=_uri(s), exp=None)), "exp"),
    "no nonce": (lambda s, k: _bearer(_unnonced(k, _uri(s))), "nonce"),
    "missing header": (lambda s, k: {}, "missing Authorization"),
    "not a bearer token": (lambda s, k: {"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer"),
    "garbage": (lambda s, k: _bearer("not.a.jwt"), "malformed"),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_bad_credentials_get_a_coinbase_style_401(server: SimServer, ecdsa_key: ApiKey, case: str):
    make, reason = REFUSED[case]
    status, body = await _get(server, make(server, ecdsa_key))
    assert status == 401
    assert body["error"] == "UNAUTHENTICATED" and body["code"] == 16
    assert body["message"] == "Unauthorized"
    assert reason in body["error_details"]
    assert server.venue.orders() == []


async def test_the_tls_listener_checks_its_own_host_in_the_uri(server: SimServer, ecdsa_key: ApiKey):
    token = sign_jwt(ecdsa_key, uri=_uri(server))  # made for the plain port
    context = ssl.create_default_context(cafile=str(server.cert_path))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.rest_url}{ACCOUNTS}", headers=_bearer(token),
                               ssl=context) as resp:
            assert resp.status == 401
        good = sign_jwt(ecdsa_key, uri=f"GET {server.base_url}{ACCOUNTS}")
        async with session.get(f"{server.rest_url}{ACCOUNTS}", headers=_bearer(good),
                               ssl=context) as resp:
            assert resp.status == 200


async def test_a_key_trusted_at_run_time_is_accepted(server: SimServer):
    newcomer = generate_key("ed25519")
    assert (await _get(server, _bearer(sign_jwt(newcomer, uri=_uri(server)))))[0] == 401
    server.trust_key(newcomer)
    assert (await _get(server, _bearer(sign_jwt(newcomer, uri=_uri(server)))))[0] == 200


async def test_public_endpoints_ignore_credentials(server: SimServer):
    status, body = await _get(server, {}, "/api/v3/brokerage/market/products")
    assert status == 200 and body["num_products"] == len(default_products())
    status, _ = await _get(server, _bearer("rubbish"), "/api/v3/brokerage/market/products/BTC-USD")
    assert status == 200


async def _ws_reply(server: SimServer, message: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(server.plain_ws_url) as ws:
            await ws.send_str(json.dumps(message))
            return json.loads((await ws.receive(timeout=5)).data)


async def test_websocket_user_channels_need_a_valid_jwt(server: SimServer, ed25519_key: ApiKey):
    missing = await _ws_reply(server, {"type": "subscribe", "channel": "user", "product_ids": []})
    assert missing["type"] == "error" and "authentication failure" in missing["message"]
    expired = await _ws_reply(server, {"type": "subscribe", "channel": "futures_balance_summary",
                                       "jwt": sign_jwt(ed25519_key, now=time.time() - 600)})
    assert expired["type"] == "error" and "expired" in expired["message"]
    stranger = await _ws_reply(server, {"type": "subscribe", "channel": "user",
                                        "jwt": sign_jwt(generate_key("ecdsa"))})
    assert stranger["type"] == "error"
    ok = await _ws_reply(server, {"type": "subscribe", "channel": "user", "jwt": sign_jwt(ed25519_key)})
    assert ok["channel"] == "subscriptions" and ok["events"][0]["subscriptions"] == {"user": []}
    public = await _ws_reply(server, {"type": "subscribe", "channel": "ticker", "product_ids": ["BTC-USD"]})
    assert public["channel"] == "subscriptions"
