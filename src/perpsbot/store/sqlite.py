"""SQLite plumbing shared by the stores: WAL, versioned schema, JSON columns."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any


class StoreError(RuntimeError):
    pass


class DiskFull(StoreError):
    """The disk under a store is full: what the bot does could no longer be recorded, so it
    stops. ``outcome`` (set by the bot) says what its last records could say."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.outcome: str | None = None

    def __str__(self) -> str:
        return f"disk full: {self.detail}" + (f"; {self.outcome}" if self.outcome else "")


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's "database or disk is full", or a write refused for want of space (or quota)."""
    if isinstance(exc, sqlite3.Error):
        return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__}")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_default, separators=(",", ":"), sort_keys=True)


def open_db(path: Path, migrations: Sequence[str], *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open (creating if needed) a database and bring its schema to the latest version.

    ``migrations[i]`` takes the schema from version ``i`` to ``i + 1``. A database
    newer than this code is refused rather than guessed at.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.row_factory = sqlite3.Row
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if is_disk_full(exc):
            raise  # the disk's fault, not the database's
        raise StoreError(f"{path}: not a usable SQLite database ({exc})") from None
    keep_private(path)
    if version > len(migrations):
        conn.close()
        raise StoreError(
            f"{path}: schema version {version} is newer than this perpsbot understands ({len(migrations)})"
        )
    for target, script in enumerate(migrations[version:], start=version + 1):
        with conn:
            conn.execute("BEGIN")
            for statement in filter(None, (s.strip() for s in script.split(";"))):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={target}")
    return conn


def keep_private(path: Path) -> None:
    """Owner-only (0600) permissions on a database and its ``-wal`` / ``-shm``, like the
    backups: the records hold every order and fill. SQLite gives a ``-wal`` / ``-shm`` it
    creates later the database's own mode, so once is enough; an older, wider file is
    tightened here too."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)


def where_equal(**filters: Any) -> tuple[str, list[Any]]:
    """``WHERE a = ? AND b = ?`` for the filters that are not None, and their values."""
    given = {column: value for column, value in filters.items() if value is not None}
    if not given:
        return "", []
    return "WHERE " + " AND ".join(f"{column} = ?" for column in given), list(given.values())

