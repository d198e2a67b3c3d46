from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpsbot.domain import Side
from perpsbot.exchange.coinbase.auth import JwtSigner
from perpsbot.exchange.coinbase.mapping import LimitGtc, MarketIoc, NewOrder
from perpsbot.exchange.coinbase.rest import CoinbaseRestClient, RetryPolicy, TokenBucket, TransportError
from perpsbot.exchange.port import (
    AuthenticationError,
    InsufficientFunds,
    InvalidOrder,
    OrderNotFound,
    RateLimited,
    ServerError,
)
from tests.coinbasekit import FakeCoinbase, ec_credentials

D = Decimal
FAST = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.005)


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def env():
    credentials, public = ec_credentials()
    async with FakeCoinbase(public) as server:
        client = CoinbaseRestClient(JwtSigner(credentials), base_url=server.base_url, retry=FAST, timeout=2.0,
                                    lookup_delay=0, rng=random.Random(1))
        yield server, client
        await client.close()


# ----- rate limiting and backoff ------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


async def test_token_bucket_allows_a_burst_then_paces_at_the_rate():
    fake = FakeTime()
    bucket = TokenBucket(30, clock=fake.clock, sleep=fake.sleep)
    for _ in range(30):
        await bucket.acquire()
    assert fake.t == 0  # the first second's burst goes out at once
    for _ in range(60):
        await bucket.acquire()
    assert fake.t == pytest.approx(2.0, rel=1e-6)  # then 30 a second, no faster


async def test_requests_go_through_the_private_bucket_and_public_ones_through_the_public_bucket(env):
    server, client = env
    fake = FakeTime()
    client.private_bucket = TokenBucket(2, clock=fake.clock, sleep=fake.sleep)
    for _ in range(4):
        await client.list_products()
    assert fake.t == pytest.approx(1.0)
    fake.t, before = 0.0, len(server.requests)
    anonymous = CoinbaseRestClient(None, base_url=server.base_url,
                                   public_bucket=TokenBucket(1, clock=fake.clock, sleep=fake.sleep))
    try:
        await anonymous.list_products()
        await anonymous.list_products()
        assert fake.t == pytest.approx(1.0)
        assert [r.path for r in server.requests[before:]] == ["/market/products"] * 2
        assert all(r.claims is None for r in server.requests[before:])
    finally:
        await anonymous.close()


@given(attempt=st.integers(0, 60), seed=st.integers(0, 2**32))
def test_backoff_is_capped_and_jittered_within_the_exponential_step(attempt: int, seed: int):
    policy = RetryPolicy(base_delay=0.2, max_delay=5.0)
    delay = policy.delay(attempt, random.Random(seed))
    step = min(5.0, 0.2 * 2**attempt)
    assert step / 2 <= delay <= step <= 5.0


def test_backoff_grows_until_the_cap():
    policy = RetryPolicy(base_delay=0.1, max_delay=2.0)
    lows = [policy.delay(a, random.Random(0)) for a in range(8)]
    assert lows[1] > lows[0] / 2 and max(lows) <= 2.0 and min(lows[5:]) >= 1.0


# ----- auth on the wire ------------------------------------------------------------------------


async def test_every_request_carries_its_own_jwt_bound_to_method_host_and_path(env):
    server, client = env
    await client.list_products()
    await client.best_bid_ask(["BTC-USD", "BIP-20DEC30-CDE"])
    first, second = server.requests
    assert first.claims["uri"] == f"GET 127.0.0.1:{server.port}/api/v3/brokerage/products"
    assert second.claims["uri"] == f"GET 127.0.0.1:{server.port}/api/v3/brokerage/best_bid_ask"
    assert second.query["product_ids"] == ["BTC-USD", "BIP-20DEC30-CDE"]


async def test_a_rejected_signature_is_an_authentication_error(env):
    server, client = env
    credentials, _ = ec_credentials()  # a key the server does not know
    stranger = CoinbaseRestClient(JwtSigner(credentials), base_url=server.base_url, retry=FAST)
    try:
        with pytest.raises(AuthenticationError, match="HTTP 401"):
            await stranger.list_products()
    finally:
        await stranger.close()


# ----- retries of reads -------------------------------------------------------------------------


async def test_reads_are_retried_on_429_and_5xx_and_then_succeed(env):
    server, client = env
    server.faults[("GET", "/best_bid_ask")] += ["429", "500", "503"]
    body = await client.best_bid_ask(["BTC-USD"])
    assert body["pricebooks"][0]["product_id"] == "BTC-USD"
    assert len(server.calls("GET", "/best_bid_ask")) == 4


async def test_reads_are_retried_after_a_dropped_connection_and_a_timeout(env):
    server, client = env
    client.timeout = 0.2
    server.slow_seconds = 0.5
    server.faults[("GET", "/products")] += ["drop", "slow"]
    body = await client.list_products()
    assert len(body["products"]) == 2
    assert len(server.calls("GET", "/products")) == 3


async def test_retry_after_is_honoured(env):
    server, client = env
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client._sleep = sleep
    server.retry_after = "1.5"
    server.faults[("GET", "/accounts")] += ["429"]
    assert [a.str("currency") async for a in client.accounts()] == ["USD", "BTC", "ETH"]
    assert slept == [1.5]


async def test_reads_give_up_after_the_policy_attempts(env):
    server, client = env
    server.faults[("GET", "/best_bid_ask")] += ["500"] * 10
    with pytest.raises(ServerError, match="HTTP 500"):
        await client.best_bid_ask(["BTC-USD"])
    assert len(server.calls("GET", "/best_bid_ask")) == FAST.attempts


async def test_pagination_follows_the_cursor_to_the_end(env):
    server, client = env
    server.page_size = 1
    accounts = [a.str("currency") async for a in client.accounts()]
    assert accounts == ["USD", "BTC", "ETH"]
    assert [r.query.get("cursor") for r in server.calls("GET", "/accounts")] == [None, ["1"], ["2"]]


async def test_candle_requests_are_split_at_350_candles(env):
    server, client = env
    start = 1_772_400_000 - 1_772_400_000 % 60
    raw = await client.candles("BTC-USD", start, start + 800 * 60, "ONE_MINUTE")
    calls = server.calls("GET", "/products/BTC-USD/candles")
    spans = [(int(c.query["end"][0]) - int(c.query["start"][0])) // 60 for c in calls]
    assert spans == [350, 350, 100]
    assert len({c["start"] for c in raw}) >= 800


# ----- orders: never blindly retried ---------------------------------------------------------------


def market_buy(cid: str = "pb-1", size: str = "0.01") -> NewOrder:
    return NewOrder(cid, "BTC-USD", Side.BUY, MarketIoc(base_size=D(size)))


async def test_an_order_is_created_once(env):
    server, client = env
    ack = await client.submit_order(market_buy(), now=now)
    assert not ack.adopted and ack.sends == 1
    assert len(server.order_by_client_id("pb-1")) == 1
    assert server.calls("POST", "/orders")[0].body["order_configuration"] == {
        "market_market_ioc": {"base_size": "0.01"}
    }


async def test_orders_go_out_on_one_kept_alive_connection_each_with_a_token_signed_ahead(env):
    server, client = env
    signer = client.signer
    signed: list[str | None] = []
    sign = signer._token

    def counting(uri: str | None) -> str:
        signed.append(uri)
        return sign(uri)

    signer._token = counting  # type: ignore[method-assign]
    for n in (1, 2, 3):
        ack = await client.submit_order(market_buy(f"pb-k{n}"), now=now)
        assert len(server.order_by_client_id(f"pb-k{n}")) == 1 and not ack.adopted
    assert client.order_line.connects == 1 and len(server.calls("POST", "/orders")) == 3
    # the first order signs its own token; each order signs the next one's after it is sent
    assert len(signed) == 4 and set(signed) == {"POST " + client.host + "/api/v3/brokerage/orders"}


@pytest.mark.parametrize("fault", ["lost", "lost500"])
async def test_order_accepted_but_response_lost_is_found_by_client_order_id_and_adopted(env, fault):
    server, client = env
    server.faults[("POST", "/orders")] += [fault]
    ack = await client.submit_order(market_buy("pb-lost"), now=now)
    assert ack.adopted and ack.sends == 1
    created = server.order_by_client_id("pb-lost")
    assert len(created) == 1 and created[0]["order_id"] == ack.order_id
    assert len(server.calls("POST", "/orders")) == 1  # never sent twice
    lookups = server.calls("GET", "/orders/historical/batch")
    assert lookups and lookups[0].query["product_ids"] == ["BTC-USD"] and "start_date" in lookups[0].query


async def test_an_order_that_provably_never_arrived_is_sent_again_once(env):
    server, client = env
    server.faults[("POST", "/orders")] += ["drop"]  # dropped before the order was made
    ack = await client.submit_order(market_buy("pb-drop"), now=now)
    assert not ack.adopted and ack.sends == 2
    assert len(server.order_by_client_id("pb-drop")) == 1
    assert len(server.calls("POST", "/orders")) == 2


async def test_resending_stops_after_the_limit(env):
    server, client = env
    server.faults[("POST", "/orders")] += ["drop", "drop", "drop"]
    with pytest.raises(TransportError):
        await client.submit_order(market_buy("pb-x"), now=now)
    assert len(server.calls("POST", "/orders")) == 2 and not server.order_by_client_id("pb-x")


async def test_when_the_lookup_fails_too_the_fate_is_reported_unknown_and_nothing_is_resent(env):
    server, client = env
    server.faults[("POST", "/orders")] += ["drop"]
    server.faults[("GET", "/orders/historical/batch")] += ["500"] * 10
    with pytest.raises(TransportError, match="fate unknown"):
        await client.submit_order(market_buy("pb-u"), now=now)
    assert len(server.calls("POST", "/orders")) == 1


async def test_a_rate_limited_create_was_never_processed_and_is_sent_again(env):
    server, client = env
    server.faults[("POST", "/orders")] += ["429", "429"]
    ack = await client.submit_order(market_buy("pb-429"), now=now)
    assert not ack.adopted and len(server.calls("POST", "/orders")) == 3
    assert not server.calls("GET", "/orders/historical/batch")
    server.faults[("POST", "/orders")] += ["429"] * 10
    with pytest.raises(RateLimited):
        await client.submit_order(market_buy("pb-429b"), now=now)


async def test_create_failures_become_typed_rejections(env):
    server, client = env
    with pytest.raises(InsufficientFunds, match="Insufficient balance") as info:
        await client.submit_order(market_buy("pb-big", size="1000"), now=now)
    assert info.value.reason == "INSUFFICIENT_FUND"
    bad = NewOrder("pb-bad", "NOPE-USD", Side.BUY, LimitGtc(D(1), D(1)))
    with pytest.raises(InvalidOrder, match="unknown product"):
        await client.submit_order(bad, now=now)
    assert len(server.calls("POST", "/orders")) == 2  # rejections are final, not retried


async def test_get_order_404_is_order_not_found(env):
    server, client = env
    with pytest.raises(OrderNotFound):
        await client.get_order("no-such-order")


async def test_a_slow_create_times_out_and_is_adopted_not_duplicated(env):
    server, client = env
    client.timeout = 0.2
    server.slow_seconds = 0.4
    server.faults[("POST", "/orders")] += ["slow"]
    # The server is slow before creating: the first lookup finds nothing, so the order is
    # sent again with the same client_order_id, and the venue's id rule keeps it single.
    ack = await client.submit_order(market_buy("pb-slow"), now=now)
    await asyncio.sleep(0.3)
    assert len(server.order_by_client_id("pb-slow")) == 1
    assert ack.order_id == server.order_by_client_id("pb-slow")[0]["order_id"]
