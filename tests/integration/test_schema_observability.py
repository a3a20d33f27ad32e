"""The guide's Observability queries, verbatim, against a migrated database with a few rows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tbd_agents.storage.postgres import migrate
from tbd_agents.storage.postgres.engine import libpq_url
from tests.support import pg

# Copied from the guide's "Observability" section without any change.
TABLE_SIZES = """SELECT
relname AS table,
n_live_tup AS rows,
pg_size_pretty(pg_total_relation_size(relid)) AS total_size
FROM pg_stat_user_tables
ORDER BY n_live_tup DESC;"""

RECENT_AGENTS = """-- Most recently created agents
SELECT id, name, model, created_at
FROM agents
ORDER BY created_at DESC
LIMIT 10;"""

AGENTS_BY_MODEL = """-- All agents using a specific model
SELECT id, name, model
FROM agents
WHERE model = 'claude-opus-4-5';"""

MEMORIES_PER_AGENT = """-- Memory count per agent
SELECT
agent_id,
COUNT(*) AS memories
FROM memories
GROUP BY agent_id
ORDER BY memories DESC;"""

INDEX_USAGE = """-- Confirm B-tree indexes are being used
SELECT indexrelname, idx_scan, idx_tup_read, idx_tup_fetch
FROM pg_stat_user_indexes
WHERE indexrelname LIKE 'idx_%'
ORDER BY idx_scan DESC;"""

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("pg18", "head"), id="pg18-head"),
        pytest.param(
            ("pg15", migrate.DOCUMENT_SCHEMA_REVISION), id="pg15-docs", marks=pytest.mark.pg15
        ),
    ],
)
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    server_name, revision = request.param
    url = pg.create_migrated_database(
        request.getfixturevalue(f"{server_name}_server"), "obs", revision=revision
    )
    yield libpq_url(url)
    pg.drop_database(url)


@pytest.fixture(scope="module")
async def seeded(database: str) -> str:
    conn = await asyncpg.connect(database)
    try:
        for i in range(12):
            model = "claude-opus-4-5" if i % 3 == 0 else "gpt-4o"
            await conn.execute(
                "INSERT INTO agents (id, name, model, created_at) VALUES ($1, $2, $3, $4)",
                f"agent-{i:02d}",
                f"Agent {i}",
                model,
                T0 + timedelta(minutes=i),
            )
        for agent, count in (("agent-01", 3), ("agent-02", 1), ("agent-03", 2)):
            for k in range(count):
                await conn.execute(
                    "INSERT INTO memories (agent_id, key, value) VALUES ($1, $2, 'v')",
                    agent,
                    f"k{k}",
                )
        await conn.execute("INSERT INTO chat_sessions (agent_id) VALUES ('agent-01')")
        # An index scan the health check can see.
        await conn.execute("SET enable_seqscan = off")
        await conn.fetch("SELECT id FROM chat_sessions WHERE agent_id = 'agent-01'")
        await conn.execute("SELECT pg_stat_force_next_flush()")
    finally:
        await conn.close()
    return database


@pytest.fixture
async def conn(seeded: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(seeded)
    try:
        yield connection
    finally:
        await connection.close()


async def test_table_sizes_and_row_counts(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(TABLE_SIZES)
    by_table = {r["table"]: r for r in rows}
    assert {"agents", "memories", "chat_sessions", "mcp_servers"} <= set(by_table)
    assert by_table["agents"]["rows"] == 12
    assert by_table["memories"]["rows"] == 6
    assert by_table["agents"]["total_size"].endswith(("bytes", "kB", "MB"))
    counts = [r["rows"] for r in rows]
    assert counts == sorted(counts, reverse=True)


async def test_recent_agents(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(RECENT_AGENTS)
    assert [r["id"] for r in rows] == [f"agent-{i:02d}" for i in range(11, 1, -1)]
    assert rows[0]["created_at"] == T0 + timedelta(minutes=11)


async def test_agents_by_model(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(AGENTS_BY_MODEL)
    assert sorted(r["id"] for r in rows) == ["agent-00", "agent-03", "agent-06", "agent-09"]


async def test_memory_count_per_agent(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(MEMORIES_PER_AGENT)
    assert [(r["agent_id"], r["memories"]) for r in rows] == [
        ("agent-01", 3),
        ("agent-03", 2),
        ("agent-02", 1),
    ]


async def test_index_usage_health_check(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(INDEX_USAGE)
    names = [r["indexrelname"] for r in rows]
    assert names and all(name.startswith("idx_") for name in names)
    assert "idx_chat_sessions_agent_id" in names
    used = {r["indexrelname"]: r["idx_scan"] for r in rows}
    assert used["idx_chat_sessions_agent_id"] >= 1
    assert rows[0]["idx_scan"] >= 1  # ordered by use
