"""Async REST client for Coinbase Advanced Trade (``/api/v3/brokerage``), on aiohttp.

* Client-side rate limits: one token bucket for private (authenticated) requests and one
  for public ones, at Coinbase's documented 30 and 10 requests per second.
* Reads (and requests without side effects: previews, cancels) are retried on 429, 5xx,
  timeouts and connection errors, with capped exponential backoff and jitter; a 429's
  ``Retry-After`` is honoured.
* Order creation is never retried blindly. A 429 means the request was refused before it
  was processed, so it is sent again after a backoff. After a timeout, a dropped
  connection or a 5xx the order's fate is unknown: it is looked up by its
  ``client_order_id`` and adopted if it exists; it is sent again (same id) only when a
  complete listing proves it does not.
* Error answers become the typed ``ExchangeError`` family (see ``mapping.http_error``).
* ``POST /orders`` goes out on its own kept-alive connection (``orderline.OrderLine``),
  written as one ``bytes``, with its JWT signed ahead (after the previous order); every
  other request through aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl as ssl_module
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from yarl import URL

from perpsbot.exchange.coinbase.auth import JwtSigner
from perpsbot.exchange.coinbase.mapping import (
    MAX_CANDLES_PER_REQUEST,
    NewOrder,
    Obj,
    format_time,
    http_error,
    parse_error_body,
    rejection,
)
from perpsbot.exchange.coinbase.orderline import OrderLine, OrderLineError
from perpsbot.exchange.port import (
    AuthenticationError,
    BadResponse,
    ExchangeError,
    ExchangeUnavailable,
    InvalidRequest,
    OrderNotFound,
    RateLimited,
    ServerError,
)

log = logging.getLogger(__name__)

DEFAULT_REST_URL = "https://api.coinbase.com"
API_PREFIX = "/api/v3/brokerage"
PRIVATE_REQUESTS_PER_SECOND = 30.0
PUBLIC_REQUESTS_PER_SECOND = 10.0
MAX_PAGES = 200


class TransportError(ExchangeUnavailable):
    """The request may or may not have reached the exchange (timeout, dropped connection)."""

    code = "transport"


# ----- rate limiting and backoff --------------------------------------------------------


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` banked; ``acquire`` waits for one."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.capacity = burst if burst is not None else rate
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self) -> None:
        async with self._lock:  # FIFO: waiters are served in arrival order
            while True:
                self._refill()
                if self._tokens >= 1 - 1e-9:  # float dust must not keep a waiter waiting
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self._sleep((1 - self._tokens) / self.rate)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5  # tries in all, the first included
    base_delay: float = 0.2
    max_delay: float = 5.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Backoff before retry ``attempt`` (0-based): half the capped exponential
        step, plus up to that much again at random (so never above ``max_delay``)."""
        step = min(self.max_delay, self.base_delay * (2**attempt))
        return step / 2 + rng.uniform(0, step / 2)


def _query(params: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Query parameters; a list becomes a repeated key (``product_ids=A&product_ids=B``)."""
    out: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if isinstance(item, bool):
                item = "true" if item else "false"
            elif isinstance(item, datetime):
                item = format_time(item)
            out.append((key, str(item)))
    return out


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class OrderAck:
    """An order the exchange holds: created by this call, or found (``adopted``) after a
    failure left its fate unknown."""

    order_id: str
    client_order_id: str
    product_id: str
    adopted: bool = False
    sends: int = 1


class CoinbaseRestClient:
    def __init__(
        self,
        signer: JwtSigner | None,
        *,
        base_url: str = DEFAULT_REST_URL,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        private_bucket: TokenBucket | None = None,
        public_bucket: TokenBucket | None = None,
        lookup_delay: float = 0.5,
        resend_limit: int = 1,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.signer = signer
        self.base_url = URL(base_url.rstrip("/"))
        if self.base_url.scheme not in ("http", "https") or not self.base_url.host:
            raise ValueError(f"coinbase_rest_url: not an http(s) URL: {base_url}")
        self._ssl = ssl
        assert self.base_url.port is not None
        self.order_line = OrderLine(self.base_url.host, self.base_url.port, tls=self.base_url.scheme == "https",
                                    ssl=ssl, host_header=self.host)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.private_bucket = private_bucket or TokenBucket(PRIVATE_REQUESTS_PER_SECOND)
        self.public_bucket = public_bucket or TokenBucket(PUBLIC_REQUESTS_PER_SECOND)
        self.lookup_delay = lookup_delay
        self.resend_limit = resend_limit
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"CoinbaseRestClient(base_url={str(self.base_url)!r}, signer={self.signer!r})"

    @property
    def host(self) -> str:
        """The host as the JWT ``uri`` claim names it (with the port when it is not the default)."""
        url = self.base_url
        assert url.host is not None
        return url.host if url.is_default_port() else f"{url.host}:{url.port}"

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        self.order_line.close()
        if self._session is not None and not self._session.closed:
            await self._session.close()

    # ----- one request ------------------------------------------------------------------

    async def _send(
        self, method: str, path: str, params: Mapping[str, Any] | None, body: Any, *, private: bool,
        order_request: bool,
    ) -> Any:
        full_path = API_PREFIX + path
        what = f"{method} {full_path}"
        headers = {"Accept": "application/json", "User-Agent": "perpsbot"}
        if private:
            if self.signer is None:
                raise AuthenticationError(f"{what}: needs API credentials (api_key_name + api_private_key)")
            headers["Authorization"] = "Bearer " + self.signer.rest_token(method, self.host, full_path)
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        await (self.private_bucket if private else self.public_bucket).acquire()
        self.requests_sent += 1
        if order_request and method == "POST" and path == "/orders":
            status, text, retry_after = await self._create(full_path, headers, data or "")
        else:
            status, text, retry_after = await self._aiohttp(method, full_path, params, data, headers)
        try:
            payload = json.loads(text) if text else {}
        except json.JSONDecodeError:
            payload = None
        if status >= 300:
            raise http_error(status, payload if payload is not None else text, what,
                             order_request=order_request, retry_after=retry_after)
        if payload is None:
            raise BadResponse(f"{what}: HTTP {status} but the body is not JSON")
        return payload

    async def _create(self, full_path: str, headers: dict[str, str], data: str) -> tuple[int, str, float | None]:
        """Order creation on its own connection (see ``orderline``)."""
        what = f"POST {full_path}"
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self.order_line.post(full_path, headers, data.encode("utf-8"))
        except TimeoutError:
            raise TransportError(f"{what}: no answer within {self.timeout:g} s") from None
        except OrderLineError as exc:
            raise TransportError(f"{what}: {exc}") from None
        finally:
            if self.signer is not None:
                self.signer.prepare("POST", self.host, full_path)  # the next order's token, signed now
        return answer.status, answer.body.decode("utf-8", "replace"), _retry_after(answer.headers.get("retry-after"))

    async def _aiohttp(self, method: str, full_path: str, params: Mapping[str, Any] | None, data: str | None,
                       headers: dict[str, str]) -> tuple[int, str, float | None]:
        what = f"{method} {full_path}"
        session = self._get_session()
        try:
            async with session.request(
                method, self.base_url.with_path(full_path), params=_query(params), data=data, headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                return response.status, await response.text(), _retry_after(response.headers.get("Retry-After"))
        except TimeoutError:
            raise TransportError(f"{what}: no answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"{what}: {type(exc).__name__}: {exc}") from None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        private: bool = True,
        retryable: bool | None = None,
        order_request: bool = False,
    ) -> Any:
        """One call, retried on 429 / 5xx / timeouts / connection errors when ``retryable``
        (default: GET)."""
        retryable = method == "GET" if retryable is None else retryable
        attempt = 0
        while True:
            try:
                return await self._send(method, path, params, body, private=private, order_request=order_request)
            except (RateLimited, ServerError, TransportError) as exc:
                attempt += 1
                if not retryable or attempt >= self.retry.attempts:
                    raise
                delay = self.retry.delay(attempt - 1, self._rng)
                if isinstance(exc, RateLimited) and exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.retry.max_retry_after))
                log.info("%s %s failed (%s); retry %d in %.2f s", method, path, exc, attempt, delay)
                await self._sleep(delay)

    async def _pages(
        self, path: str, key: str, params: Mapping[str, Any] | None = None, *, private: bool = True,
    ) -> AsyncIterator[Obj]:
        """Every item of a cursor-paginated listing (``has_next`` / ``cursor``)."""
        query = dict(params or {})
        for _page in range(MAX_PAGES):
            body = await self.request("GET", path, params=query, private=private)
            root = Obj(body, path)
            for item in root.objs(key, optional=True):
                yield item
            cursor = root.opt_str("cursor")
            has_next = root.bool("has_next", default=bool(cursor))
            if not has_next or not cursor or cursor == query.get("cursor"):
                return
            query["cursor"] = cursor
        raise BadResponse(f"GET {API_PREFIX}{path}: more than {MAX_PAGES} pages")

    # ----- public market data / products ---------------------------------------------------

    def _market(self, path: str) -> tuple[str, bool]:
        """Private path with credentials; the public ``/market`` twin without."""
        return (path, True) if self.signer is not None else ("/market" + path, False)

    async def server_time(self) -> Any:
        return await self.request("GET", "/time", private=False)

    async def list_products(
        self, *, product_type: str | None = None, product_ids: Sequence[str] | None = None,
        contract_expiry_type: str | None = None, get_all_products: bool | None = None,
    ) -> Any:
        path, private = self._market("/products")
        params = {"product_type": product_type, "product_ids": list(product_ids or []) or None,
                  "contract_expiry_type": contract_expiry_type, "get_all_products": get_all_products}
        return await self.request("GET", path, params=params, private=private)

    async def get_product(self, product_id: str) -> Any:
        path, private = self._market(f"/products/{product_id}")
        return await self.request("GET", path, private=private)

    async def best_bid_ask(self, product_ids: Sequence[str]) -> Any:
        return await self.request("GET", "/best_bid_ask", params={"product_ids": list(product_ids)})

    async def product_book(self, product_id: str, limit: int | None = None) -> Any:
        path, private = self._market("/product_book")
        return await self.request("GET", path, params={"product_id": product_id, "limit": limit}, private=private)

    async def candles(self, product_id: str, start: int, end: int, granularity: str) -> list[Any]:
        """Raw candle objects for [start, end) (UNIX seconds), in requests of at most
        350 candles each."""
        from perpsbot.exchange.coinbase.mapping import GRANULARITIES

        seconds = {v: k for k, v in GRANULARITIES.items()}.get(granularity)
        if seconds is None:
            raise InvalidRequest(f"candles: unknown granularity {granularity!r}")
        path, private = self._market(f"/products/{product_id}/candles")
        out: list[Any] = []
        chunk_start = start
        while chunk_start < end:
            chunk_end = min(end, chunk_start + seconds * MAX_CANDLES_PER_REQUEST)
            body = await self.request(
                "GET", path, private=private,
                params={"start": chunk_start, "end": chunk_end, "granularity": granularity,
                        "limit": MAX_CANDLES_PER_REQUEST},
            )
            out.extend(Obj(body, path).raw("candles") or [])
            chunk_start = chunk_end
        return out

    async def market_trades(self, product_id: str, limit: int = 100) -> Any:
        path, private = self._market(f"/products/{product_id}/ticker")
        return await self.request("GET", path, params={"limit": limit}, private=private)

    # ----- accounts, portfolios, derivatives --------------------------------------------------

    def accounts(self) -> AsyncIterator[Obj]:
        return self._pages("/accounts", "accounts", {"limit": 250})

    async def get_account(self, account_uuid: str) -> Any:
        return await self.request("GET", f"/accounts/{account_uuid}")

    async def cfm_balance_summary(self) -> Any:
        return await self.request("GET", "/cfm/balance_summary")

    async def cfm_positions(self) -> Any:
        return await self.request("GET", "/cfm/positions")

    async def cfm_position(self, product_id: str) -> Any:
        return await self.request("GET", f"/cfm/positions/{product_id}")

    async def cfm_margin_window(self) -> Any:
        return await self.request("GET", "/cfm/intraday/current_margin_window",
                                  params={"margin_profile_type": "MARGIN_PROFILE_TYPE_RETAIL_REGULAR"})

    async def cfm_margin_setting(self) -> Any:
        return await self.request("GET", "/cfm/intraday/margin_setting")

    async def cfm_sweeps(self) -> Any:
        return await self.request("GET", "/cfm/sweeps")

    async def transaction_summary(
        self, *, product_type: str | None = None, contract_expiry_type: str | None = None,
    ) -> Any:
        return await self.request("GET", "/transaction_summary", params={
            "product_type": product_type, "contract_expiry_type": contract_expiry_type})

    # ----- orders ---------------------------------------------------------------------------

    async def create_order_once(self, order: NewOrder) -> Any:
        """One ``POST /orders``, no retry of any kind (``submit_order`` is the safe path)."""
        return await self.request("POST", "/orders", body=order.body(), retryable=False, order_request=True)

    async def preview_order(self, order: NewOrder) -> Any:
        return await self.request("POST", "/orders/preview", body=order.body(preview=True), retryable=True,
                                  order_request=True)

    async def edit_order(self, order_id: str, *, price: str | None = None, size: str | None = None) -> Any:
        body = {k: v for k, v in {"order_id": order_id, "price": price, "size": size}.items() if v is not None}
        return await self.request("POST", "/orders/edit", body=body, retryable=False, order_request=True)

    async def preview_edit_order(self, order_id: str, *, price: str | None = None, size: str | None = None) -> Any:
        body = {k: v for k, v in {"order_id": order_id, "price": price, "size": size}.items() if v is not None}
        return await self.request("POST", "/orders/edit_preview", body=body, retryable=True, order_request=True)

    async def cancel_orders(self, order_ids: Sequence[str]) -> Any:
        """``POST /orders/batch_cancel``; cancelling is idempotent, so it is retried like a read."""
        return await self.request("POST", "/orders/batch_cancel", body={"order_ids": list(order_ids)},
                                  retryable=True)

    async def get_order(self, order_id: str) -> Any:
        return await self.request("GET", f"/orders/historical/{order_id}")

    def orders(
        self, *, product_ids: Sequence[str] | None = None, order_status: Sequence[str] | None = None,
        start_date: datetime | None = None, end_date: datetime | None = None,
        order_ids: Sequence[str] | None = None, limit: int = 250, **filters: Any,
    ) -> AsyncIterator[Obj]:
        """Every order matching the filters (``GET /orders/historical/batch``, all pages)."""
        params: dict[str, Any] = {
            "product_ids": list(product_ids or []) or None, "order_status": list(order_status or []) or None,
            "start_date": start_date, "end_date": end_date, "order_ids": list(order_ids or []) or None,
            "limit": limit, **filters,
        }
        return self._pages("/orders/historical/batch", "orders", params)

    def fills(
        self, *, order_ids: Sequence[str] | None = None, product_ids: Sequence[str] | None = None,
        start_sequence_timestamp: datetime | None = None, end_sequence_timestamp: datetime | None = None,
        limit: int = 250,
    ) -> AsyncIterator[Obj]:
        """Every fill matching the filters (``GET /orders/historical/fills``, all pages)."""
        params: dict[str, Any] = {
            "order_ids": list(order_ids or []) or None, "product_ids": list(product_ids or []) or None,
            "start_sequence_timestamp": start_sequence_timestamp,
            "end_sequence_timestamp": end_sequence_timestamp, "limit": limit,
        }
        return self._pages("/orders/historical/fills", "fills", params)

    async def find_order_by_client_id(
        self, client_order_id: str, *, product_id: str | None = None, since: datetime | None = None,
    ) -> Obj | None:
        """The order carrying ``client_order_id``, from a complete listing; None proves
        there is none (any failure to list raises instead)."""
        async for order in self.orders(product_ids=[product_id] if product_id else None, start_date=since):
            if order.data.get("client_order_id") == client_order_id:
                return order
        return None

    async def submit_order(self, order: NewOrder, *, now: Callable[[], datetime]) -> OrderAck:
        """Create an order exactly once (see the module docstring)."""
        since = now() - timedelta(minutes=5)
        sends = rate_limited = 0
        while True:
            sends += 1
            try:
                body = await self.create_order_once(order)
            except RateLimited as exc:
                # Refused before processing: nothing was created, so sending again is safe.
                sends -= 1
                rate_limited += 1
                if rate_limited >= self.retry.attempts:
                    raise
                delay = self.retry.delay(rate_limited - 1, self._rng)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.retry.max_retry_after))
                await self._sleep(delay)
                continue
            except (TransportError, ServerError) as exc:
                log.warning("creating %s: %s; looking it up by client_order_id", order.client_order_id, exc)
                if self.lookup_delay > 0:
                    await self._sleep(self.lookup_delay)
                try:
                    found = await self.find_order_by_client_id(
                        order.client_order_id, product_id=order.product_id, since=since)
                except ExchangeError as lookup_exc:
                    raise TransportError(
                        f"order {order.client_order_id}: fate unknown ({exc}); lookup failed: {lookup_exc}"
                    ) from None
                if found is not None:
                    return OrderAck(found.str("order_id"), order.client_order_id, order.product_id,
                                    adopted=True, sends=sends)
                if sends > self.resend_limit:
                    raise
                log.warning("order %s provably absent after %s; sending it again", order.client_order_id, exc)
                continue
            return _ack(body, order, sends)


def _ack(body: Any, order: NewOrder, sends: int) -> OrderAck:
    """``{"success": true, "success_response": {"order_id", ...}}`` or the failure kind."""
    root = Obj(body, "create_order")
    if not root.bool("success", default=False):
        raise rejection(parse_error_body(body))
    success = root.opt_obj("success_response")
    order_id = (success.opt_str("order_id") if success else None) or root.opt_str("order_id")
    if not order_id:
        raise BadResponse("create_order.success_response.order_id: missing")
    return OrderAck(order_id, order.client_order_id, order.product_id, adopted=False, sends=sends)


__all__ = [
    "API_PREFIX",
    "DEFAULT_REST_URL",
    "CoinbaseRestClient",
    "OrderAck",
    "OrderNotFound",
    "RetryPolicy",
    "TokenBucket",
    "TransportError",
]
