"""The Coinbase Global Derivatives gateway (Deribit-powered JSON-RPC 2.0) behind the
``Exchange`` port: ``rpc`` (transport and auth), ``market`` (the market stream), ``adapter``."""

from perpsbot.exchange.gateway.adapter import CAPABILITIES, GatewayExchange
from perpsbot.exchange.gateway.market import GatewayMarketStream
from perpsbot.exchange.gateway.rpc import FateUnknown, RpcClient

__all__ = ["CAPABILITIES", "FateUnknown", "GatewayExchange", "GatewayMarketStream", "RpcClient"]
