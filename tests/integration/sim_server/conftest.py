"""Shared pieces for the simulator-server tests: keys, a running server, SDK clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from coinbase.rest import RESTClient

from perpsbot.exchange.sim.keys import ApiKey, generate_key
from perpsbot.exchange.sim.server import SimServer


@pytest.fixture(scope="session")
def ecdsa_key() -> ApiKey:
    return generate_key("ecdsa")


@pytest.fixture(scope="session")
def ed25519_key() -> ApiKey:
    return generate_key("ed25519")


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim-tls")  # one certificate for the whole session


@pytest.fixture(params=["ecdsa", "ed25519"])
def any_key(request: pytest.FixtureRequest, ecdsa_key: ApiKey, ed25519_key: ApiKey) -> ApiKey:
    return ecdsa_key if request.param == "ecdsa" else ed25519_key


@pytest.fixture
async def server(ecdsa_key: ApiKey, ed25519_key: ApiKey, cert_dir: Path,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SimServer]:
    async with SimServer(seed=11, trust=[ecdsa_key, ed25519_key], cert_dir=cert_dir) as srv:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(srv.cert_path))
        yield srv


def sdk(server: SimServer, key: ApiKey | None) -> RESTClient:
    """Coinbase's own REST client pointed at the simulator (TLS, trusted via REQUESTS_CA_BUNDLE)."""
    if key is None:
        return RESTClient(base_url=server.base_url, timeout=10)
    return RESTClient(api_key=key.name, api_secret=key.private_key_text, base_url=server.base_url, timeout=10)


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking SDK call off the event loop the server runs on."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def parsed(messages: list[str]) -> list[dict[str, Any]]:
    return [json.loads(m) for m in list(messages)]
