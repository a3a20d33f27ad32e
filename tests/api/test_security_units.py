"""Key ring parsing, the key file's permissions, API key material, connection-string detection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tbd_agents.errors import ConfigurationError
from tbd_agents.security.apikeys import generate_key, hash_key, looks_like_api_key
from tbd_agents.security.cipher import (
    KeyFile,
    KeyRingProvider,
    SecretUnreadable,
    TokenCipher,
    generate_fernet_key,
    parse_key_ring,
)
from tbd_agents.services.tokens import is_connection_secret, referenced_names
from tests.api.conftest import make_settings


def test_key_ring_parsing() -> None:
    a, b = generate_fernet_key(), generate_fernet_key()
    assert parse_key_ring(a) == {1: a}
    assert parse_key_ring(f"2:{b}, 1:{a}") == {2: b, 1: a}
    for bad in ("", "1:not-a-key", f"1:{a},1:{b}", f"0:{a}", f"x:{a}"):
        with pytest.raises(ConfigurationError) as err:
            parse_key_ring(bad)
        assert a not in str(err.value) and b not in str(err.value)  # never echo key material


def test_cipher_versions() -> None:
    old, new = generate_fernet_key(), generate_fernet_key()
    text, version = TokenCipher({1: old}).encrypt("s3cret")
    both = TokenCipher({1: old, 2: new})
    assert version == 1 and both.current_version == 2
    assert both.decrypt(text) == "s3cret"
    again, v2 = both.reencrypt(text)
    assert v2 == 2 and TokenCipher({2: new}).decrypt(again) == "s3cret"
    with pytest.raises(SecretUnreadable):
        TokenCipher({3: generate_fernet_key()}).decrypt(text)


def test_key_file_created_0600_and_refused_when_readable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, token_encryption_key=None)
    provider = KeyRingProvider(settings)
    path = tmp_path / "token-encryption.keys"
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
    assert provider.cipher().current_version == 1
    ring = KeyFile(path).read()
    KeyFile(path).write({**ring, 2: generate_fernet_key()})
    assert provider.cipher().current_version == 2  # the file is followed
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        KeyRingProvider(settings)


def test_api_key_material() -> None:
    key = generate_key()
    assert looks_like_api_key(key.plaintext) and key.plaintext.startswith(key.prefix)
    assert key.key_hash == hash_key(key.plaintext) and len(key.key_hash) == 64
    assert key.plaintext not in key.key_hash
    assert generate_key().plaintext != key.plaintext
    assert not looks_like_api_key("ghp_abcdef") and not looks_like_api_key("tbd_")


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ("postgresql://app:pw@db:5432/x", True),
        ("mongodb+srv://u:p@cluster.example/db", True),
        ("https://user:token@example.com/path", True),
        ("postgresql://app@db/x", False),
        ("https://example.com/a:b@c", False),
        ("not a url", False),
        ("{{token:db}}", False),
    ],
)
def test_connection_secret_detection(value: str, secret: bool) -> None:
    assert is_connection_secret(value) is secret


def test_referenced_names() -> None:
    tree = {
        "env": {"A": "{{token:alpha}}", "B": "x {{ token:beta.2 }} y"},
        "list": ["{{token:alpha}}"],
    }
    assert referenced_names(tree) == {"alpha", "beta.2"}
