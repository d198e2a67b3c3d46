"""CDP-style keys: files, the two key types, and the JWT rules of the trust store."""

from __future__ import annotations

import base64
import json
import stat
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from perpsbot.exchange.sim.keys import (
    ApiKey,
    AuthError,
    KeyFileError,
    TrustStore,
    generate_key,
    read_key_file,
    sign_jwt,
    write_key_file,
)

NAME = r"^organizations/[0-9a-f-]{36}/apiKeys/[0-9a-f-]{36}$"


@pytest.mark.parametrize("kind", ["ecdsa", "ed25519"])
def test_key_files_round_trip_with_owner_only_permissions(tmp_path: Path, kind: str):
    key = generate_key(kind)
    path = write_key_file(tmp_path / "key.json", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert set(data) == {"name", "privateKey"}
    assert read_key_file(path) == key and key.kind == kind
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(path, generate_key(kind))
    write_key_file(path, generate_key(kind), overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key.private_key_text not in repr(key)


def test_the_two_secret_formats_are_coinbase_s():
    ecdsa = generate_key("ecdsa")
    assert ecdsa.private_key_text.startswith("-----BEGIN EC PRIVATE KEY-----")
    assert isinstance(ecdsa.private_key().curve, ec.SECP256R1) and ecdsa.algorithm == "ES256"
    ed = generate_key("ed25519")
    raw = base64.b64decode(ed.private_key_text)
    public = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 64 and raw[32:] == public and ed.algorithm == "EdDSA"


@pytest.mark.parametrize("content, message", [
    ("{", "not JSON"),
    ("[]", "JSON object"),
    ('{"privateKey": "x"}', "no 'name'"),
    ('{"name": "n"}', "no 'privateKey'"),
    ('{"name": "n", "privateKey": "!!!"}', "neither PEM nor base64"),
    ('{"name": "n", "privateKey": "' + base64.b64encode(b"x" * 40).decode() + '"}', "32 or 64 bytes"),
    ('{"name": "n", "privateKey": "' + base64.b64encode(b"x" * 64).decode() + '"}', "does not match"),
])
def test_broken_key_files_are_refused(tmp_path: Path, content: str, message: str):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(KeyFileError, match=message):
        read_key_file(path)
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key_file(tmp_path / "missing.json")


def test_a_p384_key_is_refused(tmp_path: Path):
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    (tmp_path / "p384.json").write_text(json.dumps({"name": "n", "privateKey": pem}))
    with pytest.raises(KeyFileError, match="P-256"):
        read_key_file(tmp_path / "p384.json")


def test_websocket_tokens_have_no_uri_and_the_leeway_is_small():
    key = generate_key("ed25519")
    store = TrustStore([key], leeway=5)
    assert store.verify(sign_jwt(key))["sub"] == key.name
    assert store.verify(sign_jwt(key, now=time.time() + 3))  # a client clock a little ahead
    with pytest.raises(AuthError, match="not valid yet"):
        store.verify(sign_jwt(key, now=time.time() + 30))
    with pytest.raises(AuthError, match="uri"):
        store.verify(sign_jwt(key), uri="GET h/p")
    store.remove(key.name)
    with pytest.raises(AuthError, match="unknown API key"):
        store.verify(sign_jwt(key))


def test_the_algorithm_must_match_the_key():
    key = generate_key("ecdsa")
    store = TrustStore([key])
    forged = jwt.encode({"sub": key.name, "iss": "cdp", "nbf": int(time.time()), "exp": int(time.time()) + 60},
                        "s" * 32, algorithm="HS256", headers={"kid": key.name, "nonce": "n"})
    with pytest.raises(AuthError, match="ES256 or EdDSA"):
        store.verify(forged)
    other = generate_key("ed25519")
    mismatched = sign_jwt(ApiKey(key.name, other.private_key_text))  # EdDSA token for an ES256 key
    with pytest.raises(AuthError, match="does not match"):
        store.verify(mismatched)
