"""The simulator behind Coinbase Advanced Trade's wire protocol: REST + WebSocket over TLS.

``SimServer`` serves a ``SimVenue`` (``SimCore`` plus Coinbase order semantics) on
127.0.0.1 with the REST paths, JSON shapes, JWT authentication, WebSocket endpoint
and message envelope of Coinbase Advanced Trade, so Coinbase clients — the official
SDK, or our own adapter — run against it unchanged. The core is advanced on the
clock by a background ticker (every ``tick_interval`` seconds, 0.1 by default) and
before every request.

Use it in-process::

    async with SimServer(seed=7, trust=[key]) as server:
        RESTClient(api_key=key.name, api_secret=key.private_key_text, base_url=server.base_url)
        # REQUESTS_CA_BUNDLE=server.cert_path; WebSocket: server.ws_url or server.plain_ws_url

or from the command line: ``perpsbot sim serve``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from perpsbot.domain import ZERO, Product
from perpsbot.domain.clock import Clock, WallClock
from perpsbot.exchange.sim import protocol as P
from perpsbot.exchange.sim.engine import SimConfig, SimCore
from perpsbot.exchange.sim.faults import Faults
from perpsbot.exchange.sim.gateway import HEARTBEAT_MIN_SECONDS, TOKEN_SECONDS, GatewayFront
from perpsbot.exchange.sim.keys import ApiKey, AuthError, TrustStore, read_key_file
from perpsbot.exchange.sim.margin import margin_window
from perpsbot.exchange.sim.market import BookLevel, OrderBook
from perpsbot.exchange.sim.products import SimProduct, server_products
from perpsbot.exchange.sim.tls import ensure_certificate, server_context
from perpsbot.exchange.sim.venue import ApiError, OrderFailure, SimVenue, parse_decimal, parse_time

log = logging.getLogger("perpsbot.sim.server")

API_PREFIX = "/api/v3/brokerage"
WS_PATHS = ("/", "/ws")
PRODUCT_CHANNELS = frozenset({"ticker", "ticker_batch", "level2", "market_trades", "candles"})
AUTH_CHANNELS = frozenset({"user", "futures_balance_summary"})
USER_SNAPSHOT_BATCH = 50  # open orders per ``user`` snapshot message
CHANNELS = PRODUCT_CHANNELS | AUTH_CHANNELS | {"heartbeats", "status"}
_MESSAGE_CHANNEL = {"level2": "l2_data"}
MARGIN_PROFILE_TYPES = (
    "MARGIN_PROFILE_TYPE_UNSPECIFIED",
    "MARGIN_PROFILE_TYPE_RETAIL_REGULAR",
    "MARGIN_PROFILE_TYPE_RETAIL_INTRADAY_MARGIN_1",
)
_QUEUE_LIMIT = 5000  # messages waiting for a slow WebSocket client before it is dropped
_WS_CANDLE_SECONDS = 300
_TICKER_BATCH_SECONDS = 5.0
_SERVER_KEY: web.AppKey[SimServer] = web.AppKey("sim_server")
API_KEY_NAME: web.RequestKey[str] = web.RequestKey("api_key_name", str)  # the key that signed the request


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(text=P.dumps(data), status=status, content_type="application/json", headers=headers)


def _error(status: int, error: str, message: str, details: str | None = None,
           headers: Mapping[str, str] | None = None) -> web.Response:
    return _json(P.error_body(error, message, details), status, headers)


def _query_list(request: web.Request, *names: str) -> list[str]:
    out: list[str] = []
    for name in names:
        for value in request.query.getall(name, []):
            out.extend(v for v in value.split(",") if v)
    return out


def _query_int(request: web.Request, name: str, default: int, low: int = 1, high: int = 100_000) -> int:
    raw = request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be an integer, got {raw!r}") from None
    if value < low:
        raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be >= {low}")
    return min(value, high)


def _paginate(
    items: list[Any], request: web.Request, default_limit: int, max_limit: int
) -> tuple[list[Any], bool, str]:
    limit = _query_int(request, "limit", default_limit, 1, max_limit)
    raw = request.query.get("cursor") or "0"
    try:
        offset = int(raw)
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", f"invalid cursor {raw!r}") from None
    page = items[offset:offset + limit]
    has_next = offset + limit < len(items)
    return page, has_next, str(offset + limit) if has_next else ""


async def _json_body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "INVALID_ARGUMENT", f"request body is not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "INVALID_ARGUMENT", "request body must be a JSON object")
    return data


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _Connection:
    """One WebSocket client: its subscriptions, its sequence numbers, its outgoing queue."""

    def __init__(self, server: SimServer, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.server = server
        self.ws = ws
        self.request = request
        self.seq = 0
        self.subs: dict[str, set[str]] = {}  # channel -> product ids (empty: all)
        self.key_name: str | None = None
        self.balance_key: str | None = None  # the futures balance summary last sent
        self.subscribed = False
        self.closed = False
        self.queue: asyncio.Queue[tuple[str, Any, Any] | None] = asyncio.Queue()

    def close_after_queued(self, code: int, reason: str) -> None:
        """Close the connection once the messages already queued are sent."""
        if not self.closed:
            self.queue.put_nowait(("__close__", code, reason))

    def push(self, channel: str, events: list[dict[str, Any]], when: datetime) -> None:
        if self.closed or not events:
            return
        if self.queue.qsize() >= _QUEUE_LIMIT:
            log.warning("dropping a WebSocket client that does not keep up")
            self.abort()
            return
        self.queue.put_nowait((_MESSAGE_CHANNEL.get(channel, channel), P.ts_nanos(when), events))

    def push_error(self, message: str) -> None:
        if not self.closed:
            self.queue.put_nowait(("", None, {"type": "error", "message": message}))

    def abort(self) -> None:
        """Drop the connection without a close frame (a network failure, as the client sees it)."""
        self.closed = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def writer(self) -> None:
        faults = self.server.faults
        while True:
            item = await self.queue.get()
            if item is None or self.closed:
                return
            channel, stamp, payload = item
            if channel == "__close__":
                self.closed = True
                await self.ws.close(code=stamp, message=str(payload).encode())
                return
            if not channel:
                text = P.dumps(payload)
            else:
                if faults.roll("ws_disconnect"):
                    self.abort()
                    return
                if faults.roll("skip_sequence"):
                    self.seq += 1
                text = P.dumps({
                    "channel": channel,
                    "client_id": "",
                    "timestamp": stamp,
                    "sequence_num": self.seq,
                    "events": payload,
                })
                self.seq += 1
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                self.closed = True
                return

    def wants(self, channel: str, symbol: str | None = None) -> bool:
        products = self.subs.get(channel)
        if products is None:
            return False
        return symbol is None or not products or symbol in products

    def products(self, channel: str) -> set[str]:
        return self.subs.get(channel, set())


class SimServer:
    """The simulator served over Coinbase's protocol on 127.0.0.1.

    ``port``: the TLS port (0: any free port). ``plain_port``: also serve the same app
    without TLS (0: any free port; ``None``: no plain listener). ``trust``: key files
    (paths) or ``ApiKey`` objects whose public keys may sign requests. ``faults``: a
    spec string or a ``Faults``. ``cert_dir``: where the self-signed certificate lives
    (``None``: a temporary folder removed on stop). ``clock``: what time the core is
    advanced to (a ``ManualClock`` makes the market move only when the test says so).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        port: int = 0,
        plain_port: int | None = 0,
        host: str = "127.0.0.1",
        cert_dir: Path | str | None = None,
        trust: Iterable[ApiKey | Path | str] = (),
        faults: Faults | str | None = None,
        core: SimCore | None = None,
        products: Iterable[SimProduct | Product] | None = None,
        sim_config: SimConfig | None = None,
        clock: Clock | None = None,
        tick_interval: float = 0.1,
        subscribe_timeout: float = 5.0,
        token_seconds: float = TOKEN_SECONDS,
        heartbeat_min_seconds: float = HEARTBEAT_MIN_SECONDS,
    ) -> None:
        if core is None:
            config = sim_config if sim_config is not None else SimConfig(seed=seed)
            core = SimCore(products if products is not None else server_products(), config)
        self.core = core
        self.seed = seed
        self.venue = SimVenue(core, seed=seed)
        self.clock: Clock = clock if clock is not None else WallClock()
        self.trust = TrustStore()
        for item in trust:
            self.trust_key(item)
        self.faults = faults if isinstance(faults, Faults) else Faults(faults, seed=seed)
        self.host = host
        self._want_port = port
        self._want_plain_port = plain_port
        self._cert_dir = Path(cert_dir) if cert_dir is not None else None
        self._tmp_dir: str | None = None
        self.tick_interval = tick_interval
        self.subscribe_timeout = subscribe_timeout
        self.port = 0
        self.plain_port: int | None = None
        self.cert_path: Path | None = None
        self.key_path: Path | None = None
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._conns: set[_Connection] = set()
        self._late_orders: set[asyncio.Task[web.Response]] = set()  # order requests held by late_accept
        self.rate_limited_until = 0.0
        self._started_monotonic = time.monotonic()
        # what the WebSocket channels last published
        self._tickers: dict[str, dict[str, Any]] = {}
        self._ticker_keys: dict[str, tuple[Any, ...]] = {}
        self._books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
        self._heartbeat_counter = 0
        self._last_heartbeat = 0.0
        self._last_candles = 0.0
        self._last_ticker_batch = 0.0
        self._positions_key: tuple[Any, ...] | None = None
        self._running = False
        self.new_trades: dict[str, list[Any]] = {}  # the market trades the last step sampled
        self.gateway = GatewayFront(self, token_seconds=token_seconds, heartbeat_min_seconds=heartbeat_min_seconds)

    # ----- configuration -----------------------------------------------------------------

    def trust_key(self, key: ApiKey | Path | str) -> ApiKey:
        """Accept requests signed by ``key`` (an ``ApiKey`` or a key file)."""
        api_key = key if isinstance(key, ApiKey) else read_key_file(key)
        self.trust.add(api_key)
        return api_key

    @property
    def base_url(self) -> str:
        """``host:port`` of the TLS listener, the form the SDK's ``RESTClient(base_url=...)`` takes."""
        return f"{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"wss://{self.host}:{self.port}/ws"

    @property
    def plain_base_url(self) -> str:
        if self.plain_port is None:
            raise RuntimeError("this server has no plain (non-TLS) listener")
        return f"{self.host}:{self.plain_port}"

    @property
    def plain_rest_url(self) -> str:
        return f"http://{self.plain_base_url}"

    @property
    def plain_ws_url(self) -> str:
        return f"ws://{self.plain_base_url}/ws"

    @property
    def websocket_clients(self) -> int:
        """How many WebSocket connections are open."""
        return len(self._conns)

    # ----- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> SimServer:
        if self._running:
            raise RuntimeError("the server is already running")
        cert_dir = self._cert_dir
        if cert_dir is None:
            self._tmp_dir = tempfile.mkdtemp(prefix="perpsbot-sim-tls-")
            cert_dir = Path(self._tmp_dir)
        self.cert_path, self.key_path = ensure_certificate(cert_dir)
        context = server_context(self.cert_path, self.key_path)
        self.step()  # start the core and the published market state before anyone connects
        app = self._build_app()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        socks = []
        try:
            tls_sock = _bind(self.host, self._want_port)
            socks.append(tls_sock)
            self.port = tls_sock.getsockname()[1]
            await web.SockSite(self._runner, tls_sock, ssl_context=context).start()
            if self._want_plain_port is not None:
                plain_sock = _bind(self.host, self._want_plain_port)
                socks.append(plain_sock)
                self.plain_port = plain_sock.getsockname()[1]
                await web.SockSite(self._runner, plain_sock).start()
        except BaseException:
            for sock in socks:
                sock.close()
            await self._runner.cleanup()
            self._remove_tmp()
            raise
        self._running = True
        self._ticker = asyncio.create_task(self._tick_loop(), name="sim-server-ticker")
        log.info("simulator server on %s (plain %s)", self.rest_url, self.plain_port)
        return self

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
        for task in list(self._late_orders):  # a stopping venue accepts nothing more
            task.cancel()
        await self.gateway.stop()
        for conn in list(self._conns):
            conn.closed = True
            conn.queue.put_nowait(None)
            try:
                await asyncio.wait_for(conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown"), 1.0)
            except (TimeoutError, ConnectionError, RuntimeError):
                conn.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                self.step()
            except Exception:  # a broken tick must not stop the server
                log.exception("simulator tick failed")

    def step(self) -> None:
        """Bring the core to ``clock.now()`` and publish what changed to WebSocket clients."""
        now = self.clock.now()
        self.venue.sync(now)
        self._publish(now)
        self.gateway.publish(now)

    def step_core(self) -> None:
        """Bring the core to ``clock.now()`` (before a request is served)."""
        self.venue.sync(self.clock.now())

    # ----- HTTP --------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 20)
        app[_SERVER_KEY] = self
        r = app.router
        p = API_PREFIX
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", f"{p}/time", self.h_time),
            ("GET", f"{p}/market/products", self.h_products),
            ("GET", f"{p}/market/products/{{product_id}}", self.h_product),
            ("GET", f"{p}/market/product_book", self.h_product_book),
            ("GET", f"{p}/market/products/{{product_id}}/candles", self.h_candles),
            ("GET", f"{p}/market/products/{{product_id}}/ticker", self.h_market_trades),
            ("GET", f"{p}/products", self.h_products),
            ("GET", f"{p}/products/{{product_id}}", self.h_product),
            ("GET", f"{p}/products/{{product_id}}/candles", self.h_candles),
            ("GET", f"{p}/products/{{product_id}}/ticker", self.h_market_trades),
            ("GET", f"{p}/best_bid_ask", self.h_best_bid_ask),
            ("GET", f"{p}/product_book", self.h_product_book),
            ("GET", f"{p}/accounts", self.h_accounts),
            ("GET", f"{p}/accounts/{{account_uuid}}", self.h_account),
            ("GET", f"{p}/portfolios", self.h_portfolios),
            ("POST", f"{p}/portfolios/move_funds", self.h_move_funds),
            ("GET", f"{p}/portfolios/{{portfolio_uuid}}", self.h_portfolio_breakdown),
            ("GET", f"{p}/key_permissions", self.h_key_permissions),
            ("GET", f"{p}/transaction_summary", self.h_transaction_summary),
            ("GET", f"{p}/cfm/balance_summary", self.h_cfm_balance_summary),
            ("GET", f"{p}/cfm/positions", self.h_cfm_positions),
            ("GET", f"{p}/cfm/positions/{{product_id}}", self.h_cfm_position),
            ("GET", f"{p}/cfm/intraday/current_margin_window", self.h_cfm_margin_window),
            ("GET", f"{p}/cfm/intraday/margin_setting", self.h_cfm_margin_setting),
            ("POST", f"{p}/cfm/intraday/margin_setting", self.h_cfm_set_margin_setting),
            ("GET", f"{p}/cfm/sweeps", self.h_cfm_sweeps),
            ("POST", f"{p}/orders", self.h_create_order),
            ("POST", f"{p}/orders/preview", self.h_preview_order),
            ("POST", f"{p}/orders/edit", self.h_edit_order),
            ("POST", f"{p}/orders/edit_preview", self.h_edit_preview),
            ("POST", f"{p}/orders/batch_cancel", self.h_batch_cancel),
            ("POST", f"{p}/orders/close_position", self.h_close_position),
            ("GET", f"{p}/orders/historical/batch", self.h_list_orders),
            ("GET", f"{p}/orders/historical/fills", self.h_list_fills),
            ("GET", f"{p}/orders/historical/{{order_id}}", self.h_get_order),
        ]
        for method, path, handler in routes:
            r.add_route(method, path, handler)
        for path in WS_PATHS:
            r.add_get(path, self.h_websocket)
        self.gateway.add_routes(app)
        return app

    @staticmethod
    def _is_public(path: str) -> bool:
        return path.startswith(f"{API_PREFIX}/market/") or path == f"{API_PREFIX}/time"

    def _authenticate(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        if not header:
            raise AuthError("missing Authorization header")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Authorization must be 'Bearer <jwt>'")
        uri = f"{request.method} {request.host}{request.path}"
        return self.trust.verify(token.strip(), uri=uri)["sub"]

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        faults = self.faults
        try:
            if faults.roll("slow"):
                await asyncio.sleep(float(faults.param("slow") or 0))
            now_mono = time.monotonic()
            if now_mono >= self.rate_limited_until and faults.roll("rate_limit"):
                self.rate_limited_until = now_mono + float(faults.param("rate_limit") or 0)
                return self._rate_limit_response(now_mono, burst_start=True)
            if now_mono < self.rate_limited_until:
                return self._rate_limit_response(now_mono)
            if not self._is_public(request.path):
                try:
                    request[API_KEY_NAME] = self._authenticate(request)
                except AuthError as exc:
                    return _error(401, "UNAUTHENTICATED", "Unauthorized", str(exc))
            if faults.roll("server_error"):
                status = int(float(faults.param("server_error") or 500))
                error = "UNAVAILABLE" if status == 503 else "INTERNAL"
                return _error(status, error, "Internal server error" if status != 503 else "Service unavailable",
                              "injected fault: server_error")
            self.venue.sync(self.clock.now())
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.error, exc.message, exc.details)
        except web.HTTPException as exc:
            if exc.status == 404:
                return _error(404, "NOT_FOUND", f"{request.method} {request.path} is not an endpoint")
            if exc.status == 405:
                return _error(405, "UNIMPLEMENTED", f"{request.method} is not allowed on {request.path}")
            raise

    def _rate_limit_response(self, now_mono: float, burst_start: bool = False) -> web.Response:
        reset = time.time() + max(0.0, self.rate_limited_until - now_mono)
        wait = max(1, math.ceil(self.rate_limited_until - now_mono))
        headers = {"x-ratelimit-limit": "30", "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(reset) + 1),
                   "Retry-After": str(wait)}
        if not burst_start:
            self.faults.injected["rate_limit_burst"] += 1
        return _error(429, "RATE_LIMIT_EXCEEDED", "Too many requests", "rate limit exceeded (injected fault)",
                      headers=headers)

    # ----- market data handlers -----------------------------------------------------------

    def _product(self, request: web.Request, key: str = "product_id") -> Product:
        symbol = request.match_info.get(key) or request.query.get(key) or ""
        if not symbol:
            raise ApiError(400, "INVALID_ARGUMENT", f"{key} is required")
        return self.venue.product(symbol)

    async def h_time(self, request: web.Request) -> web.Response:
        now = datetime.now(UTC)
        return _json({"iso": P.ts(now), "epochSeconds": str(int(now.timestamp())),
                      "epochMillis": str(int(now.timestamp() * 1000))})

    async def h_products(self, request: web.Request) -> web.Response:
        wanted = set(_query_list(request, "product_ids"))
        product_type = request.query.get("product_type", "").upper()
        expiry = request.query.get("contract_expiry_type", "").upper()
        items = []
        for product in self.venue.products():
            if wanted and product.symbol not in wanted:
                continue
            if product_type and product_type != ("FUTURE" if product.is_derivative else "SPOT"):
                continue
            if expiry and expiry != P.expiry_type(product):
                continue
            items.append(P.product_json(product, self.venue.stats(product.symbol), self.venue))
        offset = _query_int(request, "offset", 0, 0)
        limit = _query_int(request, "limit", len(items) or 1, 1)
        page = items[offset:offset + limit]
        return _json({"products": page, "num_products": len(items)})

    async def h_product(self, request: web.Request) -> web.Response:
        product = self._product(request)
        return _json(P.product_json(product, self.venue.stats(product.symbol), self.venue))

    async def h_best_bid_ask(self, request: web.Request) -> web.Response:
        wanted = _query_list(request, "product_ids")
        symbols = wanted or [p.symbol for p in self.venue.products()]
        books = []
        for symbol in symbols:
            self.venue.product(symbol)
            books.append(P.pricebook_json(self.core.book(symbol), limit=1))
        return _json({"pricebooks": books})

    async def h_product_book(self, request: web.Request) -> web.Response:
        product = self._product(request)
        limit = _query_int(request, "limit", 0, 0) or None
        book = self.core.book(product.symbol)
        increment = request.query.get("aggregation_price_increment")
        if increment:
            try:
                step = Decimal(increment)
            except ArithmeticError:
                raise ApiError(400, "INVALID_ARGUMENT", f"invalid aggregation_price_increment {increment!r}") from None
            if not step.is_finite() or step <= 0:
                raise ApiError(400, "INVALID_ARGUMENT", "aggregation_price_increment must be > 0")
            book = _aggregate(book, step)
        quote = self.core.quote(product.symbol)
        mid = (quote.bid + quote.ask) / 2
        spread = quote.ask - quote.bid
        return _json({
            "pricebook": P.pricebook_json(book, limit),
            "last": P.num(self.core.market(product.symbol).last_trade),
            "mid_market": P.num(mid),
            "spread_bps": P.num((spread / mid * 10_000).quantize(Decimal("0.0001"))),
            "spread_absolute": P.num(spread),
        })

    async def h_candles(self, request: web.Request) -> web.Response:
        product = self._product(request)
        name = request.query.get("granularity", "")
        seconds = P.GRANULARITIES.get(name)
        if seconds is None:
            raise ApiError(400, "INVALID_ARGUMENT", f"granularity must be one of {', '.join(P.GRANULARITIES)}")
        try:
            start = int(request.query["start"])
            end = int(request.query["end"])
        except KeyError as exc:
            raise ApiError(400, "INVALID_ARGUMENT", f"{exc.args[0]} (unix seconds) is required") from None
        except ValueError:
            raise ApiError(400, "INVALID_ARGUMENT", "start and end must be unix seconds") from None
        if end < start:
            raise ApiError(400, "INVALID_ARGUMENT", "end must not be before start")
        if (end - start) // seconds > P.MAX_CANDLES:
            raise ApiError(400, "INVALID_ARGUMENT",
                           f"number of candles requested should be less than or equal to {P.MAX_CANDLES}")
        limit = _query_int(request, "limit", P.MAX_CANDLES, 1, P.MAX_CANDLES)
        now_s = int(self.core.now.timestamp())
        wanted = max(1, (now_s - start) // seconds + 2)
        candles = [c for c in self.core.candles(product.symbol, seconds, wanted)
                   if start <= c.start.timestamp() <= end]
        candles.reverse()  # newest first, as Coinbase returns them
        return _json({"candles": [P.candle_json(c) for c in candles[:limit]]})

    async def h_market_trades(self, request: web.Request) -> web.Response:
        product = self._product(request)
        limit = _query_int(request, "limit", 100, 1, 1000)
        start = parse_time(request.query["start"], "start") if request.query.get("start") else None
        end = parse_time(request.query["end"], "end") if request.query.get("end") else None
        trades = self.venue.market_trades(product.symbol, limit, start, end)
        quote = self.core.quote(product.symbol)
        return _json({"trades": [P.market_trade_json(t) for t in trades],
                      "best_bid": P.num(quote.bid), "best_ask": P.num(quote.ask)})

    # ----- account handlers ----------------------------------------------------------------

    def _accounts(self) -> list[dict[str, Any]]:
        balances = self.core.account().balances
        created = self.core.start or self.core.now
        out = []
        for ccy in self.venue.currencies:
            bal = balances.get(ccy)
            out.append(
                P.account_json(self.venue, ccy, bal.available if bal else ZERO, bal.hold if bal else ZERO, created)
            )
        return out

    async def h_accounts(self, request: web.Request) -> web.Response:
        items = self._accounts()
        page, has_next, cursor = _paginate(items, request, 49, 250)
        return _json({"accounts": page, "has_next": has_next, "cursor": cursor, "size": len(page)})

    async def h_account(self, request: web.Request) -> web.Response:
        wanted = request.match_info["account_uuid"]
        for account in self._accounts():
            if account["uuid"] == wanted:
                return _json({"account": account})
        raise ApiError(404, "NOT_FOUND", f"account {wanted} not found")

    def _portfolio(self, request: web.Request) -> str:
        wanted = request.match_info["portfolio_uuid"]
        if wanted not in (self.venue.default_portfolio_id, self.venue.consumer_portfolio_id):
            raise ApiError(404, "NOT_FOUND", f"portfolio {wanted} not found")
        return wanted

    async def h_portfolios(self, request: web.Request) -> web.Response:
        kind = request.query.get("portfolio_type", "").upper()
        items = [p for p in P.portfolios_json(self.venue) if not kind or p["type"] == kind]
        return _json({"portfolios": items})

    async def h_move_funds(self, request: web.Request) -> web.Response:
        """``POST /portfolios/move_funds`` (the SDK's ``move_portfolio_funds``): known, distinct
        portfolios and a positive amount the account holds; answered, as documented, with the
        two portfolio ids. The simulator keeps one cash pool for both portfolios, so no
        balance changes."""
        body = await _json_body(request)
        funds = body.get("funds")
        if not isinstance(funds, Mapping):
            raise ApiError(400, "INVALID_ARGUMENT", "funds is required: {\"value\", \"currency\"}")
        known = {p["uuid"] for p in P.portfolios_json(self.venue)}
        source, target = body.get("source_portfolio_uuid"), body.get("target_portfolio_uuid")
        for name, value in (("source_portfolio_uuid", source), ("target_portfolio_uuid", target)):
            if not isinstance(value, str) or not value:
                raise ApiError(400, "INVALID_ARGUMENT", f"{name} is required")
            if value not in known:
                raise ApiError(404, "NOT_FOUND", f"portfolio {value} not found")
        if source == target:
            raise ApiError(400, "INVALID_ARGUMENT", "source and target portfolio must differ")
        value = parse_decimal(funds.get("value"), "funds.value")
        if value <= 0:
            raise ApiError(400, "INVALID_ARGUMENT", f"funds.value must be > 0, got {funds.get('value')!r}")
        currency = funds.get("currency")
        balance = self.core.account().balances.get(currency) if isinstance(currency, str) else None
        if balance is None or balance.available < value:
            raise ApiError(400, "INSUFFICIENT_FUND", f"not enough {currency} available to move {funds.get('value')}")
        log.info("move_funds: %s %s from %s to %s (one cash pool: no balance changes)", value, currency, source, target)
        return _json({"source_portfolio_uuid": source, "target_portfolio_uuid": target})

    async def h_portfolio_breakdown(self, request: web.Request) -> web.Response:
        wanted = self._portfolio(request)
        portfolio = next(p for p in P.portfolios_json(self.venue) if p["uuid"] == wanted)
        s = self.venue.futures_summary()
        ccy = self.core.config.cash_currency
        account = self.core.account()
        spot = []
        crypto_total = ZERO
        for ccy_name in self.venue.currencies:
            bal = account.balances.get(ccy_name)
            if bal is None:
                continue
            if ccy_name == ccy:
                value = bal.total
            else:
                symbol = f"{ccy_name}-{ccy}"
                value = bal.total * self.core.market(symbol).mid if symbol in self.venue.symbols else ZERO
                crypto_total += value
            spot.append({
                "asset": ccy_name, "account_uuid": self.venue.account_id(ccy_name),
                "total_balance_fiat": float(value), "total_balance_crypto": float(bal.total),
                "available_to_trade_fiat": float(bal.available if ccy_name == ccy else value),
                "allocation": 0.0, "cost_basis": P.amount(ZERO, ccy), "asset_img_url": "",
                "is_cash": ccy_name == ccy,
            })
        futures = [P.breakdown_future_json(prod, pos, mark) for prod, pos, mark in self.venue.perp_positions()]
        return _json({"breakdown": {
            "portfolio": portfolio,
            "portfolio_balances": {
                "total_balance": P.amount(account.equity, ccy),
                "total_futures_balance": P.amount(s["margin"] + s["unrealized_pnl"], ccy),
                "total_cash_equivalent_balance": P.amount(s["available"] + s["hold"], ccy),
                "total_crypto_balance": P.amount(crypto_total, ccy),
                "futures_unrealized_pnl": P.amount(s["unrealized_pnl"], ccy),
                "perp_unrealized_pnl": P.amount(s["unrealized_pnl"], ccy),
            },
            "spot_positions": spot,
            "perp_positions": [],
            "futures_positions": futures,
        }})

    async def h_key_permissions(self, request: web.Request) -> web.Response:
        return _json({"can_view": True, "can_trade": True, "can_transfer": False,
                      "portfolio_uuid": self.venue.default_portfolio_id, "portfolio_type": "DEFAULT"})

    async def h_transaction_summary(self, request: web.Request) -> web.Response:
        volume = sum((f.price * f.size for f, _ in self.venue.fills()), ZERO)
        fees = sum((f.fee for f, _ in self.venue.fills()), ZERO)
        equity = self.core.account().equity
        return _json({
            "total_volume": float(volume),
            "total_fees": float(fees),
            "fee_tier": P.fee_tier_json(self.venue),
            "margin_rate": None,
            "goods_and_services_tax": None,
            "advanced_trade_only_volume": float(volume),
            "advanced_trade_only_fees": float(fees),
            "coinbase_pro_volume": 0,
            "coinbase_pro_fees": 0,
            "total_balance": P.num(equity),
            "has_promo_fee": False,
        })

    async def h_cfm_balance_summary(self, request: web.Request) -> web.Response:
        return _json({"balance_summary": P.fcm_balance_summary(self.venue, as_amounts=True)})

    async def h_cfm_positions(self, request: web.Request) -> web.Response:
        return _json({"positions": [P.fcm_position_json(prod, pos, mark)
                                    for prod, pos, mark in self.venue.perp_positions()]})

    async def h_cfm_position(self, request: web.Request) -> web.Response:
        product = self._product(request)
        for prod, pos, mark in self.venue.perp_positions():
            if prod.symbol == product.symbol:
                return _json({"position": P.fcm_position_json(prod, pos, mark)})
        raise ApiError(404, "NOT_FOUND", f"no open position in {product.symbol}")

    async def h_cfm_margin_window(self, request: web.Request) -> web.Response:
        """Intraday margin on weekdays 8 am - 4 pm New York time, overnight otherwise, and
        when the window ends (its rates: ``margin.py``)."""
        profile = request.query.get("margin_profile_type") or "MARGIN_PROFILE_TYPE_UNSPECIFIED"  # optional, documented
        if profile not in MARGIN_PROFILE_TYPES:
            raise ApiError(400, "INVALID_ARGUMENT", f"margin_profile_type {profile!r} is not one of "
                           f"{', '.join(MARGIN_PROFILE_TYPES)}")
        kind, end = margin_window(self.core.now)
        return _json({"margin_window": {"margin_window_type": kind, "end_time": P.ts(end)},
                      "is_intraday_margin_killswitch_enabled": False,
                      "is_intraday_margin_enrollment_killswitch_enabled": False})

    async def h_cfm_margin_setting(self, request: web.Request) -> web.Response:
        return _json({"setting": P.INTRADAY_MARGIN_SETTINGS[self.core.intraday_margin]})

    async def h_cfm_set_margin_setting(self, request: web.Request) -> web.Response:
        setting = (await _json_body(request)).get("setting")
        if setting not in P.INTRADAY_MARGIN_SETTINGS:
            raise ApiError(400, "INVALID_ARGUMENT", f"setting must be one of {', '.join(P.INTRADAY_MARGIN_SETTINGS)}")
        self.core.intraday_margin = setting == P.INTRADAY_MARGIN_SETTINGS[1]
        return _json({})

    async def h_cfm_sweeps(self, request: web.Request) -> web.Response:
        """No sweeps: the simulator keeps one cash pool for spot and futures."""
        return _json({"sweeps": []})

    # ----- order handlers ------------------------------------------------------------------

    async def _answer_new_order(
        self, request: web.Request, make: Callable[[dict[str, Any], datetime], tuple[Any, bool]]
    ) -> web.Response:
        body = await _json_body(request)
        if not self.faults.roll("late_accept"):
            return self._process_new_order(request, make, body, self.clock.now())
        # Processed later, in a task of its own: a client that gives up and disconnects
        # does not stop the venue from accepting the order in the end.
        task = asyncio.create_task(self._late_new_order(request, make, body), name="sim-late-accept")
        self._late_orders.add(task)
        task.add_done_callback(self._late_done)
        return await asyncio.shield(task)

    async def _late_new_order(
        self, request: web.Request, make: Callable[[dict[str, Any], datetime], tuple[Any, bool]], body: dict[str, Any]
    ) -> web.Response:
        delay = float(self.faults.param("late_accept") or 0)
        log.info("injected late_accept: order %s processed in %.3g s", body.get("client_order_id"), delay)
        await asyncio.sleep(delay)
        now = self.clock.now()
        self.venue.sync(now)
        return self._process_new_order(request, make, body, now)

    def _late_done(self, task: asyncio.Task[web.Response]) -> None:
        self._late_orders.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the handler that awaited it may be gone

    def _process_new_order(
        self, request: web.Request, make: Callable[[dict[str, Any], datetime], tuple[Any, bool]],
        body: dict[str, Any], now: datetime,
    ) -> web.Response:
        try:
            order, created = make(body, now)
        except OrderFailure as exc:
            return _json(P.create_failure(exc.error, exc.message, exc.details, exc.preview_reason,
                                          body.get("order_configuration")))
        view = self.venue.view(order)
        self._publish_user(self.clock.now())
        if created and self.faults.roll("lost_response"):
            mode = self.faults.param("lost_response")
            if mode == "mixed":
                mode = self.faults.choose("lost_response", ("drop", "error"))
            log.info("injected lost_response (%s) for order %s", mode, order.order_id)
            if mode == "drop":
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=500)
            return _error(500, "INTERNAL", "Internal server error", "injected fault: lost_response")
        return _json(P.create_success(view))

    async def h_create_order(self, request: web.Request) -> web.Response:
        return await self._answer_new_order(request, self.venue.create_order)

    async def h_close_position(self, request: web.Request) -> web.Response:
        return await self._answer_new_order(request, self.venue.close_position)

    async def h_preview_order(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        out = self.venue.preview(body, self.clock.now())
        return _json({k: (P.num(v) if isinstance(v, Decimal) else v) for k, v in out.items()})

    async def h_edit_order(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        errors = self.venue.edit(body.get("order_id"), body.get("price"), body.get("size"), self.clock.now())
        self._publish_user(self.clock.now())
        if errors:
            return _json({"success": False, "errors": [
                {"edit_failure_reason": e, "preview_failure_reason": "UNKNOWN_PREVIEW_FAILURE_REASON"} for e in errors
            ]})
        return _json({"success": True, "errors": []})

    async def h_edit_preview(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        errors = self.venue.edit(body.get("order_id"), body.get("price"), body.get("size"), self.clock.now(),
                                 dry_run=True)
        out: dict[str, Any] = {"errors": [{"edit_failure_reason": e,
                                           "preview_failure_reason": "UNKNOWN_PREVIEW_FAILURE_REASON"} for e in errors]}
        if not errors:
            order = self.venue.order(body["order_id"])
            spec = order.spec
            price = Decimal(str(body.get("price") or spec.limit_price))
            size = Decimal(str(body.get("size") or spec.size))
            quote = self.core.quote(spec.symbol)
            commission = price * size * self.core.config.maker_fee_bps / 10_000
            out.update(slippage="0", order_total=P.num(price * size + commission), commission_total=P.num(commission),
                       quote_size=P.num(price * size), base_size=P.num(size), best_bid=P.num(quote.bid),
                       best_ask=P.num(quote.ask), average_filled_price=P.num(price))
        return _json(out)

    async def h_batch_cancel(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        ids = body.get("order_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, "INVALID_ARGUMENT", "order_ids must be a non-empty list of order ids")
        if len(ids) > 100:
            raise ApiError(400, "INVALID_ARGUMENT", "at most 100 order ids per request")
        now = self.clock.now()
        results = []
        for order_id in ids:
            ok, reason = self.venue.cancel(order_id, now)
            results.append({"success": ok, "failure_reason": reason, "order_id": order_id})
        self._publish_user(now)
        return _json({"results": results})

    async def h_get_order(self, request: web.Request) -> web.Response:
        order = self.venue.order(request.match_info["order_id"])
        return _json({"order": P.order_json(self.venue.view(order), self.venue)})

    async def h_list_orders(self, request: web.Request) -> web.Response:
        ids = set(_query_list(request, "order_ids"))
        products = set(_query_list(request, "product_ids", "product_id"))
        statuses = {s.upper() for s in _query_list(request, "order_status")}
        types = {s.upper() for s in _query_list(request, "order_types", "order_type")}
        tifs = {s.upper() for s in _query_list(request, "time_in_forces")}
        side = request.query.get("order_side", "").upper()
        product_type = request.query.get("product_type", "").upper()
        start = parse_time(request.query["start_date"], "start_date") if request.query.get("start_date") else None
        end = parse_time(request.query["end_date"], "end_date") if request.query.get("end_date") else None
        views = []
        for order in self.venue.orders():
            spec = order.spec
            if ids and order.order_id not in ids:
                continue
            if products and spec.symbol not in products:
                continue
            if types and spec.kind not in types:
                continue
            if tifs and spec.tif not in tifs:
                continue
            if side and spec.side.value != side:
                continue
            if product_type and product_type != ("FUTURE" if spec.product.is_derivative else "SPOT"):
                continue
            if start is not None and order.created_at < start:
                continue
            if end is not None and order.created_at > end:
                continue
            view = self.venue.view(order)
            if statuses and view.status not in statuses:
                continue
            views.append(view)
        if request.query.get("sort_by") == "LAST_FILL_TIME":
            views.sort(key=lambda v: v.last_fill_time or v.order.created_at, reverse=True)
        page, has_next, cursor = _paginate(views, request, 100, 1000)
        return _json({"orders": [P.order_json(v, self.venue) for v in page], "sequence": "0",
                      "has_next": has_next, "cursor": cursor})

    async def h_list_fills(self, request: web.Request) -> web.Response:
        order_ids = set(_query_list(request, "order_ids", "order_id"))
        trade_ids = set(_query_list(request, "trade_ids"))
        products = set(_query_list(request, "product_ids", "product_id"))
        start = (parse_time(request.query["start_sequence_timestamp"], "start_sequence_timestamp")
                 if request.query.get("start_sequence_timestamp") else None)
        end = (parse_time(request.query["end_sequence_timestamp"], "end_sequence_timestamp")
               if request.query.get("end_sequence_timestamp") else None)
        rows = []
        for fill, order_id in reversed(self.venue.fills()):
            if order_ids and order_id not in order_ids:
                continue
            if trade_ids and fill.trade_id not in trade_ids:
                continue
            if products and fill.symbol not in products:
                continue
            if start is not None and fill.ts < start:
                continue
            if end is not None and fill.ts > end:
                continue
            rows.append((fill, order_id))
        if request.query.get("sort_by") == "PRICE":
            rows.sort(key=lambda r: r[0].price, reverse=True)
        page, _, cursor = _paginate(rows, request, 100, 1000)
        return _json({"fills": [P.fill_json(f, oid, self.venue) for f, oid in page], "cursor": cursor})

    # ----- WebSocket -----------------------------------------------------------------------

    async def h_websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        if not ws.can_prepare(request).ok:
            return _json({"name": "perpsbot simulator", "rest": API_PREFIX, "websocket": "/ws"})
        await ws.prepare(request)
        conn = _Connection(self, ws, request)
        self._conns.add(conn)
        writer = asyncio.create_task(conn.writer())
        timer = asyncio.get_running_loop().call_later(self.subscribe_timeout, self._subscribe_deadline, conn)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    self._on_ws_message(conn, msg.data)
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            timer.cancel()
            conn.closed = True
            self._conns.discard(conn)
            conn.queue.put_nowait(None)
            writer.cancel()
        return ws

    def _subscribe_deadline(self, conn: _Connection) -> None:
        if not conn.subscribed and not conn.closed:
            conn.push_error("no subscribe message received within the subscribe timeout")
            conn.close_after_queued(WSCloseCode.POLICY_VIOLATION, "subscribe timeout")

    def _on_ws_message(self, conn: _Connection, text: str) -> None:
        try:
            msg = json.loads(text)
        except json.JSONDecodeError:
            conn.push_error("malformed JSON")
            return
        if not isinstance(msg, dict):
            conn.push_error("a message must be a JSON object")
            return
        kind, channel = msg.get("type"), msg.get("channel")
        if kind not in ("subscribe", "unsubscribe"):
            conn.push_error(f"unknown message type {kind!r}")
            return
        if channel not in CHANNELS:
            conn.push_error(f"channel {channel!r} is not supported; channels: {', '.join(sorted(CHANNELS))}")
            return
        products = msg.get("product_ids") or []
        if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
            conn.push_error("product_ids must be a list of product ids")
            return
        known = set(self.venue.symbols)
        unknown = [p for p in products if p not in known]
        if unknown:
            conn.push_error(f"failure to subscribe: unknown product(s) {', '.join(unknown)}")
            return
        token = msg.get("jwt")
        if channel in AUTH_CHANNELS or token:
            try:
                conn.key_name = self.trust.verify(token or "", uri=None)["sub"]
            except AuthError as exc:
                conn.push_error(f"authentication failure: {exc}")
                return
        now = self.clock.now()
        if kind == "subscribe":
            if channel in PRODUCT_CHANNELS and not products:
                conn.push_error(f"channel {channel} needs product_ids")
                return
            current = conn.subs.get(channel)
            if current is None:
                new = set(products) if products else set()
                conn.subs[channel] = set(products)
                first = True
            else:
                if not current:  # already subscribed to everything
                    new, first = set(), False
                elif not products:
                    new, first = set(), True
                    conn.subs[channel] = set()
                else:
                    new, first = set(products) - current, False
                    current.update(products)
            conn.subscribed = True
            self._send_subscriptions(conn, now)
            self._send_snapshot(conn, channel, new, first, now)
        else:
            if not products:
                conn.subs.pop(channel, None)
            elif channel in conn.subs:
                conn.subs[channel] -= set(products)
                if not conn.subs[channel]:
                    conn.subs.pop(channel)
            self._send_subscriptions(conn, now)

    def _send_subscriptions(self, conn: _Connection, now: datetime) -> None:
        subs = {ch: sorted(products) for ch, products in conn.subs.items()}
        conn.push("subscriptions", [{"subscriptions": subs}], now)

    def _send_snapshot(self, conn: _Connection, channel: str, new: set[str], first: bool, now: datetime) -> None:
        ordered = [s for s in self.venue.symbols if s in new]
        if channel == "ticker" or channel == "ticker_batch":
            tickers = [self._tickers[s] for s in ordered if s in self._tickers]
            if channel == "ticker_batch":
                tickers = [_batch_ticker(t) for t in tickers]
            conn.push(channel, [{"type": "snapshot", "tickers": tickers}], now)
        elif channel == "level2":
            for symbol in ordered:  # one product per message
                bids, asks = self._books[symbol]
                stamp = P.ts(self.core.now)
                updates = [_l2("bid", p, q, stamp) for p, q in sorted(bids.items(), reverse=True)]
                updates += [_l2("offer", p, q, stamp) for p, q in sorted(asks.items())]
                conn.push(channel, [{"type": "snapshot", "product_id": symbol, "updates": updates}], now)
        elif channel == "market_trades":
            trades = []
            for symbol in ordered:
                trades += [P.market_trade_json(t) for t in self.venue.market_trades(symbol, 50)]
            conn.push(channel, [{"type": "snapshot", "trades": trades}], now)
        elif channel == "candles":
            candles = [c for c in (self._ws_candle(s) for s in ordered) if c is not None]
            conn.push(channel, [{"type": "snapshot", "candles": candles}], now)
        elif channel == "status" and (first or new):
            wanted = new or set(self.venue.symbols)
            products = [self._status_product(p) for p in self.venue.products() if p.symbol in wanted]
            conn.push(channel, [{"type": "snapshot", "products": products}], now)
        elif channel == "user" and (first or new):
            wanted = conn.products("user")
            orders = [P.ws_order_json(self.venue.view(o), self.venue) for o in reversed(self.venue.live_orders())
                      if not wanted or o.symbol in wanted]
            positions = self._ws_positions()
            # "Open orders are returned in the snapshot batched by 50" (the channel's reference):
            # one message per batch. Which batch carries the positions is not documented: each does.
            for start in range(0, max(len(orders), 1), USER_SNAPSHOT_BATCH):
                batch = orders[start:start + USER_SNAPSHOT_BATCH]
                conn.push(channel, [{"type": "snapshot", "orders": batch, "positions": positions}], now)
        elif channel == "futures_balance_summary" and first:
            summary = P.fcm_balance_summary(self.venue, as_amounts=False)
            conn.balance_key = P.dumps(summary)
            conn.push(channel, [{"type": "snapshot", "fcm_balance_summary": summary}], now)

    # ----- publishing -------------------------------------------------------------------------

    def _ticker_state(self, symbol: str, book: OrderBook) -> tuple[tuple[Any, ...], dict[str, Any]]:
        stats = self.venue.stats(symbol)
        model = self.core.market(symbol)
        best_bid = book.bids[0] if book.bids else None
        best_ask = book.asks[0] if book.asks else None
        ticker = {
            "type": "ticker",
            "product_id": symbol,
            "price": P.num(stats.price),
            "volume_24_h": P.num(stats.volume_24h),
            "low_24_h": P.num(stats.low_24h),
            "high_24_h": P.num(stats.high_24h),
            "low_52_w": P.num(stats.low_24h),
            "high_52_w": P.num(stats.high_24h),
            "price_percent_chg_24_h": P.num(stats.change_pct_24h.quantize(Decimal("0.00000001"))),
            "best_bid": P.num(best_bid.price if best_bid else ZERO),
            "best_bid_quantity": P.num(best_bid.size if best_bid else ZERO),
            "best_ask": P.num(best_ask.price if best_ask else ZERO),
            "best_ask_quantity": P.num(best_ask.size if best_ask else ZERO),
        }
        key = (model.total_volume, stats.price, best_bid.price if best_bid else None,
               best_ask.price if best_ask else None)
        return key, ticker

    def _ws_candle(self, symbol: str) -> dict[str, str] | None:
        """The current five-minute candle, built from the closed one-second bars in it."""
        now_s = int(self.core.now.timestamp())
        bucket = now_s - now_s % _WS_CANDLE_SECONDS
        bars = [c for c in self.core.candles(symbol, 1, _WS_CANDLE_SECONDS) if c.start.timestamp() >= bucket]
        if not bars:
            last = self.core.market(symbol).last_trade
            return {"start": str(bucket), "high": P.num(last), "low": P.num(last), "open": P.num(last),
                    "close": P.num(last), "volume": "0", "product_id": symbol}
        return {
            "start": str(bucket),
            "high": P.num(max(c.high for c in bars)),
            "low": P.num(min(c.low for c in bars)),
            "open": P.num(bars[0].open),
            "close": P.num(bars[-1].close),
            "volume": P.num(sum((c.volume for c in bars), ZERO)),
            "product_id": symbol,
        }

    def _status_product(self, product: Product) -> dict[str, Any]:
        return {
            "product_type": "FUTURE" if product.is_derivative else "SPOT",
            "id": product.symbol,
            "base_currency": product.base,
            "quote_currency": product.quote,
            "base_increment": P.num(product.base_increment),
            "quote_increment": P.num(product.price_increment),
            "display_name": f"{product.base}-{product.quote}" if not product.is_derivative else P.display_name(product),
            "status": "online",
            "status_message": "",
            "min_market_funds": "1",
        }

    def _ws_positions(self) -> dict[str, Any]:
        return {
            "perpetual_futures_positions": [],  # the venue lists its futures as expiring ones
            "expiring_futures_positions": [P.ws_fcm_position_json(prod, pos, mark)
                                           for prod, pos, mark in self.venue.perp_positions()],
        }

    def _publish_user(self, now: datetime) -> None:
        changed = self.venue.drain_changed_orders()
        positions_key = tuple((prod.symbol, pos.size, pos.entry_price) for prod, pos, _ in self.venue.perp_positions())
        positions_changed = positions_key != self._positions_key
        self._positions_key = positions_key
        if not self._conns or not (changed or positions_changed):
            return
        positions = self._ws_positions() if positions_changed else None
        for conn in list(self._conns):
            if not conn.wants("user"):
                continue
            wanted = conn.products("user")
            orders = [P.ws_order_json(v, self.venue) for v in changed if not wanted or v.order.symbol in wanted]
            if not orders and positions is None:
                continue
            event: dict[str, Any] = {"type": "update", "orders": orders}
            if positions is not None:
                event["positions"] = positions
            conn.push("user", [event], now)

    def _publish(self, now: datetime) -> None:
        symbols = self.venue.symbols
        tickers: dict[str, dict[str, Any]] = {}
        l2: dict[str, list[dict[str, str]]] = {}
        for symbol in symbols:
            book = self.core.book(symbol)
            key, ticker = self._ticker_state(symbol, book)
            if key != self._ticker_keys.get(symbol):
                self._ticker_keys[symbol] = key
                self._tickers[symbol] = ticker
                tickers[symbol] = ticker
            bids = {level.price: level.size for level in book.bids}
            asks = {level.price: level.size for level in book.asks}
            old = self._books.get(symbol)
            self._books[symbol] = (bids, asks)
            if old is not None:
                stamp = P.ts(book.ts)
                updates = _diff("bid", old[0], bids, stamp, reverse=True) + _diff("offer", old[1], asks, stamp)
                if updates:
                    l2[symbol] = updates
        trades = self.new_trades = self.venue.drain_new_trades()
        self._publish_user(now)
        mono = time.monotonic()
        heartbeat = mono - self._last_heartbeat >= 1.0
        if heartbeat:
            self._last_heartbeat = mono
            self._heartbeat_counter += 1
        candles_due = mono - self._last_candles >= 1.0
        if candles_due:
            self._last_candles = mono
        batch_due = mono - self._last_ticker_batch >= _TICKER_BATCH_SECONDS
        if batch_due:
            self._last_ticker_batch = mono
        balance: dict[str, Any] | None = None
        balance_key = ""
        if heartbeat and any(c.wants("futures_balance_summary") for c in self._conns):
            balance = P.fcm_balance_summary(self.venue, as_amounts=False)
            balance_key = P.dumps(balance)
        candle_cache: dict[str, dict[str, str] | None] = {}
        for conn in list(self._conns):
            if conn.closed:
                continue
            subs = conn.subs
            if "ticker" in subs:
                chosen = [t for s, t in tickers.items() if conn.wants("ticker", s)]
                if chosen:
                    conn.push("ticker", [{"type": "update", "tickers": chosen}], now)
            if "level2" in subs:
                for s, u in l2.items():  # one product per message, as Coinbase sends them
                    if conn.wants("level2", s):
                        conn.push("level2", [{"type": "update", "product_id": s, "updates": u}], now)
            if "market_trades" in subs:
                chosen_trades = [P.market_trade_json(t) for s, ts in trades.items() if conn.wants("market_trades", s)
                                 for t in ts]
                if chosen_trades:
                    conn.push("market_trades", [{"type": "update", "trades": chosen_trades}], now)
            if candles_due and "candles" in subs:
                chosen_candles = []
                for s in symbols:
                    if conn.wants("candles", s):
                        if s not in candle_cache:
                            candle_cache[s] = self._ws_candle(s)
                        if candle_cache[s] is not None:
                            chosen_candles.append(candle_cache[s])
                if chosen_candles:
                    conn.push("candles", [{"type": "update", "candles": chosen_candles}], now)
            if batch_due and "ticker_batch" in subs:
                chosen = [_batch_ticker(self._tickers[s]) for s in symbols
                          if conn.wants("ticker_batch", s) and s in self._tickers]
                if chosen:
                    conn.push("ticker_batch", [{"type": "update", "tickers": chosen}], now)
            if heartbeat and "heartbeats" in subs:
                current = (f"{now:%Y-%m-%d %H:%M:%S.%f}000 +0000 UTC "
                           f"m=+{mono - self._started_monotonic:.9f}")
                conn.push("heartbeats", [{"current_time": current, "heartbeat_counter": str(self._heartbeat_counter)}],
                          now)
            if balance is not None and "futures_balance_summary" in subs and conn.balance_key != balance_key:
                conn.balance_key = balance_key
                conn.push("futures_balance_summary", [{"type": "update", "fcm_balance_summary": balance}], now)


def _batch_ticker(ticker: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ticker.items() if not k.startswith(("best_bid", "best_ask"))}


def _l2(side: str, price: Decimal, quantity: Decimal, stamp: str) -> dict[str, str]:
    return {"side": side, "event_time": stamp, "price_level": P.num(price), "new_quantity": P.num(quantity)}


def _diff(side: str, old: dict[Decimal, Decimal], new: dict[Decimal, Decimal], stamp: str,
          reverse: bool = False) -> list[dict[str, str]]:
    out = []
    for price in sorted(set(old) | set(new), reverse=reverse):
        before, after = old.get(price), new.get(price)
        if before != after:
            out.append(_l2(side, price, after if after is not None else ZERO, stamp))
    return out


def _aggregate(book: OrderBook, step: Decimal) -> OrderBook:
    def group(levels: Iterable[Any], rounding: str) -> tuple[BookLevel, ...]:
        sizes: dict[Decimal, Decimal] = {}
        for level in levels:
            bucket = (level.price / step).to_integral_value(rounding) * step
            sizes[bucket] = sizes.get(bucket, ZERO) + level.size
        return tuple(BookLevel(p, s) for p, s in sizes.items())

    return OrderBook(book.symbol, book.ts, group(book.bids, ROUND_FLOOR), group(book.asks, ROUND_CEILING))
