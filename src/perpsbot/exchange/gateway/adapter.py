"""``GatewayExchange``: the ``Exchange`` port on Coinbase's Global Derivatives gateway
(Deribit-powered, JSON-RPC 2.0; ``rpc.py`` the transport, ``market.py`` the market stream).

Instruments map to products by name (``BTC_USDC-PERPETUAL``): ``tick_size`` the price
increment, ``contract_size`` the amount step, ``min_trade_amount`` the minimum,
``max_leverage``; a linear perpetual's ``amount`` is in the base coin, so one unit of size
is one coin (``contract_size`` 1 in the domain's sense). A dated future (``settlement_period``
not ``perpetual``) maps to ``FUTURE`` with its ``expiration_timestamp``.

Orders carry the bot's ``client_order_id`` as ``label``. The gateway does not hold labels
unique, so a label is never trusted alone: an order of unknown fate is looked for by label
among the open orders, the order history and the order states the gateway lists for it,
and a match must also agree with what was sent (instrument, side, amount, and created no
earlier than the request). Several live orders under one label are a duplicate: the
earliest is the order, the others are cancelled here and named in the snapshot's
``duplicates`` (the coordinator records and alerts). Nothing is ever sent twice from here.
"""

from __future__ import annotations

import logging
import ssl as ssl_module
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from perpsbot.domain import (
    ZERO,
    AccountSnapshot,
    Balance,
    BookLevel,
    Candle,
    Fill,
    FundingSettlement,
    Liquidity,
    MarginType,
    OrderBook,
    OrderStatus,
    OrderType,
    Position,
    Product,
    ProductType,
    Quote,
    Side,
    TimeInForce,
)
from perpsbot.domain.clock import Clock
from perpsbot.exchange.coinbase.auth import JwtSigner, resolve_credentials
from perpsbot.exchange.gateway.market import GatewayMarketStream
from perpsbot.exchange.gateway.rpc import (
    DEFAULT_STREAM_WS_URL,
    RpcClient,
)
from perpsbot.exchange.port import (
    BadResponse,
    ExchangeError,
    InvalidOrder,
    InvalidRequest,
    OrderNotFound,
    OrderRequest,
    OrderSnapshot,
    UnknownProduct,
    VenueCapabilities,
)

if TYPE_CHECKING:
    from perpsbot.config import BotConfig

log = logging.getLogger(__name__)

CURRENCY = "USDC"
FILL_OVERLAP = timedelta(seconds=60)
PAGE = 1000
SETTLEMENTS_KEPT = timedelta(days=1)
_TIF = {TimeInForce.GTC: "good_til_cancelled", TimeInForce.IOC: "immediate_or_cancel",
        TimeInForce.FOK: "fill_or_kill"}
_STATES = {"open": OrderStatus.OPEN, "filled": OrderStatus.FILLED, "cancelled": OrderStatus.CANCELLED,
           "rejected": OrderStatus.REJECTED, "untriggered": OrderStatus.OPEN, "triggered": OrderStatus.OPEN}
_MINUTES = (1, 3, 5, 10, 15, 30, 60, 120, 180, 360, 720)

CAPABILITIES = VenueCapabilities(
    order_types=frozenset({OrderType.MARKET, OrderType.LIMIT}), times_in_force=frozenset(TimeInForce),
    post_only=True, reduce_only=True, margin_types=frozenset(MarginType), funding=True, market_stream=True,
    user_stream=False, account_persists=True, book_from_stream=True,
)


# ----- JSON to domain (numbers arrive as Decimal: rpc.py parses with parse_float=Decimal) -------


def _dec(obj: dict[str, Any], name: str, where: str, *, optional: bool = False) -> Decimal:
    value = obj.get(name)
    if value is None and optional:
        return ZERO
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise BadResponse(f"{where}.{name}: expected a number, got {str(value)[:40]!r}")
    out = Decimal(value)
    if not out.is_finite():
        raise BadResponse(f"{where}.{name}: not a finite number")
    return out


def _str(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise BadResponse(f"{where}.{name}: expected text, got {str(value)[:40]!r}")
    return value


def _time(obj: dict[str, Any], name: str, where: str) -> datetime:
    ms = obj.get(name)
    if isinstance(ms, bool) or not isinstance(ms, int | Decimal) or ms < 0:
        raise BadResponse(f"{where}.{name}: expected milliseconds, got {str(ms)[:40]!r}")
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    except (OverflowError, ValueError, OSError):
        raise BadResponse(f"{where}.{name}: {ms} is out of range") from None


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadResponse(f"{where}: expected an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadResponse(f"{where}: expected a list")
    return value


def _side(obj: dict[str, Any], where: str) -> Side:
    direction = obj.get("direction")
    if direction == "buy":
        return Side.BUY
    if direction == "sell":
        return Side.SELL
    raise BadResponse(f"{where}.direction: expected buy or sell, got {str(direction)[:20]!r}")


def parse_instrument(raw: Any) -> Product | None:
    """A product for a future (perpetual or dated); None for an instrument of another kind."""
    item = _obj(raw, "instrument")
    name = _str(item, "instrument_name", "instrument")
    where = f"instrument {name}"
    if item.get("kind") != "future":
        return None
    perpetual = item.get("settlement_period") == "perpetual"
    max_leverage = _dec(item, "max_leverage", where, optional=True) or Decimal(1)
    expiry = _time(item, "expiration_timestamp", where) if item.get("expiration_timestamp") else None
    try:
        return Product(
            symbol=name,
            base=_str(item, "base_currency", where),
            quote=str(item.get("quote_currency") or item.get("counter_currency") or CURRENCY),
            type=ProductType.PERPETUAL if perpetual else ProductType.FUTURE,
            base_increment=_dec(item, "contract_size", where),
            price_increment=_dec(item, "tick_size", where),
            min_size=_dec(item, "min_trade_amount", where),
            max_leverage=max(max_leverage, Decimal(1)),
            maintenance_margin_rate=Decimal(1) / (2 * max(max_leverage, Decimal(1))),
            expiry=expiry,
        )
    except ValueError as exc:  # a DomainError: a zero increment, say
        raise BadResponse(f"{where}: {exc}") from None


def parse_fill(raw: Any) -> Fill:
    item = _obj(raw, "trade")
    trade_id = str(item.get("trade_id") or "")
    where = f"trade {trade_id}"
    if not trade_id:
        raise BadResponse("trade.trade_id: missing")
    label = item.get("label")
    return Fill(
        trade_id=trade_id,
        client_order_id=label if isinstance(label, str) and label else _str(item, "order_id", where),
        symbol=_str(item, "instrument_name", where),
        side=_side(item, where),
        price=_dec(item, "price", where),
        size=_dec(item, "amount", where),
        fee=_dec(item, "fee", where, optional=True),
        liquidity=Liquidity.MAKER if item.get("liquidity") == "M" else Liquidity.TAKER,
        ts=_time(item, "timestamp", where),
    )


def parse_order(raw: Any, fills: tuple[Fill, ...] = (), duplicates: tuple[str, ...] = ()) -> OrderSnapshot:
    item = _obj(raw, "order")
    order_id = _str(item, "order_id", "order")
    where = f"order {order_id}"
    state = item.get("order_state")
    status = _STATES.get(state) if isinstance(state, str) else None
    if status is None:
        raise BadResponse(f"{where}.order_state: {str(state)[:20]!r} is not an order state")
    amount = _dec(item, "amount", where)
    filled = _dec(item, "filled_amount", where, optional=True)
    if status is OrderStatus.OPEN and filled > 0:
        status = OrderStatus.PARTIALLY_FILLED
    average = _dec(item, "average_price", where, optional=True)
    label = item.get("label")
    return OrderSnapshot(
        client_order_id=label if isinstance(label, str) and label else order_id,
        exchange_order_id=order_id,
        symbol=_str(item, "instrument_name", where),
        side=_side(item, where),
        status=status,
        size=amount,
        filled_size=filled,
        average_fill_price=average if filled > 0 else None,
        fees=sum((f.fee for f in fills), ZERO),
        created_at=_time(item, "creation_timestamp", where),
        reject_reason=str(item.get("reject_reason") or item.get("cancel_reason") or "") or None,
        fills=fills,
        duplicates=duplicates,
    )


# ----- the adapter ---------------------------------------------------------------------------------


class GatewayExchange:
    name = "gateway"
    capabilities = CAPABILITIES

    def __init__(self, rpc: RpcClient, clock: Clock, *, stream_url: str = DEFAULT_STREAM_WS_URL,
                 ssl: ssl_module.SSLContext | None = None, fills_from: datetime | None = None) -> None:
        self.rpc = rpc
        self.clock = clock
        self.stream_url = stream_url
        self._ssl = ssl
        self._catalog: dict[str, Product] = {}
        self._funding: dict[str, tuple[Decimal, datetime | None]] = {}
        self._leverage: dict[str, Decimal] = {}
        self._requests: dict[str, OrderRequest] = {}  # what was sent under each label, this process
        self._sent_at: dict[str, datetime] = {}
        self._order_ids: dict[str, str] = {}  # label -> order_id
        self._fills: list[Fill] = []
        self._fill_ids: set[str] = set()
        self._fill_watermark = fills_from or (clock.now() - FILL_OVERLAP)
        self._streams: list[GatewayMarketStream] = []
        self.book_source: Callable[[str, int], OrderBook | None] | None = None
        self.duplicates_cancelled = 0

    @classmethod
    def from_config(cls, config: BotConfig, clock: Clock) -> GatewayExchange:
        from perpsbot.exchange.coinbase.adapter import ssl_context

        credentials = resolve_credentials(config.api_key_name, config.api_private_key, config.api_key_file)
        signer = JwtSigner(credentials)
        ssl = ssl_context(config.ca_bundle)
        rpc = RpcClient(config.gateway_ws_url, config.gateway_http_url, signer, ssl=ssl)
        return cls(rpc, clock, stream_url=config.gateway_stream_url, ssl=ssl)

    def __repr__(self) -> str:
        return f"GatewayExchange(ws={self.rpc.ws_url!r})"

    # ----- products and market data --------------------------------------------------------

    async def products(self) -> list[Product]:
        listed = _list(await self.rpc.call("public/get_instruments", {"currency": CURRENCY, "kind": "future"}),
                       "public/get_instruments")
        products = [p for p in (parse_instrument(item) for item in listed) if p is not None]
        self._catalog = {p.symbol: p for p in products}
        return products

    async def _product(self, symbol: str) -> Product:
        if symbol not in self._catalog:
            await self.products()
        try:
            return self._catalog[symbol]
        except KeyError:
            raise UnknownProduct(f"unknown instrument {symbol} on the gateway") from None

    def funding_now(self, symbol: str) -> tuple[Decimal, datetime | None] | None:
        """The funding rate the last ticker read listed (``current_funding``), and the next
        hour's start (funding accrues continuously at the gateway; counted hourly here)."""
        return self._funding.get(symbol)

    async def quote(self, symbol: str) -> Quote:
        ticker = _obj(await self.rpc.call("public/ticker", {"instrument_name": symbol}), "public/ticker")
        where = f"ticker {symbol}"
        ts = _time(ticker, "timestamp", where)
        product = self._catalog.get(symbol)
        if product is not None and product.is_perpetual and ticker.get("current_funding") is not None:
            next_hour = ts.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            self._funding[symbol] = (_dec(ticker, "current_funding", where), next_hour)
        try:
            return Quote(symbol, _dec(ticker, "best_bid_price", where), _dec(ticker, "best_ask_price", where), ts,
                         last=_dec(ticker, "last_price", where) if ticker.get("last_price") is not None else None)
        except ValueError as exc:
            raise BadResponse(f"{where}: {exc}") from None

    async def book(self, symbol: str, depth: int) -> OrderBook:
        if self.book_source is not None:
            streamed = self.book_source(symbol, depth)
            if streamed is not None:
                return streamed
        body = _obj(await self.rpc.call("public/get_order_book", {"instrument_name": symbol, "depth": depth}),
                    "public/get_order_book")
        where = f"book {symbol}"

        def side(name: str) -> tuple[BookLevel, ...]:
            levels = []
            for level in _list(body.get(name), f"{where}.{name}"):
                if not isinstance(level, list) or len(level) != 2:
                    raise BadResponse(f"{where}.{name}: a level is [price, amount]")
                levels.append(BookLevel(_dec({"p": level[0]}, "p", where), _dec({"a": level[1]}, "a", where)))
            return tuple(levels[:depth])

        return OrderBook(symbol, _time(body, "timestamp", where), side("bids"), side("asks"))

    async def candles(self, symbol: str, granularity_seconds: int, limit: int) -> list[Candle]:
        if granularity_seconds % 60 or granularity_seconds // 60 not in _MINUTES:
            raise InvalidRequest(f"the gateway has no {granularity_seconds} s candles (minutes: "
                                 f"{', '.join(map(str, _MINUTES))})")
        if limit <= 0:
            return []
        now = int(self.clock.now().timestamp())
        end = now - now % granularity_seconds
        start = end - limit * granularity_seconds
        body = _obj(await self.rpc.call("public/get_tradingview_chart_data", {
            "instrument_name": symbol, "start_timestamp": start * 1000, "end_timestamp": (end - 1) * 1000,
            "resolution": str(granularity_seconds // 60)}), "chart data")
        columns = [_list(body.get(k, []), f"chart data.{k}") for k in ("ticks", "open", "high", "low", "close",
                                                                         "volume")]
        out = []
        for tick, o, h, low, c, v in zip(*columns, strict=False):
            row = {"t": tick, "o": o, "h": h, "l": low, "c": c, "v": v}
            try:
                out.append(Candle(symbol, _time(row, "t", "candle"), _dec(row, "o", "candle"),
                                  _dec(row, "h", "candle"), _dec(row, "l", "candle"), _dec(row, "c", "candle"),
                                  _dec(row, "v", "candle")))
            except ValueError as exc:
                raise BadResponse(f"candle {symbol}: {exc}") from None
        return [c for c in out if c.start.timestamp() < end][-limit:]

    # ----- orders ------------------------------------------------------------------------------

    def _order_params(self, request: OrderRequest, product: Product) -> dict[str, Any]:
        params: dict[str, Any] = {
            "instrument_name": request.symbol, "amount": request.size, "label": request.client_order_id,
            "type": "market" if request.type is OrderType.MARKET else "limit",
        }
        if request.type is OrderType.LIMIT:
            if request.limit_price is None:
                raise InvalidOrder("invalid_price", f"order {request.client_order_id}: a limit order needs a price")
            params["price"] = request.limit_price
            params["time_in_force"] = _TIF[request.time_in_force]
        if request.reduce_only:
            params["reduce_only"] = True
        return params

    async def place_order(self, request: OrderRequest) -> OrderSnapshot:
        product = await self._product(request.symbol)
        if product.expired(self.clock.now()):
            raise InvalidOrder("product_expired", f"order {request.client_order_id}: {request.symbol} has expired")
        if len(request.client_order_id) > 64:
            raise InvalidOrder("invalid_label", f"order {request.client_order_id}: a label holds 64 characters")
        params = self._order_params(request, product)
        leverage = min(request.leverage.to_integral_value(), product.max_leverage)
        if self._leverage.get(request.symbol) != leverage:
            await self.rpc.call("private/set_leverage", {"instrument_name": request.symbol, "leverage": leverage})
            self._leverage[request.symbol] = leverage
        self._requests[request.client_order_id] = request
        self._sent_at[request.client_order_id] = self.clock.now()
        method = "private/buy" if request.side is Side.BUY else "private/sell"
        body = _obj(await self.rpc.call(method, params, write=True), method)
        order = _obj(body.get("order"), f"{method}.order")
        fills = tuple(sorted((parse_fill(t) for t in _list(body.get("trades", []), f"{method}.trades")),
                             key=lambda f: f.ts))
        snapshot = parse_order(order, fills)
        self._order_ids[request.client_order_id] = snapshot.exchange_order_id
        return snapshot

    async def _by_label(self, label: str) -> list[dict[str, Any]]:
        """Every order the gateway lists under ``label``: its order states by label, and, for
        an instrument this process sent it on, the open orders and order history there."""
        found: dict[str, dict[str, Any]] = {}
        for item in _list(await self.rpc.call("private/get_order_state_by_label", {"currency": CURRENCY,
                                                                                  "label": label}), "by label"):
            order = _obj(item, "order")
            found[_str(order, "order_id", "order")] = order
        request = self._requests.get(label)
        if request is not None:
            for listed in await self._instrument_orders(request.symbol):
                if listed.get("label") == label:
                    found.setdefault(_str(listed, "order_id", "order"), listed)
        return sorted(found.values(), key=lambda o: (o.get("creation_timestamp") or 0, str(o.get("order_id"))))

    def _matches(self, label: str, order: dict[str, Any]) -> bool:
        """Whether an order under our label is what we sent (this process knows what it sent)."""
        request = self._requests.get(label)
        if request is None:
            return True  # an earlier process's: the label is all there is
        sent = self._sent_at.get(label)
        try:
            return (order.get("instrument_name") == request.symbol and _side(order, "order") is request.side
                    and _dec(order, "amount", "order") == request.size
                    and (sent is None or _time(order, "creation_timestamp", "order") >= sent - timedelta(seconds=5)))
        except BadResponse:
            return False

    async def get_order(self, client_order_id: str) -> OrderSnapshot:
        orders = [o for o in await self._by_label(client_order_id) if self._matches(client_order_id, o)]
        if not orders:
            raise OrderNotFound(f"no order labelled {client_order_id} at the gateway")
        primary, others = orders[0], orders[1:]
        duplicates = tuple(_str(o, "order_id", "order") for o in others)
        for other in others:
            if other.get("order_state") == "open":
                try:
                    await self.rpc.call("private/cancel", {"order_id": other["order_id"]})
                    self.duplicates_cancelled += 1
                except OrderNotFound:
                    pass
                log.error("order %s: a second order %s under its label was cancelled", client_order_id,
                          other["order_id"])
        order_id = _str(primary, "order_id", "order")
        self._order_ids[client_order_id] = order_id
        return parse_order(primary, await self._fills_of(order_id, primary), duplicates)

    async def _fills_of(self, order_id: str, order: dict[str, Any]) -> tuple[Fill, ...]:
        if not order.get("filled_amount"):
            return ()
        trades = _list(await self.rpc.call("private/get_user_trades_by_order", {"order_id": order_id}),
                       "trades by order")
        return tuple(sorted((parse_fill(t) for t in trades), key=lambda f: f.ts))

    async def cancel_order(self, client_order_id: str) -> OrderSnapshot:
        order_id = self._order_ids.get(client_order_id)
        if order_id is None:
            order_id = (await self.get_order(client_order_id)).exchange_order_id
        try:
            await self.rpc.call("private/cancel", {"order_id": order_id})
        except ExchangeError as exc:
            log.info("cancel of %s refused: %s", client_order_id, exc)
        order = _obj(await self.rpc.call("private/get_order_state", {"order_id": order_id}), "order state")
        return parse_order(order, await self._fills_of(order_id, order))

    async def open_orders(self) -> list[OrderSnapshot]:
        listed = _list(await self.rpc.call("private/get_open_orders", {"kind": "future"}), "open orders")
        return [parse_order(o) for o in listed]

    async def _instrument_orders(self, symbol: str) -> list[dict[str, Any]]:
        out = [_obj(o, "order") for o in _list(await self.rpc.call(
            "private/get_open_orders_by_instrument", {"instrument_name": symbol}), "open orders")]
        offset = 0
        while True:
            page = _list(await self.rpc.call("private/get_order_history_by_instrument", {
                "instrument_name": symbol, "count": PAGE, "offset": offset, "include_old": True}), "order history")
            out.extend(_obj(o, "order") for o in page)
            if len(page) < PAGE:
                return out
            offset += PAGE

    async def orders_since(self, since: datetime, symbol: str | None = None) -> list[OrderSnapshot]:
        if not self._catalog:
            await self.products()
        symbols = [symbol] if symbol else sorted(self._catalog)
        cutoff = since.timestamp() * 1000
        out = []
        for name in symbols:
            for order in await self._instrument_orders(name):
                if (order.get("creation_timestamp") or 0) >= cutoff:
                    out.append(parse_order(order))
        return out

    async def fills_since(self, cursor: int) -> tuple[list[Fill], int]:
        since = self._fill_watermark - FILL_OVERLAP
        start = int(since.timestamp() * 1000)
        end = int((self.clock.now() + timedelta(minutes=5)).timestamp() * 1000)
        fresh: list[Fill] = []
        seen: set[str] = set()
        newest = self._fill_watermark
        while True:
            body = _obj(await self.rpc.call("private/get_user_trades_by_currency_and_time", {
                "currency": CURRENCY, "start_timestamp": start, "end_timestamp": end, "count": PAGE,
                "sorting": "asc"}), "user trades")
            trades = _list(body.get("trades"), "user trades.trades")
            for item in trades:
                fill = parse_fill(item)
                if fill.trade_id in self._fill_ids or fill.trade_id in seen:
                    continue
                seen.add(fill.trade_id)
                fresh.append(fill)
                newest = max(newest, fill.ts)
            if not body.get("has_more") or not trades:
                break
            start = int(_time(_obj(trades[-1], "trade"), "timestamp", "trade").timestamp() * 1000)
        fresh.sort(key=lambda f: (f.ts, f.trade_id))
        self._fill_ids.update(seen)
        self._fills.extend(fresh)
        self._fill_watermark = newest
        cursor = max(0, min(cursor, len(self._fills)))
        return self._fills[cursor:], len(self._fills)

    # ----- account ------------------------------------------------------------------------------

    async def account(self) -> AccountSnapshot:
        summary = _obj(await self.rpc.call("private/get_account_summary", {"currency": CURRENCY}), "account summary")
        where = "account summary"
        balance = _dec(summary, "balance", where)
        available = _dec(summary, "available_funds", where, optional=True)
        positions: dict[str, Position] = {}
        for raw in _list(await self.rpc.call("private/get_positions", {"currency": CURRENCY, "kind": "future"}),
                         "positions"):
            item = _obj(raw, "position")
            name = _str(item, "instrument_name", "position")
            size = _dec(item, "size", f"position {name}")
            if size == 0:
                continue
            positions[name] = Position(
                symbol=name, size=size, entry_price=_dec(item, "average_price", f"position {name}"),
                leverage=max(_dec(item, "leverage", f"position {name}", optional=True), Decimal(1)),
                funding=_dec(item, "realized_funding", f"position {name}", optional=True),
            )
        settled = []
        now = self.clock.now()
        body = _obj(await self.rpc.call("private/get_settlement_history_by_currency", {
            "currency": CURRENCY, "type": "settlement", "count": 100}), "settlements")
        for raw in _list(body.get("settlements", []), "settlements"):
            item = _obj(raw, "settlement")
            at = _time(item, "timestamp", "settlement")
            if now - at < SETTLEMENTS_KEPT and item.get("funding") is not None:
                settled.append(FundingSettlement(_str(item, "instrument_name", "settlement"), at,
                                                 _dec(item, "funding", "settlement")))
        settled.sort(key=lambda s: s.at)
        return AccountSnapshot(
            balances={CURRENCY: Balance(CURRENCY, available, balance - available)},
            positions=positions, equity=_dec(summary, "equity", where), funding_settled=tuple(settled),
        )

    # ----- streams ---------------------------------------------------------------------------

    def market_stream(self, **options: Any) -> GatewayMarketStream:
        stream = GatewayMarketStream(self.stream_url, ssl=self._ssl, **options)
        self._streams = [s for s in self._streams if not s.closed]
        self._streams.append(stream)
        return stream

    async def close(self) -> None:
        for stream in self._streams:
            await stream.close()
        await self.rpc.close()
