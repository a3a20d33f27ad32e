"""Encryption of token values at rest with versioned Fernet keys.

A key ring maps a version number to a Fernet key. The highest version encrypts; every version in
the ring decrypts (`MultiFernet`), which is what lets `tbd-agents tokens rotate-key` re-encrypt
tokens while a running server keeps reading them. Each stored token records the version that
encrypted it (`tokens.key_version`).

Where the ring comes from:

* `TOKEN_ENCRYPTION_KEY` — comma-separated `VERSION:KEY` entries (a bare `KEY` is version 1);
* otherwise the key file `DATA_DIR/token-encryption.keys` (one `VERSION:KEY` per line), created
  once with 0600 permissions. The file is re-read when it changes, so a rotation done by the CLI
  is seen by a running server without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from tbd_agents.config import Settings
from tbd_agents.errors import ConfigurationError, TbdError

KEY_FILE_NAME = "token-encryption.keys"


class SecretUnreadable(TbdError):
    """A stored token cannot be decrypted with any key of the ring."""

    http_status = 500
    code = "secret_unreadable"


def generate_fernet_key() -> str:
    return Fernet.generate_key().decode("ascii")


def parse_key_ring(spec: str, *, source: str = "TOKEN_ENCRYPTION_KEY") -> dict[int, str]:
    """`{version: key}` from `VERSION:KEY` entries separated by commas or new lines."""
    ring: dict[int, str] = {}
    entries = [e.strip() for e in spec.replace("\n", ",").split(",") if e.strip()]
    for position, entry in enumerate(entries, start=1):
        version_text, sep, key = entry.partition(":")
        if not sep:
            version_text, key = "1", entry
        try:
            version = int(version_text)
            Fernet(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise ConfigurationError(
                f"{source}: entry {position} is not VERSION:KEY with a Fernet key; make a key "
                "with `tbd-agents tokens generate-key`"
            ) from None
        if version < 1 or version in ring:
            raise ConfigurationError(f"{source}: version {version} is invalid or repeated")
        ring[version] = key
    if not ring:
        raise ConfigurationError(
            f"{source} holds no key; make one with `tbd-agents tokens generate-key`"
        )
    return ring


def format_key_ring(ring: Mapping[int, str]) -> str:
    return "".join(f"{v}:{ring[v]}\n" for v in sorted(ring, reverse=True))


class TokenCipher:
    """Encrypt with the newest key version, decrypt with any version of the ring."""

    def __init__(self, ring: Mapping[int, str]) -> None:
        if not ring:
            raise ConfigurationError("the token key ring is empty")
        self._ring = dict(ring)
        self._versions = sorted(self._ring, reverse=True)
        self._multi = MultiFernet([Fernet(self._ring[v].encode("ascii")) for v in self._versions])

    @property
    def current_version(self) -> int:
        return self._versions[0]

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(self._versions)

    def derive_key(self, purpose: str) -> bytes:
        """A key for `purpose` (e.g. signing approval links) derived from the newest key of
        the ring: no second secret to configure; rotating the ring changes it."""
        return self.derive_keys(purpose)[0]

    def derive_keys(self, purpose: str) -> tuple[bytes, ...]:
        """The keys for `purpose` of every version of the ring, newest first: what was signed
        before a rotation still verifies while its key stays in the ring (removing the old
        version revokes it)."""
        label = f"tbd-agents:{purpose}".encode()
        return tuple(
            hmac.new(self._ring[v].encode("ascii"), label, hashlib.sha256).digest()
            for v in self._versions
        )

    def encrypt(self, plaintext: str) -> tuple[str, int]:
        """(ciphertext, key version) of `plaintext`."""
        return self._multi.encrypt(plaintext.encode("utf-8")).decode("ascii"), self.current_version

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._multi.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretUnreadable(
                "a stored token cannot be decrypted with the configured keys (versions "
                f"{', '.join(map(str, self._versions))}): restore the key that encrypted it in "
                "TOKEN_ENCRYPTION_KEY or the key file, or set the token's value again"
            ) from None

    def reencrypt(self, ciphertext: str) -> tuple[str, int]:
        """The same secret encrypted with the current key (fails if no key can read it)."""
        try:
            return self._multi.rotate(ciphertext.encode("ascii")).decode(
                "ascii"
            ), self.current_version
        except InvalidToken:
            self.decrypt(ciphertext)  # raises the explanatory error
            raise


class KeyFile:
    """The key ring file of the embedded default: created once, 0600, re-read when changed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> dict[int, str]:
        return parse_key_ring(self.path.read_text(encoding="ascii"), source=str(self.path))

    def write(self, ring: Mapping[int, str]) -> None:
        """Replace the file atomically; the content is never world- or group-readable."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(format_key_ring(ring))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def ensure(self) -> dict[int, str]:
        """Read the ring, creating the file with one new key (version 1) if it is missing."""
        if not self.exists():
            self.write({1: generate_fernet_key()})
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigurationError(
                f"{self.path} is readable by other users (mode {mode:o}): run "
                f"`chmod 600 {self.path}`"
            )
        return self.read()


class KeyRingProvider:
    """Hands out the current `TokenCipher`; follows the key file when the ring lives there."""

    def __init__(self, settings: Settings) -> None:
        self._lock = threading.Lock()
        self._file: KeyFile | None = None
        self._stamp: tuple[int, int] | None = None
        if settings.token_encryption_key is not None:
            self._cipher = TokenCipher(
                parse_key_ring(settings.token_encryption_key.get_secret_value())
            )
        else:
            self._file = KeyFile(key_file_path(settings))
            self._cipher = TokenCipher(self._file.ensure())
            self._stamp = self._file_stamp()

    @property
    def from_file(self) -> KeyFile | None:
        return self._file

    def _file_stamp(self) -> tuple[int, int] | None:
        assert self._file is not None
        try:
            st = self._file.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def cipher(self) -> TokenCipher:
        """The cipher of the ring as it is now (the key file is re-read if it changed)."""
        if self._file is None:
            return self._cipher
        stamp = self._file_stamp()
        if stamp != self._stamp and stamp is not None:
            with self._lock:
                self._cipher = TokenCipher(self._file.read())
                self._stamp = stamp
        return self._cipher


def key_file_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE_NAME
