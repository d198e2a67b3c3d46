"""The simulator behind the Global Derivatives gateway's protocol: JSON-RPC 2.0 over HTTP
(``/api/v2/{method}``) and WebSocket (``/ws/api/v2``), on the simulator server's one core.

``GatewayFront`` is the server's second front over the same ``SimCore`` (matching, margin,
funding, liquidation): it keeps only what the gateway adds — instrument names, order ids,
labels (not unique: two orders may carry one), access tokens, subscriptions, change ids —
and turns the core's orders and fills into the gateway's JSON. Numbers go out as JSON
numbers written from their ``Decimal`` (never through a float).

* ``public/auth`` (``grant_type`` ``coinbase_cdp``: a CDP-key JWT checked by the server's
  ``TrustStore``; ``refresh_token``) hands out an access token living ``token_seconds``;
  private methods need it (a WebSocket connection that authenticated, an ``access_token``
  param, or ``Authorization: Bearer`` over HTTP). An expired one is error 13009.
* Errors are JSON-RPC errors: -32700 (not JSON), -32600 (not a request), -32601 (no such
  method), -32602 (bad params), 13004 / 13009 (auth), 10028 (rate limit), 10009 (funds),
  10004 (order not found), 10010 (already closed), 11054 (post-only would take), 10043
  (price off the tick), 10002 (amount too small), 11030 (other reject), 11094 (internal).
  Over HTTP an error is status 400 (429 for the rate limit, 500 for an internal error).
* ``public/set_heartbeat``: a ``test_request`` every interval; a connection that sent
  nothing between two is closed.
* The server's faults apply: ``rate_limit``, ``server_error``, ``slow`` per request,
  ``lost_response`` / ``late_accept`` per order, ``ws_disconnect`` per notification, and
  ``skip_sequence`` as a gap in a book's change ids (one change id skipped).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import WSMsgType, web

from perpsbot.domain import ZERO, Fill, OrderStatus, OrderType, Product, Side, TimeInForce
from perpsbot.exchange.port import InsufficientFunds, OrderNotFound, OrderRejected, OrderRequest, OrderSnapshot
from perpsbot.exchange.sim.keys import AuthError
from perpsbot.exchange.sim.products import is_gateway

if TYPE_CHECKING:
    from perpsbot.exchange.sim.server import SimServer

log = logging.getLogger("perpsbot.sim.gateway")

HTTP_PREFIX = "/api/v2"
WS_PATH = "/ws/api/v2"
SETTLEMENT_CURRENCY = "USDC"
TOKEN_SECONDS = 900.0  # a 15-minute access token, as the gateway's
HEARTBEAT_MIN_SECONDS = 10.0
_QUEUE_LIMIT = 5000
_ENCODE = msgspec.json.Encoder(decimal_format="number").encode
_US_PER_MS = 1000

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INVALID_CREDENTIALS = 13004
UNAUTHORIZED = 13009
TOO_MANY_REQUESTS = 10028
NOT_ENOUGH_FUNDS = 10009
ORDER_NOT_FOUND = 10004
ALREADY_CLOSED = 10010
QTY_TOO_LOW = 10002
PRICE_WRONG_TICK = 10043
POST_ONLY_REJECT = 11054
OTHER_REJECT = 11030
INTERNAL = 11094

_TIF = {
    "good_til_cancelled": TimeInForce.GTC,
    "immediate_or_cancel": TimeInForce.IOC,
    "fill_or_kill": TimeInForce.FOK,
}
_STATE = {
    OrderStatus.PENDING: "open",
    OrderStatus.OPEN: "open",
    OrderStatus.PARTIALLY_FILLED: "open",
    OrderStatus.FILLED: "filled",
    OrderStatus.CANCELLED: "cancelled",
    OrderStatus.EXPIRED: "cancelled",
    OrderStatus.REJECTED: "rejected",
}
BOOK_INTERVALS = ("100ms", "raw", "agg2")


class RpcError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.reason is not None:
            error["data"] = {"reason": self.reason}
        return error


class LostResponse(Exception):
    """The order was made; its answer is to be lost (the ``lost_response`` fault)."""

    def __init__(self, mode: str) -> None:
        super().__init__(mode)
        self.mode = mode


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(slots=True)
class GwOrder:
    order_id: str
    label: str
    instrument: str
    direction: Side
    order_type: str  # limit | market
    time_in_force: str
    post_only: bool
    reduce_only: bool
    price: Decimal | None
    amount: Decimal
    created_ms: int
    cid: str  # the core's id of this order
    cancel_reason: str | None = None


@dataclass(slots=True)
class _Token:
    key_name: str
    expires: float  # time.monotonic()
    refresh: str


@dataclass(slots=True)
class _Ctx:
    """Who is calling: the connection (WebSocket) or None (HTTP) and its bearer token."""

    conn: RpcConnection | None = None
    bearer: str | None = None


class RpcConnection:
    """One WebSocket client of the gateway front."""

    def __init__(self, front: GatewayFront, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.front = front
        self.ws = ws
        self.request = request
        self.key_name: str | None = None
        self.token: str | None = None
        self.channels: set[str] = set()
        self.closed = False
        self.heard = True  # a frame from the client since the last test_request
        self.heartbeat: float | None = None
        self.next_heartbeat = 0.0
        self.queue: asyncio.Queue[tuple[bool, bytes] | None] = asyncio.Queue()

    def send(self, payload: dict[str, Any], *, notification: bool = False) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= _QUEUE_LIMIT:
            log.warning("dropping a gateway WebSocket client that does not keep up")
            self.abort()
            return
        self.queue.put_nowait((notification, _ENCODE(payload)))

    def abort(self) -> None:
        self.closed = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def writer(self) -> None:
        faults = self.front.server.faults
        while True:
            item = await self.queue.get()
            if item is None or self.closed:
                return
            notification, data = item
            if notification and faults.roll("ws_disconnect"):
                self.abort()
                return
            try:
                await self.ws.send_str(data.decode())
            except (ConnectionError, RuntimeError):
                self.closed = True
                return


@dataclass(slots=True)
class _BookState:
    change_id: int = 0
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)


class GatewayFront:
    """The gateway's JSON-RPC over the simulator server's core (see the module doc)."""

    def __init__(self, server: SimServer, *, token_seconds: float = TOKEN_SECONDS,
                 heartbeat_min_seconds: float = HEARTBEAT_MIN_SECONDS) -> None:
        self.server = server
        self.core = server.core
        self.token_seconds = token_seconds
        self.heartbeat_min_seconds = heartbeat_min_seconds
        self.instruments = [p for p in self.core.products() if is_gateway(p)]
        self._by_name = {p.symbol: p for p in self.instruments}
        self.tokens: dict[str, _Token] = {}
        self._refresh: dict[str, str] = {}  # refresh token -> key name
        self.orders: dict[str, GwOrder] = {}
        self._by_cid: dict[str, GwOrder] = {}
        self._seq = 0
        self._trade_seq = 0
        self.leverage: dict[str, Decimal] = {}
        self.conns: set[RpcConnection] = set()
        self.refused: Counter[str] = Counter()  # requests answered with an error, by error message
        self._books: dict[str, _BookState] = {}
        self._tickers: dict[str, tuple[Any, ...]] = {}
        self._fill_cursor = 0
        self._trades: list[tuple[Fill, GwOrder, int]] = []  # our fills, with their trade_seq
        self._changed: dict[str, GwOrder] = {}
        self._portfolio_key: tuple[Any, ...] | None = None
        self._late: set[asyncio.Task[Any]] = set()
        self._methods: dict[str, Callable[[dict[str, Any], _Ctx], Any]] = {
            "public/auth": self.m_auth,
            "public/test": lambda p, c: {"version": "1.2.26"},
            "public/get_time": lambda p, c: _ms(self.server.clock.now()),
            "public/set_heartbeat": self.m_set_heartbeat,
            "public/disable_heartbeat": self.m_disable_heartbeat,
            "public/get_instruments": self.m_get_instruments,
            "public/get_instrument": lambda p, c: self._instrument_json(self._instrument(p)),
            "public/ticker": lambda p, c: self._ticker_json(self._instrument(p)),
            "public/get_order_book": self.m_get_order_book,
            "public/get_tradingview_chart_data": self.m_chart_data,
            "public/subscribe": lambda p, c: self.m_subscribe(p, c, private=False),
            "public/unsubscribe": self.m_unsubscribe,
            "public/unsubscribe_all": self.m_unsubscribe_all,
            "private/subscribe": lambda p, c: self.m_subscribe(p, c, private=True),
            "private/unsubscribe": self.m_unsubscribe,
            "private/unsubscribe_all": self.m_unsubscribe_all,
            "private/buy": lambda p, c: self.m_order(p, Side.BUY),
            "private/sell": lambda p, c: self.m_order(p, Side.SELL),
            "private/cancel": self.m_cancel,
            "private/cancel_by_label": self.m_cancel_by_label,
            "private/get_order_state": lambda p, c: self._order_json(self._order(p)),
            "private/get_order_state_by_label": self.m_by_label,
            "private/get_open_orders": self.m_open_orders,
            "private/get_open_orders_by_instrument": self.m_open_orders,
            "private/get_order_history_by_instrument": self.m_order_history,
            "private/get_order_history_by_currency": self.m_order_history,
            "private/get_user_trades_by_instrument": self.m_user_trades,
            "private/get_user_trades_by_currency": self.m_user_trades,
            "private/get_user_trades_by_currency_and_time": self.m_user_trades,
            "private/get_user_trades_by_order": self.m_trades_by_order,
            "private/get_positions": self.m_positions,
            "private/get_position": lambda p, c: self._position_json(self._instrument(p)),
            "private/get_account_summary": self.m_account_summary,
            "private/get_settlement_history_by_currency": self.m_settlements,
            "private/set_leverage": self.m_set_leverage,
            "private/logout": self.m_logout,
        }

    # ----- routes --------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("GET", f"{HTTP_PREFIX}/{{scope:public|private}}/{{name}}", self.h_http)
        app.router.add_route("POST", f"{HTTP_PREFIX}/{{scope:public|private}}/{{name}}", self.h_http)
        app.router.add_route("POST", HTTP_PREFIX, self.h_http)
        app.router.add_get(WS_PATH, self.h_ws)

    def _refuse(self, rid: Any, error: RpcError) -> dict[str, Any]:
        self.refused[error.message] += 1
        return {"jsonrpc": "2.0", "id": rid, "error": error.body()}

    async def h_http(self, request: web.Request) -> web.StreamResponse:
        rid: Any = None
        try:
            if request.method == "POST":
                try:
                    body = json.loads(await request.text(), parse_float=Decimal)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise RpcError(PARSE_ERROR, "parse_error", "the body is not JSON") from None
                if not isinstance(body, dict):
                    raise RpcError(INVALID_REQUEST, "invalid_request", "a request is a JSON object")
                rid = body.get("id")
                method = body.get("method") or ""
                params = body.get("params", {})
                if "scope" in request.match_info:
                    method = method or f"{request.match_info['scope']}/{request.match_info['name']}"
            else:
                method = f"{request.match_info['scope']}/{request.match_info['name']}"
                params = dict(request.query)
            header = request.headers.get("Authorization", "")
            scheme, _, bearer = header.partition(" ")
            ctx = _Ctx(bearer=bearer.strip() if scheme.lower() == "bearer" and bearer.strip() else None)
            result = await self.handle(method, params, ctx)
        except RpcError as exc:
            status = 429 if exc.code == TOO_MANY_REQUESTS else 500 if exc.code == INTERNAL else 400
            return web.Response(body=_ENCODE(self._refuse(rid, exc)), status=status, content_type="application/json")
        except LostResponse as lost:
            mode = lost.mode if lost.mode != "mixed" else self.server.faults.choose("lost_response", ("drop", "error"))
            if mode == "drop":
                transport = request.transport
                if transport is not None:
                    transport.abort()
                raise ConnectionResetError("injected fault: lost_response") from None
            return web.Response(body=_ENCODE(self._refuse(rid, RpcError(INTERNAL, "internal_server_error",
                                                                          "injected fault: lost_response"))),
                                status=500, content_type="application/json")
        return web.Response(body=_ENCODE({"jsonrpc": "2.0", "id": rid, "result": result}),
                            content_type="application/json")

    async def h_ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        if not ws.can_prepare(request).ok:
            return web.json_response({"name": "perpsbot simulator", "jsonrpc": WS_PATH})
        await ws.prepare(request)
        conn = RpcConnection(self, ws, request)
        self.conns.add(conn)
        writer = asyncio.create_task(conn.writer())
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    conn.heard = True
                    await self._on_frame(conn, msg.data)
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            conn.closed = True
            self.conns.discard(conn)
            conn.queue.put_nowait(None)
            writer.cancel()
        return ws

    async def _on_frame(self, conn: RpcConnection, text: str) -> None:
        try:
            frame = json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError:
            conn.send(self._refuse(None, RpcError(PARSE_ERROR, "parse_error", "the frame is not JSON")))
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("method"), str):
            rid = frame.get("id") if isinstance(frame, dict) else None
            conn.send(self._refuse(rid, RpcError(INVALID_REQUEST, "invalid_request",
                                                 "a request is an object with a method")))
            return
        rid = frame.get("id")
        params = frame.get("params", {})
        task = asyncio.create_task(self._answer(conn, rid, frame["method"], params))
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def _answer(self, conn: RpcConnection, rid: Any, method: str, params: Any) -> None:
        try:
            result = await self.handle(method, params, _Ctx(conn=conn))
        except RpcError as exc:
            conn.send(self._refuse(rid, exc))
            return
        except LostResponse:
            conn.abort()  # the order is made; the connection drops before its answer
            return
        except Exception:  # a broken handler answers an internal error, never silence
            log.exception("gateway method %s failed", method)
            conn.send(self._refuse(rid, RpcError(INTERNAL, "internal_server_error", f"{method} failed")))
            return
        conn.send({"jsonrpc": "2.0", "id": rid, "result": result, "usIn": 0, "usOut": 0})

    # ----- dispatch ------------------------------------------------------------------------

    async def handle(self, method: str, params: Any, ctx: _Ctx) -> Any:
        if not isinstance(params, dict):
            raise RpcError(INVALID_PARAMS, "invalid_params", "params must be an object")
        handler = self._methods.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, "method_not_found", f"no method {method!r}")
        faults = self.server.faults
        if faults.roll("slow"):
            await asyncio.sleep(float(faults.param("slow") or 0))
        now_mono = time.monotonic()
        if now_mono >= self.server.rate_limited_until and faults.roll("rate_limit"):
            self.server.rate_limited_until = now_mono + float(faults.param("rate_limit") or 0)
        if now_mono < self.server.rate_limited_until:
            raise RpcError(TOO_MANY_REQUESTS, "too_many_requests", "rate limit exceeded (injected fault)")
        if method.startswith("private/"):
            self._authorize(params, ctx)
        if faults.roll("server_error"):
            raise RpcError(INTERNAL, "internal_server_error", "injected fault: server_error")
        self.server.step_core()
        if method in ("private/buy", "private/sell"):
            return await self._order_call(handler, params, ctx)
        result = handler(params, ctx)
        return result

    async def _order_call(self, handler: Callable[[dict[str, Any], _Ctx], Any], params: dict[str, Any],
                          ctx: _Ctx) -> Any:
        faults = self.server.faults
        if faults.roll("late_accept"):
            await asyncio.sleep(float(faults.param("late_accept") or 0))  # until then, the order does not exist
            self.server.step_core()
        result = handler(params, ctx)
        if faults.roll("lost_response"):
            raise LostResponse(str(faults.param("lost_response") or "mixed"))
        return result

    def _authorize(self, params: dict[str, Any], ctx: _Ctx) -> str:
        token = params.pop("access_token", None) or ctx.bearer
        if token is None and ctx.conn is not None:
            token = ctx.conn.token
        if not token:
            raise RpcError(UNAUTHORIZED, "unauthorized", "a private method needs an access token (public/auth)")
        held = self.tokens.get(str(token))
        if held is None:
            raise RpcError(UNAUTHORIZED, "unauthorized", "unknown access token")
        if time.monotonic() >= held.expires:
            raise RpcError(UNAUTHORIZED, "unauthorized", "token has expired")
        return held.key_name

    # ----- auth and session -------------------------------------------------------------------

    def m_auth(self, params: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
        grant = params.get("grant_type")
        if grant == "coinbase_cdp":
            try:
                key_name = str(self.server.trust.verify(str(params.get("token") or ""), uri=None)["sub"])
            except AuthError as exc:
                raise RpcError(INVALID_CREDENTIALS, "invalid_credentials", str(exc)) from None
        elif grant == "refresh_token":
            key_name_or_none = self._refresh.pop(str(params.get("refresh_token") or ""), None)
            if key_name_or_none is None:
                raise RpcError(INVALID_CREDENTIALS, "invalid_credentials", "unknown refresh token")
            key_name = key_name_or_none
        else:
            raise RpcError(INVALID_PARAMS, "invalid_params", f"grant_type must be coinbase_cdp or refresh_token, "
                           f"not {grant!r}")
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.tokens[access] = _Token(key_name, time.monotonic() + self.token_seconds, refresh)
        self._refresh[refresh] = key_name
        if ctx.conn is not None:
            ctx.conn.key_name, ctx.conn.token = key_name, access
        seconds = self.token_seconds
        return {"access_token": access, "refresh_token": refresh, "token_type": "bearer",
                "expires_in": int(seconds) if seconds == int(seconds) else seconds,
                "scope": "connection trade:read_write account:read", "enabled_features": []}

    def m_logout(self, params: dict[str, Any], ctx: _Ctx) -> str:
        if ctx.conn is not None:
            if ctx.conn.token is not None:
                self.tokens.pop(ctx.conn.token, None)
            ctx.conn.abort()
        return "ok"

    def m_set_heartbeat(self, params: dict[str, Any], ctx: _Ctx) -> str:
        if ctx.conn is None:
            raise RpcError(INVALID_REQUEST, "invalid_request", "heartbeats are for WebSocket connections")
        interval = _number(params, "interval")
        if interval < Decimal(str(self.heartbeat_min_seconds)):
            raise RpcError(INVALID_PARAMS, "invalid_params",
                           f"interval must be at least {self.heartbeat_min_seconds:g} seconds")
        ctx.conn.heartbeat = float(interval)
        ctx.conn.next_heartbeat = time.monotonic() + float(interval)
        ctx.conn.heard = True
        return "ok"

    def m_disable_heartbeat(self, params: dict[str, Any], ctx: _Ctx) -> str:
        if ctx.conn is not None:
            ctx.conn.heartbeat = None
        return "ok"

    # ----- market data -----------------------------------------------------------------------

    def _instrument(self, params: dict[str, Any]) -> Product:
        name = params.get("instrument_name")
        if not isinstance(name, str) or not name:
            raise RpcError(INVALID_PARAMS, "invalid_params", "instrument_name is required")
        product = self._by_name.get(name)
        if product is None:
            raise RpcError(INVALID_PARAMS, "invalid_params", f"unknown instrument {name}")
        return product

    def _instrument_json(self, p: Product) -> dict[str, Any]:
        return {
            "instrument_name": p.symbol, "kind": "future", "settlement_period": "perpetual",
            "instrument_type": "linear", "base_currency": p.base, "quote_currency": SETTLEMENT_CURRENCY,
            "counter_currency": SETTLEMENT_CURRENCY, "settlement_currency": SETTLEMENT_CURRENCY,
            "tick_size": p.price_increment, "contract_size": p.base_increment, "min_trade_amount": p.min_size,
            "max_leverage": int(p.max_leverage), "is_active": True, "state": "open",
            "price_index": f"{p.base.lower()}_usdc", "rfq": False,
            "maker_commission": self.core.config.maker_fee_bps / 10_000,
            "taker_commission": self.core.config.taker_fee_bps / 10_000,
            "creation_timestamp": 1_700_000_000_000, "expiration_timestamp": _ms(p.expiry) if p.expiry else 0,
            "instrument_id": 1000 + self.instruments.index(p),
        }

    def m_get_instruments(self, params: dict[str, Any], ctx: _Ctx) -> list[dict[str, Any]]:
        currency = str(params.get("currency", "any"))
        kind = str(params.get("kind", "any"))
        if kind not in ("any", "future"):
            return []
        return [self._instrument_json(p) for p in self.instruments
                if currency in ("any", SETTLEMENT_CURRENCY, p.base)]

    def _funding(self, p: Product) -> tuple[Decimal, Decimal]:
        """The rate per funding interval last published, and the same over 8 hours."""
        model = self.core.market(p.symbol)
        if not model.funding:
            return ZERO, ZERO
        rate = model.funding[-1].rate
        per_8h = rate * Decimal(8 * 3600) / Decimal(str(self.core.config.funding_interval_seconds))
        return rate, per_8h

    def _ticker_json(self, p: Product) -> dict[str, Any]:
        book = self.core.book(p.symbol, 1)
        model = self.core.market(p.symbol)
        rate, per_8h = self._funding(p)
        mid = model.mid
        bid = book.bids[0] if book.bids else None
        ask = book.asks[0] if book.asks else None
        return {
            "instrument_name": p.symbol, "timestamp": _ms(book.ts), "state": "open",
            "best_bid_price": bid.price if bid else None, "best_bid_amount": bid.size if bid else ZERO,
            "best_ask_price": ask.price if ask else None, "best_ask_amount": ask.size if ask else ZERO,
            "last_price": model.last_trade, "mark_price": mid, "index_price": mid,
            "current_funding": rate, "funding_8h": per_8h, "open_interest": ZERO,
            "stats": {"volume": model.total_volume},
        }

    def m_get_order_book(self, params: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
        p = self._instrument(params)
        depth = int(_number(params, "depth", Decimal(10)))
        book = self.core.book(p.symbol, max(1, min(depth, 10_000)))
        out = self._ticker_json(p)
        out.update(bids=[[lvl.price, lvl.size] for lvl in book.bids], asks=[[lvl.price, lvl.size] for lvl in book.asks],
                   change_id=self._books.get(p.symbol, _BookState()).change_id)
        return out

    def m_chart_data(self, params: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
        p = self._instrument(params)
        resolution = str(params.get("resolution", ""))
        seconds = 86_400 if resolution == "1D" else (int(resolution) * 60 if resolution.isdigit() else 0)
        if seconds <= 0:
            raise RpcError(INVALID_PARAMS, "invalid_params", f"resolution {resolution!r}: minutes or 1D")
        start = int(_number(params, "start_timestamp")) // 1000
        end = int(_number(params, "end_timestamp")) // 1000
        candles = [c for c in self.core.candles(p.symbol, seconds, 5000)
                   if start <= c.start.timestamp() <= end]
        return {"status": "ok" if candles else "no_data", "ticks": [_ms(c.start) for c in candles],
                "open": [c.open for c in candles], "high": [c.high for c in candles], "low": [c.low for c in candles],
                "close": [c.close for c in candles], "volume": [c.volume for c in candles],
                "cost": [c.volume * c.close for c in candles]}

    # ----- orders ------------------------------------------------------------------------------

    def _next_order_id(self) -> str:
        self._seq += 1
        return f"{SETTLEMENT_CURRENCY}-{self.core.run_tag}-{self._seq}"

    def m_order(self, params: dict[str, Any], side: Side) -> dict[str, Any]:
        p = self._instrument(params)
        amount = _number(params, "amount")
        if amount <= 0:
            raise RpcError(INVALID_PARAMS, "invalid_params", "amount must be > 0")
        if amount < p.min_size:
            raise RpcError(QTY_TOO_LOW, "qty_too_low", f"amount {amount} is below the minimum {p.min_size}")
        if amount % p.base_increment:
            raise RpcError(INVALID_PARAMS, "invalid_params", f"amount {amount} is not a multiple of {p.base_increment}")
        kind = str(params.get("type", "limit"))
        if kind not in ("limit", "market"):
            raise RpcError(OTHER_REJECT, "other_reject", f"order type {kind!r} is not supported by the simulator")
        label = params.get("label", "")
        if not isinstance(label, str) or len(label) > 64:
            raise RpcError(INVALID_PARAMS, "invalid_params", "label must be text of at most 64 characters")
        tif_name = str(params.get("time_in_force", "good_til_cancelled"))
        tif = _TIF.get(tif_name)
        if tif is None:
            raise RpcError(INVALID_PARAMS, "invalid_params", f"time_in_force {tif_name!r} is not supported")
        post_only = _flag(params, "post_only")
        reduce_only = _flag(params, "reduce_only")
        price: Decimal | None = None
        if kind == "limit":
            price = _number(params, "price")
            if price <= 0 or price % p.price_increment:
                raise RpcError(PRICE_WRONG_TICK, "price_wrong_tick",
                               f"price {price} is not on the tick {p.price_increment}")
            book = self.core.book(p.symbol, 1)
            crosses = (side is Side.BUY and book.asks and price >= book.asks[0].price) or (
                side is Side.SELL and book.bids and price <= book.bids[0].price)
            if post_only and crosses:
                raise RpcError(POST_ONLY_REJECT, "post_only_reject", "a post-only order would take liquidity")
        else:
            tif, tif_name = TimeInForce.IOC, "immediate_or_cancel"
        now = self.server.clock.now()
        order_id = self._next_order_id()
        order = GwOrder(order_id, label, p.symbol, side, kind, tif_name, post_only, reduce_only, price, amount,
                        _ms(now), cid=f"gw-{order_id}")
        self.server.venue.elsewhere.add(order.cid)
        request = OrderRequest(
            client_order_id=order.cid, symbol=p.symbol, side=side,
            type=OrderType.LIMIT if kind == "limit" else OrderType.MARKET, size=amount, limit_price=price,
            time_in_force=tif, reduce_only=reduce_only, leverage=self.leverage.get(p.symbol, Decimal(1)),
        )
        try:
            snap = self.core.place_order(request, now)
        except InsufficientFunds as exc:
            raise RpcError(NOT_ENOUGH_FUNDS, "not_enough_funds", str(exc)) from None
        except OrderRejected as exc:
            raise RpcError(OTHER_REJECT, "other_reject", f"{exc.reason}: {exc}") from None
        self.orders[order_id] = order
        self._by_cid[order.cid] = order
        self._ingest()
        self._changed[order_id] = order
        return {"order": self._order_json(order, snap), "trades": [self._trade_json(f, o, s) for f, o, s in self._trades
                                                                   if o is order]}

    def _order(self, params: dict[str, Any]) -> GwOrder:
        order_id = params.get("order_id")
        order = self.orders.get(str(order_id)) if order_id is not None else None
        if order is None:
            raise RpcError(ORDER_NOT_FOUND, "order_not_found", f"no order {order_id}")
        return order

    def _snap(self, order: GwOrder) -> OrderSnapshot:
        return self.core.get_order(order.cid)

    def _order_json(self, order: GwOrder, snap: OrderSnapshot | None = None) -> dict[str, Any]:
        snap = snap if snap is not None else self._snap(order)
        fills = snap.fills
        updated = max([order.created_ms, *(_ms(f.ts) for f in fills)])
        out: dict[str, Any] = {
            "order_id": order.order_id, "label": order.label, "instrument_name": order.instrument,
            "direction": order.direction.value.lower(), "order_type": order.order_type,
            "order_state": _STATE[snap.status], "amount": order.amount, "filled_amount": snap.filled_size,
            "price": order.price if order.price is not None else "market_price",
            "average_price": snap.average_fill_price if snap.average_fill_price is not None else ZERO,
            "time_in_force": order.time_in_force, "post_only": order.post_only, "reduce_only": order.reduce_only,
            "creation_timestamp": order.created_ms, "last_update_timestamp": updated, "api": True, "web": False,
            "is_liquidation": False, "replaced": False, "max_show": order.amount, "mmp": False, "risk_reducing": False,
        }
        if snap.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
            out["cancel_reason"] = order.cancel_reason or ("user_request" if order.order_type == "limit"
                                                           and order.time_in_force == "good_til_cancelled"
                                                           else "immediate_or_cancel")
        return out

    def m_cancel(self, params: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
        order = self._order(params)
        snap = self._snap(order)
        if snap.status.is_terminal:
            raise RpcError(ALREADY_CLOSED, "already_closed", f"order {order.order_id} is {_STATE[snap.status]}")
        try:
            snap = self.core.cancel_order(order.cid, self.server.clock.now())
        except OrderNotFound:
            raise RpcError(ORDER_NOT_FOUND, "order_not_found", f"no order {order.order_id}") from None
        order.cancel_reason = "user_request"
        self._changed[order.order_id] = order
        return self._order_json(order, snap)

    def m_cancel_by_label(self, params: dict[str, Any], ctx: _Ctx) -> int:
        label = str(params.get("label", ""))
        count = 0
        for order in list(self.orders.values()):
            if order.label == label and not self._snap(order).status.is_terminal:
                self.core.cancel_order(order.cid, self.server.clock.now())
                order.cancel_reason = "user_request"
                self._changed[order.order_id] = order
                count += 1
        return count

    def _selected(self, params: dict[str, Any]) -> list[GwOrder]:
        name = params.get("instrument_name")
        if name is not None:
            self._instrument(params)
            return [o for o in self.orders.values() if o.instrument == name]
        return list(self.orders.values())

    def m_by_label(self, params: dict[str, Any], ctx: _Ctx) -> list[dict[str, Any]]:
        label = params.get("label")
        if not isinstance(label, str) or not label:
            raise RpcError(INVALID_PARAMS, "invalid_params", "label is required")
        return [self._order_json(o) for o in self.orders.values() if o.label == label]

    def m_open_orders(self, params: dict[str, Any], ctx: _Ctx) -> list[dict[str, Any]]:
        out = []
        for order in self._selected(params):
            snap = self._snap(order)
            if not snap.status.is_terminal:
                out.append(self._order_json(order, snap))
        return out

    def m_order_history(self, params: dict[str, Any], ctx: _Ctx) -> list[dict[str, Any]]:
        count = int(_number(params, "count", Decimal(20)))
        offset = int(_number(params, "offset", Decimal(0)))
        closed = []
        for order in reversed(self._selected(params)):  # newest first, as the gateway lists them
            snap = self._snap(order)
            if snap.status.is_terminal:
                closed.append(self._order_json(order, snap))
        return closed[offset:offset + max(1, min(count, 1000))]

    # ----- trades, positions, account ----------------------------------------------------------

    def _ingest(self) -> None:
        fills, self._fill_cursor = self.core.fills_since(self._fill_cursor)
        for fill in fills:
            order = self._by_cid.get(fill.client_order_id)
            if order is None:
                continue
            self._trade_seq += 1
            self._trades.append((fill, order, self._trade_seq))
            self._changed[order.order_id] = order

    def _trade_json(self, fill: Fill, order: GwOrder, seq: int) -> dict[str, Any]:
        mid = self.core.market(order.instrument).mid
        return {
            "trade_id": f"{order.instrument.split('-')[0]}-{fill.trade_id}", "trade_seq": seq,
            "order_id": order.order_id, "label": order.label, "instrument_name": order.instrument,
            "direction": fill.side.value.lower(), "price": fill.price, "amount": fill.size, "fee": fill.fee,
            "fee_currency": SETTLEMENT_CURRENCY, "liquidity": "M" if fill.liquidity.value == "maker" else "T",
            "timestamp": _ms(fill.ts), "order_type": order.order_type, "state": _STATE[self._snap(order).status],
            "mark_price": mid, "index_price": mid, "tick_direction": 0, "post_only": order.post_only,
            "reduce_only": order.reduce_only,
        }

    def m_user_trades(self, params: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
        name = params.get("instrument_name")
        if name is not None:
            self._instrument(params)
        start = int(_number(params, "start_timestamp", Decimal(0)))
        end = int(_number(params, "end_timestamp", Decimal(2**62)))
        start_seq = int(_number(params, "start_seq", Decimal(0)))
        count = max(1, min(int(_number(params, "count", Decimal(10))), 1000))
        asc = str(params.get("sorting", "desc")) == "asc"
        chosen = [t for t in self._trades if (name is None or t[1].instrument == name) and t[2] >= start_seq
                  and start <= _ms(t[0].ts) <= end]
        if not asc:
            chosen.reverse()
        page = chosen[:count]
        return {"trades": [self._trade_json(*t) for t in page], "has_more": len(chosen) > count}

    def m_trades_by_order(self, params: dict[str, Any], ctx: _Ctx) -> list[dict[str, Any]]:
        order = self._order(params)
        return [self._trade_json(*t) for t in self._trades if t[1] is order]

    def _position_json(self, p: Product) -> dict[str, Any]:
        pos = self.core.account().positions.get(p.symbol)
        mid = self.core.market(p.symbol).mid
        size = pos.size if pos is not None else ZERO
        entry = pos.entry_price if pos is not None else ZERO
        margin = self.core.margin(p.symbol)
        liq = pos.liquidation_price(p.maintenance_margin_rate) if pos is not None and size else None
        return {
            "instrument_name": p.symbol, "kind": "future", "size": size, "size_currency": size,
            "direction": "buy" if size > 0 else "sell" if size < 0 else "zero",
            "average_price": entry, "mark_price": mid, "index_price": mid,
            "floating_profit_loss": pos.unrealized_pnl(mid) if pos is not None else ZERO,
            "total_profit_loss": (pos.unrealized_pnl(mid) + pos.realized_pnl) if pos is not None else ZERO,
            "realized_profit_loss": pos.realized_pnl if pos is not None else ZERO,
            "realized_funding": self.core.accrued_funding(p.symbol),
            "initial_margin": margin, "maintenance_margin": abs(size) * mid * p.maintenance_margin_rate,
            "leverage": int(pos.leverage) if pos is not None else int(self.leverage.get(p.symbol, Decimal(1))),
            "estimated_liquidation_price": liq, "settlement_price": mid, "open_orders_margin": ZERO,
            "delta": size, "interest_value": ZERO,
        }

    def m_positions(self, params: dict[str, Any], ctx: _Ctx) -> list[dict[str, Any]]:
        currency = str(params.get("currency", "any")).upper()
        if currency not in ("ANY", SETTLEMENT_CURRENCY):
            return []
        account = self.core.account()
        return [self._position_json(p) for p in self.instruments
                if account.positions.get(p.symbol) is not None and account.positions[p.symbol].size != 0]

    def _summary(self) -> dict[str, Any]:
        account = self.core.account()
        cash = account.balances.get(self.core.config.cash_currency)
        balance = cash.total if cash is not None else ZERO
        equity = self.core.equity()
        initial = maintenance = upl = ZERO
        for p in self.instruments:
            pos = account.positions.get(p.symbol)
            if pos is None or not pos.size:
                continue
            mid = self.core.market(p.symbol).mid
            initial += self.core.margin(p.symbol)
            maintenance += abs(pos.size) * mid * p.maintenance_margin_rate
            upl += pos.unrealized_pnl(mid)
        return {
            "currency": SETTLEMENT_CURRENCY, "balance": balance, "equity": equity, "margin_balance": equity,
            "available_funds": cash.available if cash is not None else ZERO,
            "available_withdrawal_funds": cash.available if cash is not None else ZERO,
            "initial_margin": initial, "maintenance_margin": maintenance, "session_upl": upl, "total_pl": upl,
            "futures_pl": upl, "session_rpl": ZERO, "fee_balance": ZERO, "cross_collateral_enabled": False,
            "margin_model": "segregated_sm", "portfolio_margining_enabled": False,
        }

    def m_account_summary(self, params: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
        currency = str(params.get("currency", "")).upper()
        if currency != SETTLEMENT_CURRENCY:
            raise RpcError(INVALID_PARAMS, "invalid_params", f"currency {currency or '(none)'}: this account holds "
                           f"{SETTLEMENT_CURRENCY}")
        return self._summary()

    def m_settlements(self, params: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
        count = max(1, min(int(_number(params, "count", Decimal(20))), 1000))
        settlements = [s for s in self.core.settlements if s.symbol in self._by_name]
        settlements.reverse()  # newest first
        return {"settlements": [{"type": "settlement", "instrument_name": s.symbol, "timestamp": _ms(s.at),
                                 "funding": s.amount, "funded": s.amount, "session_profit_loss": s.amount}
                                for s in settlements[:count]], "continuation": None}

    def m_set_leverage(self, params: dict[str, Any], ctx: _Ctx) -> int:
        p = self._instrument(params)
        leverage = _number(params, "leverage")
        if leverage < 1 or leverage > p.max_leverage or leverage != leverage.to_integral_value():
            raise RpcError(INVALID_PARAMS, "invalid_params", f"leverage {leverage}: a whole number from 1 to "
                           f"{p.max_leverage}")
        self.leverage[p.symbol] = leverage
        return int(leverage)

    # ----- subscriptions ---------------------------------------------------------------------

    def _channel_ok(self, channel: str, private: bool) -> bool:
        parts = channel.split(".")
        if parts[0] in ("book", "ticker", "trades") and len(parts) == 3:
            return parts[1] in self._by_name and (parts[0] != "book" or parts[2] in BOOK_INTERVALS)
        if parts[0] == "user" and private and len(parts) >= 3:
            if parts[1] == "portfolio":
                return parts[2].upper() == SETTLEMENT_CURRENCY
            if parts[1] in ("orders", "trades") and len(parts) in (4, 5):
                return parts[2] in self._by_name or parts[2] in ("any", "future")
        return False

    def m_subscribe(self, params: dict[str, Any], ctx: _Ctx, *, private: bool) -> list[str]:
        conn = ctx.conn
        if conn is None:
            raise RpcError(INVALID_REQUEST, "invalid_request", "subscriptions are for WebSocket connections")
        channels = params.get("channels")
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise RpcError(INVALID_PARAMS, "invalid_params", "channels must be a list of channel names")
        accepted = [c for c in channels if self._channel_ok(c, private)]
        for channel in accepted:
            if channel not in conn.channels:
                conn.channels.add(channel)
                if channel.startswith("book."):
                    self._send_book_snapshot(conn, channel)
        return accepted

    def m_unsubscribe(self, params: dict[str, Any], ctx: _Ctx) -> list[str]:
        conn = ctx.conn
        channels = params.get("channels")
        if conn is None or not isinstance(channels, list):
            raise RpcError(INVALID_PARAMS, "invalid_params", "channels must be a list of channel names")
        gone = [c for c in channels if c in conn.channels]
        conn.channels.difference_update(gone)
        return gone

    def m_unsubscribe_all(self, params: dict[str, Any], ctx: _Ctx) -> str:
        if ctx.conn is not None:
            ctx.conn.channels.clear()
        return "ok"

    # ----- publishing --------------------------------------------------------------------------

    def _send_book_snapshot(self, conn: RpcConnection, channel: str) -> None:
        symbol = channel.split(".")[1]
        state = self._books.setdefault(symbol, _BookState())
        book = self.core.book(symbol)
        if not state.bids and not state.asks:  # nothing published yet: the book as it is starts the changes
            state.bids = {lvl.price: lvl.size for lvl in book.bids}
            state.asks = {lvl.price: lvl.size for lvl in book.asks}
        # the book as of the last change published, so the next change applies to it
        conn.send(_notice(channel, {
            "type": "snapshot", "instrument_name": symbol, "timestamp": _ms(book.ts), "change_id": state.change_id,
            "bids": [["new", p, a] for p, a in sorted(state.bids.items(), reverse=True)],
            "asks": [["new", p, a] for p, a in sorted(state.asks.items())],
        }), notification=True)

    def publish(self, now: datetime) -> None:
        """After each core step: heartbeats, then what changed to whoever subscribed."""
        mono = time.monotonic()
        for conn in list(self.conns):
            if conn.heartbeat is not None and mono >= conn.next_heartbeat:
                if not conn.heard:
                    conn.abort()  # no answer to the last test_request
                    continue
                conn.heard = False
                conn.next_heartbeat = mono + conn.heartbeat
                conn.send({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}})
        self._ingest()
        wanted = set().union(*(c.channels for c in self.conns)) if self.conns else set()
        faults = self.server.faults
        for p in self.instruments:
            symbol = p.symbol
            book = self.core.book(symbol)
            state = self._books.setdefault(symbol, _BookState())
            bids = {lvl.price: lvl.size for lvl in book.bids}
            asks = {lvl.price: lvl.size for lvl in book.asks}
            bid_changes = _changes(state.bids, bids)
            ask_changes = _changes(state.asks, asks)
            state.bids, state.asks = bids, asks
            if bid_changes or ask_changes:
                prev = state.change_id
                subscribed = any(f"book.{symbol}.{interval}" in wanted for interval in BOOK_INTERVALS)
                if subscribed and faults.roll("skip_sequence"):
                    prev += 1  # a change id the client never sees: a gap
                state.change_id = prev + 1
                data = {"type": "change", "instrument_name": symbol, "timestamp": _ms(book.ts),
                        "prev_change_id": prev, "change_id": state.change_id, "bids": bid_changes,
                        "asks": ask_changes}
                for interval in BOOK_INTERVALS:
                    channel = f"book.{symbol}.{interval}"
                    if channel in wanted:
                        self._fan_out(channel, data)
            ticker_channel = f"ticker.{symbol}.100ms"
            if ticker_channel in wanted:
                ticker = self._ticker_json(p)
                key = (ticker["best_bid_price"], ticker["best_ask_price"], ticker["best_bid_amount"],
                       ticker["best_ask_amount"], ticker["last_price"])
                if key != self._tickers.get(symbol):
                    self._tickers[symbol] = key
                    self._fan_out(ticker_channel, ticker)
        trades = self.server.new_trades
        for symbol, listed in trades.items():
            channel = f"trades.{symbol}.100ms"
            if channel in wanted and listed:
                self._fan_out(channel, [{
                    "trade_id": f"{symbol.split('-')[0]}-m{t.trade_id}", "trade_seq": int(t.trade_id),
                    "instrument_name": symbol, "price": t.price, "amount": t.size,
                    "direction": "sell" if t.side is Side.BUY else "buy",  # the taker's: the maker's other side
                    "timestamp": _ms(t.time), "tick_direction": 0,
                } for t in listed])
        self._publish_user(wanted)

    def _publish_user(self, wanted: set[str]) -> None:
        changed, self._changed = self._changed, {}
        if not any(c.startswith("user.") for c in wanted):
            return
        for order in changed.values():
            data = self._order_json(order)
            for channel in (f"user.orders.{order.instrument}.raw", f"user.orders.{order.instrument}.100ms",
                            "user.orders.any.any.raw", "user.orders.future.USDC.raw", "user.orders.any.USDC.raw"):
                if channel in wanted:
                    self._fan_out(channel, [data] if channel.endswith("100ms") else data)
        summary = self._summary()
        key = (summary["equity"], summary["initial_margin"], summary["balance"])
        if key != self._portfolio_key:
            self._portfolio_key = key
            for channel in ("user.portfolio.usdc", "user.portfolio.USDC"):
                if channel in wanted:
                    self._fan_out(channel, summary)

    def _fan_out(self, channel: str, data: Any) -> None:
        payload = _notice(channel, data)
        for conn in list(self.conns):
            if channel in conn.channels:
                conn.send(payload, notification=True)

    async def stop(self) -> None:
        for task in list(self._late):
            task.cancel()
        for conn in list(self.conns):
            conn.closed = True
            conn.queue.put_nowait(None)
            conn.abort()


def _notice(channel: str, data: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}}


def _changes(old: Mapping[Decimal, Decimal], new: Mapping[Decimal, Decimal]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for price in old.keys() | new.keys():
        before, after = old.get(price), new.get(price)
        if before == after:
            continue
        if after is None:
            out.append(["delete", price, ZERO])
        elif before is None:
            out.append(["new", price, after])
        else:
            out.append(["change", price, after])
    return out


def _number(params: dict[str, Any], name: str, default: Decimal | None = None) -> Decimal:
    raw = params.get(name)
    if raw is None:
        if default is None:
            raise RpcError(INVALID_PARAMS, "invalid_params", f"{name} is required")
        return default
    if isinstance(raw, bool):
        raise RpcError(INVALID_PARAMS, "invalid_params", f"{name} must be a number")
    try:
        value = Decimal(str(raw)) if not isinstance(raw, Decimal) else raw
    except InvalidOperation:
        raise RpcError(INVALID_PARAMS, "invalid_params", f"{name} must be a number, not {raw!r}") from None
    if not value.is_finite():
        raise RpcError(INVALID_PARAMS, "invalid_params", f"{name} must be finite")
    return value


def _flag(params: dict[str, Any], name: str) -> bool:
    raw = params.get(name, False)
    if isinstance(raw, bool):
        return raw
    if raw in ("true", "false"):
        return raw == "true"
    raise RpcError(INVALID_PARAMS, "invalid_params", f"{name} must be true or false")
