"""The profile's store folder: which files are its store, whether a store lived there, and
the check a bot makes before it opens one.

SQLite makes a new, empty database of a missing or 0-byte file, and ``OrdersStore`` a new
id prefix for an ``orders.db`` without one. Done to a store that existed, that loses
everything it knew: earlier orders become foreign, orders of unknown fate are never
resolved, a saved kill or reduce-only state is gone. So a store that existed is checked
first, and one that is missing or damaged is refused (``StoreDamaged``), never replaced
behind the user's back; ``set_aside`` moves its files away (never deletes them) when the
user asks for new stores.

A store "existed" when the folder holds ``store.json``, the marker written once the stores
are first made (the id prefix and the time), or a database holding anything a bot recorded
(a store made before the marker). The marker outlives the databases, so deleting both of
them is noticed too. A folder with neither (logs and a ``KILL`` file do not count; nor do
databases without a record, left by a first start killed while it made them) is a fresh
profile.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from perpsbot.files import fsync_dir, write_private
from perpsbot.store.events import EventStore
from perpsbot.store.orders import OrdersStore
from perpsbot.store.sqlite import StoreError, is_disk_full

log = logging.getLogger(__name__)

MARKER = "store.json"
DATABASE_FILES = ("events.db", "orders.db")
# The tables a bot's records are in, by database (orders.db's meta holds only the id prefix).
RECORD_TABLES = {"events.db": ("runs", "events", "state", "commands"), "orders.db": ("orders", "fills")}
SIDE_FILES = ("", "-wal", "-shm")  # a WAL database is these three files
STAMP = "%Y%m%dT%H%M%S%fZ"  # times in the names of backups and of set-aside folders


class StoreDamaged(StoreError):
    """A store that existed is missing or damaged; nothing was replaced."""

    def __init__(self, store_dir: Path, problem: str) -> None:
        self.problem = problem
        super().__init__(f"the store in {store_dir} is damaged: {problem}; nothing was replaced")


@dataclass(frozen=True)
class StoreState:
    existed: bool  # the folder holds a store's files (a fresh profile: False)
    problem: str | None  # what is missing or damaged (None: fresh, or intact)
    marked: bool = False  # store.json is there and readable


@dataclass(frozen=True)
class StoreReplaced:
    """New stores were started in place of a damaged one, whose files were kept."""

    problem: str
    kept_in: Path


@dataclass(frozen=True)
class OpenedStores:
    events: EventStore
    orders: OrdersStore
    replaced: StoreReplaced | None = None


def inspect_store(store_dir: Path, *, thorough: bool) -> StoreState:
    """Whether a store lived in ``store_dir`` and what, if anything, is wrong with it; opens
    nothing for writing and creates nothing. ``thorough`` adds SQLite's ``quick_check`` of
    every page (0.3 s for a 270 MB database; ``integrity_check``, which also cross-checks
    every index entry, took twice that and grows faster)."""
    present = [name for name in DATABASE_FILES if any((store_dir / f"{name}{s}").exists() for s in SIDE_FILES)]
    if not (store_dir / MARKER).exists() and not any(_holds_records(store_dir, name) for name in present):
        return StoreState(existed=False, problem=None)
    missing = [name for name in DATABASE_FILES if not (store_dir / name).is_file()]
    if missing:
        return StoreState(True, f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    for name in DATABASE_FILES:
        problem = _database_problem(store_dir / name, thorough)
        if problem is not None:
            return StoreState(True, f"{name} {problem}")
    marked = read_marker(store_dir)
    return StoreState(True, _identity_problem(store_dir / "orders.db", marked), marked is not None)


def _holds_records(store_dir: Path, name: str) -> bool:
    """Whether a database holds anything a bot recorded; True when that cannot be read (it may)."""
    path = store_dir / name
    if not path.is_file():
        return True  # only its -wal / -shm: what was in it is gone
    if path.stat().st_size == 0:
        return False
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return any(
                conn.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone() is not None
                for table in RECORD_TABLES[name] if table in tables
            )
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return True


def _database_problem(path: Path, thorough: bool) -> str | None:
    if path.stat().st_size == 0:
        return "is empty (0 bytes)"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)  # never creates the file
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                return "holds no perpsbot tables"
            if thorough:
                verdict = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
                if verdict != "ok":
                    return f"is damaged (quick_check: {' '.join(verdict.split())})"  # one line
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return f"is not a readable SQLite database ({exc})"
    return None


def _identity_problem(orders_db: Path, marked_prefix: str | None) -> str | None:
    """orders.db's id prefix is what makes its orders ours: lost, or another store's, the
    store is not the one that was here."""
    conn = sqlite3.connect(f"{orders_db.resolve().as_uri()}?mode=rw", uri=True)
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < 2:
            return None  # from before the id prefix (migration 2 makes one)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'id_prefix'").fetchone()
        except sqlite3.OperationalError:  # the meta table itself is gone
            row = None
    finally:
        conn.close()
    if row is None:
        return "orders.db has lost its id prefix (meta row id_prefix)"
    if marked_prefix is not None and row[0] != marked_prefix:
        return f"orders.db belongs to another store (id prefix {row[0]}, {MARKER} records {marked_prefix})"
    return None


def read_marker(store_dir: Path) -> str | None:
    """The id prefix ``store.json`` records (None: no marker, or one that cannot be read,
    which the next start writes again from an intact orders.db)."""
    path = store_dir / MARKER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.warning("%s cannot be read (%s); it is written again from orders.db", path, exc)
        return None
    prefix = data.get("id_prefix") if isinstance(data, dict) else None
    return prefix if isinstance(prefix, str) else None


def write_marker(store_dir: Path, id_prefix: str, now: datetime) -> None:
    """``store.json`` (0600), written whole or not at all."""
    body = json.dumps({"id_prefix": id_prefix, "created_at": now.astimezone(UTC).isoformat()}, indent=2) + "\n"
    write_private(store_dir / MARKER, body.encode("utf-8"))


def open_stores(store_dir: Path, now: datetime, new_store: Callable[[str], bool] | None = None) -> OpenedStores:
    """The profile's stores, checked first (call it holding the ``StoreLock``).

    A fresh folder gets new stores, as does a damaged store when ``new_store(problem)``
    confirms it (its files are set aside first); a damaged store is otherwise refused with
    ``StoreDamaged``. ``new_store`` with an intact store is refused: it replaces nothing
    that works."""
    state = inspect_store(store_dir, thorough=True)
    replaced = None
    if state.problem is not None:
        if new_store is None:
            raise StoreDamaged(store_dir, state.problem)
        if not new_store(state.problem):
            raise StoreError("new stores not confirmed; nothing was changed")
        replaced = StoreReplaced(state.problem, _set_aside_all(store_dir, now))
        log.warning("store replaced: %s; the old files are kept in %s", state.problem, replaced.kept_in)
    elif new_store is not None and state.existed:
        raise StoreError(
            f"the store in {store_dir} is intact; new stores are started only in place of a missing or damaged one"
        )
    events = EventStore(store_dir / "events.db")
    try:
        orders = OrdersStore(store_dir / "orders.db")
    except BaseException:
        events.close()
        raise
    if replaced is not None or not state.marked:  # new stores, or intact ones made before store.json
        try:
            write_marker(store_dir, orders.id_prefix, now)
        except OSError as exc:
            events.close()
            orders.close()
            if is_disk_full(exc):
                raise  # the bot says "disk full"
            raise StoreError(f"cannot write {store_dir / MARKER}: {exc.strerror or exc}") from None
    return OpenedStores(events, orders, replaced)


def store_files(store_dir: Path) -> list[Path]:
    """The store's files present in ``store_dir``: both databases with their WAL files,
    and the marker."""
    names = [f"{name}{suffix}" for name in DATABASE_FILES for suffix in SIDE_FILES] + [MARKER]
    return [store_dir / name for name in names if (store_dir / name).exists()]


def set_aside(store_dir: Path, now: datetime, moved: list[tuple[Path, Path]]) -> Path | None:
    """Move the store's files to ``<store_dir>/replaced-<time>/``; the folder (None: there
    were none). Each move is added to ``moved`` (kept, original) as it is made, so that a
    caller can ``put_back`` what was moved when a later step fails."""
    aside = store_dir / f"replaced-{now.astimezone(UTC).strftime(STAMP)}"
    for current in store_files(store_dir):
        aside.mkdir(exist_ok=True)
        os.replace(current, aside / current.name)
        moved.append((aside / current.name, current))
    return aside if moved else None


def put_back(moved: list[tuple[Path, Path]]) -> None:
    for kept, original in reversed(moved):
        try:
            os.replace(kept, original)
        except OSError as exc:
            log.error("cannot move %s back to %s: %s", kept, original, exc.strerror or exc)


def _set_aside_all(store_dir: Path, now: datetime) -> Path:
    moved: list[tuple[Path, Path]] = []
    try:
        aside = set_aside(store_dir, now, moved)
        fsync_dir(store_dir)
    except OSError as exc:
        put_back(moved)
        raise StoreError(f"cannot move the damaged store in {store_dir} aside: {exc.strerror or exc}") from None
    assert aside is not None  # a damaged store has at least one file (else it would be fresh)
    return aside
