"""`unit_of_work(readonly=True)` on PostgreSQL: no transaction around the block (each statement
commits on its own), the same repositories, and the connection goes back to the pool in its
normal transactional mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from tbd_agents.domain.models import Agent
from tbd_agents.storage.postgres.engine import create_engine, libpq_url
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.contract.conftest import empty_all
from tests.support import pg

NOW = text("SELECT now()")  # the transaction's start time


@pytest.fixture(scope="module")
def pg_url(pg18_server: str) -> Iterator[URL]:
    url = pg.create_migrated_database(pg18_server, prefix="readonly")
    yield url
    pg.drop_database(url)


@pytest.fixture
async def one_conn_store(pg_url: URL) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(create_engine(pg_url, pool_size=1, max_overflow=0), url=pg_url)
    await empty_all(store)
    yield store
    await store.close()


async def _two_nows(store: PostgresStore, readonly: bool) -> tuple[object, object]:
    async with store.unit_of_work(readonly=readonly) as repos:
        first = (await repos.connection.execute(NOW)).scalar()
        await asyncio.sleep(0.01)
        second = (await repos.connection.execute(NOW)).scalar()
    return first, second


async def test_readonly_block_runs_each_statement_on_its_own(one_conn_store: PostgresStore) -> None:
    first, second = await _two_nows(one_conn_store, readonly=True)
    assert first != second  # two transactions
    # the same (single) pooled connection is transactional again afterwards
    first, second = await _two_nows(one_conn_store, readonly=False)
    assert first == second


async def test_readonly_block_reads_what_was_committed(one_conn_store: PostgresStore) -> None:
    agent = Agent(name="a")
    async with one_conn_store.unit_of_work() as repos:
        await repos.agents.create(agent)
    async with one_conn_store.unit_of_work(readonly=True) as repos:
        assert await repos.agents.get(agent.id) == agent
        assert [a.id for a in (await repos.agents.list()).items] == [agent.id]


async def test_single_write_block_commits_its_write_without_a_transaction(
    one_conn_store: PostgresStore, pg_url: URL
) -> None:
    """`unit_of_work(single_write=True)`: autocommit like a read-only block, one write."""
    agent = Agent(name="once")
    async with one_conn_store.unit_of_work(single_write=True) as repos:
        first = (await repos.connection.execute(NOW)).scalar()
        await repos.agents.create(agent)
        await asyncio.sleep(0.01)
        second = (await repos.connection.execute(NOW)).scalar()
        # committed already: another connection sees it before the block ends
        other = await asyncpg.connect(libpq_url(pg_url))
        try:
            assert await other.fetchval("SELECT name FROM agents WHERE id = $1", agent.id) == "once"
        finally:
            await other.close()
    assert first != second


async def test_a_second_write_in_a_single_write_block_is_refused_before_it_is_sent(
    one_conn_store: PostgresStore,
) -> None:
    async def write_twice() -> None:
        async with one_conn_store.unit_of_work(single_write=True) as repos:
            await repos.agents.create(Agent(name="first"))
            await repos.agents.create(Agent(name="second"))

    with pytest.raises(RuntimeError, match="single_write"):
        await write_twice()
    async with one_conn_store.unit_of_work(readonly=True) as repos:
        assert [a.name for a in (await repos.agents.list()).items] == ["first"]
    # reads, then one bulk insert (a single statement, no savepoint outside a transaction)
    async with one_conn_store.unit_of_work(single_write=True) as repos:
        assert await repos.agents.count() == 1
        assert await repos.agents.insert_many([Agent(name="b1"), Agent(name="b2")]) == 2
    # an ordinary unit of work still writes as often as it likes, in one transaction
    async with one_conn_store.unit_of_work() as repos:
        await repos.agents.create(Agent(name="t1"))
        await repos.agents.create(Agent(name="t2"))
        assert await repos.agents.count() == 5
