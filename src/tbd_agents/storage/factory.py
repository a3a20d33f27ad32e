"""Build the document store chosen by the settings — the one place that branches on the backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.engine import URL

from tbd_agents.config import DbBackend, Settings
from tbd_agents.errors import ConfigurationError
from tbd_agents.storage.protocol import DocumentStore


async def open_store(
    settings: Settings, *, url: URL | str | None = None, supervisor: Any = None
) -> DocumentStore:
    """The document store of `settings.db_backend`, connected lazily (call `ping()` to check it).

    PostgreSQL: `url` (e.g. the embedded server's URL from `prepare_database`) or, without it,
    `POSTGRES_URI` / `POSTGRES_DB_NAME`. This function never starts a server itself. The engine
    uses the pool size, timeout and application name of the settings and is disposed by
    `store.close()`.

    MongoDB: `MONGO_URI` / `MONGO_DB_NAME`; opening pings the server and creates missing indexes
    (`storage.mongo.connect.open_mongo_store`), so an unreachable server fails here.

    `supervisor`: the embedded server's `EmbeddedSupervisor`, whose situation the store's
    outage errors and readiness report.
    """
    if settings.db_backend is DbBackend.POSTGRES:
        return _open_postgres(settings, url, supervisor)
    if settings.db_backend is DbBackend.MONGO:
        from tbd_agents.storage.mongo.connect import open_mongo_store

        return await open_mongo_store(settings)
    raise ConfigurationError(
        f"DB_BACKEND={settings.db_backend.value} is not available in this build: "
        "set DB_BACKEND=postgres"
    )


@asynccontextmanager
async def prepared_store(
    settings: Settings, *, supervise: bool = False
) -> AsyncIterator[DocumentStore]:
    """The configured document store, ready to use, closed and let go when the block ends.

    PostgreSQL: the database prepared first (the embedded server started and migrated — and
    with `supervise`, restarted whenever it dies, for a long-running process — or an external
    one checked to be at head). MongoDB: the store opened on MONGO_URI (indexes created)."""
    if settings.db_backend is not DbBackend.POSTGRES:
        store = await open_store(settings)
        try:
            yield store
        finally:
            await store.close()
        return
    from tbd_agents.storage.postgres.migrate import prepare_database

    prepared = await prepare_database(settings, supervise=supervise)
    try:
        store = await open_store(settings, url=prepared.url, supervisor=prepared.supervisor)
        try:
            yield store
        finally:
            await store.close()
    finally:
        await prepared.aclose()


def _open_postgres(settings: Settings, url: URL | str | None, supervisor: Any) -> DocumentStore:
    from tbd_agents.storage.postgres.engine import create_engine
    from tbd_agents.storage.postgres.repository import PostgresStore

    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)  # str(URL) would mask the password
    target = settings.postgres_url(url)  # no url: POSTGRES_URI (ConfigurationError if unset)
    engine = create_engine(
        target,
        application_name=settings.application_name,
        pool_size=settings.postgres_pool_size,
        max_overflow=settings.postgres_max_overflow,
        connect_timeout=settings.postgres_connect_timeout,
        pool_pre_ping=settings.postgres_pool_pre_ping,
    )
    return PostgresStore(
        engine, url=target, embedded=settings.uses_embedded_postgres, supervisor=supervisor
    )
