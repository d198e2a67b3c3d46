"""``CoinbaseExchange``: the ``Exchange`` port on Coinbase Advanced Trade.

Spot balances come from ``/accounts``; futures positions (US perpetual-style and dated,
sized in contracts) from ``/cfm/positions``. An account without access to futures
(404 / 403) has them switched off for the session, once, with a log line. Equity is
what the futures can be margined with plus the spot assets:

* with CFM futures: ``total_usd_balance`` (spot USD + futures) + other cash + the
  non-cash spot assets at their ``-USD`` mid;
* else: spot cash (USD and USDC at par) + assets.

With CFM futures the snapshot carries the venue's margin (``VenueMargin``): the balance
summary's figures in the window ``/cfm/intraday/current_margin_window`` names (read again
when it ends, at least every minute), each product's listed rate in that window (the
intraday ones only for an account enrolled in intraday margin) and the pending sweeps.
Funding on a perpetual-style position is counted hourly off the product's listing and
settled, as the venue settles it, at 00:00 and 12:00 UTC (``_settle_funding``).

Coinbase identifies orders by its own ``order_id``; the bot by ``client_order_id``. The
adapter remembers both for the orders it places and otherwise finds an order by scanning
the order listing. Fills carry only the ``order_id``: their ``client_order_id`` comes
from that memory (or one order lookup per unknown order).
"""

from __future__ import annotations

import logging
import ssl as ssl_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perpsbot.domain import (
    ZERO,
    AccountSnapshot,
    Candle,
    Fill,
    FundingSettlement,
    MarginType,
    OrderBook,
    OrderType,
    Position,
    Product,
    Quote,
    Sweep,
    TimeInForce,
    VenueMargin,
)
from perpsbot.domain.clock import Clock
from perpsbot.exchange.coinbase.auth import JwtSigner, resolve_credentials
from perpsbot.exchange.coinbase.mapping import (
    CoinbaseOrder,
    CoinbaseProduct,
    LimitFok,
    LimitGtc,
    LimitIoc,
    MarginWindow,
    MarketIoc,
    NewOrder,
    Obj,
    OrderConfiguration,
    PerpSummary,
    granularity_enum,
    parse_balances,
    parse_best_bid_ask,
    parse_candle,
    parse_cfm_margin,
    parse_cfm_position,
    parse_cfm_summary,
    parse_fill,
    parse_intraday_enrolled,
    parse_margin_window,
    parse_order,
    parse_order_response,
    parse_product,
    parse_product_book,
    parse_products,
    parse_sweeps,
)
from perpsbot.exchange.coinbase.push import CoinbasePushFeed
from perpsbot.exchange.coinbase.rest import DEFAULT_REST_URL, CoinbaseRestClient
from perpsbot.exchange.coinbase.ws import DEFAULT_WS_URL, DEFAULT_WS_USER_URL, Callback, CoinbaseWebSocket
from perpsbot.exchange.port import (
    AuthenticationError,
    BadResponse,
    ExchangeError,
    InvalidOrder,
    NotFound,
    OrderNotFound,
    OrderRequest,
    OrderSnapshot,
    PushedUpdate,
    UnknownProduct,
    VenueCapabilities,
)

if TYPE_CHECKING:
    from perpsbot.config import BotConfig

log = logging.getLogger(__name__)

CASH_CURRENCIES = ("USD", "USDC")
FILL_OVERLAP = timedelta(seconds=60)
# How often a CFM perpetual's listing is read for funding: at most every minute and four
# times per listed funding interval, so no settlement is missed — not on every account poll.
FUNDING_CHECK = timedelta(seconds=60)
MARGIN_CHECK = timedelta(seconds=60)  # the margin window (and setting) and the sweeps: at most this stale
SETTLEMENT_EVERY = timedelta(hours=12)  # CFM funding is settled at 00:00 and 12:00 UTC
SETTLEMENTS_KEPT = timedelta(days=1)
CENT = Decimal("0.01")


@dataclass(slots=True)
class _Accrual:
    """Funding counted on one CFM perpetual-style product since its last settlement."""

    seen: datetime | None = None  # the listing's funding_time at the last read: the running interval's end
    checked: datetime | None = None  # when the listing was last read for funding
    counted_to: datetime | None = None  # the end of the last interval counted
    amount: Decimal = Decimal(0)


def settlement_at(t: datetime) -> datetime:
    """The first CFM settlement (00:00 or 12:00 UTC) at or after ``t``."""
    start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    while start < t:
        start += SETTLEMENT_EVERY
    return start


def _funding_interval(listed: Any) -> timedelta | None:
    """A listing's ``funding_interval`` ("3600s"); None when it has none or an unreadable one."""
    text = (getattr(listed, "funding_interval", None) or "").removesuffix("s")
    try:
        interval = timedelta(seconds=float(text))
    except ValueError:
        return None
    return interval if interval > timedelta(0) else None


def _funding_check_every(listed: Any) -> timedelta:
    interval = _funding_interval(listed)
    return FUNDING_CHECK if interval is None else min(FUNDING_CHECK, interval / 4)


def ssl_context(ca_bundle: Path | None) -> ssl_module.SSLContext | None:
    """TLS that trusts ``ca_bundle`` (e.g. the simulator server's self-signed cert);
    None: the system's default trust store."""
    if ca_bundle is None:
        return None
    try:
        return ssl_module.create_default_context(cafile=str(ca_bundle))
    except (OSError, ssl_module.SSLError) as exc:
        raise ExchangeError(f"ca_bundle: cannot load {ca_bundle}: {exc}") from None


@dataclass(frozen=True, slots=True)
class CoinbaseEndpoints:
    rest_url: str = DEFAULT_REST_URL
    ws_url: str = DEFAULT_WS_URL
    ws_user_url: str = DEFAULT_WS_USER_URL


# Advanced Trade, and the simulator server behind the same protocol: the account lives at
# the venue, market data and order updates are streamed, the risk check's book is the streamed one.
CAPABILITIES = VenueCapabilities(
    order_types=frozenset(OrderType), times_in_force=frozenset(TimeInForce), post_only=True, reduce_only=True,
    margin_types=frozenset(MarginType), funding=True, market_stream=True, user_stream=True, account_persists=True,
    book_from_stream=True,
)


class CoinbaseExchange:
    name = "coinbase"
    capabilities = CAPABILITIES

    def __init__(
        self,
        rest: CoinbaseRestClient,
        clock: Clock,
        *,
        endpoints: CoinbaseEndpoints | None = None,
        ssl: ssl_module.SSLContext | None = None,
        fills_from: datetime | None = None,
    ) -> None:
        self.rest = rest
        self.clock = clock
        self.endpoints = endpoints or CoinbaseEndpoints(rest_url=str(rest.base_url))
        self._ssl = ssl
        self._futures = True  # off once the account turns out to have no futures access
        self._catalog: dict[str, CoinbaseProduct] = {}
        self._order_ids: dict[str, str] = {}  # client_order_id -> order_id
        self._client_ids: dict[str, str] = {}  # order_id -> client_order_id
        self._fills: list[Fill] = []
        self._fill_ids: set[str] = set()
        self._fill_watermark = fills_from or (clock.now() - FILL_OVERLAP)
        self._accruals: dict[str, _Accrual] = {}  # CFM symbol -> funding counted, not yet settled
        self._settled: list[FundingSettlement] = []  # the last day's settlements
        self._window: MarginWindow | None = None
        self._intraday_enrolled = False
        self._sweeps: tuple[Sweep, ...] = ()
        self._margin_checked: datetime | None = None
        self._streams: list[CoinbaseWebSocket] = []
        # What equity holds besides CFM's total_usd_balance at the last account read (None:
        # CFM does not decide equity), so a pushed balance summary can move equity on its own.
        self._besides_cfm: Decimal | None = None
        # Where ``book`` looks first: the streamed order book, when one is being kept
        # (the bot sets it to ``StreamingService.order_book``); None falls back to REST.
        self.book_source: Callable[[str, int], OrderBook | None] | None = None

    @classmethod
    def from_config(cls, config: BotConfig, clock: Clock) -> CoinbaseExchange:
        """Credentials are checked here (a malformed key fails at start-up)."""
        credentials = resolve_credentials(config.api_key_name, config.api_private_key, config.api_key_file)
        signer = JwtSigner(credentials)
        ssl = ssl_context(config.ca_bundle)
        rest = CoinbaseRestClient(signer, base_url=config.coinbase_rest_url, ssl=ssl)
        endpoints = CoinbaseEndpoints(config.coinbase_rest_url, config.coinbase_ws_url, config.coinbase_ws_user_url)
        return cls(rest, clock, endpoints=endpoints, ssl=ssl)

    def __repr__(self) -> str:
        return f"CoinbaseExchange(rest={self.rest!r})"

    # ----- products and market data ----------------------------------------------------

    async def products(self) -> list[Product]:
        listed = parse_products(await self.rest.list_products())
        self._catalog = {p.product_id: p for p in listed}
        out = []
        for product in listed:
            domain = product.to_domain()
            if domain is not None:
                out.append(domain)
        return out

    async def _product(self, symbol: str) -> CoinbaseProduct:
        if symbol not in self._catalog:
            await self.products()
        try:
            return self._catalog[symbol]
        except KeyError:
            raise UnknownProduct(f"unknown product {symbol} on coinbase") from None

    def funding_now(self, symbol: str) -> tuple[Decimal, datetime | None] | None:
        """A perpetual's funding rate as last listed and its next settlement: the listed
        ``funding_time`` while it is ahead, else the one a ``funding_interval`` after it.
        The listing is re-read while a position is held (see ``account``); flat, the rate is
        the one read with the product list."""
        listed = self._catalog.get(symbol)
        if listed is None or not listed.is_perpetual or listed.funding_rate is None:
            return None
        at, interval, now = listed.funding_time, _funding_interval(listed), self.clock.now()
        if at is not None and at <= now and interval is not None:
            at += ((now - at) // interval + 1) * interval
        return listed.funding_rate, at

    def _contract_size(self, symbol: str) -> Decimal:
        """What one unit of ``symbol``'s size is in its base (1 unless a listed future says otherwise)."""
        listed = self._catalog.get(symbol)
        return listed.contract_size if listed is not None else Decimal(1)

    async def quote(self, symbol: str) -> Quote:
        quotes = parse_best_bid_ask(await self.rest.best_bid_ask([symbol]), self.clock.now())
        try:
            return quotes[symbol]
        except KeyError:
            raise BadResponse(f"best_bid_ask: no pricebook for {symbol}") from None

    async def book(self, symbol: str, depth: int) -> OrderBook:
        """The L2 book, ``depth`` levels a side: the streamed one while it is served,
        else ``/product_book``."""
        if self.book_source is not None:
            streamed = self.book_source(symbol, depth)
            if streamed is not None:
                return streamed
        return parse_product_book(await self.rest.product_book(symbol, depth), self.clock.now())

    async def candles(self, symbol: str, granularity_seconds: int, limit: int) -> list[Candle]:
        """The most recent ``limit`` closed candles, oldest first."""
        granularity = granularity_enum(granularity_seconds)
        if limit <= 0:
            return []
        now = int(self.clock.now().timestamp())
        end = now - now % granularity_seconds  # the open candle starts here: leave it out
        start = end - limit * granularity_seconds
        raw = await self.rest.candles(symbol, start, end, granularity)
        candles = {c.start: c for c in (parse_candle(Obj(item, f"candles[{i}]"), symbol)
                                        for i, item in enumerate(raw))}
        closed = [c for c in candles.values() if c.start.timestamp() < end]
        return sorted(closed, key=lambda c: c.start)[-limit:]

    # ----- orders -----------------------------------------------------------------------

    def _configuration(self, request: OrderRequest) -> OrderConfiguration:
        if request.type is OrderType.MARKET:
            return MarketIoc(base_size=request.size)
        if request.limit_price is None:
            raise InvalidOrder("INVALID_LIMIT_PRICE", f"order {request.client_order_id}: a limit order needs a price")
        if request.time_in_force is TimeInForce.GTC:
            return LimitGtc(request.size, request.limit_price)
        if request.time_in_force is TimeInForce.IOC:
            return LimitIoc(request.size, request.limit_price)
        return LimitFok(request.size, request.limit_price)

    async def new_order(self, request: OrderRequest) -> NewOrder:
        """The order as Coinbase takes it; one on a future past its listed expiry is refused
        here (the exchange no longer trades it), never sent."""
        product = await self._product(request.symbol)
        derivative = product.product_type == "FUTURE"
        expiry = product.contract_expiry
        if derivative and expiry is not None and self.clock.now() >= expiry:
            raise InvalidOrder("PRODUCT_EXPIRED", f"order {request.client_order_id}: {request.symbol} expired at "
                               f"{expiry.isoformat()}; it no longer trades")
        return NewOrder(
            client_order_id=request.client_order_id,
            product_id=request.symbol,
            side=request.side,
            configuration=self._configuration(request),
            leverage=request.leverage if derivative else None,
            margin_type=request.margin_type if derivative else None,  # the margin_type setting
            reduce_only=request.reduce_only and derivative,
        )

    def _remember(self, client_order_id: str, order_id: str) -> None:
        if client_order_id:
            self._order_ids[client_order_id] = order_id
            self._client_ids[order_id] = client_order_id

    remember_order = _remember

    def client_id_known(self, order_id: str) -> str:
        """The client id of an order this adapter has seen ("" when it has not)."""
        return self._client_ids.get(order_id, "")

    async def place_order(self, request: OrderRequest) -> OrderSnapshot:
        order = await self.new_order(request)
        ack = await self.rest.submit_order(order, now=self.clock.now)
        self._remember(request.client_order_id, ack.order_id)
        if ack.adopted:
            log.warning("order %s adopted after its response was lost (order_id %s)",
                        request.client_order_id, ack.order_id)
        return await self._snapshot(ack.order_id, request.client_order_id)

    async def _snapshot(self, order_id: str, client_order_id: str | None = None) -> OrderSnapshot:
        order = parse_order_response(await self.rest.get_order(order_id))
        cid = order.client_order_id or client_order_id or order_id
        self._remember(cid, order_id)
        return order.snapshot(await self._fills_of(order, cid))

    async def _fills_of(self, order: CoinbaseOrder, client_order_id: str) -> list[Fill]:
        if order.filled_size <= 0:
            return []
        contract = self._contract_size(order.product_id)
        fills = [parse_fill(item, client_order_id, contract)
                 async for item in self.rest.fills(order_ids=[order.order_id])]
        return sorted(fills, key=lambda f: f.ts)

    async def _order_id(self, client_order_id: str) -> str:
        if client_order_id in self._order_ids:
            return self._order_ids[client_order_id]
        found = await self.rest.find_order_by_client_id(client_order_id)
        if found is None:
            raise OrderNotFound(f"no order with client_order_id {client_order_id}")
        self._remember(client_order_id, found.str("order_id"))
        return self._order_ids[client_order_id]

    async def get_order(self, client_order_id: str) -> OrderSnapshot:
        return await self._snapshot(await self._order_id(client_order_id), client_order_id)

    async def cancel_order(self, client_order_id: str) -> OrderSnapshot:
        order_id = await self._order_id(client_order_id)
        body = await self.rest.cancel_orders([order_id])
        for result in Obj(body, "batch_cancel").objs("results", optional=True):
            if result.opt_str("order_id") == order_id and not result.bool("success"):
                reason = result.opt_str("failure_reason") or "UNKNOWN_CANCEL_FAILURE_REASON"
                log.info("cancel of %s refused: %s", client_order_id, reason)
        return await self._snapshot(order_id, client_order_id)

    async def open_orders(self) -> list[OrderSnapshot]:
        return await self._listed(order_status=["OPEN"])

    async def orders_since(self, since: datetime, symbol: str | None = None) -> list[OrderSnapshot]:
        return await self._listed(start_date=since, product_ids=[symbol] if symbol else None)

    async def _listed(self, **filters: Any) -> list[OrderSnapshot]:
        """Every listed order matching ``filters``, its ids remembered."""
        out = []
        async for item in self.rest.orders(**filters):
            order = parse_order(item)
            self._remember(order.client_order_id, order.order_id)
            out.append(order.snapshot())
        return out

    async def _client_id_of(self, order_id: str) -> str:
        if order_id not in self._client_ids:
            try:
                order = parse_order_response(await self.rest.get_order(order_id))
            except OrderNotFound:
                return order_id
            self._remember(order.client_order_id or order_id, order_id)
        return self._client_ids[order_id]

    async def fills_since(self, cursor: int) -> tuple[list[Fill], int]:
        """Fills since this adapter was made (``fills_from``), oldest first; ``cursor`` is
        an index into that list. Each call asks for fills from a minute before the newest
        one seen, and drops trade ids it already has."""
        since = self._fill_watermark - FILL_OVERLAP
        fresh: list[Fill] = []
        seen: set[str] = set()  # taken as known only once the whole listing is read (a timeout loses nothing)
        newest = self._fill_watermark
        async for item in self.rest.fills(start_sequence_timestamp=since):
            trade_id = str(item.raw("trade_id"))
            if trade_id in self._fill_ids or trade_id in seen:
                continue
            fill = parse_fill(item, await self._client_id_of(item.str("order_id")),
                              self._contract_size(item.str("product_id")))
            if fill.ts < since:
                continue
            seen.add(trade_id)
            fresh.append(fill)
            newest = max(newest, item.opt_time("sequence_timestamp") or fill.ts)
        fresh.sort(key=lambda f: (f.ts, f.trade_id))
        self._fill_ids.update(seen)
        self._fills.extend(fresh)
        self._fill_watermark = newest
        cursor = max(0, min(cursor, len(self._fills)))
        return self._fills[cursor:], len(self._fills)

    # ----- account -----------------------------------------------------------------------

    async def account(self) -> AccountSnapshot:
        balances = parse_balances([a async for a in self.rest.accounts()])
        assets = await self._spot_value({c: b.total for c, b in balances.items()
                                         if c not in CASH_CURRENCIES and b.total != 0})
        cash = {c: b.total for c, b in balances.items() if c in CASH_CURRENCIES}
        positions: dict[str, Position] = {}
        cfm = await self._cfm(positions) if self._futures and await self._lists_cfm() else None
        margin = cfm[1] if cfm is not None else None
        self._besides_cfm = None
        if cfm is not None:
            self._besides_cfm = sum((v for c, v in cash.items() if c != "USD"), ZERO) + assets
            equity = cfm[0].total_balance + self._besides_cfm
        else:
            equity = sum(cash.values(), ZERO) + assets
        return AccountSnapshot(balances=balances, positions=positions, equity=equity, margin=margin,
                               funding_settled=tuple(self._settled))

    async def _spot_value(self, holdings: dict[str, Decimal]) -> Decimal:
        if not holdings:
            return ZERO
        if not self._catalog:
            await self.products()
        pairs = {f"{ccy}-USD": ccy for ccy in holdings if f"{ccy}-USD" in self._catalog}
        if not pairs:
            return ZERO
        quotes = parse_best_bid_ask(await self.rest.best_bid_ask(sorted(pairs)), self.clock.now())
        return sum((holdings[ccy] * quotes[pid].mid for pid, ccy in pairs.items() if pid in quotes), ZERO)

    async def _lists_cfm(self) -> bool:
        if not self._catalog:
            await self.products()
        return any(p.is_future for p in self._catalog.values())

    async def _cfm(self, positions: dict[str, Position]) -> tuple[PerpSummary, VenueMargin | None] | None:
        try:
            body = await self.rest.cfm_balance_summary()
            summary = parse_cfm_summary(body)
            listed = Obj(await self.rest.cfm_positions(), "cfm_positions")
        except (NotFound, AuthenticationError) as exc:
            self._futures = False
            log.info("futures unavailable for this account (%s); not asked again", exc)
            return None
        held: dict[str, Position] = {}
        for item in listed.objs("positions", optional=True):
            position = parse_cfm_position(item, self._contract_size(item.str("product_id")))
            if position.size != 0:
                await self._accrue_funding(position, item.opt_amount("current_price"))
                held[position.symbol] = position
                positions.setdefault(position.symbol, position)
        self._settle_funding(held)
        return summary, await self._margin(body)

    async def _accrue_funding(self, position: Position, mark: Decimal | None) -> None:
        """Count funding on a CFM perpetual-style position off its product's listing: the
        listed ``funding_time`` (the running interval's end) moving on means an interval
        ended, at the ``funding_rate`` listed after it, on the contracts held:
        ``-contracts x contract_size x mark x rate`` (a long pays a positive rate), at the
        position's ``current_price`` when the adapter sees it. The CFM position and balance
        endpoints carry no funding figure of their own. Counted from the adapter's first
        look at the position; of intervals it does not see (it is polled far more often than
        hourly) one is counted. The listing is read at most every ``FUNDING_CHECK``, and
        never for a dated future; a failed read leaves the count as it was."""
        symbol = position.symbol
        cached = self._catalog.get(symbol)
        if cached is not None and not cached.is_perpetual:
            return
        accrual = self._accruals.setdefault(symbol, _Accrual())
        now = self.clock.now()
        if accrual.checked is not None and now - accrual.checked < _funding_check_every(cached):
            return
        try:
            listed = parse_product(Obj(await self.rest.get_product(symbol), "product"))
        except ExchangeError as exc:
            log.warning("funding of %s not read this time: %s", symbol, exc)
            return
        accrual.checked = now
        self._catalog[listed.product_id] = listed
        if not listed.is_perpetual or listed.funding_time is None or listed.funding_rate is None:
            return
        seen, accrual.seen = accrual.seen, listed.funding_time
        if seen is not None and listed.funding_time > seen and mark is not None:
            accrual.amount -= position.size * position.contract_size * mark * listed.funding_rate
            accrual.counted_to = seen

    def _settle_funding(self, held: dict[str, Position]) -> None:
        """Settle what was counted, as the venue does at 00:00 and 12:00 UTC (to the cent,
        even once flat): once the settlement after the last interval counted has passed —
        and, for a position still held, the interval that ends on it has been counted.
        Each open position's ``funding`` is then what is counted and not yet settled."""
        now = self.clock.now()
        for symbol, accrual in list(self._accruals.items()):
            if accrual.amount and accrual.counted_to is not None:
                due = settlement_at(accrual.counted_to)
                if now >= due and (symbol not in held or (accrual.seen is not None and accrual.seen > due)):
                    self._settled.append(FundingSettlement(symbol, due, accrual.amount.quantize(CENT, ROUND_HALF_EVEN)))
                    accrual.amount, accrual.counted_to = ZERO, None
            if symbol in held:
                held[symbol].funding = accrual.amount
            elif not accrual.amount:
                del self._accruals[symbol]
        self._settled = [s for s in self._settled if now - s.at < SETTLEMENTS_KEPT]

    async def _margin(self, summary: Any) -> VenueMargin | None:
        """The balance summary's margin in the window in force (None until a window has been
        read); the window, the intraday setting and the sweeps are read again every
        ``MARGIN_CHECK`` and when the window ends. A failed read keeps what was read before."""
        now = self.clock.now()
        window = self._window
        due = window is None or (window.ends is not None and now >= window.ends)
        if due or self._margin_checked is None or now - self._margin_checked >= MARGIN_CHECK:
            try:
                window = parse_margin_window(await self.rest.cfm_margin_window())
                self._intraday_enrolled = parse_intraday_enrolled(await self.rest.cfm_margin_setting())
                self._sweeps = parse_sweeps(await self.rest.cfm_sweeps())
                self._window, self._margin_checked = window, now
            except ExchangeError as exc:
                log.warning("CFM margin window not read this time: %s", exc)
        if window is None:
            return None
        intraday = window.window == "intraday" and self._intraday_enrolled
        rates = {pid: rate for pid, p in self._catalog.items() if p.is_future
                 and (rate := p.intraday_margin if intraday else p.overnight_margin) is not None}
        return parse_cfm_margin(summary, window, rates, self._sweeps)

    # ----- streams -----------------------------------------------------------------------

    def market_stream(self, on_event: Callback | None = None, **options: Any) -> CoinbaseWebSocket:
        stream = CoinbaseWebSocket(self.endpoints.ws_url, self.rest.signer, ssl=self._ssl, on_event=on_event,
                                   **options)
        self._streams = [s for s in self._streams if not s.closed]
        self._streams.append(stream)
        return stream

    def push_feed(self, symbols: Sequence[str], on_update: Callable[[PushedUpdate], None],
                  quiet_seconds: float) -> CoinbasePushFeed | None:
        """Orders and futures margin pushed over the user channels (None without credentials)."""
        if self.rest.signer is None:
            return None
        return CoinbasePushFeed(self, symbols, on_update, quiet_seconds)

    def is_cfm(self, symbol: str) -> bool:
        listed = self._catalog.get(symbol)
        return listed is not None and listed.is_future

    def equity_with_futures(self, total_usd_balance: Decimal) -> Decimal | None:
        """Equity with a pushed CFM ``total_usd_balance`` in, the rest as last read (None:
        CFM does not decide equity on this account)."""
        if self._besides_cfm is None:
            return None
        return total_usd_balance + self._besides_cfm

    def user_stream(self, on_event: Callback | None = None, **options: Any) -> CoinbaseWebSocket:
        stream = CoinbaseWebSocket(self.endpoints.ws_user_url, self.rest.signer, ssl=self._ssl,
                                   on_event=on_event, **options)
        self._streams.append(stream)
        return stream

    async def close(self) -> None:
        for stream in self._streams:
            await stream.close()
        await self.rest.close()
