"""API key material: generation, hashing, and the shape of a key.

A key looks like `tbd_<8 chars>_<43 chars>`: 32 random bytes (256 bits) after a short public
prefix that lets users recognise a key in a list without revealing it. Only the SHA-256 digest of
the whole key is stored. A slow password hash (bcrypt, argon2) protects low-entropy passwords
against guessing; these keys are uniformly random, so a digest leak cannot be brute-forced, and a
fast digest keeps authentication at microseconds instead of ~100 ms of CPU per uncached request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

KEY_PREFIX = "tbd_"
_PUBLIC_LEN = 8


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: `plaintext` is shown once and never stored."""

    plaintext: str
    prefix: str
    key_hash: str


def hash_key(plaintext: str) -> str:
    """Hex SHA-256 digest of a key (what the `api_keys.key_hash` column holds)."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def looks_like_api_key(credential: str) -> bool:
    """True if `credential` has the shape of one of our keys (as opposed to a GitHub token)."""
    return credential.startswith(KEY_PREFIX) and len(credential) > len(KEY_PREFIX) + _PUBLIC_LEN


def generate_key() -> NewKey:
    """A new random key with its public prefix and stored digest."""
    public = secrets.token_hex(_PUBLIC_LEN // 2)
    plaintext = f"{KEY_PREFIX}{public}_{secrets.token_urlsafe(32)}"
    return NewKey(
        plaintext, prefix=plaintext[: len(KEY_PREFIX) + _PUBLIC_LEN], key_hash=hash_key(plaintext)
    )
