"""Shapes where the simulator (and our adapter) once differed from the real exchange, as
clients we did not write found them: the official SDK on one side, our adapter on the other."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import SecretStr
from requests.exceptions import HTTPError

from perpsbot.domain import Side
from perpsbot.domain.clock import WallClock
from perpsbot.exchange.coinbase import CoinbaseExchange, CoinbaseRestClient, JwtSigner, RetryPolicy, ssl_context
from perpsbot.exchange.coinbase.auth import Credentials
from perpsbot.exchange.coinbase.mapping import NewOrder, StopDirection, StopLimitGtc
from perpsbot.exchange.port import InvalidOrder
from perpsbot.exchange.sim.keys import ApiKey
from perpsbot.exchange.sim.server import SimServer

from .conftest import call, sdk

D = Decimal
CENT = D("0.01")


@pytest.fixture
async def adapter(server: SimServer, ecdsa_key: ApiKey) -> AsyncIterator[CoinbaseExchange]:
    """Our own Coinbase adapter on the same server the SDK talks to."""
    ssl = ssl_context(server.cert_path)
    rest = CoinbaseRestClient(JwtSigner(Credentials(ecdsa_key.name, SecretStr(ecdsa_key.private_key_text))),
                              base_url=server.rest_url, ssl=ssl, lookup_delay=0, timeout=3.0, rng=random.Random(1),
                              retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05, max_retry_after=1.0))
    exchange = CoinbaseExchange(rest, WallClock(), ssl=ssl)
    yield exchange
    await exchange.close()


async def test_fills_of_an_order_sized_in_quote_are_reported_in_quote_and_read_as_base(
        server: SimServer, ecdsa_key: ApiKey, adapter: CoinbaseExchange):
    client = sdk(server, ecdsa_key)
    bought = await call(client.market_order_buy, "q-100", "BTC-USD", quote_size="100")
    order = (await call(client.get_order, bought.success_response["order_id"])).order
    fills = (await call(client.get_fills, order_ids=[order.order_id])).fills
    assert fills and all(f.size_in_quote is True for f in fills)
    assert sum(D(f.size) for f in fills) == D(order.filled_value) <= 100  # dollars, not bitcoin

    ours, _ = await adapter.fills_since(0)
    assert [f.client_order_id for f in ours] == ["q-100"] * len(fills)
    assert sum(f.size for f in ours) == D(order.filled_size) < D("0.01")
    assert sum(f.size * f.price for f in ours) == D(order.filled_value)


async def test_a_market_buy_by_quote_size_pays_its_fee_out_of_that_amount(server: SimServer, ecdsa_key: ApiKey):
    client = sdk(server, ecdsa_key)
    bought = await call(client.market_order_buy, "q-1000", "BTC-USD", quote_size="1000")
    order = (await call(client.get_order, bought.success_response["order_id"])).order
    assert order.size_inclusive_of_fees is True and D(order.total_fees) > 0
    spent = D(order.filled_value) + D(order.total_fees)
    assert D(order.total_value_after_fees) == spent
    assert D(999) < spent <= D(1000)  # the fee is inside the $1000, not on top
    usd = {a.currency: a for a in (await call(client.get_accounts)).accounts}["USD"]
    assert D(100_000) - D(usd.available_balance["value"]) == spent

    by_base = await call(client.market_order_buy, "b-1", "BTC-USD", base_size="0.001")
    assert (await call(client.get_order, by_base.success_response["order_id"])).order.size_inclusive_of_fees is False


async def test_a_reason_given_only_as_preview_failure_reason_reaches_sdk_and_adapter(
        server: SimServer, ecdsa_key: ApiKey, adapter: CoinbaseExchange):
    client = sdk(server, ecdsa_key)
    last = server.core.market("BTC-USD").last_trade
    below = str((last * D("0.9")).quantize(CENT))
    wrong = await call(client.stop_limit_order_gtc_buy, "stop-low", "BTC-USD", base_size="0.001",
                       limit_price=below, stop_price=below, stop_direction="STOP_DIRECTION_STOP_UP")
    assert wrong.success is False
    assert wrong.error_response["error"] == "UNKNOWN_FAILURE_REASON" and wrong.error_response["message"] == ""
    assert wrong.error_response["preview_failure_reason"] == "PREVIEW_STOP_PRICE_BELOW_LAST_TRADE_PRICE"
    assert server.venue.orders() == []

    above = (last * D("1.1")).quantize(CENT)
    stop = NewOrder("stop-high", "BTC-USD", Side.SELL,
                    StopLimitGtc(D("0.001"), above, above, StopDirection.DOWN))
    with pytest.raises(InvalidOrder) as info:
        await adapter.rest.submit_order(stop, now=lambda: datetime.now(UTC))
    assert info.value.reason == "PREVIEW_STOP_PRICE_ABOVE_LAST_TRADE_PRICE"
    assert "PREVIEW_STOP_PRICE_ABOVE_LAST_TRADE_PRICE" in str(info.value)


async def test_an_attached_order_configuration_is_refused_not_dropped(server: SimServer, ecdsa_key: ApiKey):
    client = sdk(server, ecdsa_key)
    last = server.core.market("BTC-USD").last_trade
    bracket = {"trigger_bracket_gtc": {"limit_price": str((last * D("1.05")).quantize(CENT)),
                                       "stop_trigger_price": str((last * D("0.95")).quantize(CENT))}}
    entry = {"market_market_ioc": {"base_size": "0.001"}}
    refused = await call(client.create_order, "with-tp-sl", "BTC-USD", "BUY", entry,
                         attached_order_configuration=bracket)
    assert refused.success is False
    assert refused.error_response["error"] == "UNSUPPORTED_ORDER_CONFIGURATION"
    assert "attached_order_configuration" in refused.error_response["message"]
    assert server.venue.orders() == [] and server.core.fills == []  # the entry was not executed without its exits

    preview = await call(client.preview_order, "BTC-USD", "BUY", entry, attached_order_configuration=bracket)
    assert preview.errs == ["PREVIEW_INVALID_ORDER_CONFIG"]


async def test_move_funds_is_a_post_next_to_the_portfolio_breakdown(server: SimServer, ecdsa_key: ApiKey):
    client = sdk(server, ecdsa_key)
    portfolios = {p.type: p.uuid for p in (await call(client.get_portfolios)).portfolios}
    default, perps = portfolios["DEFAULT"], portfolios["CONSUMER"]
    moved = await call(client.move_portfolio_funds, "250.5", "USD", default, perps)
    assert (moved.source_portfolio_uuid, moved.target_portfolio_uuid) == (default, perps)
    assert (await call(client.get_portfolio_breakdown, default)).breakdown.portfolio["uuid"] == default

    for value, currency, source, status in (("1", "USD", "no-such-portfolio", 404), ("1000000", "USD", default, 400),
                                            ("-1", "USD", default, 400), ("1", "USD", perps, 400)):
        with pytest.raises(HTTPError) as info:
            await call(client.move_portfolio_funds, value, currency, source, perps)
        assert info.value.response.status_code == status
