from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from perpsbot.domain.clock import ManualClock

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


TEST_OUTPUT = Path(__file__).resolve().parents[1] / "build" / "test-output"
_STARTED = pytest.StashKey[float]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_STARTED] = time.time()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Name the files tests saved under build/test-output in this session (screenshots)."""
    started = config.stash.get(_STARTED, None)
    if started is None or not TEST_OUTPUT.is_dir():
        return
    saved = sorted(p for p in TEST_OUTPUT.rglob("*") if p.is_file() and p.stat().st_mtime >= started - 1)
    for path in saved:
        terminalreporter.write_line(f"test output: {path}")

