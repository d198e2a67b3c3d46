"""Test helpers for the Coinbase path: fresh CDP-style keys, and a small Coinbase-shaped
HTTP server on 127.0.0.1 that verifies our JWTs and can be told to misbehave.

The server's JSON follows Coinbase's documented shapes, written here for the tests; it
is a scripted fake (fixed prices, market orders fill at the touch), not the simulator.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pydantic import SecretStr

from perpsbot.exchange.coinbase.auth import Credentials

PREFIX = "/api/v3/brokerage"
KEY_NAME = "organizations/test-org/apiKeys/test-key"


def ec_pem(curve: ec.EllipticCurve | None = None) -> tuple[str, Any]:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    return pem, key.public_key()


def ed25519_b64(with_public: bool = True) -> tuple[str, Any]:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed + public if with_public else seed).decode(), key.public_key()


def ec_credentials() -> tuple[Credentials, Any]:
    pem, public = ec_pem()
    return Credentials(KEY_NAME, SecretStr(pem)), public


def now_rfc3339(ts: datetime | None = None) -> str:
    return (ts or datetime.now(UTC)).isoformat().replace("+00:00", "Z")


def D(value: str | int) -> Decimal:  # reads like the literal
    return Decimal(value)


# ----- documented shapes ------------------------------------------------------------------


def spot_product(product_id: str, price: str) -> dict[str, Any]:
    base, quote = product_id.split("-")
    return {
        "product_id": product_id, "price": price, "price_percentage_change_24h": "0.5", "volume_24h": "1000",
        "volume_percentage_change_24h": "1", "base_increment": "0.00000001", "quote_increment": "0.01",
        "quote_min_size": "1", "quote_max_size": "10000000", "base_min_size": "0.00001", "base_max_size": "3400",
        "base_name": "Bitcoin", "quote_name": "US Dollar", "watched": False, "is_disabled": False, "new": False,
        "status": "online", "cancel_only": False, "limit_only": False, "post_only": False,
        "trading_disabled": False, "auction_mode": False, "product_type": "SPOT", "quote_currency_id": quote,
        "base_currency_id": base, "mid_market_price": price, "base_display_symbol": base,
        "quote_display_symbol": quote, "view_only": False, "price_increment": "0.01",
        "display_name": f"{base}/{quote}", "product_venue": "CBE",
    }


def cfm_future(product_id: str, price: str) -> dict[str, Any]:
    """A dated future as Advanced Trade lists it: a FUTURE on the FCM venue, EXPIRING, with
    a contract size and no funding."""
    return {
        "product_id": product_id, "price": price, "price_percentage_change_24h": "0.1", "volume_24h": "500",
        "volume_percentage_change_24h": "2", "base_increment": "1", "quote_increment": "5",
        "quote_min_size": "10", "quote_max_size": "50000000", "base_min_size": "1", "base_max_size": "100",
        "base_name": "", "quote_name": "US Dollar", "watched": False, "is_disabled": False, "new": False,
        "status": "", "cancel_only": False, "limit_only": False, "post_only": False, "trading_disabled": False,
        "auction_mode": False, "product_type": "FUTURE", "quote_currency_id": "USD", "base_currency_id": "",
        "mid_market_price": price, "base_display_symbol": "BTC", "quote_display_symbol": "USD",
        "price_increment": "5", "display_name": "BTC 24 APR 26", "product_venue": "FCM",
        "future_product_details": {
            "venue": "cde", "contract_code": "BIT", "contract_expiry": "2026-04-24T15:00:00Z",
            "contract_size": "0.01", "contract_root_unit": "BTC", "contract_expiry_type": "EXPIRING",
            "risk_managed_by": "MANAGED_BY_FCM",
            "perpetual_details": {"open_interest": "100", "funding_rate": "", "funding_time": None,
                                  "max_leverage": "", "base_asset_uuid": "", "underlying_type": ""},
        },
    }


def cfm_perp(product_id: str, price: str) -> dict[str, Any]:
    """A US perpetual-style future as Advanced Trade lists it: a FUTURE on the FCM venue,
    EXPIRING far out, with a contract size, an hourly funding interval and rate, and a
    PERP display name (``future_product_details`` fields as Get Product documents them)."""
    root = {"BIP": "BTC", "ETP": "ETH"}[product_id.split("-")[0]]
    out = cfm_future(product_id, price)
    out.update(display_name=f"{root} PERP", base_display_symbol=root)
    out["future_product_details"] = {
        "venue": "cde", "contract_code": product_id.split("-")[0], "contract_expiry": "2030-12-20T16:00:00Z",
        "contract_size": "0.01" if root == "BTC" else "0.1", "contract_root_unit": root,
        "group_description": f"{root} Perpetual-Style Futures", "contract_expiry_timezone": "America/New_York",
        "group_short_description": f"{root} PERP", "risk_managed_by": "MANAGED_BY_FCM",
        "contract_expiry_type": "EXPIRING", "contract_display_name": f"{root} PERP",
        "time_to_expiry_ms": "128000000000", "non_crypto": False, "contract_expiry_name": "20 DEC 2030",
        "twenty_four_by_seven": True, "open_interest": "1000", "funding_rate": "0.000012",
        "funding_time": "2026-12-04T03:00:00Z", "funding_interval": "3600s", "index_price": price,
        "display_name": f"{root} PERP", "futures_asset_type": "FUTURES_ASSET_TYPE_CRYPTO",
    }
    return out


def amount(value: str, currency: str = "USD") -> dict[str, str]:
    return {"value": value, "currency": currency}


# ----- the fake server --------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    claims: dict[str, Any] | None
    body: Any = None


@dataclass
class FakeCoinbase:
    """Coinbase-shaped endpoints over a tiny scripted exchange.

    ``faults[("METHOD", "/path")]`` is a list consumed one per matching request:
    ``"429"``, ``"500"``, ``"503"``, ``"slow"`` (answers after ``slow_seconds``),
    ``"drop"`` (closes the connection, no answer) and, for ``POST /orders``,
    ``"lost"`` (creates the order, then drops the connection) or ``"lost500"``.
    """

    public_key: Any
    key_name: str = KEY_NAME
    prices: dict[str, Decimal] = field(default_factory=lambda: {"BTC-USD": D(50_000), "BIP-20DEC30-CDE": D(50_010)})
    spread: Decimal = D(10)
    usd: Decimal = D(100_000)
    btc: Decimal = D(0)
    page_size: int = 2
    slow_seconds: float = 1.0
    retry_after: str | None = None
    cfm: bool = False
    faults: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    requests: list[Recorded] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    fills: list[dict[str, Any]] = field(default_factory=list)
    positions: dict[str, Decimal] = field(default_factory=dict)
    entry: dict[str, Decimal] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None
    _trade_ids: Any = field(default_factory=lambda: itertools.count(1))

    # ----- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> FakeCoinbase:
        app = web.Application()
        app.router.add_route("*", PREFIX + "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def order_by_client_id(self, client_order_id: str) -> list[dict[str, Any]]:
        return [o for o in self.orders.values() if o["client_order_id"] == client_order_id]

    # ----- plumbing -----------------------------------------------------------------------

    def _auth(self, request: web.Request) -> dict[str, Any]:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise web.HTTPUnauthorized(text="Unauthorized")
        token = header.removeprefix("Bearer ")
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["ES256", "EdDSA"], issuer="cdp",
                                options={"require": ["sub", "iss", "nbf", "exp", "uri"]})
        except jwt.PyJWTError as exc:
            raise web.HTTPUnauthorized(text=f"Unauthorized: {exc}") from None
        expected = f"{request.method} {request.host}{request.path}"
        if claims["uri"] != expected or claims["sub"] != self.key_name:
            raise web.HTTPUnauthorized(text=f"Unauthorized: uri {claims['uri']!r} != {expected!r}")
        if jwt.get_unverified_header(token).get("kid") != self.key_name:
            raise web.HTTPUnauthorized(text="Unauthorized: kid")
        return claims

    @staticmethod
    def _error(status: int, error: str, message: str) -> web.Response:
        return web.json_response({"error": error, "code": 3, "message": message, "error_details": message,
                                  "details": []}, status=status)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.removeprefix(PREFIX)
        query = {k: request.query.getall(k) for k in request.query}
        body = await request.json() if request.can_read_body else None
        claims = None if path.startswith("/market") or path == "/time" else self._auth(request)
        self.requests.append(Recorded(request.method, path, query, claims, body))
        plan = self.faults.get((request.method, path))
        fault = plan.pop(0) if plan else None
        if fault == "429":
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.json_response({"error": "RATE_LIMIT_EXCEEDED", "code": 8, "message": "Too many requests"},
                                     status=429, headers=headers)
        if fault in ("500", "503"):
            return self._error(int(fault), "INTERNAL", "internal error")
        if fault == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        handler, args = self._route(request.method, path)
        if handler is None:
            return self._error(404, "NOT_FOUND", f"no route {request.method} {path}")
        response = await handler(request, query, body, *args)
        if fault == "lost":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if fault == "lost500":
            return self._error(500, "INTERNAL", "internal error")
        return response

    def _route(self, method: str, path: str) -> tuple[Any, tuple[str, ...]]:
        parts = path.strip("/").split("/")
        table = {
            ("GET", "products"): self.products,
            ("GET", "market/products"): self.products,
            ("GET", "best_bid_ask"): self.best_bid_ask,
            ("GET", "product_book"): self.product_book,
            ("GET", "accounts"): self.accounts,
            ("POST", "orders"): self.create_order,
            ("POST", "orders/batch_cancel"): self.cancel,
            ("GET", "orders/historical/batch"): self.list_orders,
            ("GET", "orders/historical/fills"): self.list_fills,
            ("GET", "transaction_summary"): self.transaction_summary,
            ("GET", "cfm/balance_summary"): self.cfm_summary,
            ("GET", "cfm/positions"): self.cfm_positions,
        }
        joined = "/".join(parts)
        if (method, joined) in table:
            return table[(method, joined)], ()
        if method == "GET" and len(parts) == 3 and parts[0] == "products" and parts[2] == "candles":
            return self.candles, (parts[1],)
        if method == "GET" and len(parts) == 3 and parts[:2] == ["orders", "historical"]:
            return self.get_order, (parts[2],)
        return None, ()

    def _page(self, items: list[Any], key: str, query: dict[str, list[str]]) -> web.Response:
        start = int(query.get("cursor", ["0"])[0] or 0)
        chunk = items[start:start + self.page_size]
        more = start + self.page_size < len(items)
        return web.json_response({key: chunk, "has_next": more,
                                  "cursor": str(start + self.page_size) if more else "", "size": len(chunk)})

    # ----- market data --------------------------------------------------------------------

    def bid_ask(self, product_id: str) -> tuple[Decimal, Decimal]:
        mid = self.prices[product_id]
        return mid - self.spread / 2, mid + self.spread / 2

    async def products(self, request: web.Request, query: Any, body: Any) -> web.Response:
        items = [cfm_perp(p, str(v)) if p.endswith("-CDE") else spot_product(p, str(v))
                 for p, v in self.prices.items()]
        if self.cfm:
            items.append(cfm_future("BIT-24APR26-CDE", "50100"))
        return web.json_response({"products": items, "num_products": len(items)})

    async def best_bid_ask(self, request: web.Request, query: Any, body: Any) -> web.Response:
        books = []
        for product_id in query.get("product_ids", []):
            if product_id in self.prices:
                bid, ask = self.bid_ask(product_id)
                books.append({"product_id": product_id, "bids": [{"price": str(bid), "size": "1.5"}],
                              "asks": [{"price": str(ask), "size": "0.8"}], "time": now_rfc3339()})
        return web.json_response({"pricebooks": books})

    async def product_book(self, request: web.Request, query: Any, body: Any) -> web.Response:
        product_id = query["product_id"][0]
        bid, ask = self.bid_ask(product_id)
        return web.json_response({"pricebook": {
            "product_id": product_id, "time": now_rfc3339(),
            "bids": [{"price": str(bid - i), "size": "1"} for i in range(3)],
            "asks": [{"price": str(ask + i), "size": "1"} for i in range(3)],
        }})

    async def candles(self, request: web.Request, query: Any, body: Any, product_id: str) -> web.Response:
        start, end = int(query["start"][0]), int(query["end"][0])
        step = {"ONE_MINUTE": 60, "FIVE_MINUTE": 300, "ONE_HOUR": 3600}[query["granularity"][0]]
        if (end - start) // step > 350:
            return self._error(400, "INVALID_ARGUMENT", "more than 350 candles requested")
        out = []
        for t in range(start - start % step, end + step, step):  # like Coinbase: the open candle too
            price = self.prices[product_id] + (t // step) % 7
            out.append({"start": str(t), "low": str(price - 2), "high": str(price + 3), "open": str(price),
                        "close": str(price + 1), "volume": "1.25"})
        return web.json_response({"candles": list(reversed(out))})

    # ----- account ------------------------------------------------------------------------

    async def accounts(self, request: web.Request, query: Any, body: Any) -> web.Response:
        items = [
            {"uuid": str(uuid.uuid5(uuid.NAMESPACE_OID, c)), "name": f"{c} Wallet", "currency": c,
             "available_balance": amount(str(v), c), "default": c == "USD", "active": True,
             "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "deleted_at": None,
             "type": "ACCOUNT_TYPE_FIAT" if c == "USD" else "ACCOUNT_TYPE_CRYPTO", "ready": True,
             "hold": amount("0", c), "retail_portfolio_id": "default-portfolio"}
            for c, v in (("USD", self.usd), ("BTC", self.btc), ("ETH", D(0)))
        ]
        return self._page(items, "accounts", query)

    async def cfm_summary(self, request: web.Request, query: Any, body: Any) -> web.Response:
        if not self.cfm:
            return self._error(404, "NOT_FOUND", "no futures account")
        return web.json_response({"balance_summary": {
            "futures_buying_power": amount("5000"), "total_usd_balance": amount("10000"),
            "cbi_usd_balance": amount("2000"), "cfm_usd_balance": amount("8000"),
            "unrealized_pnl": amount("150"), "daily_realized_pnl": amount("0")}})

    async def cfm_positions(self, request: web.Request, query: Any, body: Any) -> web.Response:
        return web.json_response({"positions": [{
            "product_id": "BIT-24APR26-CDE", "expiration_time": "2026-04-24T15:00:00Z", "side": "SHORT",
            "number_of_contracts": "3", "current_price": "50100", "avg_entry_price": "50200",
            "unrealized_pnl": "3", "daily_realized_pnl": "0"}]})

    async def transaction_summary(self, request: web.Request, query: Any, body: Any) -> web.Response:
        return web.json_response({"total_volume": 1000, "total_fees": 25, "fee_tier": {
            "pricing_tier": "Advanced 1", "usd_from": "0", "usd_to": "10000", "taker_fee_rate": "0.006",
            "maker_fee_rate": "0.004"}})

    # ----- orders -------------------------------------------------------------------------

    async def create_order(self, request: web.Request, query: Any, body: Any) -> web.Response:
        cid = body["client_order_id"]
        existing = self.order_by_client_id(cid)
        if existing:  # Coinbase: a known client_order_id returns that order
            return self._success(existing[0])
        product_id, side = body["product_id"], body["side"]
        if product_id not in self.prices:
            return web.json_response({"success": False, "failure_reason": "UNKNOWN_FAILURE_REASON",
                                      "error_response": {"error": "INVALID_PRODUCT_ID", "message": "unknown product",
                                                         "error_details": "", "preview_failure_reason":
                                                         "PREVIEW_INVALID_PRODUCT_ID"}})
        (key, config), = body["order_configuration"].items()
        size = D(config.get("base_size") or "0")
        bid, ask = self.bid_ask(product_id)
        price = ask if side == "BUY" else bid
        cost = size * price
        if side == "BUY" and cost > self.usd:
            return web.json_response({"success": False, "failure_reason": "UNKNOWN_FAILURE_REASON",
                                      "error_response": {"error": "INSUFFICIENT_FUND",
                                                         "message": "Insufficient balance in source account",
                                                         "error_details": "",
                                                         "preview_failure_reason": "PREVIEW_INSUFFICIENT_FUND"}})
        order_id = str(uuid.uuid4())
        created = datetime.now(UTC)
        crosses = key == "market_market_ioc" or (
            D(config["limit_price"]) >= ask if side == "BUY" else D(config["limit_price"]) <= bid)
        order = {
            "order_id": order_id, "product_id": product_id, "user_id": "u",
            "order_configuration": body["order_configuration"],
            "side": side, "client_order_id": cid, "status": "OPEN", "time_in_force": "GOOD_UNTIL_CANCELLED",
            "created_time": now_rfc3339(created), "completion_percentage": "0", "filled_size": "0",
            "average_filled_price": "0", "fee": "", "number_of_fills": "0", "filled_value": "0",
            "pending_cancel": False, "size_in_quote": False, "total_fees": "0", "size_inclusive_of_fees": False,
            "total_value_after_fees": "0", "trigger_status": "INVALID_ORDER_TYPE",
            "order_type": "MARKET" if key == "market_market_ioc" else "LIMIT", "reject_reason": "", "settled": False,
            "product_type": "FUTURE" if product_id.endswith("-CDE") else "SPOT", "reject_message": "",
            "cancel_message": "", "order_placement_source": "RETAIL_ADVANCED", "outstanding_hold_amount": "0",
            "is_liquidation": False, "last_fill_time": None, "leverage": body.get("leverage", ""),
            "margin_type": body.get("margin_type", ""), "retail_portfolio_id": "default-portfolio",
        }
        self.orders[order_id] = order
        if crosses:
            self._fill(order, size, price, created)
        elif key in ("sor_limit_ioc", "limit_limit_fok"):
            order["status"] = "CANCELLED"
        return self._success(order)

    def _fill(self, order: dict[str, Any], size: Decimal, price: Decimal, ts: datetime) -> None:
        fee = (size * price * D("0.006")).quantize(D("0.01"))
        sign = 1 if order["side"] == "BUY" else -1
        symbol = order["product_id"]
        if symbol.endswith("-CDE"):  # a future: a position in contracts
            held = self.positions.get(symbol, D(0))
            if held == 0 or (held > 0) == (sign > 0):
                self.entry[symbol] = price
            self.positions[symbol] = held + sign * size
        else:
            self.usd -= sign * size * price
            self.btc += sign * size
        self.usd -= fee
        order.update(status="FILLED", filled_size=str(size), average_filled_price=str(price),
                     total_fees=str(fee), number_of_fills="1", completion_percentage="100",
                     filled_value=str(size * price), last_fill_time=now_rfc3339(ts))
        self.fills.append({
            "entry_id": str(uuid.uuid4()), "trade_id": f"T{next(self._trade_ids)}", "order_id": order["order_id"],
            "trade_time": now_rfc3339(ts), "trade_type": "FILL", "price": str(price), "size": str(size),
            "commission": str(fee), "product_id": symbol, "sequence_timestamp": now_rfc3339(ts),
            "liquidity_indicator": "TAKER", "size_in_quote": False, "user_id": "u", "side": order["side"],
            "retail_portfolio_id": "default-portfolio",
        })

    def _success(self, order: dict[str, Any]) -> web.Response:
        return web.json_response({"success": True, "success_response": {
            "order_id": order["order_id"], "product_id": order["product_id"], "side": order["side"],
            "client_order_id": order["client_order_id"]}, "order_configuration": order["order_configuration"]})

    async def get_order(self, request: web.Request, query: Any, body: Any, order_id: str) -> web.Response:
        if order_id not in self.orders:
            return self._error(404, "NOT_FOUND", "order not found")
        return web.json_response({"order": self.orders[order_id]})

    async def list_orders(self, request: web.Request, query: Any, body: Any) -> web.Response:
        items = list(self.orders.values())
        if "product_ids" in query:
            items = [o for o in items if o["product_id"] in query["product_ids"]]
        if "order_status" in query:
            items = [o for o in items if o["status"] in query["order_status"]]
        if "start_date" in query:
            since = datetime.fromisoformat(query["start_date"][0].replace("Z", "+00:00"))
            items = [o for o in items if datetime.fromisoformat(o["created_time"].replace("Z", "+00:00")) >= since]
        items.sort(key=lambda o: o["created_time"], reverse=True)
        return self._page(items, "orders", query)

    async def list_fills(self, request: web.Request, query: Any, body: Any) -> web.Response:
        items = list(self.fills)
        if "order_ids" in query:
            items = [f for f in items if f["order_id"] in query["order_ids"]]
        if "start_sequence_timestamp" in query:
            since = datetime.fromisoformat(query["start_sequence_timestamp"][0].replace("Z", "+00:00"))
            items = [f for f in items
                     if datetime.fromisoformat(f["sequence_timestamp"].replace("Z", "+00:00")) >= since]
        items.sort(key=lambda f: f["trade_time"], reverse=True)
        start = int(query.get("cursor", ["0"])[0] or 0)
        chunk = items[start:start + self.page_size]
        more = start + self.page_size < len(items)
        return web.json_response({"fills": chunk, "cursor": str(start + self.page_size) if more else ""})

    async def cancel(self, request: web.Request, query: Any, body: Any) -> web.Response:
        results = []
        for order_id in body["order_ids"]:
            order = self.orders.get(order_id)
            if order is None or order["status"] != "OPEN":
                results.append({"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": order_id})
            else:
                order["status"] = "CANCELLED"
                results.append({"success": True, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON",
                                "order_id": order_id})
        return web.json_response({"results": results})


def minutes_ago(n: int) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=n)
