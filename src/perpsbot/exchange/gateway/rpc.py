"""JSON-RPC 2.0 to the Global Derivatives gateway: one WebSocket, HTTP as the fallback.

``RpcClient.call(method, params)`` sends one request and waits for the response with its
``id``; frames without an id are notifications (``subscription``: handed to ``on_notice``;
``heartbeat`` ``test_request``: answered with ``public/test``). Every frame that cannot be
read — not JSON, not an object, a response to no request, a notification without a
channel — is counted by reason in ``rejected`` and dropped; none raises into the reader.

Auth: the CDP key signs a JWT (no ``uri`` claim) that ``public/auth`` exchanges, grant type
``coinbase_cdp``, for an access token; it is exchanged again at 80 % of its ``expires_in``
(in band on the WebSocket, so the connection stays authenticated), and once more when a
private call is refused with 13009 (an expired or unknown token). Reads then go again;
writes never do.

Transport: the WebSocket while it is up (connected on first use, reconnected with capped
backoff). While it is down a call goes over HTTP (``POST <http_url>/<method>``, the token as
``Authorization: Bearer``). A write whose connection drops before its answer raises
``FateUnknown``: it is never sent again here, on either transport — the caller finds its
fate by label.

Numbers are read with ``parse_float=Decimal`` (exact) and written from ``Decimal`` as JSON
numbers (msgspec ``decimal_format="number"``): no float round trip.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import ssl as ssl_module
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec

from perpsbot.exchange.coinbase.auth import JwtSigner
from perpsbot.exchange.port import (
    AuthenticationError,
    BadResponse,
    ExchangeError,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidOrder,
    InvalidRequest,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    ServerError,
)

log = logging.getLogger(__name__)

DEFAULT_HTTP_URL = "https://drb.coinbase.com/api/v2"
DEFAULT_WS_URL = "wss://drb.coinbase.com/ws/api/v2"
DEFAULT_STREAM_WS_URL = "wss://streams.drb.coinbase.com/ws/api/v2"
GRANT_TYPE = "coinbase_cdp"
REFRESH_RATIO = 0.8  # re-auth at this share of expires_in
CALL_TIMEOUT = 10.0
HEARTBEAT_SECONDS = 10
RECONNECT_CAP = 30.0
_ENCODE = msgspec.json.Encoder(decimal_format="number").encode

RATE_LIMIT = 10028
NOT_ENOUGH_FUNDS = 10009
ORDER_NOT_FOUND = 10004
QUEUE_FULL = 10047
TOKEN_REFUSED = frozenset({13004, 13009})
INTERNAL = frozenset({11094, -32000, -32603})


class FateUnknown(ServerError):
    """A write was sent and its answer never came (the connection dropped or the time ran
    out): the gateway may or may not have taken it. Never sent again by the client."""

    code = "fate_unknown"


class RpcError(ExchangeError):
    """A JSON-RPC error the port has no better type for; ``rpc_code`` is the gateway's."""

    def __init__(self, rpc_code: int, message: str) -> None:
        super().__init__(message)
        self.rpc_code = rpc_code


def error_from(error: Any, method: str, *, write: bool) -> ExchangeError:
    """The port's exception for a JSON-RPC ``error`` object (``write``: an order call)."""
    if not isinstance(error, dict):
        return BadResponse(f"{method}: an error that is not an object: {str(error)[:80]}")
    code = error.get("code")
    message = str(error.get("message", ""))
    data = error.get("data")
    reason = data.get("reason") if isinstance(data, dict) else None
    text = f"{method}: [{code}] {message}" + (f" ({reason})" if reason else "")
    if not isinstance(code, int) or isinstance(code, bool):
        return BadResponse(f"{method}: an error without a numeric code: {str(error)[:80]}")
    if code == RATE_LIMIT:
        return RateLimited(text)
    if code in TOKEN_REFUSED:
        return AuthenticationError(text)
    if code == ORDER_NOT_FOUND:
        return OrderNotFound(text)
    if code in INTERNAL:
        return ServerError(text)
    if write:
        if code == NOT_ENOUGH_FUNDS:
            return InsufficientFunds(message or "not_enough_funds", text)
        if code == QUEUE_FULL:  # the matching engine did not take it
            return OrderRejected(message or "matching_engine_queue_full", text)
        return InvalidOrder(message or str(code), text)
    if code == QUEUE_FULL:
        return ExchangeUnavailable(text)
    if code in (-32602, -32600, 11029, 11050):
        return InvalidRequest(text)
    return RpcError(code, text)


class RpcClient:
    """See the module doc. ``signer`` None: public methods only (a market-data stream)."""

    def __init__(
        self,
        ws_url: str,
        http_url: str | None,
        signer: JwtSigner | None,
        *,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float = CALL_TIMEOUT,
        heartbeat_seconds: int | None = HEARTBEAT_SECONDS,
        on_notice: Callable[[str, Any], None] | None = None,
        on_text: Callable[[str], bool] | None = None,
        on_state: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.ws_url = ws_url
        self.http_url = http_url.rstrip("/") if http_url else None
        self.signer = signer
        self._ssl = ssl
        self.timeout = timeout
        self.heartbeat_seconds = heartbeat_seconds
        self.on_notice = on_notice
        self.on_text = on_text  # a fast path: True when it took the frame
        self.on_state = on_state
        self.rejected: Counter[str] = Counter()
        self.connects = 0
        self.auths = 0
        self.http_calls = 0
        self.last_message = 0.0  # time.monotonic() of the last frame
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._token: str | None = None
        self._refresh_at = 0.0
        self._connect_lock = asyncio.Lock()
        self._down_until = 0.0  # no new connection attempt before this (backoff)
        self._backoff = 0.5
        self._closed = False
        self.subscriptions: list[str] = []  # re-sent on every new connection
        self._replies: set[asyncio.Task[None]] = set()

    # ----- lifecycle -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl else True))
        return self._session

    async def connect(self) -> bool:
        """Open the WebSocket (and authenticate it) unless it is up; False when it cannot
        be opened now (the caller falls back to HTTP)."""
        if self.connected:
            return True
        async with self._connect_lock:
            if self.connected:
                return True
            if self._closed or time.monotonic() < self._down_until:
                return False
            try:
                ws = await self._http().ws_connect(self.ws_url, heartbeat=None, autoping=True, max_msg_size=1 << 22,
                                                   timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._down_until = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, RECONNECT_CAP)
                log.info("gateway WebSocket %s not reachable (%s): HTTP meanwhile", self.ws_url, exc)
                return False
            self._ws = ws
            self.connects += 1
            self.last_message = time.monotonic()
            self._reader = asyncio.create_task(self._read(ws), name="gateway-rpc-reader")
            try:
                if self.signer is not None:
                    await self._authenticate()
                if self.heartbeat_seconds:
                    await self._call_ws("public/set_heartbeat", {"interval": self.heartbeat_seconds}, False)
                if self.subscriptions:
                    scope = "private" if self.signer is not None else "public"
                    await self._call_ws(f"{scope}/subscribe", {"channels": list(self.subscriptions)}, False)
            except ExchangeError:
                await ws.close()
                raise
            self._backoff = 0.5
            if self.on_state is not None:
                self.on_state(True, "connected")
            return True

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001  # closing: the reader's end is not news
                pass
        self._fail_pending(ExchangeUnavailable("the gateway client closed"))
        if self._session is not None:
            await self._session.close()

    # ----- auth ----------------------------------------------------------------------

    def _auth_params(self) -> dict[str, Any]:
        assert self.signer is not None
        return {"grant_type": GRANT_TYPE, "token": self.signer.ws_token()}

    def _take_token(self, result: Any) -> None:
        if not isinstance(result, dict) or not isinstance(result.get("access_token"), str):
            raise AuthenticationError("public/auth: no access_token in the answer")
        expires = result.get("expires_in")
        if not isinstance(expires, int | Decimal) or isinstance(expires, bool) or expires <= 0:
            raise AuthenticationError("public/auth: no positive expires_in in the answer")
        self._token = result["access_token"]
        self._refresh_at = time.monotonic() + float(expires) * REFRESH_RATIO
        self.auths += 1

    async def _authenticate(self) -> None:
        """public/auth on the open WebSocket (the connection is authenticated from then)."""
        self._take_token(await self._call_ws("public/auth", self._auth_params(), False))

    async def _ensure_token(self) -> None:
        if self.signer is None:
            raise AuthenticationError("a private gateway method needs credentials")
        if self._token is not None and time.monotonic() < self._refresh_at:
            return
        if self.connected:
            await self._authenticate()
        else:
            self._take_token(await self._call_http("public/auth", self._auth_params(), False))

    # ----- calls ---------------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any] | None = None, *, write: bool = False) -> Any:
        """The result of ``method``; a JSON-RPC error as the port's exception. A read refused
        for its token is authenticated again and sent once more; a write never."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        private = method.startswith("private/")
        for attempt in (0, 1):
            try:
                up = await self.connect()
                if private:
                    await self._ensure_token()
                if up and self.connected:
                    return await self._call_ws(method, params, write)
                return await self._call_http(method, params, write, bearer=self._token if private else None)
            except AuthenticationError:
                if not private or write or attempt:
                    raise
                self._token = None  # refused: a fresh one, then the read once more
        raise AssertionError("unreachable")

    async def _call_ws(self, method: str, params: dict[str, Any], write: bool) -> Any:
        ws = self._ws
        if ws is None or ws.closed:
            raise ExchangeUnavailable(f"{method}: the gateway WebSocket is down")
        rid = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        frame = _ENCODE({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        try:
            await ws.send_str(frame.decode())
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            self._pending.pop(rid, None)
            raise ExchangeUnavailable(f"{method} was not sent: {exc}") from None  # not sent: no fate to find
        try:
            async with asyncio.timeout(self.timeout):
                response = await future
        except TimeoutError:
            self._pending.pop(rid, None)
            if write:
                raise FateUnknown(f"{method}: no answer within {self.timeout:g} s") from None
            raise ServerError(f"{method}: no answer within {self.timeout:g} s") from None
        except ExchangeUnavailable as exc:
            if write:
                raise FateUnknown(f"{method}: {exc}") from None
            raise
        return self._result(response, method, write)

    async def _call_http(self, method: str, params: dict[str, Any], write: bool, bearer: str | None = None) -> Any:
        if self.http_url is None:
            raise ExchangeUnavailable(f"{method}: the gateway WebSocket is down and no HTTP URL is set")
        self.http_calls += 1
        headers = {"Content-Type": "application/json"}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        body = _ENCODE({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params})
        try:
            async with asyncio.timeout(self.timeout):
                async with self._http().post(f"{self.http_url}/{method}", data=body, headers=headers) as resp:
                    text = await resp.text()
                    status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if write:
                raise FateUnknown(f"{method} over HTTP: {type(exc).__name__}: {exc}") from None
            raise ServerError(f"{method} over HTTP: {type(exc).__name__}: {exc}") from None
        try:
            response = json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError:
            if status >= 500 and write:
                raise FateUnknown(f"{method} over HTTP: status {status}") from None
            if status >= 500:
                raise ServerError(f"{method} over HTTP: status {status}") from None
            raise BadResponse(f"{method} over HTTP: status {status}, not JSON") from None
        if status >= 500 and write and isinstance(response, dict) and "result" not in response:
            raise FateUnknown(f"{method} over HTTP: status {status}")  # the gateway failed: taken or not?
        return self._result(response, method, write)

    def _result(self, response: Any, method: str, write: bool) -> Any:
        if not isinstance(response, dict):
            raise BadResponse(f"{method}: the answer is not an object")
        if response.get("error") is not None:
            raise error_from(response["error"], method, write=write)
        if "result" not in response:
            raise BadResponse(f"{method}: the answer has neither result nor error")
        return response["result"]

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        """Send without waiting for the answer (heartbeat replies)."""
        ws = self._ws
        if ws is None or ws.closed:
            return
        try:
            await ws.send_str(_ENCODE({"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                                       "params": params}).decode())
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            pass

    async def subscribe(self, channels: list[str]) -> list[str]:
        """Subscribe (and remember, for reconnects); the channels the gateway accepted."""
        for channel in channels:
            if channel not in self.subscriptions:
                self.subscriptions.append(channel)
        if not await self.connect():
            return []  # sent on connect
        scope = "private" if self.signer is not None else "public"
        accepted = await self._call_ws(f"{scope}/subscribe", {"channels": channels}, False)
        refused = [c for c in channels if isinstance(accepted, list) and c not in accepted]
        for channel in refused:
            self.subscriptions.remove(channel)
            self.rejected["channel refused"] += 1
        return [c for c in channels if c not in refused]

    async def unsubscribe(self, channels: list[str]) -> None:
        self.subscriptions = [c for c in self.subscriptions if c not in channels]
        if self.connected:
            scope = "private" if self.signer is not None else "public"
            await self._call_ws(f"{scope}/unsubscribe", {"channels": channels}, False)

    # ----- reading -------------------------------------------------------------------

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self.last_message = time.monotonic()
                    self.handle_text(msg.data)
                elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                    break
                else:
                    self.rejected["not a text frame"] += 1
        finally:
            if self._ws is ws:
                self._ws = None
                self._token = None if self._refresh_at <= time.monotonic() else self._token
            self._fail_pending(ExchangeUnavailable("the gateway WebSocket dropped"))
            if self.on_state is not None and not self._closed:
                self.on_state(False, "disconnected")

    def handle_text(self, text: str) -> None:
        """One frame off the socket: a response, a notification or a heartbeat; anything
        else is counted in ``rejected`` and dropped."""
        if self.on_text is not None and self.on_text(text):
            return
        try:
            frame = json.loads(text, parse_float=Decimal)
        except (json.JSONDecodeError, RecursionError):
            self.rejected["not JSON"] += 1
            return
        frames = frame if isinstance(frame, list) else [frame]
        if not frames:
            self.rejected["an empty batch"] += 1
        for item in frames:
            self._dispatch(item)

    def _dispatch(self, frame: Any) -> None:
        if not isinstance(frame, dict):
            self.rejected["not an object"] += 1
            return
        rid = frame.get("id")
        if rid is not None:
            future = self._pending.pop(rid, None) if isinstance(rid, int) and not isinstance(rid, bool) else None
            if future is None:
                self.rejected["a response to no request"] += 1
            elif not future.done():
                future.set_result(frame)
            return
        method = frame.get("method")
        params = frame.get("params")
        if method == "subscription":
            channel = params.get("channel") if isinstance(params, dict) else None
            if not isinstance(params, dict) or not isinstance(channel, str) or "data" not in params:
                self.rejected["a notification without channel or data"] += 1
                return
            if self.on_notice is None:
                self.rejected["a notification no one reads"] += 1
                return
            try:
                self.on_notice(channel, params["data"])
            except Exception as exc:  # noqa: BLE001  # a bad notification must not end the reader
                self.rejected[f"unreadable {channel.split('.')[0]} notification"] += 1
                log.debug("gateway notification on %s refused: %s", channel, exc)
        elif method == "heartbeat":
            if isinstance(params, dict) and params.get("type") == "test_request":
                task = asyncio.get_running_loop().create_task(self.notify("public/test", {}))
                self._replies.add(task)
                task.add_done_callback(self._replies.discard)
        else:
            self.rejected["neither response nor notification"] += 1
