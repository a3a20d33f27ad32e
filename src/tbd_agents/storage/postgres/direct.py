"""The hot statements (a row by id, an insert, an update by id) sent straight to the asyncpg
connection under a unit of work's SQLAlchemy connection.

SQLAlchemy's execution path (statement cache key, compiled-cache lookup, the greenlet bridge,
the DBAPI cursor facade, result objects) cost ~0.25 ms of CPU per statement here, three times
what asyncpg itself costs for the same statement. These statements are compiled by SQLAlchemy
once per table (per set of columns for updates), with SQLAlchemy's own parameter processing
(JSONB serialisation...), and sent with `asyncpg.Connection.fetch` on the same connection and in
the same transaction: the SQLAlchemy adapter's transaction is started first, as its own cursor
does, so commit and rollback of the unit of work cover them. Rows come back as asyncpg records,
the types SQLAlchemy passes through for these columns (its JSONB codec is on the connection).

When the adapter does not look as expected (another SQLAlchemy version), `DirectLink.usable` is
False and the repository executes through SQLAlchemy as before. On an engine traced by
OpenTelemetry (`observability.tracing_setup` puts its `dbspans.StatementSpans` under
`TRACED_ATTR`) the statements stay on this path and get their spans from it, inside traced work
only, so tracing does not cost the fast path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

#: Where a traced (sync) engine keeps its statement spans (`start(sql)`, `end(span, failure)`).
TRACED_ATTR = "_tbd_traced"


@dataclass(frozen=True, slots=True)
class DirectStatement:
    """SQL text with `$n` parameters, their names in that order and their bind processing."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        return [
            value if process is None else process(value)
            for process, value in zip(self.processors, (values[n] for n in self.names), strict=True)
        ]


def compile_direct(
    statement: Executable, dialect: Dialect, column_keys: Sequence[str] | None = None
) -> DirectStatement:
    """`statement` compiled for asyncpg (`$n` parameters) by SQLAlchemy."""
    compiled = statement.compile(  # type: ignore[attr-defined]
        dialect=dialect, column_keys=list(column_keys) if column_keys is not None else None
    )
    assert isinstance(compiled, SQLCompiler)
    names = tuple(compiled.positiontup or ())
    processors = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    return DirectStatement(compiled.string, names, processors)


class DirectLink:
    """The asyncpg connection of one unit of work (looked up on first use)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._adapter: Any = None
        self._driver: asyncpg.Connection | None = None
        self.usable = True

    async def _resolve(self) -> bool:
        if self._driver is None and self.usable:
            adapter = (await self._conn.get_raw_connection()).dbapi_connection
            driver = getattr(adapter, "_connection", None)
            if (
                isinstance(driver, asyncpg.Connection)
                and hasattr(adapter, "_start_transaction")
                and hasattr(adapter, "_execute_mutex")
                and hasattr(adapter, "_transaction")
            ):
                self._adapter, self._driver = adapter, driver
            else:
                self.usable = False
        return self.usable

    def _announce(self, sql: str, arguments: list[Any]) -> tuple[Any, Any]:
        """SQLAlchemy's `before_cursor_execute` listeners (statement logs) see these statements
        too (without a cursor or context). On a traced engine: its statement spans and the
        statement's span, started (None outside traced work); `fetch` ends it."""
        sync = self._conn.sync_connection
        if sync is None:
            return None, None
        if sync._has_events or sync.engine._has_events:
            sync.dispatch.before_cursor_execute(sync, None, sql, tuple(arguments), None, False)
        spans = getattr(sync.engine, TRACED_ATTR, None)
        return spans, (spans.start(sql) if spans is not None else None)

    async def fetch(
        self, statement: DirectStatement, values: Mapping[str, Any]
    ) -> list[Any] | None:
        """The rows, or None when this link cannot be used (execute through SQLAlchemy)."""
        if not await self._resolve():
            return None
        adapter, driver = self._adapter, self._driver
        assert driver is not None
        arguments = statement.arguments(values)
        spans, span = self._announce(statement.sql, arguments)
        failure: BaseException | None = None
        try:
            async with adapter._execute_mutex:
                if adapter._transaction is None:  # as the adapter's cursor does: BEGIN first
                    await adapter._start_transaction()  # (nothing in autocommit)
                rows: list[Any] = await driver.fetch(statement.sql, *arguments)
                return rows
        except BaseException as exc:
            failure = exc
            lost = driver.is_closed()
            if lost:  # a dead connection must not go back to the pool
                await self._conn.invalidate()
            if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError) or (
                lost and isinstance(exc, asyncpg.InternalClientError)
            ):
                # as SQLAlchemy raises it: the statement's shape for the log, never the values;
                # `connection_invalidated` tells the translation the connection is gone
                raise DBAPIError(
                    statement.sql, None, exc, hide_parameters=True, connection_invalidated=lost
                ) from exc
            raise
        finally:
            if span is not None:
                spans.end(span, failure)
