"""A full disk is a clear stop: the bot stops cycling, says `disk full` in one line, exits
non-zero, and its last record says why as far as it can be written (issue 21, item 6)."""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from perpsbot.bot import PerpsBot, PerpsBotBuilder
from perpsbot.cli import main as cli_main
from perpsbot.config import BotConfig
from perpsbot.domain.clock import ManualClock
from perpsbot.logs import json_file_handler
from perpsbot.store import EventStore
from perpsbot.store.lock import StoreLock
from perpsbot.store.spare import SPARE_BYTES, SPARE_FILE
from perpsbot.store.sqlite import DiskFull, is_disk_full
from tests.conftest import T0

FAST = {"bar_seconds": 1, "short_window": 2, "long_window": 4, "http_port": None}
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def sqlite_full() -> sqlite3.OperationalError:
    """The error SQLite itself raises when the disk (here: a page limit) has no room."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t(x)")
        conn.execute("PRAGMA max_page_count = 2")
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("no SQLITE_FULL")


class FullDisk:
    """A store connection on a disk that fills up: after ``fill()`` every write fails the way
    SQLite fails it, until a spare file that was there when the disk filled is deleted
    (``until_spare_freed``), which is what gives a real disk room again."""

    def __init__(self, conn: sqlite3.Connection, spare: Path, *, until_spare_freed: bool) -> None:
        self._conn = conn
        self._spare = spare
        self._until_spare_freed = until_spare_freed
        self._full = self._spare_held = False

    def fill(self) -> None:
        self._full, self._spare_held = True, self._spare.exists()

    def _refuse(self, sql: str) -> None:
        freed = self._until_spare_freed and self._spare_held and not self._spare.exists()
        if self._full and not freed and sql.lstrip().upper().startswith(WRITES):
            raise sqlite_full()

    def execute(self, sql: str, *args: Any) -> Any:
        self._refuse(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        self._refuse(sql)
        return self._conn.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def fill_up(bot: PerpsBot, *, until_spare_freed: bool) -> list[FullDisk]:
    reg = bot.registry
    spare = bot.config.store_dir / SPARE_FILE
    disks = []
    for store in (reg.events, reg.orders):
        disk = FullDisk(store._conn, spare, until_spare_freed=until_spare_freed)
        store._conn = disk  # type: ignore[assignment]
        disks.append(disk)
    return disks


def last_event(config: BotConfig) -> tuple[str, dict[str, Any]]:
    events = EventStore(config.store_dir / "events.db")
    try:
        (last,) = events.query(limit=1)
        return last.kind, last.data
    finally:
        events.close()


def test_disk_full_is_recognised_from_sqlite_and_from_the_os():
    assert is_disk_full(sqlite_full())
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))


async def test_a_full_disk_stops_the_cycles_and_bot_stopped_says_why(tmp_path: Path):
    config = BotConfig(data_dir=tmp_path / "data", interval=0.01, **FAST)
    bot = await PerpsBotBuilder(config).build()
    spare = config.store_dir / SPARE_FILE
    assert spare.stat().st_blocks * 512 >= SPARE_BYTES  # held for real, not a sparse file
    disks = fill_up(bot, until_spare_freed=True)

    def on_cycle(b: PerpsBot) -> None:
        if b.cycles == 3:
            for disk in disks:
                disk.fill()

    try:
        with pytest.raises(DiskFull) as raised:
            await asyncio.wait_for(bot.run(duration=60, on_cycle=on_cycle), timeout=20)
        assert bot.cycles == 3  # the fourth met the full disk, stopped part-way, and was the last
    finally:
        await bot.shutdown()
    message = str(raised.value)
    assert message.startswith(f"disk full: cannot write to {config.store_dir} (database or disk is full)")
    assert message.endswith("the bot stopped; its bot_stopped event (reason disk_full) says so")
    assert not spare.exists()  # freed for the last records
    kind, data = last_event(config)
    assert kind == "bot_stopped" and data["reason"] == "disk_full" and data["cycles"] == 3
    assert "database or disk is full" in data["error"]
    events = EventStore(config.store_dir / "events.db")
    (run,) = events.runs()
    assert run.ended_at is not None and events.count(kind="error") == 0  # never recorded as an error to cycle on
    events.close()
    StoreLock(config.store_dir).acquire().release()  # the store was let go


async def test_when_even_the_freed_space_is_not_enough_the_log_says_why(tmp_path: Path, caplog):
    clock = ManualClock(T0)
    config = BotConfig(data_dir=tmp_path / "data", interval=600, **FAST)
    bot = await PerpsBotBuilder(config).with_clock(clock).build()
    running = asyncio.ensure_future(bot.run())
    for _ in range(50):  # started, one cycle, now asleep for the interval
        await asyncio.sleep(0)
    assert bot.cycles == 1 and not running.done()
    recorded = bot.registry.events.count()
    for disk in fill_up(bot, until_spare_freed=False):
        disk.fill()
    clock.advance(10)  # the snapshot task's turn: its write meets the full disk
    with pytest.raises(DiskFull) as raised:
        await asyncio.wait_for(running, timeout=5)
    with caplog.at_level(logging.CRITICAL):
        await bot.shutdown()
    assert bot.cycles == 1  # no more cycles after the snapshot failed
    assert str(raised.value).endswith("the bot stopped; not even its bot_stopped event could be written")
    assert any("disk full: cannot write to" in r.getMessage() and r.levelno == logging.CRITICAL for r in caplog.records)
    events = EventStore(config.store_dir / "events.db")
    assert events.count() == recorded and events.count(kind="bot_stopped") == 0  # nothing more could be written
    events.close()
    StoreLock(config.store_dir).acquire().release()


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """`perpsbot run` sets up the root logger for itself: put the test's back afterwards."""
    root = logging.getLogger()
    before, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in before:
        root.addHandler(handler)
    root.setLevel(level)


def _perpsbot(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`perpsbot ARGS` in this process, as the console script runs it: exit code, stderr."""
    for key in [k for k in os.environ if k.startswith("PERPSBOT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setattr(sys, "argv", ["perpsbot", *args])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    return int(exited.value.code or 0), capsys.readouterr().err


def test_the_cli_run_stops_on_a_full_disk_with_one_line_and_a_non_zero_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cli_logging: None
):
    monkeypatch.chdir(tmp_path)
    original = PerpsBot.start

    async def start_then_fill_up(self: PerpsBot) -> None:
        await original(self)
        for disk in fill_up(self, until_spare_freed=True):
            disk.fill()

    monkeypatch.setattr(PerpsBot, "start", start_then_fill_up)
    code, err = _perpsbot(
        monkeypatch, capsys, "run", "--duration", "30", "--interval", "0.05", "--set", "http_port=off"
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: disk full: cannot write to data/paper (database or disk is full)")
    assert "its bot_stopped event (reason disk_full) says so" in lines[0]
    kind, data = last_event(BotConfig(data_dir=tmp_path / "data"))
    assert kind == "bot_stopped" and data["reason"] == "disk_full"


def test_a_disk_too_full_for_the_spare_space_refuses_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cli_logging: None
):
    monkeypatch.chdir(tmp_path)

    def no_room(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    code, err = _perpsbot(monkeypatch, capsys, "run", "--duration", "1", "--set", "http_port=off")
    assert code == 2
    assert err.strip() == (
        "error: disk full: no room for 4 MiB of spare space in data/paper (No space left on device); "
        "free space on that disk, then start again"
    )
    assert not (tmp_path / "data" / "paper" / SPARE_FILE).exists()
    events = EventStore(tmp_path / "data" / "paper" / "events.db")
    assert events.runs() == []  # refused before the run began
    events.close()


def test_a_log_file_the_disk_has_no_room_for_is_one_line_not_a_traceback_per_record(tmp_path: Path, monkeypatch):
    handler = json_file_handler(tmp_path / "log.jsonl", 1_000_000, 1)
    logger = logging.getLogger("perpsbot.test.diskfull")
    logger.addHandler(handler)
    logger.propagate = False
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)

    def no_room() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    handler.flush = no_room  # type: ignore[method-assign]
    try:
        for n in range(3):
            logger.error("line %d", n)
    finally:
        logger.removeHandler(handler)
        del handler.flush  # room again
        handler.close()
    text = stderr.getvalue()
    assert "Traceback" not in text and text.count("\n") == 1
    assert text.startswith(f"cannot write the log file {tmp_path / 'log.jsonl'} ([Errno 28] No space left on device)")
