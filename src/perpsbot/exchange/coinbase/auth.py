"""CDP API keys and the JWTs that carry them.

A CDP key is a *key name* (``organizations/{org}/apiKeys/{id}``, or a bare id) and a
private key: an EC P-256 key in PEM (signs ES256) or an Ed25519 key as base64 of its
32-byte seed or of seed + public key (signs EdDSA). Coinbase wants a fresh JWT per REST
request (its ``uri`` claim binds it to one method, host and path) and one per websocket
subscribe message (no ``uri``).

Key material lives in a ``SecretStr`` and is never put into a message, a repr or a log
line: every error here names the setting and what is wrong with it, never its value.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pydantic import SecretStr

from perpsbot.exchange.port import AuthenticationError
from perpsbot.redact import remember_secret

JWT_ISSUER = "cdp"
JWT_LIFETIME_SECONDS = 120
PREPARED_MAX_AGE_SECONDS = 60  # a token signed ahead is used only while it has >= 60 s left
BAD_KEY = "api_private_key: not a PEM EC P-256 key or base64 Ed25519 key"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class CredentialsError(AuthenticationError):
    """Credentials are missing, unreadable or malformed (a start-up error)."""

    code = "credentials"


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    key_name: str
    private_key: SecretStr

    def __repr__(self) -> str:
        return f"Credentials(key_name={self.key_name!r}, private_key=SecretStr('**********'))"

    __str__ = __repr__


def resolve_credentials(
    key_name: str | None,
    private_key: SecretStr | str | None,
    key_file: Path | None,
) -> Credentials:
    """Credentials from a key file, or from a key name plus a private key (never both)."""
    secret = private_key if isinstance(private_key, SecretStr) or private_key is None else SecretStr(private_key)
    has_inline = bool(key_name) or bool(secret and secret.get_secret_value())
    if key_file is not None:
        if has_inline:
            raise CredentialsError(
                "give either api_key_file or api_key_name + api_private_key, not both"
            )
        return _remembered(read_key_file(key_file))
    if not key_name:
        raise CredentialsError("api_key_name is missing (or set api_key_file)")
    if secret is None or not secret.get_secret_value().strip():
        raise CredentialsError("api_private_key is missing (or set api_key_file)")
    return _remembered(Credentials(key_name.strip(), secret))


def _remembered(credentials: Credentials) -> Credentials:
    """Credentials whose values the log redaction now knows, wherever they appear."""
    remember_secret(credentials.key_name)
    remember_secret(credentials.private_key)
    return credentials


def read_key_file(path: Path) -> Credentials:
    """A key file as the CDP portal downloads it: ``{"name": ..., "privateKey": ...}``.

    Refused unless only its owner can read it (mode 0600 or stricter)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise CredentialsError(f"api_key_file: cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise CredentialsError(f"api_key_file: {path} is not a regular file")
    if mode & 0o077:
        raise CredentialsError(
            f"api_key_file: {path} is readable by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CredentialsError(f"api_key_file: cannot read {path}: {reason}") from None
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CredentialsError(
            f"api_key_file: {path} is not JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise CredentialsError(f"api_key_file: {path} must hold a JSON object with name and privateKey")
    name = data.get("name") or data.get("id")
    secret = data.get("privateKey")
    if not isinstance(name, str) or not name.strip():
        raise CredentialsError(f"api_key_file: {path} has no 'name'")
    if not isinstance(secret, str) or not secret.strip():
        raise CredentialsError(f"api_key_file: {path} has no 'privateKey'")
    return Credentials(name.strip(), SecretStr(secret))


def load_private_key(text: str) -> tuple[PrivateKey, str]:
    """The signing key and its JWT algorithm (``ES256`` or ``EdDSA``)."""
    text = text.strip()
    if "-----BEGIN" in text:
        # Keys pasted into env files often carry literal backslash-n instead of newlines.
        text = text.replace("\\n", "\n")
        try:
            key = serialization.load_pem_private_key(text.encode("utf-8"), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise CredentialsError(BAD_KEY) from None
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise CredentialsError(f"{BAD_KEY} (got an EC key on curve {key.curve.name})")
            return key, "ES256"
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key, "EdDSA"
        raise CredentialsError(f"{BAD_KEY} (got a {type(key).__name__.removeprefix('_')})")
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CredentialsError(BAD_KEY) from None
    if len(raw) not in (32, 64):
        raise CredentialsError(f"{BAD_KEY} (base64 decodes to {len(raw)} bytes, expected 32 or 64)")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64:
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if public != raw[32:]:
            raise CredentialsError(f"{BAD_KEY} (its public half does not match its seed)")
    return key, "EdDSA"


class JwtSigner:
    """Signs the short-lived JWTs Coinbase expects; checks the key once, at construction."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        now: Callable[[], float] = time.time,
        nonce: Callable[[], str] = lambda: secrets.token_hex(16),
    ) -> None:
        self.key_name = credentials.key_name
        self._key, self.algorithm = load_private_key(credentials.private_key.get_secret_value())
        self._now = now
        self._nonce = nonce
        self._prepared: dict[str, tuple[float, str]] = {}  # uri -> (signed at, token), used once

    def __repr__(self) -> str:
        return f"JwtSigner(key_name={self.key_name!r}, algorithm={self.algorithm!r})"

    __str__ = __repr__

    def public_key(self) -> Any:
        return self._key.public_key()

    def _token(self, uri: str | None) -> str:
        issued = int(self._now())
        claims: dict[str, Any] = {
            "sub": self.key_name,
            "iss": JWT_ISSUER,
            "nbf": issued,
            "exp": issued + JWT_LIFETIME_SECONDS,
        }
        if uri is not None:
            claims["uri"] = uri
        headers = {"kid": self.key_name, "nonce": self._nonce()}
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)

    def rest_token(self, method: str, host: str, path: str) -> str:
        """For one REST request: ``uri`` = ``"<METHOD> <host><path>"`` (no query string).
        A token ``prepare``d for the same request is handed out (once) while it is fresh."""
        uri = f"{method.upper()} {host}{path}"
        prepared = self._prepared.pop(uri, None)
        if prepared is not None and 0 <= self._now() - prepared[0] <= PREPARED_MAX_AGE_SECONDS:
            return prepared[1]
        return self._token(uri)

    def prepare(self, method: str, host: str, path: str) -> None:
        """Sign the next token for this request now, off its path (order creation: the
        signature is a tenth of a millisecond the order need not wait for)."""
        uri = f"{method.upper()} {host}{path}"
        self._prepared[uri] = (self._now(), self._token(uri))

    def ws_token(self) -> str:
        """For one websocket subscribe / unsubscribe message."""
        return self._token(None)
