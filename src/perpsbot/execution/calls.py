"""Exchange calls bounded in time: whatever the venue does, no call the execution layer
makes waits forever. A placement has its own bound (``PLACE_TIMEOUT_SECONDS`` in the
coordinator: its outcome decides whether an order's fate is unknown); every other call —
the account, fills, an order's status, listings, a quote — has this one. A call that runs
out raises ``TimeoutError``, which the cycle records as that stage's error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

CALL_TIMEOUT_SECONDS = 10.0


async def bounded(call: Awaitable[T]) -> T:
    """``await call``, given up after ``CALL_TIMEOUT_SECONDS``."""
    async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
        return await call
