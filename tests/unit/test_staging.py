"""Staging folders of killed backups and restores are reclaimed at the next backup and the
next start; one in use by a live process is kept (issue 21, item 5)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

from perpsbot.bot import PerpsBotBuilder
from perpsbot.config import BotConfig
from perpsbot.store.backup import BackupWorkflow
from tests.unit.test_backup import NOW, fill_store

# Runs the real backup (or restore) in another process and kills that process with
# SIGKILL at the step named, or holds it there until its stdin closes.
SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from perpsbot.store import backup

    store, backups, step, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]

    def stop_here(*args, **kwargs):
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        print("staged", flush=True)
        sys.stdin.read()  # a backup still at work, until the test lets it go
        raise SystemExit(0)

    setattr(backup, step, stop_here)
    if step == "_write_archive":
        backup.BackupWorkflow(store, backups, "paper").backup(datetime.now(UTC))
    else:
        backup.restore_backup(backups, store, "paper", datetime.now(UTC))
    """
)


def _start(store: Path, target: Path, step: str, how: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(store), str(target), step, how],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


def _killed(store: Path, target: Path, step: str) -> None:
    proc = _start(store, target, step, "kill")
    proc.communicate(timeout=30)
    assert proc.returncode == -9


def _staged(parent: Path, prefix: str) -> list[Path]:
    return sorted(p for p in parent.glob(f"{prefix}*") if p.is_dir())


def test_the_next_backup_removes_a_killed_backups_copies_but_not_a_running_ones(tmp_path: Path):
    store, backups = tmp_path / "store", tmp_path / "backups"
    fill_store(store)
    _killed(store, backups, "_write_archive")
    (killed,) = _staged(backups, ".partial-")
    assert {p.name for p in killed.iterdir()} == {"events.db", "orders.db"}  # the size of the store
    running = _start(store, backups, "_write_archive", "hold")  # e.g. `perpsbot backup` while the bot runs
    try:
        assert running.stdout is not None and running.stdout.readline() == "staged\n"
        (live,) = [p for p in _staged(backups, ".partial-") if p != killed]
        result = BackupWorkflow(store, backups, "paper").backup(NOW)
        assert result.path.is_file()
        assert _staged(backups, ".partial-") == [live]  # the killed one went, the live one stays
        assert (live / "events.db").is_file()
    finally:
        running.communicate(timeout=30)
    assert running.returncode == 0 and _staged(backups, ".partial-") == []  # it cleans up after itself
    assert sorted(p.name for p in backups.iterdir()) == [result.path.name]  # lock files too


async def test_the_next_start_removes_what_killed_backups_and_restores_left(tmp_path: Path):
    config = BotConfig(data_dir=tmp_path / "data")
    store = config.store_dir
    fill_store(store)
    made = BackupWorkflow.from_config(config).backup(NOW - timedelta(hours=1)).path
    _killed(store, config.backup_path, "_write_archive")
    _killed(store, made, "_swap_in")  # a restore killed after its checks, before the swap
    assert len(_staged(config.backup_path, ".partial-")) == 1 and len(_staged(store, ".restore-")) == 1
    bot = await PerpsBotBuilder(config).build()
    await bot.shutdown()
    assert _staged(config.backup_path, ".partial-") == [] and _staged(store, ".restore-") == []
    assert not list(store.glob(".restore-*.lock")) and not list(config.backup_path.glob(".partial-*.lock"))
    assert made.is_file()
