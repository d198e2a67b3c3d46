"""StoreLock: one process at a time owns a store directory.

An exclusive ``flock`` on ``<store_dir>/bot.lock``, held by a running bot (and by
``perpsbot restore`` while it swaps databases). The kernel drops it when the holder
exits, however it exits (SIGKILL, power cut of the process), so it never goes stale the
way a pid file does. The pid written into the file is only for the error message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from perpsbot.store.sqlite import StoreError

LOCK_FILE = "bot.lock"


class StoreLocked(StoreError):
    """Another process holds the store."""


class StoreLock:
    def __init__(self, store_dir: Path, holder: str = "a perpsbot bot") -> None:
        self.path = store_dir / LOCK_FILE
        self._holder = holder
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        """Take the lock or raise ``StoreLocked`` at once (never waits)."""
        if self._fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:  # e.g. data_dir is a file, or not writable
            raise StoreError(f"cannot use the store folder {self.path.parent}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = _read_owner(fd)
            os.close(fd)
            raise StoreLocked(
                f"{self.path.parent} is in use by {owner}; stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self._holder}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_owner(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    pid, _, holder = text.partition(" ")
    return f"{holder} (pid {pid})" if pid.isdigit() and holder else "another perpsbot process"
