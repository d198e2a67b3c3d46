"""The built-in simulated exchange: seeded synthetic markets behind the ``Exchange`` port."""

from perpsbot.exchange.sim.engine import FundingEvent, SimConfig, SimCore, UnknownProductRejected
from perpsbot.exchange.sim.exchange import SimExchange
from perpsbot.exchange.sim.market import (
    BookLevel,
    MarketModel,
    MarketParams,
    OrderBook,
    Regime,
    UnderlyingParams,
    standard_regimes,
)
from perpsbot.exchange.sim.products import SimProduct, default_market_params, default_products, underlying

__all__ = [
    "BookLevel",
    "FundingEvent",
    "MarketModel",
    "MarketParams",
    "OrderBook",
    "Regime",
    "SimConfig",
    "SimCore",
    "SimExchange",
    "SimProduct",
    "UnderlyingParams",
    "UnknownProductRejected",
    "default_market_params",
    "default_products",
    "standard_regimes",
    "underlying",
]
