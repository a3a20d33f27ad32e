"""PostgreSQL-only behaviour of the repository: statements issued, SQL shapes, error mapping."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from tbd_agents.config import Settings
from tbd_agents.domain.models import Agent, ChatMessage, ChatSession, Skill, Token
from tbd_agents.errors import DatabaseUnreachable, InvalidData, NotFound, SchemaNotReady
from tbd_agents.storage.factory import open_store
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import Query, contains_all, contains_any, desc, eq, in_
from tests.support import pg


class StatementLog:
    """Every statement the engine sends (SQLAlchemy `before_cursor_execute`)."""

    def __init__(self, store: PostgresStore) -> None:
        self.statements: list[tuple[str, Any]] = []
        self._engine = store.engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        self.statements.append((statement, params))

    def take(self) -> list[tuple[str, Any]]:
        taken, self.statements = self.statements, []
        return taken

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._record)


@pytest.fixture
def sql_log(pg_store: PostgresStore) -> Iterator[StatementLog]:
    log = StatementLog(pg_store)
    yield log
    log.close()


async def test_list_issues_the_same_single_statement_at_limit_1_and_50(
    pg_store: PostgresStore, sql_log: StatementLog
) -> None:
    async with pg_store.unit_of_work() as repos:
        await repos.agents.insert_many([Agent(name=f"a{i:03d}", tags=["t"]) for i in range(120)])
        query = Query(filters=(contains_any("tags", ["t"]),), sort=(desc("name"),))
        sql_log.take()
        small = await repos.agents.list(Query(query.filters, query.sort, limit=1))
        at_1 = sql_log.take()
        big = await repos.agents.list(Query(query.filters, query.sort, limit=50))
        at_50 = sql_log.take()
        await repos.agents.list(Query(query.filters, query.sort, 50, big.next_cursor))
        next_page = sql_log.take()
    assert len(small.items) == 1 and len(big.items) == 50
    assert len(at_1) == len(at_50) == len(next_page) == 1
    assert at_1[0][0] == at_50[0][0]  # same SQL text: the limit is a parameter


async def test_iterate_issues_one_statement_per_page(
    pg_store: PostgresStore, sql_log: StatementLog
) -> None:
    async with pg_store.unit_of_work() as repos:
        await repos.skills.insert_many([Skill(name=f"s{i}") for i in range(95)])
        sql_log.take()
        seen = [s async for s in repos.skills.iterate(Query(), batch_size=20)]
        statements = sql_log.take()
    assert len(seen) == 95
    assert len(statements) == 5


async def test_writes_issue_a_constant_number_of_statements(
    pg_store: PostgresStore, sql_log: StatementLog
) -> None:
    rows = [Skill(name=f"s{i}") for i in range(3000)]
    async with pg_store.unit_of_work() as repos:
        sql_log.take()
        await repos.skills.insert_many(rows)
        bulk = sql_log.take()
        token = await repos.tokens.create(Token(name="t", encrypted_value="v"))
        created = sql_log.take()
        await repos.tokens.update(token.id, {"description": "d"})
        updated = sql_log.take()
        await repos.tokens.upsert(Token(name="t", encrypted_value="w"), key=["name"])
        upserted = sql_log.take()
        await repos.tokens.delete(token.id)
        deleted = sql_log.take()
    assert [s.split()[0] for s, _ in bulk] == ["SAVEPOINT", "INSERT", "RELEASE"]
    assert (len(created), len(updated), len(upserted), len(deleted)) == (1, 1, 1, 1)


async def test_array_operators_bind_one_array_and_use_the_indexable_forms(
    pg_store: PostgresStore, sql_log: StatementLog
) -> None:
    async with pg_store.unit_of_work() as repos:
        await repos.agents.count(in_("name", ["a"]))
        one = sql_log.take()
        await repos.agents.count(in_("name", [f"n{i}" for i in range(100)]))
        hundred = sql_log.take()
        await repos.agents.count(contains_any("tags", ["x", "y"]))
        any_sql = sql_log.take()
        await repos.agents.count(contains_all("tags", ["x", "y"]))
        all_sql = sql_log.take()
    assert one[0][0] == hundred[0][0]
    assert "= ANY (" in one[0][0]
    assert "&&" in any_sql[0][0]
    assert "@>" in all_sql[0][0]


async def test_gin_index_serves_contains_any(
    pg_store: PostgresStore, sql_log: StatementLog
) -> None:
    async with pg_store.unit_of_work() as repos:
        await repos.agents.insert_many(
            [Agent(name=f"a{i}", tags=[f"tag{i % 50}"]) for i in range(2000)]
        )
        sql_log.take()
        await repos.agents.list(Query(filters=(contains_any("tags", ["tag7"]),)))
        ((statement, params),) = sql_log.take()
        conn = repos.connection
        await conn.execute(text("ANALYZE agents"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = (await conn.exec_driver_sql("EXPLAIN " + statement, params)).scalars().all()
    assert any("idx_agents_tags" in line for line in plan), plan


async def test_nul_in_text_is_invalid_data(pg_store: PostgresStore) -> None:
    with pytest.raises(InvalidData, match=r"NUL character \(U\+0000\)"):
        async with pg_store.unit_of_work() as repos:
            await repos.agents.create(Agent(name="a\x00b"))


async def test_a_row_that_does_not_fit_the_model_is_invalid_data(pg_store: PostgresStore) -> None:
    # A database changed by hand, behind the repository's back: its range check dropped and a
    # value out of range written. Reading the row is refused with the field named (the unit of
    # work then rolls everything back, the dropped check included).
    async def change_by_hand_and_read() -> None:
        async with pg_store.unit_of_work() as repos:
            await repos.agents.create(Agent(id="bad", name="x"))
            await repos.connection.execute(
                text("ALTER TABLE agents DROP CONSTRAINT ck_agents_temperature_range")
            )
            await repos.connection.execute(text("UPDATE agents SET temperature = 5"))
            await repos.agents.get("bad")

    with pytest.raises(InvalidData, match="'bad' does not fit the model: temperature") as info:
        await change_by_hand_and_read()
    assert info.value.details == {"id": "bad", "field": "temperature"}


async def test_deleting_a_parent_deletes_its_children(pg_store: PostgresStore) -> None:
    async with pg_store.unit_of_work() as repos:
        await repos.chat_sessions.create(ChatSession(id="s1", agent_id="a"))
        await repos.chat_messages.insert_many(
            [ChatMessage(session_id="s1", role="user", content=str(i)) for i in range(3)]
        )
        assert await repos.chat_sessions.delete("s1")
        assert await repos.chat_messages.count(eq("session_id", "s1")) == 0


async def test_unknown_driver_errors_propagate_unchanged(pg_store: PostgresStore) -> None:
    async with pg_store.unit_of_work() as repos:
        with pytest.raises(DBAPIError, match="division by zero"):
            await repos.agents._execute(text("SELECT 1/0"))


async def test_ping_and_queries_on_an_unmigrated_database_name_the_fix(pg18_server: str) -> None:
    url = pg.create_database(pg18_server, prefix="empty")
    store = PostgresStore(create_engine(url, pool_size=1, max_overflow=0), url=url)
    try:
        with pytest.raises(SchemaNotReady, match="alembic upgrade head") as info:
            await store.ping()
        assert "agents" in info.value.details["missing"]
        with pytest.raises(SchemaNotReady, match='relation "agents" does not exist'):
            async with store.unit_of_work() as repos:
                await repos.agents.get("x")
    finally:
        await store.close()
        pg.drop_database(url)


async def test_unreachable_server_is_database_unreachable() -> None:
    url = make_url("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    store = PostgresStore(create_engine(url, connect_timeout=2), url=url)
    try:
        with pytest.raises(DatabaseUnreachable, match=re.escape("127.0.0.1:1/nowhere")):
            await store.ping()
        with pytest.raises(DatabaseUnreachable):
            async with store.unit_of_work():
                pass
    finally:
        await store.close()


async def test_open_store_builds_a_postgres_store_from_settings(pg_url: URL) -> None:
    uri = pg_url.render_as_string(hide_password=False)
    settings = Settings(db_backend="postgres", postgres_uri=uri, application_name="h1-test")
    for store in (await open_store(settings), await open_store(Settings(), url=pg_url)):
        try:
            assert store.backend == "postgres"
            await store.ping()
            async with store.unit_of_work() as repos:
                with pytest.raises(NotFound):
                    await repos.agents.get("missing")
        finally:
            await store.close()
    store = await open_store(settings)
    try:
        assert isinstance(store, PostgresStore)
        async with store.engine.connect() as conn:
            name = (await conn.execute(text("SHOW application_name"))).scalar_one()
        assert name == "h1-test"
    finally:
        await store.close()


async def test_rows_by_id_inserts_and_updates_go_straight_to_asyncpg(
    pg_store: PostgresStore, sql_log: StatementLog
) -> None:
    """The hot statements (storage/postgres/direct.py) skip SQLAlchemy's cursor, yet statement
    listeners see them; with the installed SQLAlchemy the direct way is usable."""
    through_cursor: list[str] = []

    def executed(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        through_cursor.append(statement)

    engine = pg_store.engine.sync_engine
    event.listen(engine, "after_cursor_execute", executed)
    try:
        async with pg_store.unit_of_work() as repos:
            sql_log.take()
            agent = await repos.agents.create(Agent(name="direct", tags=["t"]))
            await repos.agents.update(agent.id, {"description": "changed", "tags": ["u"]})
            got = await repos.agents.get(agent.id)
        async with pg_store.unit_of_work(readonly=True) as repos:
            again = await repos.agents.get(agent.id)
    finally:
        event.remove(engine, "after_cursor_execute", executed)
    assert [s.split()[0] for s, _ in sql_log.take()] == ["INSERT", "UPDATE", "SELECT", "SELECT"]
    assert through_cursor == []
    assert got == again
    assert (got.description, got.tags, got.name) == ("changed", ["u"], "direct")


async def test_a_direct_write_first_in_a_unit_of_work_is_rolled_back_with_it(
    pg_store: PostgresStore,
) -> None:
    async with pg_store.unit_of_work() as repos:
        agent = await repos.agents.create(Agent(name="kept"))

    async def write_then_fail() -> None:
        async with pg_store.unit_of_work() as repos:
            await repos.agents.update(agent.id, {"description": "lost"})  # the BEGIN comes first
            await repos.agents.create(Agent(name="lost too"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await write_then_fail()
    async with pg_store.unit_of_work(readonly=True) as repos:
        assert (await repos.agents.get(agent.id)).description == ""
        assert await repos.agents.count() == 1
