"""Backup and restore of the PostgreSQL profile with PostgreSQL's own tools.

`backup` runs `pg_dump` (custom format by default, or plain SQL), `restore` runs `pg_restore`
(custom format, optionally with parallel jobs) or `psql` (plain SQL). Documents, vectors
(pgvector columns), file bytes and the Alembic revision are all ordinary table data, so one dump
holds everything. Dumps are written without owners and privileges (`--no-owner --no-acl`) so they
restore under any user.

The client tools must be at least as new as the server: `pg_dump` refuses a newer server. They are
looked up, in order, in the embedded PostgreSQL's `bin` directory (PostgreSQL 18), the Debian
layout `/usr/lib/postgresql/<major>/bin`, and PATH; the first whose major version is at least the
server's is used. The password never appears on a command line or in the environment: it is
written to a private temporary password file (libpq's `passfile`) for the duration of the command.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import URL

from tbd_agents.errors import InvalidData, StorageError
from tbd_agents.storage.postgres.embedded import postgres_bin_dir
from tbd_agents.storage.postgres.engine import libpq_url
from tbd_agents.storage.postgres.errors import translate, where

FORMATS = ("custom", "plain")
#: First bytes of a pg_dump custom-format archive.
_CUSTOM_MAGIC = b"PGDMP"
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")


@dataclass(frozen=True)
class Tool:
    path: Path
    major: int


@dataclass(frozen=True)
class Outcome:
    """What a backup or restore did."""

    file: Path
    size: int
    seconds: float
    tool: Tool


def _candidates(name: str, server_major: int) -> list[Path]:
    paths = [postgres_bin_dir() / name, Path(f"/usr/lib/postgresql/{server_major}/bin/{name}")]
    found = shutil.which(name)
    if found:
        paths.append(Path(found))
    return [p for p in paths if p.is_file() and os.access(p, os.X_OK)]


def _major(path: Path) -> int | None:
    try:
        # The executable is one of our candidates (embedded bin dir, Debian layout, PATH).
        out = subprocess.run(  # noqa: S603
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    return int(match.group(1)) if match else None


def find_tool(name: str, server_major: int) -> Tool:
    """The first `name` (pg_dump, pg_restore, psql) whose major version is ≥ the server's."""
    seen: list[str] = []
    for path in _candidates(name, server_major):
        major = _major(path)
        seen.append(f"{path} ({major or '?'})")
        if major is not None and major >= server_major:
            return Tool(path, major)
    found = ", ".join(seen) or "none"
    raise StorageError(
        f"{name} {server_major} or newer is needed for this PostgreSQL {server_major} server "
        f"(found: {found}). Install the client tools of that version (e.g. Debian/Ubuntu "
        f"`apt install postgresql-client-{server_major}`), or run them inside the database "
        f"container (`docker compose exec pgvector {name} ...`)."
    )


@dataclass(frozen=True)
class Server:
    """What backup and restore need to know about the target before running the tools."""

    major: int
    empty: bool


async def inspect(url: URL) -> Server:
    """Major version of the server at `url`, and whether the database has no table in `public`."""
    try:
        conn = await asyncpg.connect(libpq_url(url))
    except Exception as exc:
        domain = translate(exc, url=url)
        if domain is None:
            raise
        raise domain from exc
    try:
        major = int(await conn.fetchval("SHOW server_version_num")) // 10000
        exists = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'public')"
        )
        return Server(major, not exists)
    finally:
        await conn.close()


@contextmanager
def _connection(url: URL) -> Iterator[str]:
    """A libpq connection string without the password in it: the password, if any, goes in a
    private temporary password file named by the string's `passfile` parameter."""
    if not url.password:
        yield libpq_url(url)
        return
    with tempfile.TemporaryDirectory(prefix="tbd-pgpass-") as tmp:
        passfile = Path(tmp) / "pgpass"
        secret = str(url.password).replace("\\", "\\\\").replace(":", "\\:")
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"*:*:*:*:{secret}\n")
        # URL.set(password=None) keeps the password: rebuild the URL without it.
        bare = URL.create(
            url.drivername, url.username, None, url.host, url.port, url.database, url.query
        )
        yield libpq_url(bare.update_query_dict({"passfile": str(passfile)}))


def _run(command: list[str], what: str, url: URL) -> None:
    # An argument list (no shell); the executable comes from `find_tool`.
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        shown = "\n".join(detail[-15:])
        raise StorageError(f"{what} of {where(url)} failed (exit {result.returncode}):\n{shown}")


def backup(url: URL, file: Path, *, fmt: str = "custom", major: int) -> Outcome:
    """Dump the database at `url` into `file` (custom or plain format) with pg_dump."""
    if fmt not in FORMATS:
        raise InvalidData(f"unknown backup format {fmt!r}: use custom or plain")
    tool = find_tool("pg_dump", major)
    file.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with _connection(url) as dsn:
        options = [f"--format={fmt}", "--no-owner", "--no-acl", f"--file={file}", f"--dbname={dsn}"]
        _run([str(tool.path), *options], "pg_dump", url)
    return Outcome(file, file.stat().st_size, time.perf_counter() - started, tool)


def backup_format(file: Path) -> str:
    """`custom` for a pg_dump archive, `plain` for an SQL script."""
    with file.open("rb") as handle:
        return "custom" if handle.read(len(_CUSTOM_MAGIC)) == _CUSTOM_MAGIC else "plain"


def restore(url: URL, file: Path, *, jobs: int = 1, major: int, clean: bool = False) -> Outcome:
    """Restore `file` (either format) into the database at `url`.

    Custom archives go through pg_restore (`jobs` parallel workers); plain SQL through psql in one
    transaction, stopping at the first error. With `clean`, objects of a custom archive that
    already exist are dropped first; a plain script can only be restored into an empty database."""
    if not file.is_file():
        raise InvalidData(f"{file}: no such backup file")
    custom = backup_format(file) == "custom"
    if not custom and jobs > 1:
        raise InvalidData(
            "-j/--jobs needs a custom-format backup (tbd-agents db backup --format custom)"
        )
    tool = find_tool("pg_restore" if custom else "psql", major)
    started = time.perf_counter()
    with _connection(url) as dsn:
        if custom:
            options = [
                "--no-owner",
                "--no-acl",
                "--exit-on-error",
                f"--jobs={jobs}",
                f"--dbname={dsn}",
            ]
            options += ["--clean", "--if-exists"] if clean else []
            _run([str(tool.path), *options, str(file)], "pg_restore", url)
        else:
            options = ["--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
            _run(
                [str(tool.path), *options, f"--dbname={dsn}", f"--file={file}"], "psql restore", url
            )
    return Outcome(file, file.stat().st_size, time.perf_counter() - started, tool)
