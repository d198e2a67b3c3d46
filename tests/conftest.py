from __future__ import annotations

from datetime import UTC, datetime

import pytest

from perpsbot.domain.clock import ManualClock

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)
