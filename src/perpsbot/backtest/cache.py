"""The parse cache: a candle file's rows as parsed, kept beside it for the next load.

``<folder>/.perpsbot-cache/<file name>.arrow`` is an Arrow IPC file of the rows as
``columns.read_rows`` returns them — checked row by row, before any repair or
``--timeframe``, so a load from the cache gives what a load from the file gives,
with any flags. Memory-mapped, it reads in milliseconds where parsing a CSV takes
a second.

It is used while the file is the one it was made from: the same resolved path, size
and modification time, and the same ``FORMAT``. A file stamped less than ``RACY_NS``
after its last change could change again within the file system's timestamp
resolution and keep both, so its cache also records the file's crc32 and is used
only while that matches. Each column carries its crc32 too: a cache that does not
read back whole is never trusted — the file is parsed again, with a warning, and the
cache written anew. A folder that cannot be written costs the cache, not the load.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints

from perpsbot.backtest.columns import Rows

FOLDER = ".perpsbot-cache"
FORMAT = 1  # raised whenever what a cache file holds or means changes
RACY_NS = 2_000_000_000
COLUMNS = ("start", "open", "high", "low", "close", "volume")
KEY = b"perpsbot"


@dataclass(frozen=True)
class Stamp:
    """A candle file as it was when read: what its cache is keyed by."""

    source: str  # resolved path
    size: int
    mtime_ns: int
    taken_ns: int  # when it was stamped

    @property
    def racy(self) -> bool:
        return self.taken_ns - self.mtime_ns < RACY_NS


def stamp(path: Path) -> Stamp:
    taken = time.time_ns()
    st = path.stat()
    return Stamp(str(path.resolve()), st.st_size, st.st_mtime_ns, taken)


def cache_path(path: Path) -> Path:
    return path.parent / FOLDER / f"{path.name}.arrow"


def load(path: Path, warnings: list[str]) -> Rows | None:
    """The cached rows of ``path``, or None: no cache, out of date, or damaged (warned)."""
    target = cache_path(path)
    if not target.is_file():
        return None
    try:
        table = pa.ipc.open_file(pa.memory_map(str(target))).read_all()
        meta = json.loads(table.schema.metadata[KEY])
        current = meta["format"] == FORMAT and _matches(path, meta)
        rows = _rows(table, meta) if current else None
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError) as exc:
        warnings.append(f"the parse cache {target} is damaged ({_reason(exc)}): {path.name} was parsed again")
        return None
    return rows


def _matches(path: Path, meta: dict[str, Any]) -> bool:
    now = stamp(path)
    if (meta["source"], meta["size"], meta["mtime_ns"]) != (now.source, now.size, now.mtime_ns):
        return False
    return meta["source_crc"] is None or meta["source_crc"] == _file_crc(path)


def _rows(table: pa.Table, meta: dict[str, Any]) -> Rows:
    if table.schema.names != list(COLUMNS) or any(t != pa.float64() for t in table.schema.types):
        raise ValueError(f"columns {', '.join(table.schema.names)}")
    arrays: dict[str, np.ndarray] = {}
    for name in COLUMNS:
        column = table.column(name).combine_chunks()
        values = column.to_numpy(zero_copy_only=False)
        if column.null_count or _crc(values) != meta["crc"][name]:
            raise ValueError(f"column {name} does not match its checksum")
        arrays[name] = values
    return Rows(bool(meta["has_volume"]), str(meta["note"]), **arrays)


def store(path: Path, before: Stamp, rows: Rows, warnings: list[str]) -> None:
    """Write the cache of ``path`` as stamped ``before`` it was parsed (a change while
    it was parsed makes the cache out of date at once)."""
    target = cache_path(path)
    meta = {
        "format": FORMAT, "source": before.source, "size": before.size, "mtime_ns": before.mtime_ns,
        "source_crc": _file_crc(path) if before.racy else None,
        "has_volume": rows.has_volume, "note": rows.note,
        "crc": {name: _crc(getattr(rows, name)) for name in COLUMNS},
    }
    table = pa.table({name: getattr(rows, name) for name in COLUMNS}).replace_schema_metadata(
        {KEY: json.dumps(meta)}
    )
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(exist_ok=True)
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(OSError):  # nothing left behind, if it was made at all
            partial.unlink(missing_ok=True)
        warnings.append(f"could not write the parse cache {target} ({_reason(exc)}): "
                        f"the next load parses {path.name} again")


def _crc(values: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(values).data)


def _file_crc(path: Path) -> int:
    crc = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
