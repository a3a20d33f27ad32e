"""A first load builds a table's secondary indexes and its parent foreign key once, at the end.

Loading rows into a table that already has its indexes and foreign key costs PostgreSQL an index
insertion per index and a foreign-key trigger (a query on the parent) per row: for chat_messages,
measured on 2 vCPUs, about 15 µs of server CPU per row against 5 µs without them, and building
them afterwards costs ~1.3 µs per row. So, like `pg_restore`, when a collection starts a first load
(`copy` mode: its table was empty) and is large (`DEFERRED_FROM` documents, or an unknown count),
`drop` removes the table's non-unique indexes and its foreign key to the parent (the primary key and
unique indexes stay: they are what refuses duplicates), and `restore` creates them again once the
collection is loaded.

What stays true meanwhile:

* The definitions are never stored anywhere: they are the schema's own (`tables.TABLES`, the
  metadata Alembic's head matches), and `missing` reads from the catalog which of them are absent.
  So a run that dies between `drop` and `restore` leaves nothing to remember: the next run of the
  migration restores them — a resumed first load at its end, any other run before it loads (an
  interrupted and abandoned first load shows up in `tbd-agents db check` as missing indexes).
* Without the foreign key, the loader checks the parents itself (`ParentCheck`): a batch whose
  parents are not all in the parent table takes the staged path, which quarantines its orphans
  exactly as when PostgreSQL's foreign key refused the COPY.
* `restore` adds the foreign key in one statement, which checks every row (one join, not one query
  per row). A row can only fail it if its parent was deleted by someone else after the batch
  was committed — the foreign key's ON DELETE CASCADE would have deleted that row then — so such
  rows are deleted (the parent table locked meanwhile) and counted, and the constraint is added.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import ForeignKeyConstraint, Index
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import AddConstraint, CreateIndex

from tbd_agents.tools.migration.transform import CollectionSpec

#: A first load of at least this many documents (or of an unknown number) defers the indexes.
DEFERRED_FROM = 10_000

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DeferredSchema:
    """The non-unique indexes and the foreign keys of one collection's table."""

    def __init__(self, conn: asyncpg.Connection, spec: CollectionSpec) -> None:
        self.conn = conn
        self.table = spec.table.name
        self.indexes: list[Index] = sorted(
            (i for i in spec.table.indexes if not i.unique), key=lambda i: str(i.name)
        )
        self.foreign_keys: list[ForeignKeyConstraint] = sorted(
            spec.table.foreign_key_constraints, key=lambda c: str(c.name)
        )

    async def missing(self) -> tuple[list[Index], list[ForeignKeyConstraint]]:
        """The indexes and foreign keys of the schema that the table lacks."""
        indexes = [
            index
            for index in self.indexes
            if await self.conn.fetchval("SELECT to_regclass($1) IS NULL", _q(str(index.name)))
        ]
        present = {
            r[0]
            for r in await self.conn.fetch(
                "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass($1) "
                "AND contype = 'f'",
                _q(self.table),
            )
        }
        return indexes, [c for c in self.foreign_keys if c.name not in present]

    async def foreign_key_missing(self) -> bool:
        return bool((await self.missing())[1])

    async def drop(self) -> None:
        """Drop the indexes and foreign keys (one transaction)."""
        async with self.conn.transaction():
            for constraint in self.foreign_keys:
                await self.conn.execute(
                    f"ALTER TABLE {_q(self.table)} DROP CONSTRAINT IF EXISTS {_q(str(constraint.name))}"
                )
            for index in self.indexes:
                await self.conn.execute(f"DROP INDEX IF EXISTS {_q(str(index.name))}")

    async def restore(self) -> int:
        """Create what is missing; returns how many rows lost their parent meanwhile (deleted)."""
        indexes, foreign_keys = await self.missing()
        for index in indexes:
            await self.conn.execute(str(CreateIndex(index).compile(dialect=_DIALECT)))
        deleted = 0
        for constraint in foreign_keys:
            deleted += await self._add_foreign_key(constraint)
        return deleted

    async def _add_foreign_key(self, constraint: ForeignKeyConstraint) -> int:
        ddl = str(AddConstraint(constraint).compile(dialect=_DIALECT))
        try:
            await self.conn.execute(ddl)
            return 0
        except asyncpg.ForeignKeyViolationError:
            pass
        parent = constraint.referred_table.name
        pairs = " AND ".join(
            f"p.{_q(e.column.name)} = t.{_q(e.parent.name)}" for e in constraint.elements
        )
        async with self.conn.transaction():
            # No parent row can go away between the clean-up and the constraint's own check.
            await self.conn.execute(f"LOCK TABLE {_q(parent)} IN SHARE ROW EXCLUSIVE MODE")
            status = await self.conn.execute(
                f"DELETE FROM {_q(self.table)} t WHERE NOT EXISTS "
                f"(SELECT 1 FROM {_q(parent)} p WHERE {pairs})"
            )
            await self.conn.execute(ddl)
        return int(status.split()[-1])


class ParentCheck:
    """Whether every parent of a batch exists, while the foreign key is deferred.

    Parent ids found are remembered (up to `limit`, then forgotten and looked up again), so a
    batch costs one query only for the parents not seen yet."""

    def __init__(self, conn: asyncpg.Connection, parent_table: str, limit: int = 200_000) -> None:
        self.conn = conn
        self.sql = f"SELECT id FROM {_q(parent_table)} WHERE id = ANY($1::text[])"
        self.limit = limit
        self.known: set[str] = set()

    async def all_exist(self, parent_ids: Sequence[str | None]) -> bool:
        unknown = {p for p in parent_ids if p not in self.known}
        if not unknown:
            return True
        if None in unknown:
            return False
        found = {r[0] for r in await self.conn.fetch(self.sql, list(unknown))}
        if len(self.known) + len(found) > self.limit:
            self.known.clear()
        self.known.update(found)
        return len(found) == len(unknown)
