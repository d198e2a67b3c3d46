"""JSON logs: one object per record, rotated by size, and no secret in them or on the terminal."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr
from rich.console import Console

from perpsbot import redact
from perpsbot.config import BotConfig
from perpsbot.logs import configure_logging
from perpsbot.redact import (
    REDACTED,
    looks_secret,
    public_config,
    redact_text,
    redact_value,
    remember_secret,
)

PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
).decode()
ED25519 = base64.b64encode(os.urandom(64)).decode()
KEY_NAME = "organizations/6f1c2d3e-aaaa-bbbb-cccc-000011112222/apiKeys/9d8e7f60-dddd-eeee-ffff-333344445555"
JWT = "eyJhbGciOiJFUzI1NiIsImtpZCI6Im9yZyJ9.eyJzdWIiOiJvcmcva2V5IiwiaXNzIjoiY2RwIn0.MEUCIQD8x-y_zAbc123"
BEARER = "Bearer 3f9Xq7LmN2pR8sT1vW4yZ6bC"
WEBHOOK = "https://hooks.slack.com/services/T0AAA1111/B0BBB2222/XyZ1234567890abcdefGHIJ"
DASHBOARD_TOKEN = "dash-7Hq2-Lm9P-x81z"  # matches no pattern: only its field name gives it away
PLAIN_PASSWORD = "hunter2-correct-horse"


def secrets_in(text: str) -> list[str]:
    pieces = [PEM, *PEM.splitlines()[1:-1], ED25519, KEY_NAME, JWT, BEARER.split()[1], WEBHOOK, DASHBOARD_TOKEN,
              PLAIN_PASSWORD]
    return [p for p in pieces if p and p in text]


@pytest.fixture(autouse=True)
def clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    root = logging.getLogger()
    before, level = root.handlers[:], root.level
    monkeypatch.setattr(redact, "_known", set())  # no credential remembered by an earlier test
    monkeypatch.setattr(redact, "_known_pattern", None)
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in before:
        root.addHandler(handler)
    root.setLevel(level)


def test_text_patterns_are_redacted_and_ordinary_text_is_not():
    text = (
        f"pem {PEM} ed {ED25519} name {KEY_NAME} jwt {JWT} auth {BEARER} hook {WEBHOOK} "
        f"creds https://bob:pa55word@example.com/x and https://api.example.com/v1?limit=5&access_token=abcdef123 "
        f"{{'api_secret': 'sEcr3t-value', 'size': 1}} password: {PLAIN_PASSWORD}"
    )
    cleaned = redact_text(text)
    assert secrets_in(cleaned) == []
    assert "pa55word" not in cleaned and "abcdef123" not in cleaned
    assert "limit=5" in cleaned and "https://[REDACTED]@example.com/x" in cleaned
    assert "sEcr3t-value" not in cleaned and "'size': 1" in cleaned
    ordinary = (
        "order pb-0123456789abcdef0123456789abcdef filled at 101.25; checksum "
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 in /tmp/data/paper/events.db"
    )
    assert redact_text(ordinary) == ordinary


def test_values_under_secret_names_are_replaced_whole_at_any_depth():
    data = {
        "api_key_name": "whatever",
        "privateKey": "x" * 10,
        "dashboard_token": DASHBOARD_TOKEN,
        "nested": [{"password": PLAIN_PASSWORD, "alert_webhook_url": "https://example.com/a"}],
        "Authorization": "anything",
        "keys": ["interval", "symbols"],  # names of settings, not a secret
        "note": f"sent with {JWT}",
        "count": 3,
        "absent_token": None,
    }
    cleaned = redact_value(data)
    assert cleaned["api_key_name"] == cleaned["privateKey"] == cleaned["dashboard_token"] == REDACTED
    assert cleaned["nested"][0] == {"password": REDACTED, "alert_webhook_url": REDACTED}
    assert cleaned["Authorization"] == REDACTED
    assert cleaned["keys"] == ["interval", "symbols"] and cleaned["count"] == 3 and cleaned["absent_token"] is None
    assert cleaned["note"] == f"sent with {REDACTED}"
    assert not looks_secret("symbols") and not looks_secret("monkey") and looks_secret("api_key")


def test_the_config_a_run_records_masks_credentials():
    config = BotConfig(api_key_name=KEY_NAME, api_private_key=SecretStr(PEM), symbols=("BTC-USD",))
    recorded = json.dumps(public_config(config))
    assert secrets_in(recorded) == []
    assert public_config(config)["symbols"] == ["BTC-USD"]


def test_remembered_credentials_are_redacted_even_without_a_pattern():
    remember_secret(SecretStr(PLAIN_PASSWORD))
    assert redact_text(f"login with {PLAIN_PASSWORD}!") == f"login with {REDACTED}!"
    remember_secret("abc")  # too short to redact safely: ignored
    assert redact_text("abc") == "abc"


def _config(tmp_path: Path, **overrides) -> BotConfig:
    values = dict(data_dir=tmp_path / "data", api_key_name=KEY_NAME, api_private_key=SecretStr(ED25519))
    values.update(overrides)
    return BotConfig(**values)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_each_record_is_one_json_line_with_its_fields_and_no_secret(tmp_path: Path):
    terminal = io.StringIO()
    path = configure_logging(_config(tmp_path), Console(file=terminal, width=300))
    assert path == tmp_path / "data" / "paper" / "logs" / "perpsbot.jsonl"
    log = logging.getLogger("perpsbot.test")
    log.info("placed %s with key %s", "pb-1", KEY_NAME, extra={"symbol": "BIP-20DEC30-CDE", "size": 2})
    log.warning(
        "webhook failed",
        extra={"url": WEBHOOK, "dashboard_token": DASHBOARD_TOKEN, "headers": {"Authorization": BEARER}},
    )
    try:
        raise RuntimeError(f"signing failed for {PEM} with {ED25519} (jwt {JWT}, password={PLAIN_PASSWORD})")
    except RuntimeError:
        log.exception("request failed")
    log.debug("not shown at INFO")
    logging.getLogger("aiohttp.client").error("third-party line: %s", JWT)

    written = path.read_text(encoding="utf-8")
    assert secrets_in(written) == [] and secrets_in(terminal.getvalue()) == []
    records = _records(path)
    assert [r["event"] for r in records] == [
        f"placed pb-1 with key {REDACTED}", "webhook failed", "request failed", f"third-party line: {REDACTED}"
    ]
    first = records[0]
    assert first["level"] == "info" and first["logger"] == "perpsbot.test"
    assert first["timestamp"].endswith("Z") and first["symbol"] == "BIP-20DEC30-CDE" and first["size"] == 2
    assert records[1]["dashboard_token"] == REDACTED and records[1]["headers"] == {"Authorization": REDACTED}
    assert records[1]["url"] == REDACTED
    failure = records[2]
    assert failure["level"] == "error" and "Traceback" in failure["exception"]
    assert "RuntimeError: signing failed for [REDACTED]" in failure["exception"]
    assert "placed pb-1" in terminal.getvalue() and "symbol=BIP-20DEC30-CDE" in terminal.getvalue()


def test_the_log_rotates_by_size_and_keeps_the_configured_count(tmp_path: Path):
    config = _config(tmp_path, log_file=tmp_path / "logs" / "bot.jsonl", log_file_max_bytes=10_000, log_file_backups=2)
    path = configure_logging(config, Console(file=io.StringIO()))
    log = logging.getLogger("perpsbot.rotation")
    for index in range(150):  # ~200 bytes each: about three files' worth
        log.info("line %d %s", index, "x" * 120, extra={"token": JWT})
    rotated = sorted(p.name for p in path.parent.iterdir())
    assert rotated == ["bot.jsonl", "bot.jsonl.1", "bot.jsonl.2"]
    numbers = []
    for name in reversed(rotated):
        records = _records(path.parent / name)
        assert all(r["token"] == REDACTED for r in records)
        numbers += [int(r["event"].split()[1]) for r in records]
        assert (path.parent / name).stat().st_size <= 10_000
    assert numbers == list(range(numbers[0], 150))  # the newest lines, in order, none lost inside the kept files


def test_the_log_and_its_rotated_files_are_owner_only_also_when_they_existed_wider(tmp_path: Path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("bot.jsonl", "bot.jsonl.1"):  # left by an older perpsbot, world-readable
        (logs / name).write_text("")
        (logs / name).chmod(0o644)
    old_umask = os.umask(0o022)
    try:
        config = _config(tmp_path, log_file=logs / "bot.jsonl", log_file_max_bytes=10_000, log_file_backups=3)
        path = configure_logging(config, Console(file=io.StringIO()))
        assert {p.name: p.stat().st_mode & 0o777 for p in logs.iterdir()} == {"bot.jsonl": 0o600, "bot.jsonl.1": 0o600}
        log = logging.getLogger("perpsbot.modes")
        for index in range(150):  # about three rotations
            log.info("line %d %s", index, "x" * 120)
        modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir()}
        assert modes == {name: 0o600 for name in ("bot.jsonl", "bot.jsonl.1", "bot.jsonl.2", "bot.jsonl.3")}
    finally:
        os.umask(old_umask)


def test_credentials_loaded_from_a_key_file_are_redacted_literally(tmp_path: Path):
    from perpsbot.exchange.coinbase.auth import resolve_credentials

    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps({"name": "bare-key-id-4711", "privateKey": "Zm9vYmFy-not-base64!"}))
    key_file.chmod(0o600)
    assert redact_text("key bare-key-id-4711 in use") == "key bare-key-id-4711 in use"
    resolve_credentials(None, None, key_file)
    assert redact_text("key bare-key-id-4711 with Zm9vYmFy-not-base64!") == f"key {REDACTED} with {REDACTED}"


def test_the_dashboard_token_and_webhook_url_are_redacted_wherever_they_appear(tmp_path: Path):
    from perpsbot.dashboard import ensure_dashboard_token

    plain_url = "https://alerts.example.com/notify/T0AAA/Zq8sLm2x"  # no pattern knows this one
    config = _config(tmp_path, dashboard_token=SecretStr(DASHBOARD_TOKEN), alert_webhook_url=SecretStr(plain_url))
    path = configure_logging(config, Console(file=io.StringIO()))
    generated = ensure_dashboard_token(_config(tmp_path / "other"))  # a random token made at start
    logging.getLogger("perpsbot.test").warning("seen %s then %s and %s", DASHBOARD_TOKEN, plain_url, generated)
    written = path.read_text(encoding="utf-8")
    assert DASHBOARD_TOKEN not in written and plain_url not in written and generated not in written
    assert _records(path)[-1]["event"] == f"seen {REDACTED} then {REDACTED} and {REDACTED}"
