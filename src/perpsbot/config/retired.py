"""Products that no longer trade, and the one line that says what to use instead.

Coinbase's INTX perpetuals (``BTC-PERP-INTX``, ...) closed on 2026-10-01: they are no
longer traded through the Advanced Trade API. This module is the only place the bot
still names them, so that a config or ``--symbols`` written for them fails with a
migration message rather than "unknown product" at the exchange.
"""

from __future__ import annotations

RETIRED_SUFFIX = "-INTX"
# The US perpetual-style future Coinbase lists on the same base (0.01 BTC and 0.1 ETH a contract).
REPLACEMENTS = {"BTC": "BIP-20DEC30-CDE", "ETH": "ETP-20DEC30-CDE"}


def retired_product(symbol: str) -> str | None:
    """Why ``symbol`` cannot be traded and what to trade instead, or None if it is not retired."""
    if not symbol.upper().endswith(RETIRED_SUFFIX):
        return None
    base = symbol.upper().split("-")[0]
    replacement = REPLACEMENTS.get(base)
    instead = (f"use the US perpetual-style future {replacement} instead" if replacement
               else f"no US perpetual-style future on {base} is listed (spot {base}-USD still trades)")
    return (f"'{symbol}': Coinbase's INTX perpetuals closed on 2026-10-01 and are no longer traded "
            f"through the Advanced Trade API; {instead}")
