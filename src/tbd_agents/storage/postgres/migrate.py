"""Alembic, driven from code: upgrade, downgrade, current, history and check against one URL.

These functions are what the `tbd-agents db` commands, the application start-up and the tests
use; `alembic ...` from the repository root runs the same `env.py`. Every migration run holds a
PostgreSQL advisory lock (`MIGRATION_LOCK_KEY`) on its connection, so two migrators started at
once never both run DDL: the second waits, then finds nothing left to do.

Revisions:
- `INITIAL_REVISION` ... `DOCUMENT_SCHEMA_REVISION`: the 15 document tables as first shipped.
  Need nothing beyond PostgreSQL 13+.
- `VECTOR_REVISION`: enables the `vector` extension; fails with a clear message where pgvector is
  not installed. `head` is at or after it.
- A server without pgvector (a "documents only" server) runs the whole chain with
  `documents_only=True`: the pgvector revisions do nothing, every other one runs, so the document
  tables are always at the current schema. The application refuses such a database.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, MetaData
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tbd_agents.config import DbBackend, Settings, load_settings
from tbd_agents.errors import ConfigurationError, SchemaNotReady, StorageError
from tbd_agents.storage.postgres.engine import asyncpg_url
from tbd_agents.storage.postgres.errors import UPGRADE_HINT, extension_missing, translate, where

if TYPE_CHECKING:
    from tbd_agents.storage.postgres.embedded import EmbeddedPostgres
    from tbd_agents.storage.postgres.supervisor import EmbeddedSupervisor

#: The last revision before pgvector: a plain `upgrade head` on a server without pgvector stops
#: here (with the extension message). Changes to the document tables are appended at the head like
#: any revision; a documents-only server takes them with `upgrade_to_head(url,
#: documents_only=True)`, which runs the whole chain and skips the pgvector revisions
#: (`tbd_agents.migrations.options`).
DOCUMENT_SCHEMA_REVISION = "5d2e8a41c9f0"
#: Revision that creates the 15 document tables.
INITIAL_REVISION = "3f1c2a9d8b47"
#: Revision that enables the pgvector extension.
VECTOR_REVISION = "7b5e0d4c1a26"
#: Key of the session-level advisory lock held while migrating ("tbd_migr" as a bigint).
MIGRATION_LOCK_KEY = 0x7462645F6D696772

SCRIPT_LOCATION = "tbd_agents:migrations"
#: Config attribute read by `tbd_agents.migrations.options.documents_only`.
DOCUMENTS_ONLY = "documents_only"

T = TypeVar("T")


def alembic_config(*, stdout: TextIO | None = None) -> Config:
    """An Alembic Config for the packaged migrations (no alembic.ini needed)."""
    cfg = Config(stdout=stdout) if stdout is not None else Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The single head revision of the packaged migrations."""
    heads = script_directory().get_heads()
    if len(heads) != 1:
        raise CommandError(
            f"the migrations have {len(heads)} heads ({', '.join(heads)}); merge them"
        )
    return heads[0]


def migrations_path() -> str:
    return str(files("tbd_agents") / "migrations")


async def _with_connection(url: URL | str, fn: Callable[[Connection], T]) -> T:
    """Run `fn(sync_connection)` on a fresh connection to `url`; translate driver errors."""
    target = asyncpg_url(url)
    engine = create_async_engine(target, poolclass=NullPool, hide_parameters=True)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    except (StorageError, CommandError):
        raise
    except Exception as exc:
        domain = translate(exc, url=target)
        if domain is None:
            raise
        raise domain from exc
    finally:
        await engine.dispose()


#: Alembic keeps its running context in module globals: one command at a time per process.
#: (Between processes, the PostgreSQL advisory lock taken in env.py does the serialising.)
_alembic_busy = threading.Lock()


async def _alembic_command(
    url: URL | str,
    name: str,
    *args: Any,
    stdout: TextIO | None = None,
    attributes: dict[str, Any] | None = None,
) -> None:
    def run(connection: Connection) -> None:
        cfg = alembic_config(stdout=stdout)
        cfg.attributes.update(attributes or {})
        cfg.attributes["connection"] = connection
        getattr(command, name)(cfg, *args)

    # Poll rather than block: blocking would stall the event loop, and a cancelled waiting
    # thread could take the lock and never give it back.
    while not _alembic_busy.acquire(blocking=False):  # noqa: ASYNC110 (a thread lock)
        await asyncio.sleep(0.02)
    try:
        await _with_connection(url, run)
    finally:
        _alembic_busy.release()


async def upgrade_to_head(
    url: URL | str, revision: str = "head", *, documents_only: bool = False
) -> None:
    """Bring the database at `url` up to `revision` (default: head) under the migration lock.

    `documents_only` skips the pgvector revisions (a server without pgvector keeping the document
    tables). Raises ExtensionMissing when `revision` needs pgvector and the server lacks it,
    InsufficientPrivilege when the user may not create tables, DatabaseUnreachable when the server
    cannot be reached."""
    attributes = {DOCUMENTS_ONLY: True} if documents_only else None
    await _alembic_command(url, "upgrade", revision, attributes=attributes)


async def downgrade(url: URL | str, revision: str = "-1", *, documents_only: bool = False) -> None:
    """Take the database at `url` down to `revision` (default: one step back)."""
    attributes = {DOCUMENTS_ONLY: True} if documents_only else None
    await _alembic_command(url, "downgrade", revision, attributes=attributes)


async def current_revisions(url: URL | str) -> tuple[str, ...]:
    """The revision(s) the database at `url` is at (empty: not migrated at all)."""

    def read(connection: Connection) -> tuple[str, ...]:
        heads = MigrationContext.configure(connection).get_current_heads()
        connection.rollback()
        return tuple(heads)

    return await _with_connection(url, read)


async def vector_extension_available(url: URL | str) -> bool:
    """Whether the server at `url` can `CREATE EXTENSION vector` (pgvector is installed)."""

    def read(connection: Connection) -> bool:
        found = connection.exec_driver_sql(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        ).first()
        connection.rollback()
        return found is not None

    return await _with_connection(url, read)


async def vector_extension_installed(url: URL | str) -> bool:
    """Whether the `vector` extension is created in the database at `url`."""

    def read(connection: Connection) -> bool:
        found = connection.exec_driver_sql(
            "SELECT 1 FROM pg_extension WHERE extname = 'vector'"
        ).first()
        connection.rollback()
        return found is not None

    return await _with_connection(url, read)


async def check(url: URL | str) -> None:
    """Raise CommandError if the metadata and the migrations disagree (`alembic check`)."""
    await _alembic_command(url, "check")


async def schema_differences(
    url: URL | str, table_names: Collection[str] | None = None
) -> list[Any]:
    """What `alembic check` would report for the database at `url` (empty: none), optionally
    only for the tables named in `table_names`."""
    from alembic.autogenerate import compare_metadata

    from tbd_agents.migrations.autogen import AUTOGENERATE_OPTIONS
    from tbd_agents.storage.postgres.tables import metadata

    target = metadata
    if table_names is not None:
        target = MetaData(naming_convention=metadata.naming_convention)
        for name in table_names:
            metadata.tables[name].to_metadata(target)

    opts = dict(AUTOGENERATE_OPTIONS)
    if table_names is not None:
        wanted = set(table_names)

        def include_name(name: str | None, type_: str, parents: Any) -> bool:
            # Other tables of the database are left out of the comparison, not "removed".
            return type_ != "table" or name in wanted

        opts["include_name"] = include_name

    def compare(connection: Connection) -> list[Any]:
        ctx = MigrationContext.configure(connection, opts=opts)
        diffs = list(compare_metadata(ctx, target))
        connection.rollback()
        return diffs

    return await _with_connection(url, compare)


@dataclass(frozen=True)
class RevisionInfo:
    revision: str
    down_revision: str | None
    message: str
    path: str
    is_head: bool


def history() -> list[RevisionInfo]:
    """Every packaged revision, newest first."""
    out: list[RevisionInfo] = []
    for script in script_directory().walk_revisions():
        down = script.down_revision
        out.append(
            RevisionInfo(
                revision=script.revision,
                down_revision=down if isinstance(down, str) or down is None else ",".join(down),
                message=(script.doc or "").strip(),
                path=script.path,
                is_head=script.is_head,
            )
        )
    return out


async def ensure_at_head(url: URL | str) -> None:
    """Refuse (SchemaNotReady) unless the database at `url` is at the head revision."""
    current = await current_revisions(url)
    head = head_revision()
    if current == (head,):
        if await vector_extension_installed(url):
            return
        # At head, but migrated documents-only (the pgvector revisions were skipped).
        raise extension_missing(asyncpg_url(url))
    target = where(asyncpg_url(url))
    known = {info.revision for info in history()}
    unknown = [rev for rev in current if rev not in known]
    if unknown:
        raise SchemaNotReady(
            f"The database {target} is at revision {', '.join(unknown)}, which this version of "
            "TBD Agents does not know (a newer version migrated it): run the newer version, or "
            "downgrade the database with it (`alembic downgrade <revision>`).",
            details={"current": list(current), "head": head},
        )
    if not await vector_extension_available(url):
        # `alembic upgrade head` would stop at the pgvector revision: say what actually blocks.
        raise extension_missing(asyncpg_url(url))
    shown = ", ".join(current) if current else "no revision (empty database)"
    raise SchemaNotReady(
        f"The database {target} is at {shown}, but this version of TBD Agents needs revision "
        f"{head}: {UPGRADE_HINT}.",
        details={"current": list(current), "head": head},
    )


@contextmanager
def migration_target(settings: Settings | None = None) -> Iterator[URL | None]:
    """The database the settings point at, for a migration command.

    Yields None with DB_BACKEND=mongo (nothing to migrate), the POSTGRES_URI database when set,
    else the embedded server's database (started for the block, stopped after)."""
    settings = settings or load_settings()
    if settings.db_backend is DbBackend.MONGO:
        yield None
    elif settings.uses_embedded_postgres:
        from tbd_agents.storage.postgres.embedded import embedded_server

        with embedded_server(settings) as url:
            yield url
    else:
        yield settings.postgres_url()


@dataclass
class PreparedDatabase:
    """A PostgreSQL database ready for the application; `aclose()` stops an embedded server
    (and its supervisor)."""

    url: URL
    embedded: EmbeddedPostgres | None = None
    supervisor: EmbeddedSupervisor | None = None

    async def aclose(self) -> None:
        supervisor, self.supervisor = self.supervisor, None
        if supervisor is not None:
            await asyncio.to_thread(supervisor.stop)
        server, self.embedded = self.embedded, None
        if server is not None:
            await asyncio.to_thread(server.stop)


async def _start_embedded(server: EmbeddedPostgres) -> URL:
    """`server.start()` in a thread; cancelled (a signal during start-up), it waits for the
    start to finish and lets go of the server before passing the cancellation on."""
    starting = asyncio.ensure_future(asyncio.to_thread(server.start))
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await starting
        await asyncio.to_thread(server.stop)
        raise


async def prepare_database(settings: Settings, *, supervise: bool = False) -> PreparedDatabase:
    """Make the configured PostgreSQL database usable by the application.

    Embedded (no POSTGRES_URI): start the server and migrate it to head; with `supervise` (and
    EMBEDDED_PG_SUPERVISE) watch it and restart it when it dies. External: check that the
    server answers and the database is at head, else raise (DatabaseUnreachable, SchemaNotReady
    saying to run `alembic upgrade head`): the application never creates tables itself."""
    if settings.db_backend is not DbBackend.POSTGRES:
        raise ConfigurationError(
            f"DB_BACKEND={settings.db_backend.value}: the application uses MongoDB, not "
            "PostgreSQL. Set DB_BACKEND=postgres (and COMPOSE_PROFILES=pgvector) in .env and "
            "restart to use PostgreSQL."
        )
    if settings.uses_embedded_postgres:
        from tbd_agents.storage.postgres.embedded import EmbeddedPostgres

        server = EmbeddedPostgres(settings)
        url = await _start_embedded(server)
        prepared = PreparedDatabase(url, server)
        try:
            await upgrade_to_head(url)
            if supervise and settings.embedded_pg_supervise:
                from tbd_agents.storage.postgres.supervisor import EmbeddedSupervisor

                prepared.supervisor = EmbeddedSupervisor(
                    server,
                    interval=settings.embedded_pg_watch_interval,
                    max_backoff=settings.embedded_pg_restart_max_backoff,
                )
                prepared.supervisor.start()
        except BaseException:
            await prepared.aclose()
            raise
        return prepared
    url = settings.postgres_url()
    await ensure_at_head(url)
    return PreparedDatabase(url)
