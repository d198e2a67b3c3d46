"""``perpsbot backup | restore`` against a real bot process and its store lock."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from perpsbot.store import EventStore
from tests.integration.test_cli_basics import perpsbot
from tests.integration.test_cli_run import FAST


def _count(db: Path, kind: str) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT COUNT(*) FROM events WHERE kind = ?", (kind,)).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _start_bot(tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPSBOT_")}
    return subprocess.Popen(
        [sys.executable, "-m", "perpsbot", "run", "--duration", "60", "--seed", "3", *FAST, *extra],
        cwd=tmp_path, env={**env, "COLUMNS": "200"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True,
    )


def _wait_started(proc: subprocess.Popen, events_db: Path) -> None:
    deadline = time.monotonic() + 30
    while _count(events_db, "bot_started") == 0:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the bot did not start"
        time.sleep(0.1)


def test_restore_is_refused_while_a_bot_runs_and_works_after_it_crashed(tmp_path: Path):
    store = tmp_path / "data" / "paper"
    proc = _start_bot(tmp_path, "--set", "api_key_name=organizations/org-1/apiKeys/key-1")
    try:
        _wait_started(proc, store / "events.db")
        made = perpsbot("backup", cwd=tmp_path)  # online: the bot keeps running
        assert made.returncode == 0, made.stderr
        archive = Path(made.stdout.split("backup written: ")[1].split(" (")[0])
        assert archive.parent == store / "backups" and archive.is_file()
        assert _count(store / "events.db", "backup_completed") == 1

        refused = perpsbot("restore", str(archive), cwd=tmp_path)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        assert f"is in use by a perpsbot bot (pid {proc.pid}); stop it first" in refused.stderr
        second = perpsbot("run", "--duration", "1", cwd=tmp_path)
        assert second.returncode == 2 and "in use by a perpsbot bot" in second.stderr
        assert proc.poll() is None  # neither touched the running bot
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: no shutdown, the kernel drops the lock
        proc.wait(timeout=10)

    restored = perpsbot("restore", str(archive), cwd=tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert "the databases it replaced are kept in" in restored.stdout
    assert "manifest signature checked with" in restored.stdout  # the store made it, with its backup.key
    aside = [p for p in store.iterdir() if p.name.startswith("replaced-")]
    assert len(aside) == 1 and (aside[0] / "events.db").is_file() and (aside[0] / "orders.db").is_file()
    # the backup was taken before its own event: the restored store has none, the kept one has it
    assert _count(store / "events.db", "backup_completed") == 0
    assert _count(store / "events.db", "bot_started") == 1
    conn = sqlite3.connect(store / "events.db")
    config = json.loads(conn.execute("SELECT config FROM runs").fetchone()[0])
    conn.close()
    assert config["api_key_name"] == "[REDACTED]"
    assert b"org-1/apiKeys" not in archive.read_bytes()


def test_backup_and_restore_errors_are_one_line(tmp_path: Path):
    nothing = perpsbot("backup", cwd=tmp_path)
    assert nothing.returncode == 2
    assert "nothing to back up for profile 'paper': no events.db in data/paper" in nothing.stderr
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(200))
    result = perpsbot("restore", str(bogus), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{bogus} is not a perpsbot backup or is damaged" in result.stderr
    assert not (tmp_path / "data" / "paper" / "events.db").exists()


def test_a_cli_backup_scrubs_the_configured_secrets_literally(tmp_path: Path):
    from tests.unit.test_backup import NOW, _raw_text, fill_store

    store = tmp_path / "data" / "paper"
    fill_store(store, orders=2)
    token, url = "dash-7Hq2-Lm9P-x81z", "https://alerts.example.com/notify/T0AAA/Zq8sLm2x"  # no pattern knows them
    events = EventStore(store / "events.db")
    events.append(NOW, "error", None, stage="cycle", error=f"RuntimeError: sent {token} to {url}")
    events.close()
    result = perpsbot("backup", cwd=tmp_path, env={
        "PERPSBOT_DATA_DIR": str(tmp_path / "data"), "PERPSBOT_DASHBOARD_TOKEN": token,
        "PERPSBOT_ALERT_WEBHOOK_URL": url,
    })
    assert result.returncode == 0, result.stderr
    (archive,) = (store / "backups").glob("perpsbot-paper-*.tar.gz")
    text = _raw_text(archive)
    assert token not in text and url not in text
    assert "RuntimeError: sent [REDACTED] to [REDACTED]" in text
