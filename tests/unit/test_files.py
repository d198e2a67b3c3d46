"""The one atomic private-file write (store marker, dashboard token, simulator TLS key)."""

from __future__ import annotations

import os
import stat

import pytest

from perpsbot.files import write_private


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_owner_only_even_over_a_wider_leftover_temporary(tmp_path) -> None:
    target = tmp_path / "secret"
    leftover = tmp_path / ".secret.tmp"
    leftover.write_bytes(b"old")
    os.chmod(leftover, 0o644)
    write_private(target, b"new")
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o600
    assert not leftover.exists()


def test_replaces_a_wider_target_with_an_owner_only_one(tmp_path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"old")
    os.chmod(target, 0o644)
    write_private(target, b"new")
    assert (target.read_bytes(), _mode(target)) == (b"new", 0o600)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"old")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        write_private(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]
