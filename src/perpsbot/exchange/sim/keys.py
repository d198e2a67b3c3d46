"""CDP-style API keys for the simulator server: key files, trusted public keys, JWT checks.

A key file is what Coinbase's developer platform hands out::

    {"name": "organizations/<uuid>/apiKeys/<uuid>", "privateKey": "<secret>"}

where the secret is a PEM ``EC PRIVATE KEY`` (ECDSA P-256, signs ES256) or, for
Ed25519 keys, base64 of 64 bytes (32-byte seed followed by the 32-byte public key;
signs EdDSA). The server is given such files with ``--trust`` and keeps only the
public halves.

Every request carries ``Authorization: Bearer <jwt>`` (REST) or a ``jwt`` field
(WebSocket subscribe). A token is accepted when:

* the header has ``alg`` ES256 or EdDSA matching the key type, ``kid`` naming a
  trusted key, and a non-empty ``nonce``;
* the signature verifies with that key;
* claims: ``iss`` = ``cdp``, ``sub`` = the key name, ``nbf`` and ``exp`` present,
  ``nbf`` <= now <= ``exp`` (give or take ``leeway`` seconds) and a lifetime
  ``exp - nbf`` of at most ``max_lifetime`` seconds;
* REST only: ``uri`` = ``"<METHOD> <host:port><path>"``.

Where the documentation does not rule, a difference is accepted and logged (once per
key): a ``uris`` list holding the request (what Coinbase's CDP SDKs send) instead of
``uri``. Other claims and header fields (``aud``, ``typ``, ...) are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

log = logging.getLogger("perpsbot.sim.keys")

KEY_TYPES = ("ecdsa", "ed25519")
ISSUER = "cdp"
DEFAULT_LEEWAY_SECONDS = 5.0
DEFAULT_MAX_LIFETIME_SECONDS = 120.0

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class KeyFileError(ValueError):
    """A key file that cannot be read or does not hold a usable key."""


class AuthError(Exception):
    """A request whose credentials the server refuses (answered with 401)."""


def load_private_key(secret: str) -> PrivateKey:
    """The private key in a key file's ``privateKey``: PEM (ECDSA P-256, or any PEM the
    ``cryptography`` package reads) or base64 of an Ed25519 seed (32 bytes) or seed +
    public key (64 bytes)."""
    text = secret.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"unreadable PEM private key: {exc}") from None
    else:
        try:
            raw = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError("private key is neither PEM nor base64") from None
        if len(raw) not in (32, 64):
            raise KeyFileError(f"an Ed25519 key must decode to 32 or 64 bytes, got {len(raw)}")
        key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
        if len(raw) == 64:
            public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            if public != raw[32:]:
                raise KeyFileError("the Ed25519 key's public half does not match its seed")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyFileError(f"ECDSA keys must be on P-256, not {key.curve.name}")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise KeyFileError(f"unsupported key type {type(key).__name__}: expected ECDSA P-256 or Ed25519")


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "EdDSA"
    return "ES256"


@dataclass(frozen=True)
class ApiKey:
    """A key as held in a key file: its name and the secret exactly as written there."""

    name: str
    private_key_text: str

    def private_key(self) -> PrivateKey:
        return load_private_key(self.private_key_text)

    def public_key(self) -> PublicKey:
        return self.private_key().public_key()

    @property
    def algorithm(self) -> str:
        return algorithm_for(self.private_key())

    @property
    def kind(self) -> str:
        return "ed25519" if self.algorithm == "EdDSA" else "ecdsa"

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "privateKey": self.private_key_text}

    def __repr__(self) -> str:  # never show the secret
        return f"ApiKey(name={self.name!r}, kind={self.kind})"


def generate_key(kind: str = "ecdsa") -> ApiKey:
    """A fresh key with a CDP-style name ``organizations/<uuid>/apiKeys/<uuid>``."""
    if kind not in KEY_TYPES:
        raise ValueError(f"key type must be one of {', '.join(KEY_TYPES)}, got {kind!r}")
    name = f"organizations/{uuid.uuid4()}/apiKeys/{uuid.uuid4()}"
    if kind == "ecdsa":
        private = ec.generate_private_key(ec.SECP256R1())
        text = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
    else:
        ed = ed25519.Ed25519PrivateKey.generate()
        seed = ed.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        public = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        text = base64.b64encode(seed + public).decode()
    return ApiKey(name, text)


def write_key_file(path: Path | str, key: ApiKey, *, overwrite: bool = False) -> Path:
    """Write ``key`` as a JSON key file readable by its owner only (mode 0600)."""
    target = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{target} already exists (use --force to replace it)") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {target}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)  # also when replacing a file that had wider permissions
        json.dump(key.to_json(), fh, indent=2)
        fh.write("\n")
    return target


def read_key_file(path: Path | str) -> ApiKey:
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyFileError(f"key file {source} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {source}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"key file {source} is not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise KeyFileError(f"key file {source} must hold a JSON object")
    name = data.get("name") or data.get("id")
    secret = data.get("privateKey")
    if not isinstance(name, str) or not name:
        raise KeyFileError(f"key file {source} has no 'name'")
    if not isinstance(secret, str) or not secret:
        raise KeyFileError(f"key file {source} has no 'privateKey'")
    key = ApiKey(name, secret)
    try:
        key.private_key()
    except KeyFileError as exc:
        raise KeyFileError(f"key file {source}: {exc}") from None
    return key


def _claims_error(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "JWT has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "JWT is not valid yet (nbf in the future)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"JWT issuer must be '{ISSUER}'"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"JWT lacks the '{exc.claim}' claim"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "JWT signature does not verify"
    return f"invalid JWT: {exc}"


class TrustStore:
    """The public keys the server accepts, by key name, and the JWT rules."""

    def __init__(
        self,
        keys: Iterable[ApiKey] = (),
        *,
        leeway: float = DEFAULT_LEEWAY_SECONDS,
        max_lifetime: float = DEFAULT_MAX_LIFETIME_SECONDS,
    ) -> None:
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self._keys: dict[str, tuple[PublicKey, str]] = {}
        self._tolerated: set[str] = set()  # keys whose ``uris`` form was logged
        for key in keys:
            self.add(key)

    def add(self, key: ApiKey | tuple[str, PublicKey]) -> None:
        if isinstance(key, ApiKey):
            name, public = key.name, key.public_key()
        else:
            name, public = key
        self._keys[name] = (public, algorithm_for(public))

    def remove(self, name: str) -> None:
        self._keys.pop(name, None)

    @property
    def names(self) -> list[str]:
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def verify(self, token: str, *, uri: str | None = None) -> dict[str, Any]:
        """The token's claims, or ``AuthError`` saying why it is refused. ``uri`` (REST)
        must equal the token's ``uri`` claim; ``None`` (WebSocket) skips that check."""
        if not token:
            raise AuthError("missing JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed JWT") from None
        alg, kid, nonce = header.get("alg"), header.get("kid"), header.get("nonce")
        if alg not in ("ES256", "EdDSA"):
            raise AuthError(f"JWT algorithm must be ES256 or EdDSA, got {alg!r}")
        if not isinstance(kid, str) or not kid:
            raise AuthError("JWT header lacks 'kid'")
        if not isinstance(nonce, str) or not nonce:
            raise AuthError("JWT header lacks 'nonce'")
        entry = self._keys.get(kid)
        if entry is None:
            raise AuthError("unknown API key")
        public, key_alg = entry
        if alg != key_alg:
            raise AuthError(f"JWT algorithm {alg} does not match the key ({key_alg})")
        try:
            claims = jwt.decode(
                token,
                public,
                algorithms=[alg],
                issuer=ISSUER,
                leeway=self.leeway,
                options={"require": ["sub", "iss", "nbf", "exp"], "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(_claims_error(exc)) from None
        if claims.get("sub") != kid:
            raise AuthError("JWT 'sub' must be the key name")
        nbf, exp = claims["nbf"], claims["exp"]
        if not isinstance(nbf, (int, float)) or not isinstance(exp, (int, float)):
            raise AuthError("JWT 'nbf' and 'exp' must be numbers")
        if exp - nbf > self.max_lifetime:
            raise AuthError(f"JWT lifetime {exp - nbf:g} s exceeds {self.max_lifetime:g} s")
        if uri is not None:
            self._check_uri(claims, uri, kid)
        return claims

    def _check_uri(self, claims: dict[str, Any], uri: str, kid: str) -> None:
        """``uri`` must name the request; a ``uris`` list holding it is tolerated (logged once per key)."""
        claimed, listed = claims.get("uri"), claims.get("uris")
        if claimed == uri:
            return
        if claimed is None and isinstance(listed, list) and uri in listed:
            if kid not in self._tolerated:
                self._tolerated.add(kid)
                log.info("JWT of key %s names the request in a 'uris' list, not the documented 'uri': accepted", kid)
            return
        shown = listed if claimed is None and listed is not None else claimed
        raise AuthError(f"JWT 'uri' claim {shown!r} does not match {uri!r}")


def sign_jwt(key: ApiKey, *, uri: str | None = None, lifetime: float = 120.0, now: float | None = None,
             **overrides: Any) -> str:
    """A token the way Coinbase clients make one (used by tests and tools); keyword
    ``overrides`` replace or (with value ``None``) drop claims."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": key.name, "iss": ISSUER, "nbf": issued, "exp": issued + int(lifetime)}
    if uri is not None:
        claims["uri"] = uri
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    private = key.private_key()
    return jwt.encode(claims, private, algorithm=algorithm_for(private),
                      headers={"kid": key.name, "nonce": secrets.token_hex()})
