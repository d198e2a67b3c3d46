"""Builders shared by the simulator tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from perpsbot.domain import OrderType, Product, ProductType, Side, TimeInForce
from perpsbot.exchange.port import OrderRequest
from perpsbot.exchange.sim import (
    MarketParams,
    Regime,
    SimConfig,
    SimCore,
    SimProduct,
    UnderlyingParams,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def flat_underlying(key: str, price: float, vol: float = 0.0003, **kw: Any) -> UnderlyingParams:
    """One regime, no jumps unless asked: predictable enough for order tests."""
    kw.setdefault("jump_rate_per_sec", 0.0)
    return UnderlyingParams(key, price, (Regime("only", vol, 1.0, 600.0),), ((1.0,),), initial_regime=0, **kw)


def spot_product(symbol: str = "TST-USD", base: str = "TST") -> Product:
    return Product(symbol, base, "USD", ProductType.SPOT, Decimal("0.001"), Decimal("0.01"), Decimal("0.01"))


def perp_product(
    symbol: str = "TST-PERP", base: str = "TST", max_leverage: str = "10", mmr: str = "0.05"
) -> Product:
    return Product(
        symbol, base, "USD", ProductType.PERPETUAL, Decimal("0.001"), Decimal("0.01"), Decimal("0.01"),
        max_leverage=Decimal(max_leverage), maintenance_margin_rate=Decimal(mmr),
    )


def sim_spot(price: float = 100.0, depth: float = 2.0, **market: Any) -> SimProduct:
    und = market.pop("underlying", None) or flat_underlying("TST", price, market.pop("vol", 0.0003))
    return SimProduct(spot_product(), MarketParams(und, top_depth=depth, mean_trade_size=0.5, **market))


def sim_perp(price: float = 100.0, depth: float = 2.0, **market: Any) -> SimProduct:
    mmr = market.pop("mmr", "0.05")
    max_lev = market.pop("max_leverage", "10")
    und = market.pop("underlying", None) or flat_underlying("TSTP", price, market.pop("vol", 0.0003))
    return SimProduct(
        perp_product(max_leverage=max_lev, mmr=mmr),
        MarketParams(und, top_depth=depth, mean_trade_size=0.5, **market),
    )


def request(
    cid: str,
    symbol: str,
    side: Side,
    size: str | Decimal,
    *,
    limit: str | Decimal | None = None,
    tif: TimeInForce = TimeInForce.IOC,
    reduce_only: bool = False,
    leverage: str | Decimal = "1",
) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
        size=Decimal(size),
        limit_price=Decimal(limit) if limit is not None else None,
        time_in_force=tif,
        reduce_only=reduce_only,
        leverage=Decimal(leverage),
    )


def build_core(*products: SimProduct | Product, seed: int = 1, **config: Any) -> SimCore:
    """A core started at ``T0`` with a short warm-up (defaults: the test spot and perp)."""
    config.setdefault("warmup_seconds", 30.0)
    return SimCore(products or (sim_spot(), sim_perp()), SimConfig(seed=seed, **config), start=T0)
