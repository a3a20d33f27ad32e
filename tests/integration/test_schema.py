"""The migrated schema, read back from information_schema / pg_catalog / pg_indexes, against the
guide's contract: the 15 tables, the typed columns of its table, ids, timestamps, unique keys,
CHECKs on enum columns and the idx_<table>_<column> indexes. Runs on PostgreSQL 18 (head) and on
the machine's PostgreSQL 15 (documents only: every revision, the pgvector ones skipped)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tbd_agents.domain.models import ENTITIES
from tbd_agents.storage.postgres import schema
from tbd_agents.storage.postgres.engine import libpq_url
from tests.support import pg

TABLES = (
    "agents",
    "chat_sessions",
    "chat_messages",
    "memories",
    "skills",
    "tokens",
    "providers",
    "knowledge_items",
    "knowledge_sources",
    "custom_tools",
    "guardrails",
    "workflows",
    "task_executions",
    "scheduled_agents",
    "mcp_servers",
)

# The guide's "All 15 tables" table: key typed columns (no type written = TEXT).
GUIDE_COLUMNS: dict[str, dict[str, str]] = {
    "agents": {
        "name": "TEXT",
        "model": "TEXT",
        "mcp_server_ids": "TEXT[]",
        "tool_definitions": "JSONB",
    },
    "chat_sessions": {
        "agent_id": "TEXT",
        "github_user": "TEXT",
        "title": "TEXT",
        "message_count": "INTEGER",
    },
    "chat_messages": {"session_id": "TEXT", "role": "TEXT", "content": "TEXT", "usage": "JSONB"},
    "memories": {
        "agent_id": "TEXT",
        "scope": "TEXT",
        "key": "TEXT",
        "value": "TEXT",
        "embedding": "DOUBLE PRECISION[]",
        "metadata": "JSONB",
    },
    "skills": {"name": "TEXT", "instructions": "TEXT", "tags": "TEXT[]"},
    "tokens": {"name": "TEXT", "encrypted_value": "TEXT", "created_by": "TEXT"},
    "providers": {
        "name": "TEXT",
        "provider_type": "TEXT",
        "api_key_token_name": "TEXT",
        "auth_type": "TEXT",
        "base_url": "TEXT",
    },
    "knowledge_items": {
        "source_id": "TEXT",
        "content_type": "TEXT",
        "text_content": "TEXT",
        "file_name": "TEXT",
        "file_size": "INTEGER",
    },
    "knowledge_sources": {
        "name": "TEXT",
        "source_type": "TEXT",
        "connection_config": "JSONB",
        "status": "TEXT",
    },
    "custom_tools": {
        "name": "TEXT",
        "source_code": "TEXT",
        "parameters_schema": "JSONB",
        "is_enabled": "BOOLEAN",
    },
    "guardrails": {
        "name": "TEXT",
        "guardrail_type": "TEXT",
        "enabled": "BOOLEAN",
        "prompt_config": "JSONB",
    },
    "workflows": {
        "agent_id": "TEXT",
        "status": "TEXT",
        "max_turns": "INTEGER",
        "messages": "JSONB",
        "logs": "JSONB",
    },
    "task_executions": {
        "workflow_id": "TEXT",
        "status": "TEXT",
        "celery_task_id": "TEXT",
        "tool_calls": "INTEGER",
        "usage": "JSONB",
    },
    "scheduled_agents": {
        "workflow_id": "TEXT",
        "interval_value": "INTEGER",
        "interval_unit": "TEXT",
        "enabled": "BOOLEAN",
    },
    "mcp_servers": {
        "name": "TEXT",
        "transport_type": "TEXT",
        "connection_config": "JSONB",
        "allowed_tools": "TEXT[]",
        "status": "TEXT",
    },
}

# The guide's example CREATE TABLE agents: (type, nullable, default as PostgreSQL shows it).
GUIDE_AGENTS: dict[str, tuple[str, bool, str | None]] = {
    "id": ("TEXT", False, "(gen_random_uuid())::text"),
    "name": ("TEXT", False, None),
    "description": ("TEXT", False, "''::text"),
    "system_prompt": ("TEXT", False, "'You are a helpful assistant.'::text"),
    "model": ("TEXT", True, None),
    "mcp_server_ids": ("TEXT[]", False, "'{}'::text[]"),
    "mcp_server_tags": ("TEXT[]", False, "'{}'::text[]"),
    "tool_definitions": ("JSONB", False, "'[]'::jsonb"),
    "knowledge_source_ids": ("TEXT[]", False, "'{}'::text[]"),
    "knowledge_tags": ("TEXT[]", False, "'{}'::text[]"),
    "builtin_tools": ("TEXT[]", False, "'{}'::text[]"),
    "custom_tool_ids": ("TEXT[]", False, "'{}'::text[]"),
    "provider_id": ("TEXT", True, None),
    "created_at": ("TIMESTAMPTZ", False, "now()"),
    "updated_at": ("TIMESTAMPTZ", False, "now()"),
}

# information_schema (data_type, udt_name) of each type name the guide uses.
SQL_TYPES = {
    "TEXT": ("text", "text"),
    "INTEGER": ("integer", "int4"),
    "BOOLEAN": ("boolean", "bool"),
    "TIMESTAMPTZ": ("timestamp with time zone", "timestamptz"),
    "TEXT[]": ("ARRAY", "_text"),
    "JSONB": ("jsonb", "jsonb"),
    "DOUBLE PRECISION[]": ("ARRAY", "_float8"),
    "DOUBLE PRECISION": ("double precision", "float8"),
}


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("pg18", "head"), id="pg18-head"),
        pytest.param(("pg15", pg.DOCUMENTS_ONLY), id="pg15-docs", marks=pytest.mark.pg15),
    ],
)
def migrated(request: pytest.FixtureRequest) -> Iterator[str]:
    server_name, revision = request.param
    server = request.getfixturevalue(f"{server_name}_server")
    url = pg.create_migrated_database(server, "schema", revision=revision)
    yield libpq_url(url)
    pg.drop_database(url)


@pytest.fixture
async def conn(migrated: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(migrated)
    try:
        yield connection
    finally:
        await connection.close()


async def _columns(conn: asyncpg.Connection, table: str) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT column_name, data_type, udt_name, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1",
        table,
    )
    return {r["column_name"]: r for r in rows}


async def test_the_15_tables_exist(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    assert set(TABLES) <= {r["table_name"] for r in rows}


@pytest.mark.parametrize("table", TABLES)
async def test_guide_columns_have_their_native_types(conn: asyncpg.Connection, table: str) -> None:
    columns = await _columns(conn, table)
    for name, sql_type in GUIDE_COLUMNS[table].items():
        assert name in columns, f"{table}.{name} is missing"
        got = (columns[name]["data_type"], columns[name]["udt_name"])
        assert got == SQL_TYPES[sql_type], f"{table}.{name}: {got} is not {sql_type}"
    assert "data" not in columns  # no catch-all JSONB blob


@pytest.mark.parametrize("table", TABLES)
async def test_id_and_timestamps(conn: asyncpg.Connection, table: str) -> None:
    columns = await _columns(conn, table)
    assert (columns["id"]["udt_name"], columns["id"]["is_nullable"]) == ("text", "NO")
    assert columns["id"]["column_default"] == "(gen_random_uuid())::text"
    for name in ("created_at", "updated_at"):
        col = columns[name]
        assert (col["udt_name"], col["is_nullable"], col["column_default"]) == (
            "timestamptz",
            "NO",
            "now()",
        )
    pk = await conn.fetch(
        "SELECT kcu.column_name FROM information_schema.table_constraints tc "
        "JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name) "
        "WHERE tc.table_name = $1 AND tc.constraint_type = 'PRIMARY KEY'",
        table,
    )
    assert [r["column_name"] for r in pk] == ["id"]


async def test_agents_table_is_the_guide_example(conn: asyncpg.Connection) -> None:
    columns = await _columns(conn, "agents")
    for name, (sql_type, nullable, default) in GUIDE_AGENTS.items():
        col = columns[name]
        assert (col["data_type"], col["udt_name"]) == SQL_TYPES[sql_type], name
        assert (col["is_nullable"] == "YES") is nullable, name
        assert col["column_default"] == default, name


async def test_ids_and_timestamps_are_filled_by_the_database(conn: asyncpg.Connection) -> None:
    row = await conn.fetchrow("INSERT INTO agents (name) VALUES ('a') RETURNING *")
    assert len(row["id"]) == 36 and row["id"].count("-") == 4
    assert row["created_at"].tzinfo is not None
    assert row["created_at"] == row["updated_at"]
    assert row["mcp_server_ids"] == [] and row["system_prompt"] == "You are a helpful assistant."


@pytest.mark.parametrize(
    ("table", "columns"),
    [("tokens", ["name"]), ("providers", ["name"]), ("memories", ["agent_id", "scope", "key"])],
)
async def test_unique_keys(conn: asyncpg.Connection, table: str, columns: list[str]) -> None:
    uniques = await conn.fetch(
        "SELECT array_agg(a.attname ORDER BY k.ord) AS cols FROM pg_constraint c "
        "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
        "WHERE c.conrelid = $1::regclass AND c.contype = 'u' GROUP BY c.oid",
        table,
    )
    assert columns in [list(r["cols"]) for r in uniques]


async def test_duplicate_token_name_is_rejected(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO tokens (name, encrypted_value) VALUES ('gh', 'x')")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute("INSERT INTO tokens (name, encrypted_value) VALUES ('gh', 'y')")


def _enum_columns() -> list[tuple[str, str, list[str]]]:
    out = []
    for model in ENTITIES:
        for name, field in model.model_fields.items():
            enum = schema._enum_of(field.annotation)
            if enum is not None:
                out.append((model.collection, name, [v.value for v in enum]))
    return out


async def test_every_enum_column_has_a_check_constraint(conn: asyncpg.Connection) -> None:
    enum_columns = _enum_columns()
    assert len(enum_columns) >= 10
    for table, column, values in enum_columns:
        if column not in await _columns(conn, table):
            # Documents-only revision: test_alembic checks it has every column of the models.
            continue
        checks = await conn.fetch(
            "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint "
            "WHERE conrelid = $1::regclass AND contype = 'c' AND conname = $2",
            table,
            f"ck_{table}_{column}",
        )
        assert len(checks) == 1, f"{table}.{column} has no CHECK constraint"
        for value in values:
            assert f"'{value}'" in checks[0]["def"]


async def test_check_constraint_rejects_an_unknown_enum_value(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="ck_agents_output_format"):
        await conn.execute("INSERT INTO agents (name, output_format) VALUES ('a', 'yaml')")


async def test_idx_indexes(conn: asyncpg.Connection) -> None:
    rows = await conn.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
    )
    indexes = {r["indexname"]: r for r in rows}
    assert "idx_chat_sessions_agent_id" in indexes
    assert "USING btree (agent_id)" in indexes["idx_chat_sessions_agent_id"]["indexdef"]
    for table in TABLES:
        for column in ("created_at", *schema.BTREE_INDEXES.get(table, ())):
            index = indexes.get(f"idx_{table}_{column}")
            assert index is not None, f"idx_{table}_{column} is missing"
            assert index["tablename"] == table
            assert f"USING btree ({column})" in index["indexdef"]
        for column in schema.GIN_INDEXES.get(table, ()):
            assert f"USING gin ({column})" in indexes[f"idx_{table}_{column}"]["indexdef"]


async def test_deleting_a_session_deletes_its_messages(conn: asyncpg.Connection) -> None:
    session = await conn.fetchval("INSERT INTO chat_sessions (agent_id) VALUES ('a1') RETURNING id")
    await conn.execute(
        "INSERT INTO chat_messages (session_id, role, content) VALUES ($1, 'user', 'hi')", session
    )
    await conn.execute("DELETE FROM chat_sessions WHERE id = $1", session)
    assert (
        await conn.fetchval("SELECT count(*) FROM chat_messages WHERE session_id = $1", session)
        == 0
    )
