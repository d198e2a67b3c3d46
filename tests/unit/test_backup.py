"""BackupWorkflow: round trips, refused damage, retention, locks and secrets."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import random
import sqlite3
import tarfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
from pydantic import SecretStr

from perpsbot.bot import PerpsBotBuilder
from perpsbot.config import BotConfig, ConfigError, load_config
from perpsbot.domain import Fill, Liquidity, Order, OrderType, Side
from perpsbot.domain.clock import ManualClock
from perpsbot.store import EventStore, OrdersStore
from perpsbot.store.backup import BackupError, BackupWorkflow, restore_backup
from perpsbot.store.events import MIGRATIONS as EVENT_MIGRATIONS
from perpsbot.store.lock import StoreLock, StoreLocked
from perpsbot.store.orders import MIGRATIONS as ORDER_MIGRATIONS
from perpsbot.store.sqlite import StoreError
from tests.unit.test_logs import ED25519, JWT, KEY_NAME, PEM, WEBHOOK

DASHBOARD_TOKEN = "d4shb0ard-t0ken-6b1f0c93e2"


NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def fill_store(store_dir: Path, orders: int = 30) -> None:
    """Stores with what a bot writes: runs, events, state, commands, orders and fills."""
    events = EventStore(store_dir / "events.db")
    book = OrdersStore(store_dir / "orders.db")
    run = events.start_run(NOW, "paper", {"symbols": ["BTC-USD"], "interval": 1.0})
    book.run_id = run
    for i in range(orders):
        at = NOW + timedelta(seconds=i)
        order = Order(f"pb-{i:032x}", "BTC-USD", Side.BUY if i % 2 else Side.SELL, OrderType.MARKET, D("0.5"), at)
        book.upsert(order)
        fill = Fill(f"t{i}", order.client_order_id, "BTC-USD", order.side, D(100 + i), D("0.5"), D("0.01"),
                    Liquidity.TAKER, at)
        order.record_fill(fill)
        book.add_fill(fill)
        book.upsert(order)
        events.append(at, "fill", "BTC-USD", trade_id=fill.trade_id, price=fill.price)
        events.append(at, "decision", "BTC-USD", target="LONG", reason="fast above slow", mark=D(100 + i))
    events.put_state("risk", {"peak": "100000", "mode": "normal"}, NOW)
    events.post_command(NOW, "kill", reason="test")
    events.end_run(NOW + timedelta(minutes=1), {"cycles": orders, "fees": "0.30"})
    events.close()
    book.close()


def dump(store_dir: Path) -> dict[str, list[tuple]]:
    """Every row of every table (rowids included) and each database's schema version."""
    out: dict[str, list[tuple]] = {}
    for name in ("events.db", "orders.db"):
        conn = sqlite3.connect(store_dir / name)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for table in tables:
            out[f"{name}:{table}"] = conn.execute(f'SELECT rowid, * FROM "{table}" ORDER BY rowid').fetchall()
        out[f"{name}:schema"] = [
            tuple(r) for r in conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")
        ]
        out[f"{name}:version"] = [conn.execute("PRAGMA user_version").fetchone()]
        conn.close()
    return out


def workflow(tmp_path: Path, **kw) -> BackupWorkflow:
    return BackupWorkflow(tmp_path / "store", tmp_path / "backups", "paper", **kw)


def test_backup_then_restore_gives_identical_tables_and_keeps_the_replaced_databases(tmp_path: Path):
    store = tmp_path / "store"
    fill_store(store)
    before = dump(store)
    result = workflow(tmp_path).backup(NOW)
    assert result.path.name == "perpsbot-paper-20260302T120000000000Z.tar.gz"
    assert result.bytes == result.path.stat().st_size and result.duration_seconds > 0
    manifest = result.manifest
    assert manifest["databases"]["events.db"]["schema_version"] == len(EVENT_MIGRATIONS) >= 2
    assert manifest["databases"]["orders.db"]["schema_version"] == len(ORDER_MIGRATIONS) >= 2
    assert manifest["perpsbot_version"] and manifest["created_at"] == NOW.isoformat()
    assert len(manifest["databases"]["events.db"]["sha256"]) == 64

    # the store moves on after the backup ...
    later = EventStore(store / "events.db")
    later.append(NOW, "error", None, error="after the backup")
    later.close()
    assert dump(store) != before
    # ... and the restore brings back exactly the backed-up state
    restored = restore_backup(result.path, store, "paper", NOW + timedelta(hours=1))
    assert dump(store) == before
    assert restored.replaced_dir is not None
    kept = EventStore(restored.replaced_dir / "events.db")
    assert kept.query(kind="error")[0].data == {"error": "after the backup"}  # nothing lost
    kept.close()
    # the restored stores open and read as usual
    events, book = EventStore(store / "events.db"), OrdersStore(store / "orders.db")
    assert events.count(kind="fill") == 30 and len(book.fills()) == 30
    events.close()
    book.close()


def test_a_backup_taken_while_a_writer_is_busy_is_a_consistent_snapshot(tmp_path: Path):
    store = tmp_path / "store"
    fill_store(store, orders=2)
    writer = EventStore(store / "events.db")
    writer.append(NOW, "decision", "BTC-USD", n=0)
    conn = writer._conn
    conn.execute("BEGIN")
    for n in range(1, 200):  # an open transaction: not committed, so not in the snapshot
        writer.append(NOW, "decision", "BTC-USD", n=n)
    result = workflow(tmp_path).backup(NOW)
    conn.execute("COMMIT")
    writer.close()
    target = tmp_path / "restored"
    restore_backup(result.path, target, "paper", NOW)
    restored = EventStore(target / "events.db")
    assert [e.data["n"] for e in restored.query(kind="decision") if "n" in e.data] == [0]
    restored.close()


def flipped(path: Path, offset: int, into: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    into.write_bytes(bytes(data))
    return into


def test_a_corrupted_backup_is_refused_and_the_store_is_untouched(tmp_path: Path):
    store = tmp_path / "store"
    fill_store(store)
    good = workflow(tmp_path).backup(NOW).path
    size = good.stat().st_size
    fill_store(tmp_path / "live")  # the store a bad restore must leave alone
    before = dump(tmp_path / "live")

    bad = flipped(good, size // 2, tmp_path / "flipped.tar.gz")
    with pytest.raises(BackupError, match="is not a perpsbot backup or is damaged"):
        restore_backup(bad, tmp_path / "live", "paper", NOW)
    for cut in (10, size // 3, size - 4, size - 1):
        truncated = tmp_path / f"cut{cut}.tar.gz"
        truncated.write_bytes(good.read_bytes()[:cut])
        with pytest.raises(BackupError, match="damaged"):
            restore_backup(truncated, tmp_path / "live", "paper", NOW)
    # any single flipped byte: refused, or (a gzip header field no check covers) the data is intact
    rng = random.Random(5)
    for offset in rng.sample(range(size), 40):
        target = tmp_path / "flips" / str(offset)
        target.mkdir(parents=True)
        try:
            restore_backup(flipped(good, offset, tmp_path / "f.tar.gz"), target, "paper", NOW)
        except BackupError as exc:
            assert "\n" not in str(exc)
            continue
        assert dump(target) == dump(store), f"a flip at {offset} was restored with different data"
    assert dump(tmp_path / "live") == before
    assert not any(p.name.startswith("replaced-") for p in (tmp_path / "live").iterdir())


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_foreign_files_other_profiles_and_newer_schemas_are_refused(tmp_path: Path):
    fill_store(tmp_path / "store")
    good = workflow(tmp_path).backup(NOW).path
    members = _members(good)
    not_gzip = tmp_path / "notes.txt"
    not_gzip.write_text("hello\n")
    cases = {
        not_gzip: "is not a perpsbot backup or is damaged",
        _archive(tmp_path / "other.tar.gz", {"readme.txt": b"hi"}): "unexpected contents",
        _archive(tmp_path / "nomanifest.tar.gz", {**members, "manifest.json": b"{}"}): "no perpsbot manifest",
    }
    manifest = json.loads(members["manifest.json"])
    # a database that claims a schema this code does not know, with a matching checksum
    newer = tmp_path / "newer.db"
    newer.write_bytes(members["events.db"])
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    body = newer.read_bytes()
    import hashlib

    manifest["databases"]["events.db"].update(
        sha256=hashlib.sha256(body).hexdigest(), bytes=len(body), schema_version=99
    )
    cases[
        _archive(
            tmp_path / "newer.tar.gz", {**members, "events.db": body, "manifest.json": json.dumps(manifest).encode()}
        )
    ] = "schema version 99, newer than this perpsbot understands"
    lying = json.loads(members["manifest.json"])
    lying["databases"]["orders.db"]["schema_version"] = 0  # checksum fine, schema version wrong
    cases[_archive(tmp_path / "lying.tar.gz", {**members, "manifest.json": json.dumps(lying).encode()})] = (
        "fails its integrity or schema check"
    )
    for archive, message in cases.items():
        with pytest.raises(BackupError, match=message):
            restore_backup(archive, tmp_path / "target", "paper", NOW)
    with pytest.raises(BackupError, match="is a backup of profile 'paper', not 'prod'"):
        restore_backup(good, tmp_path / "target", "prod", NOW)
    assert not (tmp_path / "target" / "events.db").exists()


def test_restore_is_refused_while_the_store_is_locked_and_works_once_released(tmp_path: Path):
    fill_store(tmp_path / "store")
    good = workflow(tmp_path).backup(NOW).path
    lock = StoreLock(tmp_path / "store").acquire()
    with pytest.raises(StoreLocked, match="in use by a perpsbot bot"):
        restore_backup(good, tmp_path / "store", "paper", NOW)
    with pytest.raises(StoreLocked):
        StoreLock(tmp_path / "store").acquire()  # a second bot too
    lock.release()
    assert restore_backup(good, tmp_path / "store", "paper", NOW).replaced_dir is not None


def test_retention_keeps_the_newest_n_and_drops_old_ones_but_never_the_newest(tmp_path: Path):
    fill_store(tmp_path / "store", orders=1)
    flow = workflow(tmp_path, keep=3, max_age=timedelta(days=2))
    made = [flow.backup(NOW + timedelta(hours=h)).path for h in range(5)]
    assert [p for _, p in flow.backups()] == made[:1:-1]  # the newest three
    later = flow.backup(NOW + timedelta(days=3))  # older than two days: all the others go
    assert [p for _, p in flow.backups()] == [later.path]
    assert sorted(later.deleted) == sorted(made[2:])
    lonely = workflow(tmp_path, keep=1, max_age=timedelta(seconds=1))
    assert lonely.prune(NOW + timedelta(days=400)) == [] and lonely.backups()[0][1] == later.path
    # other files in the folder are never touched
    (tmp_path / "backups" / "notes.txt").write_text("mine")
    (tmp_path / "backups" / "perpsbot-prod-20200101T000000000000Z.tar.gz").write_text("another profile")
    stale, fresh = tmp_path / "backups" / ".partial-killed", tmp_path / "backups" / ".partial-running"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (0, 0))  # a backup killed long ago left its staging folder
    flow.backup(NOW + timedelta(days=10))
    assert not stale.exists() and fresh.exists()
    assert (tmp_path / "backups" / "notes.txt").exists()
    assert (tmp_path / "backups" / "perpsbot-prod-20200101T000000000000Z.tar.gz").exists()


def test_a_missing_store_is_a_clear_failure_recorded_as_an_event(tmp_path: Path):
    events = EventStore(tmp_path / "elsewhere" / "events.db")
    with pytest.raises(BackupError, match="nothing to back up"):
        workflow(tmp_path).backup_and_record(events, lambda: NOW)
    failed = events.query(kind="backup_failed")
    assert len(failed) == 1 and "nothing to back up" in failed[0].data["error"]
    events.close()


def _raw_text(archive: Path) -> str:
    """The archive's bytes and its members' bytes, as text, for a secret search."""
    with gzip.open(archive, "rb") as stream:
        inner = stream.read()
    return (archive.read_bytes() + inner).decode("latin-1")


def test_secrets_in_an_old_store_never_reach_a_backup(tmp_path: Path):
    """A store written before runs masked their config, with secret text in events too; the
    row was rewritten once, so the old value also sits in freed space of the page."""
    store = tmp_path / "store"
    events = EventStore(store / "events.db")
    config = {"api_key_name": KEY_NAME, "api_private_key": PEM, "alert_webhook_url": WEBHOOK, "interval": 1.0}
    run = events.start_run(NOW, "paper", config)
    events.append(NOW, "error", None, stage="account", error=f"401 for {JWT} signed with {ED25519}")
    events.end_run(NOW, {"cycles": 1})
    gone = events.post_command(NOW, "notify", url=WEBHOOK, note=f"key {KEY_NAME}")
    events._conn.execute(
        "DELETE FROM commands WHERE id = ?", (gone,)
    )  # without secure_delete its bytes stay in the page
    events.close()
    OrdersStore(store / "orders.db").close()
    assert KEY_NAME.encode() in (store / "events.db").read_bytes()
    result = workflow(tmp_path).backup(NOW)
    text = _raw_text(result.path)
    for secret in (KEY_NAME, JWT, ED25519, WEBHOOK, *PEM.splitlines()[1:-1]):
        assert secret not in text
    target = tmp_path / "restored"
    restore_backup(result.path, target, "paper", NOW)
    restored = EventStore(target / "events.db")
    (kept,) = restored.runs()
    assert kept.id == run and kept.config["interval"] == 1.0 and kept.config["api_key_name"] == "[REDACTED]"
    assert kept.summary == {"cycles": 1}
    assert restored.query(kind="error")[0].data["stage"] == "account"
    restored.close()


async def test_the_bot_backs_up_on_schedule_and_its_backups_hold_no_secret(tmp_path: Path):
    clock = ManualClock(NOW)
    config = BotConfig(
        data_dir=tmp_path / "data", backup_every_minutes=5, api_key_name=KEY_NAME,
        api_private_key=SecretStr(PEM), interval=1.0, bar_seconds=1, short_window=2, long_window=4,
        alert_webhook_url=SecretStr(WEBHOOK), dashboard_token=SecretStr(DASHBOARD_TOKEN),
    )
    bot = await PerpsBotBuilder(config).with_clock(clock).build()
    await bot.start()
    try:
        for _ in range(3):
            clock.advance(1)
            await bot.run_cycle()
        clock.advance(5 * 60)  # the backup timer fires; the backup runs in a worker thread
        events = bot.registry.events
        for _ in range(500):
            if events.count(kind="backup_completed"):
                break
            await asyncio.sleep(0.01)
        (done,) = events.query(kind="backup_completed")
        assert set(done.data) == {"path", "bytes", "duration_seconds"}
        path = Path(done.data["path"])
        assert path.parent == config.store_dir / "backups" and path.stat().st_size == done.data["bytes"]
        assert done.run_id == events.run_id
    finally:
        await bot.shutdown()
    StoreLock(config.store_dir).acquire().release()  # the bot let go of its store
    text = _raw_text(path)
    for secret in (KEY_NAME, WEBHOOK, DASHBOARD_TOKEN, *PEM.splitlines()[1:-1]):
        assert secret not in text
    assert '"profile":"paper"' in text  # the runs' config is in there, masked


async def test_a_backup_under_way_at_shutdown_finishes_and_is_recorded(tmp_path: Path):
    clock = ManualClock(NOW)
    config = BotConfig(data_dir=tmp_path / "data", backup_every_minutes=1, bar_seconds=1, short_window=2, long_window=4)
    bot = await PerpsBotBuilder(config).with_clock(clock).build()
    await bot.start()
    await bot.run_cycle()
    clock.advance(60)
    for _ in range(3):
        await asyncio.sleep(0)  # the timer fires and the backup thread starts
    await bot.shutdown()
    events = EventStore(config.store_dir / "events.db")
    (done,) = events.query(kind="backup_completed")
    assert Path(done.data["path"]).is_file()
    (last,) = events.query(limit=1)
    assert last.kind == "bot_stopped" and done.id < last.id  # recorded before the stores closed
    events.close()


def test_an_old_backup_that_cannot_be_deleted_does_not_fail_the_new_one(tmp_path: Path, monkeypatch, caplog):
    fill_store(tmp_path / "store", orders=1)
    flow = workflow(tmp_path, keep=1)
    old = flow.backup(NOW).path
    unlink = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if self == old:
            raise PermissionError(13, "Permission denied", str(self))
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    events = EventStore(tmp_path / "store" / "events.db")
    result = flow.backup_and_record(events, lambda: NOW + timedelta(hours=1))  # written and recorded
    assert result.path.exists() and result.deleted == [] and old.exists()
    assert events.count("backup_completed") == 1 and events.count("backup_failed") == 0
    assert any("cannot delete" in r.getMessage() and str(old) in r.getMessage() for r in caplog.records)
    events.close()


def test_a_backup_key_deleted_as_it_is_made_is_one_clear_error_and_no_backup(tmp_path: Path, monkeypatch):
    fill_store(tmp_path / "store", orders=1)
    read_text = Path.read_text

    def gone(self: Path, *args, **kwargs) -> str:
        if self.name == "backup.key":
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", gone)
    with pytest.raises(BackupError, match=r"cannot read the backup key .*backup\.key: it was deleted"):
        workflow(tmp_path).backup(NOW)
    assert not (tmp_path / "backups").exists() or not any((tmp_path / "backups").iterdir())


def test_a_store_folder_that_cannot_exist_is_a_store_error_in_one_line(tmp_path: Path):
    (tmp_path / "data").write_text("a file, not a folder")
    with pytest.raises(StoreError, match=r"^cannot use the store folder .*data/paper: Not a directory$"):
        StoreLock(tmp_path / "data" / "paper").acquire()
    with pytest.raises(StoreError, match="cannot use the store folder"):
        restore_backup(tmp_path / "data", tmp_path / "data" / "paper", "paper", NOW)  # a file, so it gets this far


@pytest.mark.parametrize("minutes", ["0.01", "0.5", "-1"])
def test_a_backup_period_under_a_minute_is_one_clear_line(minutes: str):
    with pytest.raises(ConfigError) as raised:
        load_config(flags={"backup_every_minutes": minutes})
    message = str(raised.value)
    assert "backup_every_minutes" in message and "\n" not in message


def test_zero_keep_and_zero_max_age_mean_no_limit(tmp_path: Path):
    config = BotConfig(data_dir=tmp_path / "data", backup_keep=0, backup_max_age_days=0)
    fill_store(config.store_dir, orders=1)
    flow = BackupWorkflow.from_config(config)
    made = [flow.backup(NOW + timedelta(days=100 * n)).path for n in range(3)]  # far apart, none too old
    assert [p for _, p in flow.backups()] == made[::-1]



def test_a_manifest_rewritten_to_match_altered_data_is_refused_by_its_signature(tmp_path: Path):
    import hashlib

    store = tmp_path / "store"
    fill_store(store)
    good = workflow(tmp_path).backup(NOW).path
    members = _members(good)
    # alter a fill's price in the backed-up orders.db, then rewrite the manifest to match
    altered = tmp_path / "altered.db"
    altered.write_bytes(members["orders.db"])
    conn = sqlite3.connect(altered)
    conn.execute("UPDATE fills SET price = '1' WHERE rowid = 1")
    conn.commit()
    conn.close()
    body = altered.read_bytes()
    manifest = json.loads(members["manifest.json"])
    manifest["databases"]["orders.db"].update(sha256=hashlib.sha256(body).hexdigest(), bytes=len(body))
    tampered = _archive(tmp_path / "tampered.tar.gz", {**members, "orders.db": body,
                                                        "manifest.json": json.dumps(manifest).encode()})
    before = dump(store)
    with pytest.raises(BackupError, match="the manifest was changed after the backup was made"):
        restore_backup(tampered, store, "paper", NOW)
    del manifest["signature"]
    unsigned = _archive(tmp_path / "unsigned.tar.gz", {**members, "orders.db": body,
                                                        "manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(BackupError, match=r"the manifest is not signed, and this store has a backup\.key: refused"):
        restore_backup(unsigned, store, "paper", NOW)
    other = tmp_path / "other"
    fill_store(other, orders=1)
    BackupWorkflow(other, tmp_path / "other-backups", "paper").backup(NOW)  # its own, different key
    with pytest.raises(BackupError, match=r"was signed with another backup\.key than this store's"):
        restore_backup(good, other, "paper", NOW)
    assert dump(store) == before
    # the untouched backup restores, checked; into a store without a key it restores unchecked, and says so
    assert restore_backup(good, store, "paper", NOW).signature_checked is True
    assert restore_backup(good, tmp_path / "new", "paper", NOW).signature_checked is False
    key_file = store / "backup.key"  # made by the first backup, owner-only, never in a backup
    assert key_file.stat().st_mode & 0o777 == 0o600 and set(members) == {"manifest.json", "events.db", "orders.db"}
