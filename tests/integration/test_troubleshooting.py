"""Each row of the guide's Troubleshooting table, reproduced for real, with the message checked."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.engine import URL

from tbd_agents.config import load_settings
from tbd_agents.domain.models import Agent
from tbd_agents.errors import (
    ConfigurationError,
    DatabaseUnreachable,
    ExtensionMissing,
    InsufficientPrivilege,
    SchemaNotReady,
)
from tbd_agents.storage.factory import open_store
from tbd_agents.storage.postgres import migrate
from tbd_agents.storage.postgres.engine import libpq_url
from tests.support import pg


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _sql(url: URL | str, *statements: str) -> None:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def empty_db(pg18_server: str) -> Iterator[URL]:
    url = pg.create_database(pg18_server, "trouble")
    yield url
    pg.drop_database(url)


@pytest.fixture
def head_db(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, "trouble")
    yield url
    pg.drop_database(url)


# --- connection refused on startup ----------------------------------------------------------


async def test_connection_refused_names_host_port_profile_and_compose() -> None:
    port = _closed_port()
    settings = load_settings(
        db_backend="postgres", postgres_uri=f"postgresql+asyncpg://postgres:pw@127.0.0.1:{port}/x"
    )
    with pytest.raises(DatabaseUnreachable) as caught:
        await migrate.prepare_database(settings)
    message = caught.value.message
    assert f"127.0.0.1:{port}/x" in message
    assert "COMPOSE_PROFILES=pgvector" in message
    assert "docker compose ps" in message
    assert "pw" not in message  # never the password


async def test_connection_refused_from_a_repository() -> None:
    settings = load_settings(
        db_backend="postgres", postgres_uri=f"postgresql://postgres@127.0.0.1:{_closed_port()}/x"
    )
    store = await open_store(settings)
    try:
        with pytest.raises(DatabaseUnreachable, match="COMPOSE_PROFILES=pgvector"):
            async with store.unit_of_work() as repos:
                await repos.for_model(Agent).count()
    finally:
        await store.close()


# --- relation "agents" does not exist ---------------------------------------------------------


async def test_relation_does_not_exist_says_to_run_alembic_upgrade_head(empty_db: URL) -> None:
    settings = load_settings(db_backend="postgres", postgres_uri=libpq_url(empty_db))
    store = await open_store(settings)
    try:
        with pytest.raises(SchemaNotReady) as caught:
            async with store.unit_of_work() as repos:
                await repos.for_model(Agent).count()
    finally:
        await store.close()
    assert 'relation "agents" does not exist' in caught.value.message
    assert "alembic upgrade head" in caught.value.message


async def test_app_refuses_an_unmigrated_external_database(empty_db: URL) -> None:
    settings = load_settings(db_backend="postgres", postgres_uri=libpq_url(empty_db))
    with pytest.raises(SchemaNotReady, match="run `alembic upgrade head`"):
        await migrate.prepare_database(settings)
    # ... and did not create anything itself.
    assert await migrate.current_revisions(empty_db) == ()


async def test_app_refuses_a_database_that_is_behind(empty_db: URL) -> None:
    await migrate.upgrade_to_head(empty_db, migrate.DOCUMENT_SCHEMA_REVISION)
    settings = load_settings(db_backend="postgres", postgres_uri=libpq_url(empty_db))
    with pytest.raises(SchemaNotReady) as caught:
        await migrate.prepare_database(settings)
    assert migrate.DOCUMENT_SCHEMA_REVISION in caught.value.message
    assert "alembic upgrade head" in caught.value.message


async def test_app_accepts_a_database_at_head(head_db: URL) -> None:
    settings = load_settings(db_backend="postgres", postgres_uri=libpq_url(head_db))
    prepared = await migrate.prepare_database(settings)
    assert prepared.url.database == head_db.database
    assert prepared.embedded is None
    await prepared.aclose()


# --- column "X" does not exist ----------------------------------------------------------------


async def test_column_does_not_exist_names_the_column_and_the_fix(head_db: URL) -> None:
    # A database whose schema is older than the code: one typed column is missing.
    await _sql(head_db, "ALTER TABLE agents DROP COLUMN model")
    settings = load_settings(db_backend="postgres", postgres_uri=libpq_url(head_db))
    store = await open_store(settings)
    try:
        with pytest.raises(SchemaNotReady) as caught:
            async with store.unit_of_work() as repos:
                await repos.for_model(Agent).create(Agent(name="a", model="m"))
    finally:
        await store.close()
    assert 'column "model"' in caught.value.message
    assert "alembic upgrade head" in caught.value.message
    assert "alembic current" in caught.value.message
    # `alembic check` (tbd-agents db check) shows the same drift.
    diffs = await migrate.schema_differences(head_db, ["agents"])
    assert any(d[0] == "add_column" and d[3].name == "model" for d in diffs)


# --- pgvector extension not found -------------------------------------------------------------


@pytest.mark.pg15
async def test_pgvector_missing_names_the_extension_and_the_fix(pg15_server: str) -> None:
    url = pg.create_database(pg15_server, "novector")
    try:
        with pytest.raises(ExtensionMissing) as caught:
            await migrate.upgrade_to_head(url)
        message = caught.value.message
        assert 'extension "vector" is not available on 127.0.0.1:5432/' in message
        assert "pgvector/pgvector:pg16" in message
        assert "CREATE EXTENSION vector" in message
        # The revisions before it went through: the document tables are usable.
        assert await migrate.current_revisions(url) == (migrate.DOCUMENT_SCHEMA_REVISION,)
        # The app started against it names the extension, not an upgrade that would fail again.
        with pytest.raises(ExtensionMissing, match='extension "vector" is not available'):
            await migrate.ensure_at_head(url)
    finally:
        pg.drop_database(url)


# --- migration fails with permission errors -----------------------------------------------------


@pytest.fixture
def weak_role(pg18_server: str, empty_db: URL) -> Iterator[URL]:
    """A login role that may connect to `empty_db` but has no CREATE anywhere."""
    role = f"weak_{uuid.uuid4().hex[:8]}"
    pg.run(_sql(pg18_server, f"CREATE ROLE {role} LOGIN"))
    yield empty_db.set(username=role)
    pg.drop_database(empty_db)
    pg.run(_sql(pg18_server, f"DROP ROLE IF EXISTS {role}"))


async def test_permission_denied_names_the_grant(weak_role: URL, empty_db: URL) -> None:
    role, db = weak_role.username, weak_role.database
    with pytest.raises(InsufficientPrivilege) as caught:
        await migrate.upgrade_to_head(weak_role)
    message = caught.value.message
    assert "permission denied for schema public" in message
    assert f"GRANT CREATE ON DATABASE {db} TO {role};" in message
    assert f"GRANT CREATE ON SCHEMA public TO {role};" in message

    # The fix the message gives works for the tables ...
    await _sql(empty_db, f"GRANT CREATE ON SCHEMA public TO {role}")
    await migrate.upgrade_to_head(weak_role, migrate.DOCUMENT_SCHEMA_REVISION)
    # ... and pgvector (not a trusted extension) needs a superuser once.
    with pytest.raises(InsufficientPrivilege, match="a superuser must create the extension"):
        await migrate.upgrade_to_head(weak_role)
    await _sql(empty_db, "CREATE EXTENSION vector")
    await migrate.upgrade_to_head(weak_role)
    assert await migrate.current_revisions(weak_role) == (migrate.head_revision(),)


# --- app still reads/writes MongoDB -------------------------------------------------------------


async def test_app_on_mongodb_is_told_to_set_db_backend() -> None:
    settings = load_settings(db_backend="mongo")
    with pytest.raises(ConfigurationError) as caught:
        await migrate.prepare_database(settings)
    assert "DB_BACKEND=mongo" in caught.value.message
    assert "Set DB_BACKEND=postgres" in caught.value.message


def test_migration_target_is_none_with_mongo() -> None:
    with migrate.migration_target(load_settings(db_backend="mongo")) as target:
        assert target is None


# --- slow queries on foreign-key-like columns -----------------------------------------------------


async def test_reference_columns_are_indexed_and_the_guide_fix_restores_one(head_db: URL) -> None:
    conn = await asyncpg.connect(libpq_url(head_db))
    try:
        rows = await conn.fetch("EXPLAIN SELECT * FROM chat_sessions WHERE agent_id = 'x'")
        plan = "\n".join(r[0] for r in rows)
        assert "idx_chat_sessions_agent_id" in plan
        await conn.execute("DROP INDEX idx_chat_sessions_agent_id")
        assert await migrate.schema_differences(head_db, ["chat_sessions"]) != []
        # The guide's fix, with <table>/<col> filled in, gives back exactly our index.
        await conn.execute(
            "CREATE INDEX CONCURRENTLY idx_chat_sessions_agent_id ON chat_sessions (agent_id);"
        )
    finally:
        await conn.close()
    assert await migrate.schema_differences(head_db, ["chat_sessions"]) == []
