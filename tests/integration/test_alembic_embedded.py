"""The embedded PostgreSQL: started and migrated by `prepare_database`, tuned, stopped on close,
and its data survives a restart."""

from __future__ import annotations

import asyncpg
import pytest

from tbd_agents.config import load_settings
from tbd_agents.storage.postgres import migrate
from tbd_agents.storage.postgres.embedded import EmbeddedPostgres, tuning_for
from tbd_agents.storage.postgres.engine import libpq_url
from tests.support import pg

GB = 1024**3


def test_tuning_follows_the_machine() -> None:
    settings = load_settings()
    big = tuning_for(settings, ram_bytes=32 * GB)
    assert big.shared_buffers == "1024MB"  # RAM/4 capped at 1 GB
    assert big.effective_cache_size == "16384MB"
    assert big.maintenance_work_mem == "512MB"
    assert big.as_settings()["random_page_cost"] == "1.1"
    small = tuning_for(settings, ram_bytes=2 * GB)
    assert small.shared_buffers == "512MB"
    tiny = tuning_for(settings, ram_bytes=256 * 1024**2)
    assert tiny.shared_buffers == "128MB"  # never below PostgreSQL's default
    pools = settings.postgres_pool_size + settings.postgres_max_overflow
    assert big.max_connections >= max(100, 4 * pools)


def test_tuning_settings_win() -> None:
    settings = load_settings(
        embedded_pg_shared_buffers="256MB",
        embedded_pg_maintenance_work_mem="1GB",
        postgres_pool_size=40,
        postgres_max_overflow=20,
    )
    tuning = tuning_for(settings, ram_bytes=32 * GB)
    assert (tuning.shared_buffers, tuning.maintenance_work_mem) == ("256MB", "1GB")
    assert tuning.max_connections >= 4 * 60


@pytest.mark.slow
async def test_embedded_server_migrates_itself_is_tuned_and_keeps_its_data() -> None:
    data_dir = pg.private_dir("tbd-embedded-") / "nested" / "pgdata"  # parents are created
    # 128MB is PostgreSQL's default: the first start needs no tuning restart.
    settings = load_settings(embedded_pg_data_dir=data_dir, embedded_pg_shared_buffers="128MB")
    assert settings.uses_embedded_postgres

    prepared = await migrate.prepare_database(settings)
    try:
        assert await migrate.current_revisions(prepared.url) == (migrate.head_revision(),)
        conn = await asyncpg.connect(libpq_url(prepared.url))
        try:
            assert await conn.fetchval("SHOW shared_buffers") == "128MB"
            assert await conn.fetchval("SHOW maintenance_work_mem") == "512MB"
            assert await conn.fetchval("SHOW random_page_cost") == "1.1"
            assert int(await conn.fetchval("SHOW max_connections")) == (
                tuning_for(settings).max_connections
            )
            assert await conn.fetchval("SELECT current_database()") == "tbd_agents"
            await conn.execute("INSERT INTO agents (id, name) VALUES ('kept', 'Survivor')")
        finally:
            await conn.close()
    finally:
        await prepared.aclose()
    assert not (data_dir / "postmaster.pid").exists()

    # A changed restart-only setting is applied at the next start.
    settings = load_settings(embedded_pg_data_dir=data_dir, embedded_pg_shared_buffers="48MB")
    prepared = await migrate.prepare_database(settings)
    try:
        conn = await asyncpg.connect(libpq_url(prepared.url))
        try:
            assert await conn.fetchval("SELECT name FROM agents WHERE id = 'kept'") == "Survivor"
            assert await conn.fetchval("SHOW shared_buffers") == "48MB"
        finally:
            await conn.close()
    finally:
        await prepared.aclose()
    assert not (data_dir / "postmaster.pid").exists()


@pytest.mark.slow
def test_context_manager_starts_and_stops() -> None:
    data_dir = pg.private_dir("tbd-embedded-") / "pgdata"
    settings = load_settings(
        embedded_pg_data_dir=data_dir, embedded_pg_shared_buffers="128MB", postgres_db_name="other"
    )
    with EmbeddedPostgres(settings) as url:
        assert url.database == "other"
        assert url.drivername == "postgresql+asyncpg"
        assert (data_dir / "postmaster.pid").exists()
    assert not (data_dir / "postmaster.pid").exists()
