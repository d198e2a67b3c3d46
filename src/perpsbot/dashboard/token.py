"""The dashboard's access token: the configured one, or a random one per start."""

from __future__ import annotations

import secrets
from pathlib import Path

from perpsbot.config import BotConfig
from perpsbot.files import write_private
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
    write_private(path, (token + "\n").encode("ascii"))
    return token
