"""perpsbot: a trading bot for Coinbase Advanced Trade spot and perpetual futures."""

__version__ = "0.1.0"
