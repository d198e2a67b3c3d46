"""Secret redaction for everything the bot writes outside its trading records: log lines,
the run's stored config and backups.

Three nets, applied together:

- values under a key whose name looks secret (``api_key_name``, ``privateKey``,
  ``dashboard_token``, ``alert_webhook_url``, ``Authorization`` ...) are replaced whole;
- text is scanned for things that are secrets whatever they sit under: PEM private
  keys, base64 Ed25519 keys, CDP key names, JWTs, bearer tokens, webhook URLs,
  credentials in URLs and secret-looking query parameters;
- the literal values of the credentials this process loaded (``remember_secret``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretStr

REDACTED = "[REDACTED]"

_SECRET_NAME = re.compile(
    r"secret|token|passw|authori[sz]ation|webhook|credential|private|apikey|cookie|signature"
    r"|(^|[^a-z])key($|[^a-z])",
    re.IGNORECASE,
)

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys, also when their newlines are escaped; an unterminated block to the end.
    (re.compile(r"-----BEGIN[A-Z ]*PRIVATE KEY-----(?:.*?-----END[A-Z ]*PRIVATE KEY-----|.*)", re.DOTALL), REDACTED),
    # CDP key names: organizations/{org}/apiKeys/{id}
    (re.compile(r"organizations/[^/\s\"']+/apiKeys/[A-Za-z0-9-]+"), REDACTED),
    # JWTs: base64url JSON header, payload and (possibly empty) signature
    (re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*)?"), REDACTED),
    # Authorization: Bearer / Basic <credential>
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + REDACTED),
    # URLs carrying a secret: webhooks (Slack, Discord, ...), user:password@host
    (re.compile(r"(?i)\b(?:https?|wss?)://[^\s\"'<>]*hook[^\s\"'<>]*"), REDACTED),
    (re.compile(r"(?i)\b((?:https?|wss?)://)[^\s/@\"'<>:]+:[^\s/@\"'<>]+@"), r"\1" + REDACTED + "@"),
)
# ?token=...&api_key=... in URLs and form bodies: the parameter stays, its value goes
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:[a-z_]*(?:token|secret|key|password|passwd|signature|sig|auth)[a-z_]*)=)[^&;\s\"'#]+"
)
# name=value / name: value in free text (exception messages, repr of a mapping)
_ASSIGNED_SECRET = re.compile(
    r"(?i)\b([a-z_]*(?:secret|token|password|passwd|api_?key|private_?key|authorization)[a-z_]*"
    r"[\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\])([^\s\"',;&})\]]+)"
)
# base64 of an Ed25519 seed (44 chars) or seed + public key (88 chars), or any similar blob:
# 40+ base64 characters mixing upper case, lower case and digits (hex ids and words do not).
_BASE64_BLOB = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40,}={0,2}")

# Everything any rule above can match contains one of these words (in any case) or a
# 40-character base64 run; text without them is clean.
_TRIGGER_WORDS = re.compile(
    "secret|token|passw|auth|webhook|credential|private|key|cookie|sig|eyj|bearer|basic|://"
)  # searched in the lower-cased text: much faster than a case-insensitive pattern
_LONG_RUN = re.compile(r"[A-Za-z0-9+/]{40}")
SHORTEST_SECRET = 6  # remembered secrets are at least this long; no pattern matches less


def _triggered(text: str) -> bool:
    if len(text) < SHORTEST_SECRET:
        return False
    if _TRIGGER_WORDS.search(text.lower()) is not None:
        return True
    return len(text) >= 40 and _LONG_RUN.search(text) is not None


_known: set[str] = set()
_known_lock = threading.Lock()
_known_pattern: re.Pattern[str] | None = None


def remember_secret(value: str | SecretStr | None) -> None:
    """Redact this exact value wherever it appears from now on (credentials as loaded)."""
    global _known_pattern
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not text or len(text.strip()) < SHORTEST_SECRET:  # a tiny value would redact innocent text
        return
    with _known_lock:
        if text in _known and text.strip() in _known:
            return  # known already: no new pattern to build
        _known.update({text, text.strip()})
        alternatives = sorted(_known, key=len, reverse=True)
        _known_pattern = re.compile("|".join(re.escape(s) for s in alternatives))


def remember_config_secrets(config: Any) -> None:
    """``remember_secret`` for every credential a config carries (API key, dashboard
    token, webhook URL)."""
    for name in ("api_key_name", "api_private_key", "dashboard_token", "alert_webhook_url"):
        remember_secret(getattr(config, name, None))


def might_hold_secret(text: str) -> bool:
    """False when no rule could redact anything in ``text`` (a cheap first look)."""
    known = _known_pattern
    return _triggered(text) or (known is not None and known.search(text) is not None)


def looks_secret(name: object) -> bool:
    """Whether a field or setting of this name holds a secret."""
    return isinstance(name, str) and _SECRET_NAME.search(name) is not None


def _blob(match: re.Match[str]) -> str:
    text = match.group(0)
    body = text.rstrip("=")
    mixed = any(c.isupper() for c in body) and any(c.islower() for c in body) and any(c.isdigit() for c in body)
    return REDACTED if mixed else text


def redact_text(text: str) -> str:
    """``text`` with every secret it contains replaced by ``[REDACTED]``."""
    known = _known_pattern
    if known is not None:
        text = known.sub(REDACTED, text)
    if not _triggered(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    text = _QUERY_SECRET.sub(r"\1" + REDACTED, text)
    text = _ASSIGNED_SECRET.sub(r"\1" + REDACTED, text)
    return _BASE64_BLOB.sub(_blob, text)


def redact_value(value: Any, *, name: object = None) -> Any:
    """A copy of ``value`` with secrets replaced: whole values under secret-looking names,
    secret text anywhere inside strings, dicts, lists and tuples."""
    if value is None:
        return None
    if looks_secret(name):
        return REDACTED
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, name=k) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


def public_config(config: BaseModel) -> dict[str, Any]:
    """A config as JSON-ready data with every secret masked (what a run records)."""
    return redact_value(config.model_dump(mode="json"))
