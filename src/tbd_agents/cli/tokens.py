"""`tbd-agents tokens ...`: the keys that encrypt stored tokens."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from tbd_agents.cli.common import fail, friendly_errors, settings
from tbd_agents.cli.serve import open_cli_store
from tbd_agents.security.cipher import (
    KeyFile,
    TokenCipher,
    generate_fernet_key,
    key_file_path,
    parse_key_ring,
)
from tbd_agents.services.tokens import reencrypt_all

app = typer.Typer(help="Manage the encryption keys of stored tokens.", no_args_is_help=True)


@app.command("generate-key")
def generate_key() -> None:
    """Print a new random key (for TOKEN_ENCRYPTION_KEY, as VERSION:KEY)."""
    typer.echo(generate_fernet_key())


@app.command("rotate-key")
@friendly_errors
def rotate_key(
    keep_old: Annotated[
        bool,
        typer.Option("--keep-old", help="Keep the old key(s) in the key file after re-encrypting."),
    ] = False,
) -> None:
    """Re-encrypt every token under a new key version.

    Key file (the embedded default): a new version is added to the file (running servers pick it
    up; both keys decrypt meanwhile), every token is re-encrypted, then the old versions are
    removed. TOKEN_ENCRYPTION_KEY: first add the new key as the highest version (keep the old
    ones), restart the servers, run this command, then remove the old versions.
    """
    config = settings()
    key_file: KeyFile | None = None
    if config.token_encryption_key is not None:
        ring = parse_key_ring(config.token_encryption_key.get_secret_value())
    else:
        key_file = KeyFile(key_file_path(config))
        if not key_file.exists():
            raise fail(
                f"no key file at {key_file.path}: no token has been stored yet, nothing to rotate"
            )
        ring = key_file.ensure()
        ring[max(ring) + 1] = generate_fernet_key()
        key_file.write(ring)
    cipher = TokenCipher(ring)

    async def run() -> int:
        async with open_cli_store(config) as store:
            return await reencrypt_all(store, cipher)

    count = asyncio.run(run())
    typer.echo(f"Re-encrypted {count} token(s) under key version {cipher.current_version}.")
    if key_file is not None and not keep_old:
        key_file.write({cipher.current_version: ring[cipher.current_version]})
        typer.echo(f"Removed the old key version(s) from {key_file.path}.")
    elif key_file is None and len(ring) > 1:
        typer.echo(
            "Every token now uses the newest key: remove the older VERSION:KEY entries from "
            "TOKEN_ENCRYPTION_KEY and restart the servers."
        )
