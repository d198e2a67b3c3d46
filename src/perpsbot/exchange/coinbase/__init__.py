"""Coinbase Advanced Trade: CDP key auth (JWT), REST and WebSocket clients, JSON mapping,
and ``CoinbaseExchange``, the ``Exchange`` port on top of them."""

from perpsbot.exchange.coinbase.adapter import CoinbaseEndpoints, CoinbaseExchange, ssl_context
from perpsbot.exchange.coinbase.auth import (
    Credentials,
    CredentialsError,
    JwtSigner,
    load_private_key,
    read_key_file,
    resolve_credentials,
)
from perpsbot.exchange.coinbase.rest import (
    DEFAULT_REST_URL,
    CoinbaseRestClient,
    OrderAck,
    RetryPolicy,
    TokenBucket,
    TransportError,
)
from perpsbot.exchange.coinbase.ws import DEFAULT_WS_URL, DEFAULT_WS_USER_URL, CoinbaseWebSocket, StreamNotice

__all__ = [
    "DEFAULT_REST_URL",
    "DEFAULT_WS_URL",
    "DEFAULT_WS_USER_URL",
    "CoinbaseEndpoints",
    "CoinbaseExchange",
    "CoinbaseRestClient",
    "CoinbaseWebSocket",
    "Credentials",
    "CredentialsError",
    "JwtSigner",
    "OrderAck",
    "RetryPolicy",
    "StreamNotice",
    "TokenBucket",
    "TransportError",
    "load_private_key",
    "read_key_file",
    "resolve_credentials",
    "ssl_context",
]
