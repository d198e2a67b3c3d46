"""Staging folders: a backup being made or a restore being checked works in a folder of its
own, beside a lock file its process holds an ``flock`` on.

A process killed on the way (kill -9) leaves its folder behind, the size of the store.
The kernel drops the ``flock`` of a process that dies, so ``remove_abandoned`` can tell a
folder left by a dead process (its lock is free) from one in use right now by another
process (a ``perpsbot backup`` while the bot runs: its lock is held) and removes only
the first kind.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
# A staging folder without a lock file was made by a perpsbot from before the lock files;
# it may still be at work, so it is removed only this old.
UNLOCKED_STALE_SECONDS = 86_400


@contextlib.contextmanager
def staging_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new empty folder ``<parent>/<prefix><random>``, removed with its lock file at the end."""
    fd, lock_name = tempfile.mkstemp(prefix=prefix, suffix=LOCK_SUFFIX, dir=parent)
    lock = Path(lock_name)
    folder = lock.with_name(lock.name.removesuffix(LOCK_SUFFIX))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the file is new: nobody else holds it
        folder.mkdir(mode=0o700)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock.unlink(missing_ok=True)
        os.close(fd)


def remove_abandoned(parent: Path, prefix: str) -> list[Path]:
    """Delete the staging folders in ``parent`` whose process is gone; the ones deleted."""
    removed: list[Path] = []
    for lock in sorted(parent.glob(f"{prefix}*{LOCK_SUFFIX}")):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:  # finished meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: its process is alive and at work
                continue
            folder = lock.with_name(lock.name.removesuffix(LOCK_SUFFIX))
            if folder.exists():
                _remove(folder, removed)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    for folder in sorted(parent.glob(f"{prefix}*")):
        if folder.is_dir() and not folder.with_name(folder.name + LOCK_SUFFIX).exists():
            with contextlib.suppress(FileNotFoundError):  # finished meanwhile
                if time.time() - folder.stat().st_mtime > UNLOCKED_STALE_SECONDS:
                    _remove(folder, removed)
    return removed


def _remove(folder: Path, removed: list[Path]) -> None:
    size = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # another process may be removing it too
                size += os.stat(os.path.join(root, name)).st_size
    shutil.rmtree(folder, ignore_errors=True)
    removed.append(folder)
    log.info("removed %s, left by a killed backup or restore (%d bytes)", folder, size)
