"""BackupWorkflow: consistent online backups of a profile's stores, and their restore.

A backup is one ``perpsbot-<profile>-<UTC time>.tar.gz`` holding ``manifest.json``,
``events.db`` and ``orders.db``. Each database is copied with SQLite's online backup
API (a consistent snapshot while the bot keeps writing), scrubbed of secrets and
compacted (``VACUUM``, so no freed page keeps an old value), then checksummed. The
manifest records each database's sha256, size and schema version (``user_version``,
the number of store migrations applied), the time and the perpsbot version.

The checksums prove the archive is intact, not who wrote it: anyone can rewrite a
manifest to match altered databases. So the manifest is also signed (HMAC-SHA256) with
the store's own key, ``<store>/backup.key`` (random, 0600, made by the first backup and
never put in one).

A restore checks everything before it touches the store: the gzip stream's CRC, the
archive's members, the manifest and its signature (when the store has a key; without
one it says it could not), each database's checksum, integrity and schema version, and
that no bot holds the store (``StoreLock``). The databases it replaces are moved aside,
never deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import sqlite3
import tarfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from perpsbot import __version__
from perpsbot.config import BotConfig
from perpsbot.domain.clock import Clock
from perpsbot.files import fsync_dir
from perpsbot.redact import SHORTEST_SECRET, might_hold_secret, redact_text, redact_value, remember_config_secrets
from perpsbot.store import events as events_schema
from perpsbot.store import orders as orders_schema
from perpsbot.store.events import EventStore
from perpsbot.store.folder import STAMP, put_back, set_aside
from perpsbot.store.lock import StoreLock
from perpsbot.store.sqlite import StoreError, dumps
from perpsbot.store.staging import remove_abandoned, staging_folder

log = logging.getLogger(__name__)

FORMAT = "perpsbot-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTIAL = ".partial-"  # a backup's staging folder, in backup_dir
RESTORING = ".restore-"  # a restore's, in the store folder
DATABASES: dict[str, Sequence[str]] = {"events.db": events_schema.MIGRATIONS, "orders.db": orders_schema.MIGRATIONS}
NAME_RE = re.compile(r"^perpsbot-(?P<profile>[a-z]+)-(?P<stamp>\d{8}T\d{12}Z)\.tar\.gz$")
CHUNK = 1 << 20
KEY_FILE = "backup.key"
SIGNATURE = "signature"


class BackupError(StoreError):
    """A backup or restore that cannot be done, worded in one line."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    bytes: int
    duration_seconds: float
    manifest: dict[str, Any]
    deleted: list[Path] = field(default_factory=list)  # old backups removed by the retention policy


@dataclass(frozen=True)
class RestoreResult:
    manifest: dict[str, Any]
    replaced_dir: Path | None  # where the databases it replaced were moved (None: there were none)
    signature_checked: bool  # False: the store had no backup.key to check the manifest with


def backup_name(profile: str, created: datetime) -> str:
    return f"perpsbot-{profile}-{created.astimezone(UTC).strftime(STAMP)}.tar.gz"


class BackupWorkflow:
    def __init__(
        self,
        store_dir: Path,
        backup_dir: Path,
        profile: str,
        *,
        keep: int = 0,
        max_age: timedelta | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.backup_dir = backup_dir
        self.profile = profile
        self.keep = keep
        self.max_age = max_age

    @classmethod
    def from_config(cls, config: BotConfig) -> BackupWorkflow:
        remember_config_secrets(config)  # scrubbed from the copies literally, also where no pattern knows them
        days = config.backup_max_age_days
        return cls(
            config.store_dir,
            config.backup_path,
            config.profile.value,
            keep=config.backup_keep,
            max_age=timedelta(days=days) if days > 0 else None,
        )

    # ----- making a backup --------------------------------------------------------------

    def backup(self, now: datetime) -> BackupResult:
        """Write one backup and apply the retention policy (blocking; the bot runs it in a thread)."""
        started = time.perf_counter()
        missing = [name for name in DATABASES if not (self.store_dir / name).is_file()]
        if missing:
            raise BackupError(f"nothing to back up: {self.store_dir / missing[0]} does not exist")
        target = self.backup_dir.absolute() / backup_name(self.profile, now)
        if target.exists():
            raise BackupError(f"{target} already exists")
        key = backup_key(self.store_dir, create=True)
        if key is None:  # made a moment ago, gone now
            raise BackupError(f"cannot read the backup key {self.store_dir / KEY_FILE}: it was deleted")
        try:
            self.backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.remove_abandoned_staging()  # killed backups' copies: room for this one (never fails it)
            with staging_folder(self.backup_dir, PARTIAL) as staging:
                databases = {name: _snapshot(self.store_dir / name, staging / name) for name in DATABASES}
                manifest = {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "profile": self.profile,
                    "created_at": now.astimezone(UTC).isoformat(),
                    "perpsbot_version": __version__,
                    "databases": databases,
                }
                manifest = sign_manifest(manifest, key)
                _write_archive(staging / "archive", manifest, staging)
                os.replace(staging / "archive", target)
            fsync_dir(self.backup_dir)
        except sqlite3.Error as exc:
            raise BackupError(f"backup of {self.store_dir} failed: {exc}") from None
        except OSError as exc:
            raise BackupError(f"cannot write backup in {self.backup_dir}: {exc.strerror or exc}") from None
        deleted = self.prune(now)
        return BackupResult(target, target.stat().st_size, round(time.perf_counter() - started, 6), manifest, deleted)

    def backups(self) -> list[tuple[datetime, Path]]:
        """This profile's backups in ``backup_dir``, newest first."""
        if not self.backup_dir.is_dir():
            return []
        found = []
        for path in self.backup_dir.iterdir():
            match = NAME_RE.match(path.name)
            if match and match["profile"] == self.profile and path.is_file():
                found.append((datetime.strptime(match["stamp"], STAMP).replace(tzinfo=UTC), path))
        return sorted(found, reverse=True)

    def prune(self, now: datetime) -> list[Path]:
        """Delete backups past the newest ``keep`` or older than ``max_age``; the newest stays."""
        deleted = []
        for index, (created, path) in enumerate(self.backups()):
            if index == 0:
                continue
            too_many = self.keep > 0 and index >= self.keep
            too_old = self.max_age is not None and now - created > self.max_age
            if too_many or too_old:
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:  # the new backup is written: retention tries again next time
                    log.warning("retention: cannot delete %s: %s", path, exc.strerror or exc)
                    continue
                deleted.append(path)
        return deleted

    def remove_abandoned_staging(self) -> list[Path]:
        """The staging folders of backups and restores killed on the way (their process is
        gone), removed; a bot calls it at start. Never fails the caller."""
        removed = []
        for parent, prefix in ((self.backup_dir, PARTIAL), (self.store_dir, RESTORING)):
            try:
                removed += remove_abandoned(parent, prefix)
            except OSError as exc:
                log.warning("cannot clean staging folders in %s: %s", parent, exc.strerror or exc)
        return removed

    # ----- backups with their event ---------------------------------------------------

    def backup_and_record(self, events: EventStore, now: Callable[[], datetime]) -> BackupResult:
        """``backup`` plus its ``backup_completed`` / ``backup_failed`` event and log line."""
        try:
            result = self.backup(now())
        except BackupError as exc:
            self.record_failure(events, now(), exc)
            raise
        self.record(events, now(), result)
        return result

    async def run_and_record(self, events: EventStore, clock: Clock) -> BackupResult | None:
        """The bot's scheduled backup: in a worker thread, so cycles go on meanwhile. A failure
        is recorded and logged, never raised."""
        try:
            result = await asyncio.to_thread(self.backup, clock.now())
        except Exception as exc:  # noqa: BLE001 - a failed backup must not stop the bot
            self.record_failure(events, clock.now(), exc)
            return None
        self.record(events, clock.now(), result)
        return result

    @staticmethod
    def record(events: EventStore, at: datetime, result: BackupResult) -> None:
        fields = {"path": str(result.path), "bytes": result.bytes, "duration_seconds": result.duration_seconds}
        events.append(at, "backup_completed", None, **fields)
        log.info("backup written", extra={**fields, "deleted": [str(p) for p in result.deleted]})

    @staticmethod
    def record_failure(events: EventStore, at: datetime, exc: BaseException) -> None:
        error = str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
        events.append(at, "backup_failed", None, error=error)
        log.error("backup failed: %s", error)


# ----- restore ------------------------------------------------------------------------


def restore_backup(archive: Path, store_dir: Path, profile: str, now: datetime) -> RestoreResult:
    """Verify ``archive`` and put its databases in place of the store's, which are moved to
    ``<store_dir>/replaced-<time>/``. Refused while a bot runs on the store."""
    if not archive.is_file():
        raise BackupError(f"{archive}: no such file")
    with StoreLock(store_dir, holder="perpsbot restore"):
        key = backup_key(store_dir, create=False)
        remove_abandoned(store_dir, RESTORING)  # a killed restore's copies
        with staging_folder(store_dir, RESTORING) as staging:
            manifest = verify_backup(archive, staging, profile, key)
            replaced = _swap_in(staging, store_dir, now)
    return RestoreResult(manifest, replaced, signature_checked=key is not None)


def verify_backup(archive: Path, staging: Path, profile: str, key: bytes | None = None) -> dict[str, Any]:
    """Check ``archive`` whole and extract its databases into ``staging``; its manifest.
    With ``key`` (the store's backup key) the manifest's signature is checked too."""
    damaged = f"{archive} is not a perpsbot backup or is damaged"
    try:
        with gzip.open(archive, "rb") as stream:  # the CRC and length are checked at the end
            while stream.read(CHUNK):
                pass
        with tarfile.open(archive, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers()}
            if set(members) != {MANIFEST, *DATABASES} or not all(m.isfile() for m in members.values()):
                raise BackupError(f"{damaged} (unexpected contents)")
            manifest = _manifest(tar, members[MANIFEST], damaged)
            if key is not None:
                check_signature(manifest, key, archive)
            if manifest["profile"] != profile:
                raise BackupError(f"{archive} is a backup of profile '{manifest['profile']}', not '{profile}'")
            for name in DATABASES:
                _extract_checked(tar, members[name], staging / name, manifest["databases"][name], damaged)
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        raise BackupError(f"{damaged} ({_reason(exc)})") from None
    for name, migrations in DATABASES.items():
        _check_database(staging / name, name, manifest["databases"][name]["schema_version"], len(migrations), damaged)
    return manifest


def _manifest(tar: tarfile.TarFile, member: tarfile.TarInfo, damaged: str) -> dict[str, Any]:
    handle = tar.extractfile(member)
    try:
        manifest = json.loads(handle.read(1 << 20) if handle else b"")
    except (ValueError, UnicodeDecodeError):
        raise BackupError(f"{damaged} (unreadable manifest)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{damaged} (no perpsbot manifest)")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BackupError(f"{tar.name!s}: backup format {version} is newer than this perpsbot understands")
    entries = manifest.get("databases")
    valid = isinstance(manifest.get("profile"), str) and isinstance(entries, dict) and all(
        isinstance(entries.get(name), dict)
        and isinstance(entries[name].get("sha256"), str)
        and isinstance(entries[name].get("bytes"), int)
        and isinstance(entries[name].get("schema_version"), int)
        for name in DATABASES
    )
    if not valid:
        raise BackupError(f"{damaged} (incomplete manifest)")
    return manifest


# ----- signing the manifest -------------------------------------------------------------


def backup_key(store_dir: Path, *, create: bool) -> bytes | None:
    """The store's backup signing key (``<store>/backup.key``: 32 random bytes as hex, mode
    0600), made now when ``create`` and there is none; None when there is none. It stays
    with the store, never in a backup, so that a backup cannot vouch for itself."""
    path = store_dir / KEY_FILE
    if create and not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another backup made it meanwhile
        except OSError as exc:
            raise BackupError(f"cannot create the backup key {path}: {exc.strerror or exc}") from None
        else:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(32) + "\n")
                out.flush()
                os.fsync(out.fileno())
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BackupError(f"cannot read the backup key {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise BackupError(f"{path} is not a perpsbot backup key (64 hex digits)")
    return key


def _key_id(key: bytes) -> str:
    """Names the key in a signature (not the key: a hash of it), to tell 'another key' from 'changed'."""
    return hashlib.sha256(b"perpsbot backup key id:" + key).hexdigest()[:16]


def _mac(body: dict[str, Any], key: bytes) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def sign_manifest(manifest: dict[str, Any], key: bytes) -> dict[str, Any]:
    """The manifest with its ``signature``: HMAC-SHA256 of everything else in it (which
    holds each database's sha256), canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != SIGNATURE}
    return {**body, SIGNATURE: {"algorithm": "hmac-sha256", "key_id": _key_id(key), "value": _mac(body, key)}}


def check_signature(manifest: dict[str, Any], key: bytes, archive: Path) -> None:
    """Refuse a manifest not signed with ``key``: unsigned, signed with another key, or
    changed after it was signed."""
    signature = manifest.get(SIGNATURE)
    fields = ("algorithm", "key_id", "value")
    if not isinstance(signature, dict) or not all(isinstance(signature.get(f), str) for f in fields):
        raise BackupError(
            f"{archive}: the manifest is not signed, and this store has a {KEY_FILE}: refused (a backup made before "
            f"perpsbot signed them, or one whose signature was removed; to restore it anyway, move {KEY_FILE} away)"
        )
    if signature["algorithm"] != "hmac-sha256" or signature["key_id"] != _key_id(key):
        raise BackupError(
            f"{archive} was signed with another {KEY_FILE} than this store's: refused "
            f"(put back the {KEY_FILE} of the store that made it)"
        )
    body = {k: v for k, v in manifest.items() if k != SIGNATURE}
    if not hmac.compare_digest(signature["value"], _mac(body, key)):
        raise BackupError(
            f"{archive}: the manifest was changed after the backup was made (its signature does not match): refused"
        )


def _extract_checked(
    tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, entry: dict[str, Any], damaged: str
) -> None:
    source = tar.extractfile(member)
    if source is None:
        raise BackupError(f"{damaged} ({member.name} is not a file)")
    digest = hashlib.sha256()
    size = 0
    with open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    if size != entry["bytes"] or digest.hexdigest() != entry["sha256"]:
        raise BackupError(f"{damaged} (checksum mismatch for {member.name})")


def _check_database(path: Path, name: str, recorded: int, understood: int, damaged: str) -> None:
    try:
        conn = sqlite3.connect(path)
        try:
            ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{damaged} ({name}: {exc})") from None
    if ok != "ok" or version != recorded:
        raise BackupError(f"{damaged} ({name} fails its integrity or schema check)")
    if version > understood:
        raise BackupError(
            f"{name} in the backup has schema version {version}, newer than this perpsbot understands ({understood})"
        )


def _swap_in(staging: Path, store_dir: Path, now: datetime) -> Path | None:
    """Move the store's files aside (the databases with their -wal / -shm, and store.json,
    which the next start writes again from the restored orders.db), then the staged ones in."""
    moved: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        aside = set_aside(store_dir, now, moved)
        for name in DATABASES:
            os.replace(staging / name, store_dir / name)
            placed.append(store_dir / name)
        fsync_dir(store_dir)
    except OSError as exc:
        for path in placed:
            with contextlib.suppress(OSError):
                path.unlink()
        put_back(moved)
        raise BackupError(f"restore into {store_dir} failed, store left as it was: {exc.strerror or exc}") from None
    return aside


# ----- the pieces of a backup ---------------------------------------------------------


def _snapshot(source: Path, target: Path) -> dict[str, Any]:
    """A consistent, secret-free, compact copy of ``source``; its manifest entry."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        src.backup(dst)  # a consistent snapshot, also while the bot writes (WAL)
    finally:
        src.close()
    try:
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        _scrub(dst)
        dst.execute("VACUUM")  # rebuilds the file: freed pages and cells keep no old value
        version = int(dst.execute("PRAGMA user_version").fetchone()[0])
    finally:
        dst.close()
    return {"sha256": _sha256(target), "bytes": target.stat().st_size, "schema_version": version}


def _scrub(conn: sqlite3.Connection) -> None:
    """Redact secrets in every text value of the copy (a store written by an older
    perpsbot kept e.g. the API key name in its runs' config)."""
    conn.create_function("perpsbot_scrub", 1, scrub_value, deterministic=True)
    tables = [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )]
    for table in tables:
        columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
        for column in columns:
            conn.execute(
                f'UPDATE "{table}" SET "{column}" = perpsbot_scrub("{column}") '
                f'WHERE typeof("{column}") = \'text\' AND length("{column}") >= {SHORTEST_SECRET} '
                f'AND perpsbot_scrub("{column}") IS NOT "{column}"'
            )


def scrub_value(value: Any) -> Any:
    """A stored text value with its secrets redacted; JSON text keeps its layout unless a
    secret is found in it (then it is written back in the stores' own JSON form)."""
    if not isinstance(value, str) or not might_hold_secret(value):
        return value
    if value[:1] in ("{", "["):
        try:
            data = json.loads(value)
        except ValueError:
            return redact_text(value)
        cleaned = redact_value(data)
        return value if cleaned == data else dumps(cleaned)
    return redact_text(value)


def _write_archive(path: Path, manifest: dict[str, Any], staging: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # trading records: owner only
    created = datetime.fromisoformat(manifest["created_at"]).timestamp()
    with os.fdopen(fd, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
            body = json.dumps(manifest, indent=2, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(body), int(created), 0o600
            tar.addfile(info, io.BytesIO(body))
            for name in DATABASES:
                info = tar.gettarinfo(str(staging / name), arcname=name)
                info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = int(created), 0o600, 0, 0, "", ""
                with open(staging / name, "rb") as data:
                    tar.addfile(info, data)
        raw.flush()
        os.fsync(raw.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "truncated"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__
