"""SpareSpace: a few MiB held on the store's disk, so that a bot the disk filled up under
can still record why it stopped.

The file is allocated for real (``posix_fallocate``, or zeros where that is missing): a
sparse file would free nothing. The bot makes it at start and deletes it when a write
fails for want of space, just before it writes its last records.
"""

from __future__ import annotations

import os
from pathlib import Path

from perpsbot.store.sqlite import DiskFull, StoreError, is_disk_full

SPARE_FILE = "disk-spare"
SPARE_BYTES = 4 << 20  # a bot_stopped event, the run's summary and a few kept-back events, many times over
CHUNK = 1 << 16


class SpareSpace:
    def __init__(self, store_dir: Path) -> None:
        self.path = store_dir / SPARE_FILE

    def reserve(self) -> None:
        """Hold ``SPARE_BYTES`` in the file; ``DiskFull`` when the disk has not that much room."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if os.fstat(fd).st_blocks * 512 < SPARE_BYTES:  # allocated, not only sized
                    _allocate(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if is_disk_full(exc):
                self.path.unlink(missing_ok=True)
                raise DiskFull(
                    f"no room for {SPARE_BYTES >> 20} MiB of spare space in {self.path.parent} "
                    f"({exc.strerror or exc}); free space on that disk, then start again"
                ) from None
            raise StoreError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def release(self) -> bool:
        """Free the space (for the last records after the disk filled up); False: there was none."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


def _allocate(fd: int) -> None:
    if hasattr(os, "posix_fallocate"):  # not on macOS
        try:
            os.posix_fallocate(fd, 0, SPARE_BYTES)
            return
        except OSError as exc:
            if is_disk_full(exc):
                raise
            # a file system that cannot preallocate: the zeros below
    zeros = bytes(CHUNK)
    os.lseek(fd, 0, os.SEEK_SET)
    for _ in range(SPARE_BYTES // CHUNK):
        os.write(fd, zeros)
    os.fsync(fd)
