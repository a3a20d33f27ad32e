"""The `store` fixture of the contract suite: every test runs once per backend in BACKENDS.

A backend is a name and a factory. The factory receives the pytest request and returns an async
context manager yielding a `DocumentStore` on a fresh, empty database; it is entered once per test
module (module scope) and every test starts from empty collections (see `store`). To add a
backend, append one `Backend(...)` entry to BACKENDS; the tests do not change.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.engine import URL

from tbd_agents.domain.models import ENTITIES
from tbd_agents.storage.protocol import DocumentStore, not_in
from tests.support import mongo, pg

if TYPE_CHECKING:
    from tbd_agents.storage.postgres.repository import PostgresStore

StoreFactory = Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[DocumentStore]]


@dataclass(frozen=True)
class Backend:
    name: str
    open: StoreFactory
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())


@asynccontextmanager
async def _postgres(server_uri: str, revision: str) -> AsyncIterator[DocumentStore]:
    from tbd_agents.storage.postgres.engine import create_engine
    from tbd_agents.storage.postgres.repository import PostgresStore

    url = pg.create_migrated_database(server_uri, prefix="contract", revision=revision)
    store = PostgresStore(create_engine(url, pool_size=2, max_overflow=2), url=url)
    try:
        yield store
    finally:
        await store.close()
        pg.drop_database(url)


def pg18_store(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[DocumentStore]:
    """Embedded PostgreSQL 18 + pgvector, schema at head."""
    return _postgres(request.getfixturevalue("pg18_server"), "head")


def pg15_store(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[DocumentStore]:
    """The machine's PostgreSQL 15 (no pgvector): the document tables only."""
    return _postgres(request.getfixturevalue("pg15_server"), pg.DOCUMENTS_ONLY)


#: Every backend the contract suite runs against: PostgreSQL 18 and 15, the MongoDB emulation,
#: and a real MongoDB-compatible server when TBD_TEST_MONGO_URI names one (none can run on the
#: build machines; see docs/storage-mongo.md).
BACKENDS: tuple[Backend, ...] = (
    Backend("pg18", pg18_store),
    Backend("pg15", pg15_store, marks=(pytest.mark.pg15,)),
    Backend("mongo", mongo.contract_store),
) + (
    (Backend("mongo-server", mongo.server_contract_store(_server_uri)),)
    if (_server_uri := os.environ.get(mongo.SERVER_URI_VARIABLE))
    else ()
)


@pytest.fixture(
    scope="module",
    params=[pytest.param(b, id=b.name, marks=b.marks) for b in BACKENDS],
)
async def backend_store(request: pytest.FixtureRequest) -> AsyncIterator[DocumentStore]:
    backend: Backend = request.param
    async with backend.open(request) as store:
        yield store


async def empty_all(store: DocumentStore) -> None:
    """Delete every record of every collection, through the protocol itself."""
    async with store.unit_of_work() as repos:
        for model in ENTITIES:
            await repos.for_model(model).delete_where(not_in("id", ()))


@pytest.fixture
async def store(backend_store: DocumentStore) -> DocumentStore:
    """A store whose collections are all empty when the test starts."""
    await empty_all(backend_store)
    return backend_store


@pytest.fixture(scope="module")
def pg_url(pg18_server: str, request: pytest.FixtureRequest) -> Iterator[URL]:
    """A migrated database of its own for a module of PostgreSQL-only tests."""
    prefix = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "")
    url = pg.create_migrated_database(pg18_server, prefix=prefix[:12])
    yield url
    pg.drop_database(url)


@pytest.fixture
async def pg_store(pg_url: URL) -> AsyncIterator[PostgresStore]:
    """A PostgresStore on `pg_url` whose collections are empty when the test starts."""
    from tbd_agents.storage.postgres.engine import create_engine
    from tbd_agents.storage.postgres.repository import PostgresStore

    store = PostgresStore(create_engine(pg_url, pool_size=2, max_overflow=0), url=pg_url)
    await empty_all(store)
    yield store
    await store.close()
