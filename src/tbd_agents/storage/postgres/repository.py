"""The PostgreSQL implementation of the storage protocol (SQLAlchemy Core on the typed tables).

`PostgresStore` wraps an `AsyncEngine`; each `unit_of_work()` takes one connection, opens one
transaction and yields `PostgresRepositories` bound to it (commit on normal exit, rollback on an
exception). `PostgresRepository` (`entity_repository`) serves one entity on that connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NoReturn, cast

from sqlalchemy import func, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tbd_agents.domain.models import ENTITIES, Entity
from tbd_agents.errors import SchemaNotReady, StorageError, UnsupportedQuery
from tbd_agents.storage.postgres.direct import DirectLink
from tbd_agents.storage.postgres.entity_repository import (
    UNLIMITED,
    E,
    Explain,
    PostgresRepository,
    WriteBudget,
)
from tbd_agents.storage.postgres.errors import DRIVER_ERRORS, UPGRADE_HINT, translate, where
from tbd_agents.storage.postgres.tables import TABLES  # every table, extra modules included
from tbd_agents.storage.postgres.whole_lists import WHOLE_LISTS
from tbd_agents.storage.protocol import Repository

if TYPE_CHECKING:
    from tbd_agents.storage.postgres.supervisor import EmbeddedSupervisor

__all__ = [
    "WHOLE_LISTS",
    "PostgresRepositories",
    "PostgresRepository",
    "PostgresStore",
    "WriteBudget",
]

_ENTITY_BY_COLLECTION = {m.collection: m for m in ENTITIES}


class PostgresRepositories:
    """The 15 repositories of one unit of work, all on the same connection.

    Attributes are typed as the protocol declares them (`Repository[Any]`); use
    `for_model(Agent)` for a repository typed with its entity.
    """

    agents: Repository[Any]
    chat_sessions: Repository[Any]
    chat_messages: Repository[Any]
    memories: Repository[Any]
    skills: Repository[Any]
    tokens: Repository[Any]
    providers: Repository[Any]
    knowledge_items: Repository[Any]
    knowledge_sources: Repository[Any]
    custom_tools: Repository[Any]
    guardrails: Repository[Any]
    workflows: Repository[Any]
    task_executions: Repository[Any]
    scheduled_agents: Repository[Any]
    mcp_servers: Repository[Any]

    def __init__(
        self,
        conn: AsyncConnection,
        *,
        url: URL | None,
        embedded: bool,
        budget: WriteBudget = UNLIMITED,
        explain: Explain | None = None,
    ) -> None:
        self.connection = conn
        self._budget = budget
        self._explain = explain
        self._url, self._embedded = url, embedded
        # Built on first use: a request touches one or two of the 15 (measured: building all
        # 15 eagerly cost ~0.5 ms per unit of work).
        self._by_model: dict[type[Entity], PostgresRepository[Any]] = {}
        self._direct = DirectLink(conn)

    def __getattr__(self, name: str) -> PostgresRepository[Any]:
        model = _ENTITY_BY_COLLECTION.get(name)
        if model is None:
            raise AttributeError(name)
        return self.for_model(model)

    def for_model(self, model: type[E]) -> PostgresRepository[E]:
        """The repository of `model`: one of the 15 entities, or an extra entity whose table is
        registered in `schema.TABLES` (e.g. `ApiKey`, by `schema_auth`)."""
        try:
            return cast(PostgresRepository[E], self._by_model[model])
        except KeyError:
            if model.collection not in TABLES:
                raise UnsupportedQuery(f"{model.__name__} is not a stored entity") from None
        repo = PostgresRepository(
            model,
            self.connection,
            url=self._url,
            embedded=self._embedded,
            direct=self._direct,
            budget=self._budget,
            explain=self._explain,
        )
        self._by_model[model] = repo
        return repo


class PostgresStore:
    """`storage.protocol.DocumentStore` over an async SQLAlchemy engine (asyncpg)."""

    backend = "postgres"
    transactional = True

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        url: URL | None = None,
        embedded: bool = False,
        owns_engine: bool = True,
        supervisor: EmbeddedSupervisor | None = None,
    ) -> None:
        self.engine = engine
        self.url = url if url is not None else engine.url
        self._embedded = embedded
        self._owns_engine = owns_engine
        #: The embedded server's supervisor (`serve`): its situation explains outages.
        self.supervisor = supervisor
        self._explain: Explain | None = supervisor.explain if supervisor is not None else None

    @property
    def embedded(self) -> bool:
        """Whether the database is the embedded PostgreSQL (for error messages)."""
        return self._embedded

    def _raise(self, exc: BaseException) -> NoReturn:
        err = translate(exc, url=self.url, embedded=self._embedded)
        if err is None:
            raise exc
        if self._explain is not None and isinstance(err, StorageError):
            err = self._explain(err)
        raise err from exc

    @asynccontextmanager
    async def unit_of_work(
        self, *, readonly: bool = False, single_write: bool = False
    ) -> AsyncIterator[PostgresRepositories]:
        """Repositories on one connection in one transaction: commit when the block ends
        normally, roll back when it raises (the exception propagates).

        `readonly=True` is for blocks that only read: no BEGIN/COMMIT round trips, each statement
        runs on its own (autocommit), so two reads of the block may see different snapshots.
        `single_write=True` is for blocks that read, then write once (a create or an update by
        id): the same, the write committing on its own (one statement is atomic); measured, the
        BEGIN and COMMIT round trips were a third of the API's CPU time for a create. A second
        write raises RuntimeError before it is sent."""
        try:
            conn = await self.engine.connect()
        except DRIVER_ERRORS as exc:
            self._raise(exc)
        if readonly or single_write:
            budget = WriteBudget(1) if single_write else UNLIMITED
            try:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                yield PostgresRepositories(
                    conn,
                    url=self.url,
                    embedded=self._embedded,
                    budget=budget,
                    explain=self._explain,
                )
            finally:
                await conn.close()
            return
        try:
            try:
                trans = await conn.begin()
            except DRIVER_ERRORS as exc:
                self._raise(exc)
            try:
                yield PostgresRepositories(
                    conn, url=self.url, embedded=self._embedded, explain=self._explain
                )
            except BaseException:
                await trans.rollback()
                raise
            try:
                await trans.commit()
            except DRIVER_ERRORS as exc:
                self._raise(exc)
        finally:
            await conn.close()

    async def ping(self) -> None:
        """Check the server answers and the 15 tables exist (one round trip).

        Raises DatabaseUnreachable (with the fix) or SchemaNotReady naming the missing tables.
        """
        names = [m.collection for m in ENTITIES]
        probe = select(*(func.to_regclass(f"public.{n}").label(n) for n in names))
        try:
            async with self.engine.connect() as conn:
                row = (await conn.execute(probe)).one()
        except DRIVER_ERRORS as exc:
            self._raise(exc)
        missing = [n for n, oid in zip(names, row, strict=True) if oid is None]
        if missing:
            raise SchemaNotReady(
                f'relation "{missing[0]}" does not exist: the tables have not been created in '
                f"{where(self.url)} (missing: {', '.join(missing)}); {UPGRADE_HINT}.",
                details={"missing": missing},
            )

    async def close(self) -> None:
        """Close the pool (if this store created the engine)."""
        if self._owns_engine:
            await self.engine.dispose()
