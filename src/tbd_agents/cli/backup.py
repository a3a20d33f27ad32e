"""`tbd-agents db backup` / `tbd-agents db restore`: one pg_dump holds documents, vectors and files.

The database is the one the other `db` commands use: POSTGRES_URI, else the embedded PostgreSQL
(started for the command); `--url` overrides both. With DB_BACKEND=mongo there is no PostgreSQL
data to back up (use mongodump and a Qdrant snapshot).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import URL

from tbd_agents.cli.common import friendly_errors, settings
from tbd_agents.config import redact_url
from tbd_agents.errors import InvalidData
from tbd_agents.storage.postgres import migrate
from tbd_agents.storage.postgres.engine import asyncpg_url, libpq_url
from tbd_agents.tools import backup as tool

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="Database URL (postgresql://...); overrides POSTGRES_URI.", show_default=False
    ),
]

MONGO_NOTHING = (
    "DB_BACKEND=mongo: the data lives in MongoDB and Qdrant; back it up with mongodump and a Qdrant "
    "snapshot. `tbd-agents db backup` backs up the PostgreSQL profile (DB_BACKEND=postgres)."
)


@contextmanager
def _target(url: str | None) -> Iterator[URL]:
    if url:
        yield asyncpg_url(url)
        return
    with migrate.migration_target(settings()) as target:
        if target is None:
            raise InvalidData(MONGO_NOTHING)
        yield target


def _shown(url: URL) -> str:
    return redact_url(libpq_url(url))


def _size(size: int) -> str:
    return f"{size / 1_048_576:,.1f} MB" if size >= 1_048_576 else f"{size:,} bytes"


@friendly_errors
def backup(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="Output file (default: tbd_agents_<UTC time>.dump, or .sql for plain).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-F", help="custom (pg_restore, parallel restore) or plain (SQL script)."
        ),
    ] = "custom",
    url: UrlOption = None,
) -> None:
    """Back up the whole PostgreSQL database (documents, vectors, files) with pg_dump."""
    if fmt not in tool.FORMATS:
        raise InvalidData(f"--format {fmt}: use custom or plain")
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
    out = file or Path(f"tbd_agents_{stamp}.{'dump' if fmt == 'custom' else 'sql'}")
    with _target(url) as target:
        server = asyncio.run(tool.inspect(target))
        typer.echo(
            f"Backing up {_shown(target)} (PostgreSQL {server.major}) to {out} ({fmt} format)"
        )
        done = tool.backup(target, out, fmt=fmt, major=server.major)
    typer.echo(
        f"Done: {_size(done.size)} in {done.seconds:.1f} s with {done.tool.path} ({done.tool.major})."
    )


@friendly_errors
def restore(
    file: Annotated[
        Path, typer.Argument(help="A backup made by `tbd-agents db backup` or pg_dump.")
    ],
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", min=1, max=64, help="Parallel restore jobs (custom format only)."
        ),
    ] = 1,
    clean: Annotated[
        bool,
        typer.Option(
            "--clean",
            help="Drop the objects the backup contains before restoring "
            "them (custom format); without it the database must be empty.",
        ),
    ] = False,
    url: UrlOption = None,
) -> None:
    """Restore a backup into the database (which must be empty unless --clean)."""
    with _target(url) as target:
        server = asyncio.run(tool.inspect(target))
        if not clean and not server.empty:
            raise InvalidData(
                f"{_shown(target)} already has tables: restore into an empty database (createdb a new "
                "one and pass --url, or unset POSTGRES_URI for a fresh embedded data directory), or "
                "pass --clean to replace the objects the backup contains (custom format)."
            )
        typer.echo(f"Restoring {file} ({tool.backup_format(file)} format) into {_shown(target)}")
        done = tool.restore(target, file, jobs=jobs, major=server.major, clean=clean)
    typer.echo(f"Done in {done.seconds:.1f} s with {done.tool.path} ({done.tool.major}).")
