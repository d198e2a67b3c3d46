"""The adapter's fill listing: a listing cut off part way (a timeout) loses no fill."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from perpsbot.domain.clock import ManualClock
from perpsbot.exchange.coinbase import CoinbaseExchange
from perpsbot.exchange.coinbase.mapping import Obj

NOW = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)


def fill(n: int) -> dict[str, Any]:
    at = (NOW + timedelta(seconds=n)).isoformat()
    return {"trade_id": f"T{n}", "order_id": "X1", "product_id": "BTC-USD", "side": "BUY", "price": "90000",
            "size": "0.001", "commission": "0.5", "liquidity_indicator": "TAKER", "trade_time": at,
            "sequence_timestamp": at}


class CutOffRest:
    """Serves three fills; while ``cut`` the listing stops with a timeout after the first two."""

    base_url = "http://127.0.0.1:1"
    signer = None
    cut = True

    async def fills(self, **_: Any) -> AsyncIterator[Obj]:
        for n in (1, 2, 3):
            if self.cut and n == 3:
                raise TimeoutError("the listing's next page did not come")
            yield Obj(fill(n), f"fills[{n - 1}]")

    async def get_order(self, order_id: str) -> Any:
        return {"order": {"order_id": order_id, "client_order_id": "pb-1", "product_id": "BTC-USD", "side": "BUY",
                          "status": "FILLED", "created_time": NOW.isoformat(),
                          "order_configuration": {"market_market_ioc": {"base_size": "0.003"}},
                          "filled_size": "0.003", "average_filled_price": "90000", "total_fees": "1.5"}}


async def test_a_fill_listing_cut_off_part_way_loses_no_fill_on_the_next_call():
    rest = CutOffRest()
    exchange = CoinbaseExchange(rest, ManualClock(NOW), fills_from=NOW - timedelta(minutes=1))  # type: ignore[arg-type]
    with pytest.raises(asyncio.TimeoutError):
        await exchange.fills_since(0)
    rest.cut = False
    fills, cursor = await exchange.fills_since(0)
    assert [f.trade_id for f in fills] == ["T1", "T2", "T3"] and cursor == 3
    assert {f.client_order_id for f in fills} == {"pb-1"}
