from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from perpsbot.config import BotConfig, load_config
from perpsbot.config.loader import config_rows
from perpsbot.exchange.coinbase.auth import (
    BAD_KEY,
    Credentials,
    CredentialsError,
    JwtSigner,
    load_private_key,
    read_key_file,
    resolve_credentials,
)
from perpsbot.exchange.port import AuthenticationError
from tests.coinbasekit import KEY_NAME, ec_pem, ed25519_b64

NOW = 1_772_000_000


def decode(token: str, public_key: object, algorithm: str) -> tuple[dict, dict]:
    claims = jwt.decode(token, public_key, algorithms=[algorithm], issuer="cdp",
                        options={"verify_exp": False, "verify_nbf": False})
    return jwt.get_unverified_header(token), claims


def test_es256_rest_token_carries_the_documented_header_and_claims():
    pem, public = ec_pem()
    signer = JwtSigner(Credentials(KEY_NAME, SecretStr(pem)), now=lambda: NOW)
    assert signer.algorithm == "ES256"
    token = signer.rest_token("get", "api.coinbase.com", "/api/v3/brokerage/accounts")
    header, claims = decode(token, public, "ES256")
    assert header["alg"] == "ES256" and header["kid"] == KEY_NAME
    assert len(header["nonce"]) >= 16 and int(header["nonce"], 16) >= 0
    assert claims == {"sub": KEY_NAME, "iss": "cdp", "nbf": NOW, "exp": NOW + 120,
                      "uri": "GET api.coinbase.com/api/v3/brokerage/accounts"}


@pytest.mark.parametrize("with_public", [True, False], ids=["64-byte seed+public", "32-byte seed"])
def test_ed25519_keys_sign_eddsa(with_public: bool):
    b64, public = ed25519_b64(with_public)
    signer = JwtSigner(Credentials(KEY_NAME, SecretStr(b64)), now=lambda: NOW)
    assert signer.algorithm == "EdDSA"
    header, claims = decode(signer.rest_token("POST", "127.0.0.1:8443", "/api/v3/brokerage/orders"), public, "EdDSA")
    assert header["alg"] == "EdDSA" and header["kid"] == KEY_NAME
    assert claims["uri"] == "POST 127.0.0.1:8443/api/v3/brokerage/orders"


def test_websocket_token_has_no_uri_and_every_token_has_a_fresh_nonce():
    pem, public = ec_pem()
    signer = JwtSigner(Credentials(KEY_NAME, SecretStr(pem)))
    tokens = [signer.ws_token() for _ in range(3)]
    headers = [decode(t, public, "ES256")[0] for t in tokens]
    claims = decode(tokens[0], public, "ES256")[1]
    assert "uri" not in claims and claims["sub"] == KEY_NAME and claims["exp"] - claims["nbf"] == 120
    assert len({h["nonce"] for h in headers}) == 3


def test_a_token_signed_ahead_is_used_once_for_its_own_request_and_only_while_fresh():
    b64, public = ed25519_b64(True)
    now = [float(NOW)]
    signer = JwtSigner(Credentials(KEY_NAME, SecretStr(b64)), now=lambda: now[0])
    orders = ("POST", "127.0.0.1:8443", "/api/v3/brokerage/orders")
    signer.prepare(*orders)
    now[0] += 30
    first = signer.rest_token(*orders)
    assert decode(first, public, "EdDSA")[1]["nbf"] == NOW  # the one signed ahead
    second = signer.rest_token(*orders)
    assert second != first and decode(second, public, "EdDSA")[1]["nbf"] == NOW + 30  # used once only
    signer.prepare(*orders)
    other = signer.rest_token("GET", "127.0.0.1:8443", "/api/v3/brokerage/accounts")
    assert decode(other, public, "EdDSA")[1]["uri"] == "GET 127.0.0.1:8443/api/v3/brokerage/accounts"
    now[0] += 61  # too old to hand out: 59 s of its 120 left
    late = signer.rest_token(*orders)
    claims = decode(late, public, "EdDSA")[1]
    assert claims["nbf"] == NOW + 91 and claims["uri"] == "POST 127.0.0.1:8443/api/v3/brokerage/orders"


def test_a_token_signed_by_another_key_does_not_verify():
    pem, _ = ec_pem()
    _, other_public = ec_pem()
    token = JwtSigner(Credentials(KEY_NAME, SecretStr(pem))).ws_token()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other_public, algorithms=["ES256"], issuer="cdp")


def test_pem_with_escaped_newlines_from_an_env_file_is_accepted():
    pem, _ = ec_pem()
    _, algorithm = load_private_key(pem.replace("\n", "\\n"))
    assert algorithm == "ES256"


def _mismatched_ed25519() -> str:
    one, two = base64.b64decode(ed25519_b64()[0]), base64.b64decode(ed25519_b64()[0])
    return base64.b64encode(one[:32] + two[32:]).decode()


def _rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.mark.parametrize(
    "secret, detail",
    [
        ("not a key at all", ""),
        ("-----BEGIN EC PRIVATE KEY-----\nZm9vYmFy\n-----END EC PRIVATE KEY-----\n", ""),
        (ec_pem(ec.SECP384R1())[0], "curve secp384r1"),
        (_rsa_pem(), "RSAPrivateKey"),
        ("QUJD", "3 bytes"),
        (_mismatched_ed25519(), "public half does not match"),
    ],
    ids=["garbage", "bad-pem", "p384", "rsa", "short-base64", "ed25519-mismatch"],
)
def test_malformed_keys_are_a_clear_error_that_never_shows_the_key(secret: str, detail: str):
    with pytest.raises(CredentialsError) as info:
        JwtSigner(Credentials(KEY_NAME, SecretStr(secret)))
    message = str(info.value)
    assert message.startswith(BAD_KEY)
    assert detail in message
    assert secret.strip() not in message
    if len(secret) > 40:
        assert secret.strip()[-40:-10] not in message
    # No chained exception carries the library's view of the key either.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    assert isinstance(info.value, AuthenticationError)


def write_key_file(path: Path, data: object, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(data))
    os.chmod(path, mode)
    return path


def test_key_file_as_the_portal_downloads_it(tmp_path: Path):
    pem, public = ec_pem()
    path = write_key_file(tmp_path / "cdp_api_key.json", {"name": KEY_NAME, "privateKey": pem})
    credentials = read_key_file(path)
    assert credentials.key_name == KEY_NAME
    token = JwtSigner(credentials).ws_token()
    assert decode(token, public, "ES256")[1]["sub"] == KEY_NAME


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_group_or_others_is_refused(tmp_path: Path, mode: int):
    pem, _ = ec_pem()
    path = write_key_file(tmp_path / "key.json", {"name": KEY_NAME, "privateKey": pem}, mode)
    with pytest.raises(CredentialsError, match=r"readable by group or others .*chmod 600") as info:
        read_key_file(path)
    assert pem[30:60] not in str(info.value)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", r"is not JSON \(line 1, column 2\)"),
        (json.dumps(["x"]), "must hold a JSON object"),
        (json.dumps({"privateKey": "abc"}), "has no 'name'"),
        (json.dumps({"name": KEY_NAME}), "has no 'privateKey'"),
    ],
)
def test_broken_key_files_say_what_is_wrong(tmp_path: Path, content: str, message: str):
    path = tmp_path / "key.json"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(CredentialsError, match=message):
        read_key_file(path)


def test_missing_key_file_is_named(tmp_path: Path):
    with pytest.raises(CredentialsError, match=r"api_key_file: cannot read .*nope.json"):
        read_key_file(tmp_path / "nope.json")


def test_resolve_credentials_names_what_is_missing(tmp_path: Path):
    pem, _ = ec_pem()
    with pytest.raises(CredentialsError, match="api_key_name is missing"):
        resolve_credentials(None, SecretStr(pem), None)
    with pytest.raises(CredentialsError, match="api_private_key is missing"):
        resolve_credentials(KEY_NAME, SecretStr("  "), None)
    path = write_key_file(tmp_path / "k.json", {"name": KEY_NAME, "privateKey": pem})
    with pytest.raises(CredentialsError, match="not both"):
        resolve_credentials(KEY_NAME, SecretStr(pem), path)
    assert resolve_credentials(None, None, path).key_name == KEY_NAME
    assert resolve_credentials(KEY_NAME, pem, None).private_key.get_secret_value() == pem


def test_secrets_never_appear_in_reprs_strs_logs_or_config(caplog: pytest.LogCaptureFixture):
    pem, _ = ec_pem()
    marker = pem.splitlines()[1][:24]
    credentials = Credentials(KEY_NAME, SecretStr(pem))
    signer = JwtSigner(credentials)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("perpsbot.test").info("credentials %s signer %r %s", credentials, signer, [credentials])
    config = BotConfig(exchange="coinbase", api_key_name=KEY_NAME, api_private_key=pem)
    texts = [repr(credentials), str(credentials), repr(signer), str(signer), caplog.text, repr(config), str(config),
             json.dumps(config.model_dump(mode="json"))]
    for text in texts:
        assert marker not in text
    assert KEY_NAME in repr(credentials) and "**********" in repr(credentials)
    loaded = load_config(environ={"PERPSBOT_PROFILE": "prod", "PERPSBOT_API_KEY_NAME": KEY_NAME,
                                  "PERPSBOT_API_PRIVATE_KEY": pem})
    rows = {key: (value, source) for key, value, source in config_rows(loaded)}
    assert rows["api_private_key"] == ("**********", "env PERPSBOT_API_PRIVATE_KEY")
    assert rows["api_key_name"] == ("**********", "env PERPSBOT_API_KEY_NAME")  # a credential too: masked
    assert all(marker not in value for value, _ in rows.values())
