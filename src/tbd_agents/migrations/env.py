"""Alembic environment of TBD Agents (async, asyncpg), shared by `alembic ...` and the code.

Where the database comes from, first match wins:
1. `config.attributes["connection"]`: an open connection handed over by
   `tbd_agents.storage.postgres.migrate` (the CLI `tbd-agents db`, the app, the tests);
2. `config.attributes["url"]` or `alembic -x url=postgresql://...`;
3. the settings: DB_BACKEND=mongo makes the command a no-op; DB_BACKEND=postgres with
   POSTGRES_URI migrates that server; without POSTGRES_URI the embedded PostgreSQL is started
   for the command and stopped afterwards.

Every run holds the advisory lock `MIGRATION_LOCK_KEY` for its duration, so concurrent
migrators run one after the other and the second finds nothing to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.util.exc import CommandError
from sqlalchemy import Connection, func, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tbd_agents.errors import TbdError
from tbd_agents.migrations.autogen import AUTOGENERATE_OPTIONS
from tbd_agents.storage.postgres.engine import asyncpg_url
from tbd_agents.storage.postgres.errors import translate
from tbd_agents.storage.postgres.migrate import MIGRATION_LOCK_KEY, migration_target
from tbd_agents.storage.postgres.tables import metadata

config = context.config
target_metadata = metadata


def _configure(**kwargs: Any) -> None:
    # One transaction per revision: a failing step (e.g. no pgvector) keeps the steps before it.
    context.configure(
        target_metadata=target_metadata,
        transaction_per_migration=True,
        **AUTOGENERATE_OPTIONS,
        **kwargs,
    )


def run_on_connection(connection: Connection) -> None:
    """Run the migrations on `connection` while holding the migration advisory lock."""
    external = connection.in_transaction()
    if external:
        # The caller owns the transaction: a transaction-scoped lock, released at its end.
        connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
    else:
        connection.execute(select(func.pg_advisory_lock(MIGRATION_LOCK_KEY)))
        connection.commit()
    try:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if not external:
            if connection.in_transaction():
                connection.rollback()
            connection.execute(select(func.pg_advisory_unlock(MIGRATION_LOCK_KEY)))
            connection.commit()


async def _run_async(url: URL) -> None:
    engine = create_async_engine(url, poolclass=NullPool, hide_parameters=True)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(run_on_connection)
    finally:
        await engine.dispose()


@contextmanager
def _cli_errors(url: URL | None) -> Iterator[None]:
    """From the `alembic` command line, show our errors as one line ("FAILED: ...")."""
    try:
        yield
    except TbdError as exc:
        raise CommandError(exc.message) from exc
    except CommandError:
        raise
    except Exception as exc:
        domain = translate(exc, url=url)
        if domain is None:
            raise
        raise CommandError(domain.message) from exc


def _explicit_url() -> URL | None:
    raw = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    return asyncpg_url(raw) if raw else None


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the SQL instead of running it."""
    url = _explicit_url() or URL.create("postgresql+asyncpg")
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on_connection(connection)
        return
    if config.config_file_name is not None:
        # The `alembic` command line: log as alembic.ini says (the app configures its own logging).
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    url = _explicit_url()
    with _cli_errors(url):
        if url is not None:
            asyncio.run(_run_async(url))
            return
        with migration_target() as target:
            if target is None:
                config.print_stdout(
                    "DB_BACKEND=mongo: nothing to migrate (Alembic manages the PostgreSQL "
                    "schema only; MongoDB needs no migrations). Set DB_BACKEND=postgres to "
                    "migrate PostgreSQL."
                )
                return
            with _cli_errors(target):
                asyncio.run(_run_async(target))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
