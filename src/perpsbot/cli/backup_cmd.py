"""``perpsbot backup | restore``: copies of a profile's stores, and putting one back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from perpsbot.cli.common import ConfigOpt, ProfileOpt, UserError, check_store, console, load
from perpsbot.store import EventStore, StoreError
from perpsbot.store.backup import DATABASES, KEY_FILE, BackupWorkflow, restore_backup


def backup(profile: ProfileOpt = None, config: ConfigOpt = None) -> None:
    """Back up the profile's stores now (also while the bot runs); old backups are pruned."""
    cfg = load({"profile": profile}, config).config
    check_store(cfg)  # a backup of a damaged store is no backup
    missing = [name for name in DATABASES if not (cfg.store_dir / name).is_file()]
    if missing:
        raise UserError(f"nothing to back up for profile '{cfg.profile.value}': no {missing[0]} in {cfg.store_dir}")
    try:
        events = EventStore(cfg.store_dir / "events.db")
    except StoreError as exc:
        raise UserError(str(exc)) from None
    try:
        result = BackupWorkflow.from_config(cfg).backup_and_record(events, lambda: datetime.now(UTC))
    except StoreError as exc:
        raise UserError(str(exc)) from None
    finally:
        events.close()
    console.print(
        f"backup written: {result.path} ({result.bytes:,} bytes in {result.duration_seconds:.2f} s)", highlight=False
    )
    if result.deleted:
        console.print(f"retention: deleted {len(result.deleted)} older backup(s)", highlight=False)


def restore(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="a backup written by `perpsbot backup`", show_default=False)
    ],
    profile: ProfileOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Replace the profile's stores with a verified backup; refused while the bot runs."""
    cfg = load({"profile": profile}, config).config
    try:
        result = restore_backup(file, cfg.store_dir, cfg.profile.value, datetime.now(UTC))
    except StoreError as exc:
        raise UserError(str(exc)) from None
    console.print(
        f"restored {file} (made {result.manifest['created_at']}) into {cfg.store_dir}", highlight=False
    )
    if result.replaced_dir is not None:
        console.print(f"the databases it replaced are kept in {result.replaced_dir}", highlight=False)
    if result.signature_checked:
        console.print(f"manifest signature checked with {cfg.store_dir / KEY_FILE}", highlight=False)
    else:
        console.print(
            f"note: the manifest's signature was not checked: no {KEY_FILE} in {cfg.store_dir}; its checksums show "
            "the backup is intact, not that this store's perpsbot made it",
            highlight=False,
        )
