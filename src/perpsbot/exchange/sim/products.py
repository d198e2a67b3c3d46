"""The simulator's product list: Coinbase-like specs plus the synthetic market behind each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from perpsbot.domain import Product, ProductType
from perpsbot.exchange.sim.market import MarketParams, UnderlyingParams, standard_regimes


@dataclass(frozen=True, slots=True)
class SimProduct:
    """A product the simulator lists, with the parameters of its synthetic market."""

    product: Product
    market: MarketParams

    @property
    def symbol(self) -> str:
        return self.product.symbol


def underlying(key: str, start_price: float, vol_per_sec: float, **kwargs: Any) -> UnderlyingParams:
    """Asset price process with the standard calm/normal/stormy regimes around
    ``vol_per_sec`` (the per-second log volatility of the normal regime)."""
    return UnderlyingParams(key=key, start_price=start_price, regimes=standard_regimes(vol_per_sec), **kwargs)


# Normal-regime volatility of a few basis points per sqrt(second): over ~100 s a
# price typically moves 0.3-0.5 %, enough for moving averages on 1-5 s bars to
# cross several times in a two-minute paper run.
_BTC = underlying("BTC", 90_000.0, 0.0003)
_ETH = underlying("ETH", 3_000.0, 0.0004)
_SOL = underlying("SOL", 150.0, 0.0005)
_DOGE = underlying("DOGE", 0.38, 0.0007)
_XRP = underlying("XRP", 2.2, 0.0006)
_AVAX = underlying("AVAX", 38.0, 0.0006)
_LINK = underlying("LINK", 23.0, 0.0005)

_USD = "USD"


def _spot(symbol: str, base: str, base_inc: str, price_inc: str, min_size: str) -> Product:
    return Product(
        symbol=symbol,
        base=base,
        quote=_USD,
        type=ProductType.SPOT,
        base_increment=Decimal(base_inc),
        price_increment=Decimal(price_inc),
        min_size=Decimal(min_size),
    )


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _expiry_of(symbol: str) -> datetime:
    """The expiry a CFM symbol names (``BIP-20DEC30-CDE``: 20 Dec 2030; the time of day is
    not modelled: 16:00 UTC)."""
    code = symbol.split("-")[1]
    return datetime(2000 + int(code[5:7]), _MONTHS.index(code[2:5]) + 1, int(code[:2]), 16, tzinfo=UTC)


def _cfm(symbol: str, base: str, contract_size: str, price_inc: str, max_lev: int, mmr: str,
         kind: ProductType = ProductType.PERPETUAL) -> Product:
    """A Coinbase Financial Markets future sized in whole contracts of ``contract_size`` base
    units, expiring when its symbol says: a US perpetual-style one (far out, with funding)
    or a dated one (``ProductType.FUTURE``: no funding)."""
    return Product(
        symbol=symbol,
        base=base,
        quote=_USD,
        type=kind,
        base_increment=Decimal(1),
        price_increment=Decimal(price_inc),
        min_size=Decimal(1),
        max_leverage=Decimal(max_lev),
        contract_size=Decimal(contract_size),
        maintenance_margin_rate=Decimal(mmr),
        expiry=_expiry_of(symbol),
    )


CFM_SUFFIX = "-CDE"


def is_cfm(product: Product) -> bool:
    """A Coinbase Financial Markets future (``BIP-20DEC30-CDE``, ``BIT-26MAR27-CDE``):
    margined across the account by the venue's rule (``margin.py``)."""
    return product.symbol.endswith(CFM_SUFFIX)


def default_products() -> list[SimProduct]:
    """BTC, ETH, SOL, DOGE, XRP, AVAX and LINK spot against USD (increments like
    Coinbase's listings), the US perpetual-style futures on BTC (``BIP``, 0.01 BTC a
    contract) and ETH (``ETP``, 0.1 ETH), and a dated BTC future expiring on 26 Mar 2027
    (``BIT``, 0.01 BTC a contract, no funding).

    A spot product and the futures on the same asset share the underlying
    index path; a perpetual-style future adds a mean-reverting premium (which drives its
    funding rate). Maintenance margin is half the initial margin at maximum
    leverage, so a max-leverage position is not liquidated at its own entry.
    """
    return [
        SimProduct(
            _spot("BTC-USD", "BTC", "0.00000001", "0.01", "0.00001"),
            MarketParams(_BTC, spread_bps=1.0, level_step_bps=0.5, top_depth=0.4, trades_per_sec=4.0,
                         mean_trade_size=0.02),
        ),
        SimProduct(
            _spot("ETH-USD", "ETH", "0.00000001", "0.01", "0.0001"),
            MarketParams(_ETH, spread_bps=1.5, level_step_bps=0.75, top_depth=8.0, trades_per_sec=3.0,
                         mean_trade_size=0.5),
        ),
        SimProduct(
            _spot("SOL-USD", "SOL", "0.001", "0.01", "0.01"),
            MarketParams(_SOL, spread_bps=2.5, level_step_bps=1.0, top_depth=150.0, trades_per_sec=2.0,
                         mean_trade_size=8.0),
        ),
        SimProduct(
            _cfm("BIP-20DEC30-CDE", "BTC", "0.01", "5", 10, "0.05"),
            MarketParams(_BTC, spread_bps=1.0, level_step_bps=0.5, top_depth=40.0, trades_per_sec=4.0,
                         mean_trade_size=3.0),
        ),
        SimProduct(
            _cfm("ETP-20DEC30-CDE", "ETH", "0.1", "0.5", 10, "0.05"),
            MarketParams(_ETH, spread_bps=1.5, level_step_bps=0.75, top_depth=60.0, trades_per_sec=3.0,
                         mean_trade_size=4.0),
        ),
        SimProduct(
            _cfm("BIT-26MAR27-CDE", "BTC", "0.01", "5", 10, "0.05", ProductType.FUTURE),
            MarketParams(_BTC, spread_bps=1.5, level_step_bps=0.75, top_depth=20.0, trades_per_sec=2.0,
                         mean_trade_size=2.0),
        ),
        *_alt_products(),
    ]


def _alt_products() -> list[SimProduct]:
    """Smaller assets: wider spreads and steps, deeper books in base units, fewer trades."""
    return [
        SimProduct(
            _spot("DOGE-USD", "DOGE", "0.1", "0.00001", "1"),
            MarketParams(_DOGE, spread_bps=3.0, level_step_bps=1.5, top_depth=40_000.0, trades_per_sec=3.0,
                         mean_trade_size=1_500.0),
        ),
        SimProduct(
            _spot("XRP-USD", "XRP", "0.000001", "0.0001", "1"),
            MarketParams(_XRP, spread_bps=2.5, level_step_bps=1.2, top_depth=15_000.0, trades_per_sec=3.0,
                         mean_trade_size=600.0),
        ),
        SimProduct(
            _spot("AVAX-USD", "AVAX", "0.00000001", "0.01", "0.01"),
            MarketParams(_AVAX, spread_bps=3.0, level_step_bps=1.5, top_depth=250.0, trades_per_sec=1.5,
                         mean_trade_size=8.0),
        ),
        SimProduct(
            _spot("LINK-USD", "LINK", "0.01", "0.001", "0.1"),
            MarketParams(_LINK, spread_bps=3.0, level_step_bps=1.5, top_depth=350.0, trades_per_sec=1.5,
                         mean_trade_size=12.0),
        ),
    ]


GATEWAY_SUFFIX = "-PERPETUAL"


def is_gateway(product: Product) -> bool:
    """An instrument of the Global Derivatives gateway (``BTC_USDC-PERPETUAL``): listed by the
    simulator server's JSON-RPC front only, not by its Advanced Trade front."""
    return product.symbol.endswith(GATEWAY_SUFFIX)


def _gateway_perp(symbol: str, base: str, amount_step: str, min_amount: str, tick: str, max_lev: int) -> Product:
    """A linear USDC-settled perpetual of the gateway: ``amount`` in the base coin (so one
    unit of size is one coin), stepped by ``amount_step`` from ``min_amount``. The core
    keeps the one account in its cash currency; the front reports it as USDC."""
    return Product(
        symbol=symbol,
        base=base,
        quote=_USD,
        type=ProductType.PERPETUAL,
        base_increment=Decimal(amount_step),
        price_increment=Decimal(tick),
        min_size=Decimal(min_amount),
        max_leverage=Decimal(max_lev),
        maintenance_margin_rate=Decimal(1) / Decimal(2 * max_lev),
        expiry=datetime(3000, 1, 1, 8, tzinfo=UTC),  # the gateway lists a perpetual's expiry far out
    )


def gateway_products() -> list[SimProduct]:
    """The gateway's linear USDC perpetuals on BTC and ETH (amounts in coin, up to 50x),
    on the same underlying index paths as the Advanced Trade listing."""
    return [
        SimProduct(
            _gateway_perp("BTC_USDC-PERPETUAL", "BTC", "0.0001", "0.0001", "1", 50),
            MarketParams(_BTC, spread_bps=1.0, level_step_bps=0.5, top_depth=2.0, trades_per_sec=4.0,
                         mean_trade_size=0.05),
        ),
        SimProduct(
            _gateway_perp("ETH_USDC-PERPETUAL", "ETH", "0.001", "0.001", "0.1", 50),
            MarketParams(_ETH, spread_bps=1.5, level_step_bps=0.75, top_depth=30.0, trades_per_sec=3.0,
                         mean_trade_size=0.8),
        ),
    ]


def server_products() -> list[SimProduct]:
    """What ``perpsbot sim serve`` lists: the Advanced Trade products and the gateway's."""
    return default_products() + gateway_products()


def default_market_params(product: Product) -> MarketParams:
    """Market parameters for a bare ``Product``: the default listing's if the
    symbol is known, else a generic asset at 100 USD."""
    for sp in server_products():
        if sp.symbol == product.symbol:
            return sp.market
    return MarketParams(underlying(product.base, 100.0, 0.0004), top_depth=float(product.min_size) * 1000,
                        mean_trade_size=float(product.min_size) * 20)
