"""The dashboard's access token: the configured one, or a random one per start."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from perpsbot.config import BotConfig
from perpsbot.redact import remember_secret

TOKEN_FILE = "dashboard_token"


def token_path(config: BotConfig) -> Path:
    return config.store_dir / TOKEN_FILE


def ensure_dashboard_token(config: BotConfig) -> str:
    """``dashboard_token`` when configured. Otherwise a new random token, written to
    ``<store_dir>/dashboard_token`` readable by its owner only (mode 0600), for the
    user to read; each start replaces it, so an old link stops working."""
    if config.dashboard_token is not None:
        return config.dashboard_token.get_secret_value()
    token = secrets.token_urlsafe(32)
    remember_secret(token)  # never in a log line
    path = token_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            os.fchmod(fh.fileno(), 0o600)  # a leftover temporary file may have had wider permissions
            fh.write(token + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return token
