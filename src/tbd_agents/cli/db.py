"""`tbd-agents db ...`: the database schema (Alembic migrations) of the PostgreSQL backend, and
`db prune`: the retention rules applied once (either backend).

The target database comes from the settings, as for `alembic ...`: DB_BACKEND=mongo makes the
commands no-ops that say so; POSTGRES_URI (+ POSTGRES_DB_NAME) names an external server; without
POSTGRES_URI the embedded PostgreSQL is started for the command and stopped afterwards.
`--url` overrides all of that for one command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy.engine import URL

from tbd_agents.cli.common import fail, friendly_errors, settings
from tbd_agents.errors import InvalidData
from tbd_agents.storage.postgres import migrate
from tbd_agents.storage.postgres.engine import asyncpg_url
from tbd_agents.storage.postgres.errors import where

if TYPE_CHECKING:
    from tbd_agents.config import Settings
    from tbd_agents.services.retention import PruneReport
    from tbd_agents.vectors.base import VectorStore

app = typer.Typer(
    help=(
        "Manage the PostgreSQL schema (Alembic migrations). Acts on POSTGRES_URI, or on the "
        "embedded PostgreSQL when POSTGRES_URI is unset; does nothing with DB_BACKEND=mongo."
    ),
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Database URL (postgresql:// or postgresql+asyncpg://); overrides POSTGRES_URI.",
        show_default=False,
    ),
]

MONGO_NOOP = (
    "DB_BACKEND=mongo: documents are stored in MongoDB, which needs no migrations, so there is "
    "nothing to do. To use PostgreSQL, set DB_BACKEND=postgres and COMPOSE_PROFILES=pgvector in "
    ".env and restart."
)


class _Progress(logging.Handler):
    """Alembic's "Running upgrade a -> b" lines, on whatever stderr is current."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage().startswith("Running ")

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(record.getMessage(), err=True)


def _show_progress() -> None:
    log = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(h, _Progress) for h in log.handlers):
        log.addHandler(_Progress())
    log.setLevel(logging.INFO)


@contextmanager
def _target(url: str | None) -> Iterator[URL | None]:
    if url:
        yield asyncpg_url(url)
        return
    with migrate.migration_target(settings()) as target:
        yield target


def _describe(revisions: tuple[str, ...]) -> str:
    if not revisions:
        return "no revision (empty database: run `tbd-agents db upgrade`)"
    head = migrate.head_revision()
    return ", ".join(f"{rev} (head)" if rev == head else rev for rev in revisions)


@app.command()
@friendly_errors
def upgrade(
    revision: Annotated[
        str, typer.Argument(help="Target revision: head (default), a revision id, or +N.")
    ] = "head",
    url: UrlOption = None,
    documents_only: Annotated[
        bool,
        typer.Option(
            "--documents-only",
            help="Skip the pgvector revisions: keep only the document tables current on a "
            "server without pgvector (the API refuses such a database).",
        ),
    ] = False,
) -> None:
    """Apply pending migrations (like `alembic upgrade head`).

    Safe to repeat: a database at head is left unchanged. Concurrent runs wait for each other
    (advisory lock), so the second one finds nothing to do.
    """
    _show_progress()
    with _target(url) as target:
        if target is None:
            typer.echo(MONGO_NOOP)
            return
        asyncio.run(migrate.upgrade_to_head(target, revision, documents_only=documents_only))
        current = asyncio.run(migrate.current_revisions(target))
        typer.echo(f"{where(target)} is at {_describe(current)}")


@app.command()
@friendly_errors
def current(url: UrlOption = None) -> None:
    """Show the revision the database is at (like `alembic current`)."""
    with _target(url) as target:
        if target is None:
            typer.echo(MONGO_NOOP)
            return
        typer.echo(_describe(asyncio.run(migrate.current_revisions(target))))


@app.command()
@friendly_errors
def history(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show parents, files and descriptions.")
    ] = False,
) -> None:
    """List the migrations shipped with this version (like `alembic history`).

    Newest first. Needs no database.
    """
    for info in migrate.history():
        down = info.down_revision or "<base>"
        title = info.message.splitlines()[0] if info.message else ""
        mark = " (head)" if info.is_head else ""
        if not verbose:
            typer.echo(f"{down} -> {info.revision}{mark}, {title}")
            continue
        typer.echo(f"Rev: {info.revision}{mark}\nParent: {down}\nPath: {info.path}\n")
        for line in info.message.splitlines():
            typer.echo(f"    {line}".rstrip())
        typer.echo("")


@app.command()
@friendly_errors
def downgrade(
    revision: Annotated[
        str, typer.Argument(help="Target revision: -1 (default: one step back), an id, or base.")
    ] = "-1",
    url: UrlOption = None,
) -> None:
    """Roll back migrations (like `alembic downgrade -1`).

    `base` drops every table: the data is lost.
    """
    _show_progress()
    with _target(url) as target:
        if target is None:
            typer.echo(MONGO_NOOP)
            return
        asyncio.run(migrate.downgrade(target, revision))
        typer.echo(
            f"{where(target)} is at {_describe(asyncio.run(migrate.current_revisions(target)))}"
        )


@app.command()
@friendly_errors
def check(url: UrlOption = None) -> None:
    """Check the database is at head and matches this version's schema (like `alembic check`).

    Exits 1 and says what differs otherwise.
    """
    with _target(url) as target:
        if target is None:
            typer.echo(MONGO_NOOP)
            return
        asyncio.run(migrate.ensure_at_head(target))
        asyncio.run(migrate.check(target))
        typer.echo(f"{where(target)} is at head and matches the schema of this version.")


@app.command("reset-password")
@friendly_errors
def reset_password() -> None:
    """Give the embedded PostgreSQL a new password (when its password file is lost).

    Every TBD Agents process using the embedded server must be stopped first. The new password
    goes into the password file (EMBEDDED_PG_PASSWORD_FILE, default DATA_DIR/pgdata.password).
    """
    config = settings()
    if not config.uses_embedded_postgres:
        raise InvalidData(
            "reset-password is for the embedded PostgreSQL (DB_BACKEND=postgres without "
            "POSTGRES_URI); change an external server's password with its own tools (ALTER ROLE)"
        )
    from tbd_agents.storage.postgres.embedded import reset_password as reset

    path = reset(config)
    typer.echo(f"New password of the embedded PostgreSQL written to {path}.")


@app.command()
@friendly_errors
def prune(
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Count what would be deleted; delete nothing."),
    ] = False,
) -> None:
    """Apply the retention rules once (RETENTION_* settings; docs/retention.md) and print what
    was deleted.

    Works on either backend (PostgreSQL or DB_BACKEND=mongo). The upkeep loop of a running
    server applies the same rules every RETENTION_INTERVAL_SECONDS; running this meanwhile is
    safe (each batch is its own transaction, and a rule deletes by condition).
    """
    report = asyncio.run(_prune(dry_run))
    verb = "would delete" if dry_run else "deleted"
    for kind, count in report.counts.items():
        typer.echo(f"{kind.replace('_', ' ')}: {count} {verb}")
    for reason in report.skipped:
        typer.echo(f"skipped: {reason}", err=True)


async def _prune(dry_run: bool) -> PruneReport:
    from tbd_agents.storage.factory import prepared_store

    config = settings()
    async with prepared_store(config) as store:
        return await prune_once(config, store, dry_run)


async def prune_once(config: Settings, store: Any, dry_run: bool) -> PruneReport:
    """One retention pass on `store` as the command runs it: with the chat summariser when
    summaries are on, and with the Qdrant store when pruned chats' attachments have vectors."""
    from tbd_agents.services.retention import retention_for

    summariser = engine = None
    vectors = None if dry_run else _attachment_vectors(config, store)
    try:
        if config.retention_chat_summary_after_messages > 0 and not dry_run:
            from tbd_agents.engine.chat_summary import engine_chat_summariser
            from tbd_agents.engine.inprocess import engine_services

            engine = await engine_services(config, store)
            summariser = engine_chat_summariser(engine)
        retention = retention_for(config, store, summariser=summariser, vectors=vectors)
        return await retention.prune(dry_run=dry_run)
    finally:
        if engine is not None:
            await engine.aclose()
        if vectors is not None:
            await vectors.close()


def _attachment_vectors(config: Settings, store: Any) -> VectorStore | None:
    """The Qdrant store that holds the vectors of chat attachments, when chat sessions may be
    deleted (their attached files' chunks must go too; on pgvector they go with their rows)."""
    from tbd_agents.config import VectorBackend
    from tbd_agents.vectors.factory import open_vector_store

    chats_pruned = config.retention_chat_days > 0 or config.retention_chats_per_owner > 0
    if config.vector_backend is VectorBackend.PGVECTOR or not chats_pruned:
        return None
    try:
        return open_vector_store(config, store)
    except RuntimeError as exc:  # local mode: the folder is locked by another process
        raise fail(
            f"cannot open the Qdrant store to delete the vectors of pruned chats' attachments "
            f"({exc}). A running server applies the same rules in its upkeep loop every "
            "RETENTION_INTERVAL_SECONDS; otherwise stop it first, or use a Qdrant server "
            "(QDRANT_URL), which several processes can share."
        ) from exc
