"""pgvector: vectors in the PostgreSQL tables of `storage/postgres/schema_vectors.py`.

Records are rows: chunks beside their knowledge item, memory vectors beside their memory (both
cascade on delete). `bind(repos)` returns a store on the unit of work's connection, so a row and
its vector are written and deleted in one transaction.

Search plan, chosen per query from the filter's selectivity (see benchmarks/RESULTS.md):

* no filter: the HNSW index, `hnsw.ef_search` = max(EF_SEARCH, k) (100);
* a filter matching at most `exact_threshold` rows (counted with a bounded COUNT through the
  B-tree/GIN indexes, in the same statement): exact search over just those rows, with the HNSW
  index kept out of the plan (ORDER BY distance + 0), which always returns k when k match;
* a broader filter: HNSW with `hnsw.iterative_scan = relaxed_order` (the scan continues until k
  rows pass the filter) and a wider beam (FILTERED_EF_SEARCH, 400), re-ordered by distance;
  should it still come back short, exact search.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import HALFVEC, Vector
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.errors import ConfigurationError, InvalidData, UnsupportedQuery
from tbd_agents.observability.engine_signals import vector_search
from tbd_agents.storage.postgres.schema_vectors import (
    MAX_VECTOR_INDEX_DIMENSION,
    TS_CONFIG,
    VECTOR_TABLES,
    vector_collections,
)
from tbd_agents.storage.protocol import Filter, Op
from tbd_agents.vectors.base import (
    CollectionInfo,
    CollectionSpec,
    EmbeddingMismatch,
    FieldKind,
    VectorHit,
    VectorRecord,
    VectorStore,
    Where,
    check_where,
    collection_spec,
)

#: Default hnsw.ef_search: recall@10 ≥ 0.95 on embedding-like data at 100k rows (benchmarks).
EF_SEARCH = 100
#: hnsw.ef_search for filtered searches that use the index: the iterative scan's recall among
#: the matching rows needs a wider beam (≥ 0.95 at 10 % selectivity, benchmarks/RESULTS.md).
FILTERED_EF_SEARCH = 400
#: Filters matching at most this many rows are searched exactly (see benchmarks/RESULTS.md).
EXACT_THRESHOLD = 10_000
_WRITE_BATCH = 500

_TYPES: dict[FieldKind, Any] = {
    FieldKind.STR: sa.Text(),
    FieldKind.INT: sa.Integer(),
    FieldKind.STR_LIST: ARRAY(sa.Text()),
}


def vector_type(dimension: int) -> Any:
    """The column type for `dimension`: `vector`, or `halfvec` above the HNSW limit of 2000."""
    return Vector(dimension) if dimension <= MAX_VECTOR_INDEX_DIMENSION else HALFVEC(dimension)


@dataclass(frozen=True, slots=True)
class _Layout:
    """A collection's table as the database has it now (the vector column's real type)."""

    spec: CollectionSpec
    table: sa.TableClause
    dimension: int


def _layout(spec: CollectionSpec, dimension: int) -> _Layout:
    cols = [sa.column("id", sa.Text()), sa.column("text", sa.Text())]
    cols += [sa.column(name, _TYPES[kind]) for name, kind in spec.fields.items()]
    cols += [sa.column("embedding", vector_type(dimension)), sa.column("tsv")]
    return _Layout(spec, sa.table(VECTOR_TABLES[spec.name].name, *cols), dimension)


def _condition(table: sa.TableClause, flt: Filter) -> sa.ColumnElement[bool]:
    col = table.c[flt.field]
    value = flt.value
    if flt.op is Op.EQ:
        return col.is_(None) if value is None else col == value
    if flt.op is Op.NE:
        return col.is_distinct_from(value)
    if flt.op is Op.IN:
        return col == sa.func.any(sa.literal(list(value), ARRAY(col.type))) if value else sa.false()
    if flt.op is Op.NOT_IN:
        if not value:
            return sa.true()
        return sa.or_(
            col.is_(None), sa.not_(col == sa.func.any(sa.literal(list(value), ARRAY(col.type))))
        )
    if flt.op is Op.CONTAINS_ANY:
        return col.op("&&")(sa.literal(list(value), col.type)) if value else sa.false()
    if flt.op is Op.CONTAINS_ALL:
        return col.op("@>")(sa.literal(list(value), col.type))
    if flt.op is Op.IS_NULL:
        return col.is_(None)
    if flt.op is Op.NOT_NULL:
        return col.is_not(None)
    raise UnsupportedQuery(f"vector searches do not support the {flt.op.value} operator")


def where_clause(table: sa.TableClause, where: Where | None) -> sa.ColumnElement[bool]:
    """SQL for a `Where` on `table` (TRUE when empty)."""
    if where is None or where.empty:
        return sa.true()
    parts = [_condition(table, f) for f in where.all_of]
    if where.any_of:
        parts.append(sa.or_(*(sa.and_(*(_condition(table, f) for f in g)) for g in where.any_of)))
    return sa.and_(*parts)


class PgVectorStore:
    """`VectorStore` on PostgreSQL + pgvector."""

    backend = "pgvector"

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        exact_threshold: int = EXACT_THRESHOLD,
        ef_search: int = EF_SEARCH,
        filtered_ef_search: int = FILTERED_EF_SEARCH,
        _conn: AsyncConnection | None = None,
        _layouts: dict[str, _Layout] | None = None,
    ) -> None:
        self.engine = engine
        self.exact_threshold = exact_threshold
        self.ef_search = ef_search
        self.filtered_ef_search = filtered_ef_search
        self._conn = _conn
        self._layouts: dict[str, _Layout] = {} if _layouts is None else _layouts
        self._spaces: dict[str, EmbeddingSpace] = {}
        #: The plan of the last search ("hnsw", "exact", "hnsw+iterative", "…+exact-fallback").
        self.last_plan = ""

    def bind(self, repos: Any) -> VectorStore:
        """A store writing on the connection (and in the transaction) of the unit of work."""
        conn = getattr(repos, "connection", None)
        if not isinstance(conn, AsyncConnection):
            raise ConfigurationError(
                "the pgvector store needs the PostgreSQL document store (DB_BACKEND=postgres); "
                "with DB_BACKEND=mongo use VECTOR_STORE_BACKEND=qdrant"
            )
        store = PgVectorStore(
            self.engine,
            exact_threshold=self.exact_threshold,
            ef_search=self.ef_search,
            filtered_ef_search=self.filtered_ef_search,
            _conn=conn,
            _layouts=self._layouts,
        )
        store._spaces = self._spaces
        return store

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        if self._conn is not None:
            yield self._conn
            return
        async with self.engine.begin() as conn:
            yield conn

    async def close(self) -> None:
        """Nothing to close: the engine belongs to the application."""

    # --- collections -----------------------------------------------------------------------
    async def _column_dimension(self, conn: AsyncConnection, spec: CollectionSpec) -> int:
        typ = await conn.scalar(
            sa.text(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = CAST(:t AS regclass) AND attname = 'embedding'"
            ),
            {"t": VECTOR_TABLES[spec.name].name},
        )
        return int(str(typ).split("(")[1].rstrip(")"))

    async def _layout_for(self, conn: AsyncConnection, name: str) -> _Layout:
        layout = self._layouts.get(name)
        if layout is None:
            spec = collection_spec(name)
            layout = _layout(spec, await self._column_dimension(conn, spec))
            self._layouts[name] = layout
        return layout

    def forget_layouts(self) -> None:
        """Drop cached column types and spaces (after `reembed` changed a column)."""
        self._layouts.clear()
        self._spaces.clear()

    async def collection_info(self, name: str) -> CollectionInfo | None:
        """The recorded space, pending re-embed target and row count, or None if unrecorded."""
        collection_spec(name)
        vc = vector_collections
        async with self._connect() as conn:
            row = (await conn.execute(sa.select(vc).where(vc.c.name == name))).one_or_none()
            if row is None:
                return None
            count = await conn.scalar(sa.select(sa.func.count()).select_from(VECTOR_TABLES[name]))
        pending = None
        if row.pending_model is not None:
            pending = EmbeddingSpace(row.pending_model, row.pending_dimension)
        return CollectionInfo(name, EmbeddingSpace(row.model, row.dimension), count or 0, pending)

    async def ensure_collection(self, name: str, space: EmbeddingSpace) -> CollectionInfo:
        """Record `space` for a collection used for the first time, or check it matches."""
        spec = collection_spec(name)
        vc = vector_collections
        async with self._connect() as conn:
            layout = await self._layout_for(conn, name)
            row = (await conn.execute(sa.select(vc).where(vc.c.name == name))).one_or_none()
            if row is None:
                if layout.dimension != space.dimension:
                    column = EmbeddingSpace(
                        f"none yet (column sized {layout.dimension})", layout.dimension
                    )
                    raise EmbeddingMismatch(name, column, space)
                stmt = sa.dialects.postgresql.insert(vc).values(
                    name=spec.name, model=space.model, dimension=space.dimension
                )
                await conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
                row = (await conn.execute(sa.select(vc).where(vc.c.name == name))).one()
            stored = EmbeddingSpace(row.model, row.dimension)
            if stored != space:
                raise EmbeddingMismatch(name, stored, space)
        self._spaces[name] = space
        info = await self.collection_info(name)
        assert info is not None
        return info

    async def _check_space(self, name: str, space: EmbeddingSpace) -> None:
        if self._spaces.get(name) != space:
            await self.ensure_collection(name, space)

    # --- writes ----------------------------------------------------------------------------
    def _row(self, spec: CollectionSpec, record: VectorRecord, dimension: int) -> dict[str, Any]:
        unknown = set(record.payload) - set(spec.fields)
        if unknown:
            raise InvalidData(
                f"collection {spec.name!r} has no field(s) {', '.join(sorted(unknown))}; "
                f"its fields are {', '.join(spec.fields)}"
            )
        if len(record.vector) != dimension:
            raise InvalidData(
                f"vector of {len(record.vector)} dimensions for collection {spec.name!r}, "
                f"which holds {dimension}"
            )
        row: dict[str, Any] = {
            "id": record.id,
            "text": record.text,
            "embedding": list(record.vector),
        }
        for name, kind in spec.fields.items():
            value: Any = record.payload.get(name)
            if kind is FieldKind.STR_LIST:
                value = list(value or [])
            elif value is None and name not in spec.nullable:
                raise InvalidData(f"record {record.id!r} of {spec.name!r} needs field {name!r}")
            row[name] = value
        return row

    async def upsert(
        self, name: str, records: Sequence[VectorRecord], space: EmbeddingSpace
    ) -> None:
        """Insert or replace records (same transaction as the bound unit of work, if any)."""
        if not records:
            return
        await self._check_space(name, space)
        async with self._connect() as conn:
            layout = await self._layout_for(conn, name)
            table = VECTOR_TABLES[name]
            for start in range(0, len(records), _WRITE_BATCH):
                rows = [
                    self._row(layout.spec, r, layout.dimension)
                    for r in records[start : start + _WRITE_BATCH]
                ]
                stmt = sa.dialects.postgresql.insert(table)
                updates = {c: stmt.excluded[c] for c in rows[0] if c != "id"}
                await conn.execute(
                    stmt.on_conflict_do_update(index_elements=["id"], set_=updates), rows
                )

    async def delete(self, name: str, ids: Sequence[str]) -> int:
        """Delete records by id; return how many existed."""
        if not ids:
            return 0
        table = VECTOR_TABLES[collection_spec(name).name]
        async with self._connect() as conn:
            result = await conn.execute(sa.delete(table).where(table.c.id.in_(list(ids))))
        return int(result.rowcount)

    async def delete_where(self, name: str, where: Where) -> int:
        """Delete every record matching a non-empty `where`."""
        spec = collection_spec(name)
        if where.empty:
            raise UnsupportedQuery("delete_where needs at least one condition")
        check_where(spec, where)
        async with self._connect() as conn:
            layout = await self._layout_for(conn, name)
            result = await conn.execute(
                sa.delete(layout.table).where(where_clause(layout.table, where))
            )
        return int(result.rowcount)

    # --- reads -----------------------------------------------------------------------------
    def _columns(self, layout: _Layout) -> list[Any]:
        return [
            layout.table.c.id,
            layout.table.c.text,
            *(layout.table.c[f] for f in layout.spec.fields),
        ]

    def _hit(self, layout: _Layout, row: Any, score: float) -> VectorHit:
        payload = {
            f: (
                list(getattr(row, f))
                if layout.spec.fields[f] is FieldKind.STR_LIST
                else getattr(row, f)
            )
            for f in layout.spec.fields
        }
        return VectorHit(id=row.id, score=float(score), text=row.text, payload=payload)

    async def count(self, name: str, where: Where | None = None) -> int:
        spec = collection_spec(name)
        if where is not None:
            check_where(spec, where)
        async with self._connect() as conn:
            layout = await self._layout_for(conn, name)
            stmt = (
                sa.select(sa.func.count())
                .select_from(layout.table)
                .where(where_clause(layout.table, where))
            )
            return int(await conn.scalar(stmt) or 0)

    async def get(self, name: str, ids: Sequence[str]) -> list[VectorHit]:
        async with self._connect() as conn:
            layout = await self._layout_for(conn, name)
            stmt = sa.select(*self._columns(layout)).where(layout.table.c.id.in_(list(ids)))
            return [self._hit(layout, r, 1.0) for r in await conn.execute(stmt)]

    async def _exact(
        self, conn: AsyncConnection, layout: _Layout, query: Any, cond: Any, k: int
    ) -> tuple[int, list[VectorHit]]:
        """(matching rows up to threshold + 1, exact top k) in one statement; no hits when more
        than `exact_threshold` rows match (the caller then uses the index)."""
        t = layout.table
        limit = self.exact_threshold + 1
        matching = sa.select(sa.literal(1).label("one")).where(cond).limit(limit).subquery()
        counted = sa.select(sa.func.count().label("n")).select_from(matching).subquery("counted")
        dist = t.c.embedding.op("<=>", return_type=sa.Float())(query)
        # Ordering by `distance + 0` keeps the HNSW index out of the plan: the rows come from
        # the filter's own indexes, and the distance sort over them is exact.
        hits = (
            sa.select(*self._columns(layout), dist.label("dist"))
            .where(cond, counted.c.n <= self.exact_threshold)
            .order_by(dist + 0)
            .limit(k)
            .lateral("hits")
        )
        stmt = sa.select(counted.c.n, *hits.c).select_from(counted.outerjoin(hits, sa.true()))
        rows = (await conn.execute(stmt)).all()
        n = int(rows[0].n) if rows else 0
        return n, [self._hit(layout, r, 1.0 - r.dist) for r in rows if r.id is not None]

    async def _exact_unbounded(
        self, conn: AsyncConnection, layout: _Layout, query: Any, cond: Any, k: int
    ) -> list[VectorHit]:
        dist = layout.table.c.embedding.op("<=>", return_type=sa.Float())(query)
        stmt = (
            sa.select(*self._columns(layout), dist.label("dist"))
            .where(cond)
            .order_by(dist + 0)
            .limit(k)
        )
        return [self._hit(layout, r, 1.0 - r.dist) for r in await conn.execute(stmt)]

    async def _hnsw(
        self, conn: AsyncConnection, layout: _Layout, query: Any, cond: Any, k: int
    ) -> list[VectorHit]:
        dist = layout.table.c.embedding.op("<=>", return_type=sa.Float())(query)
        stmt = (
            sa.select(*self._columns(layout), dist.label("dist"))
            .where(cond)
            .order_by(dist)
            .limit(k)
        )
        hits = [self._hit(layout, r, 1.0 - r.dist) for r in await conn.execute(stmt)]
        hits.sort(key=lambda h: -h.score)  # relaxed_order may return near-sorted rows
        return hits

    async def search(
        self,
        name: str,
        vector: Sequence[float],
        space: EmbeddingSpace,
        k: int,
        where: Where | None = None,
    ) -> list[VectorHit]:
        """`_search`, timed (`tbd_vector_search_duration_seconds`) and traced."""
        with vector_search("pgvector", name):
            return await self._search(name, vector, space, k, where)

    async def _search(
        self,
        name: str,
        vector: Sequence[float],
        space: EmbeddingSpace,
        k: int,
        where: Where | None = None,
    ) -> list[VectorHit]:
        """The k nearest records matching `where`, best first (see the module doc for the plan)."""
        spec = collection_spec(name)
        if where is not None:
            check_where(spec, where)
        if k < 1:
            return []
        await self._check_space(name, space)
        async with self._connect() as conn:
            layout = await self._layout_for(conn, name)
            query = sa.cast(sa.literal(_vector_text(vector)), layout.table.c.embedding.type)
            filtered = where is not None and not where.empty
            ef = self.filtered_ef_search if filtered else self.ef_search
            # Custom plans only: a cached generic plan does not know how selective the filter
            # is (measured: 5 ms → 150 ms for a 1 % filter). The HNSW settings last until the
            # transaction ends.
            await conn.execute(
                sa.text(
                    "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
                    "set_config('hnsw.ef_search', :ef, true), "
                    "set_config('hnsw.iterative_scan', 'relaxed_order', true)"
                ),
                {"ef": str(min(1000, max(ef, k)))},
            )
            if where is None or where.empty:
                self.last_plan = "hnsw"
                return await self._hnsw(conn, layout, query, sa.true(), k)
            cond = where_clause(layout.table, where)
            matching, hits = await self._exact(conn, layout, query, cond, k)
            if matching <= self.exact_threshold:
                self.last_plan = "exact"
                return hits
            self.last_plan = "hnsw+iterative"
            hits = await self._hnsw(conn, layout, query, cond, k)
            if len(hits) < k:
                self.last_plan += "+exact-fallback"
                hits = await self._exact_unbounded(conn, layout, query, cond, k)
            return hits

    async def text_search(
        self,
        name: str,
        query: str,
        k: int,
        where: Where | None = None,
        *,
        all_words: bool = False,
    ) -> list[VectorHit]:
        """Full-text search (any word of `query`, or every word with `all_words`; stemmed),
        ranked by ts_rank_cd."""
        spec = collection_spec(name)
        if where is not None:
            check_where(spec, where)
        joiner = " & " if all_words else " | "
        async with self._connect() as conn:
            layout = await self._layout_for(conn, name)
            # The query's words (OR, or AND), stemmed with the tsv column's configuration.
            tq = (
                sa.text(
                    "SELECT to_tsquery('simple', array_to_string(ARRAY(SELECT quote_literal(lexeme) "
                    f"FROM unnest(to_tsvector('{TS_CONFIG}', :q))), '{joiner}')) AS q"
                )
                .bindparams(q=query)
                .columns(sa.column("q"))
                .subquery("tq")
            )
            stmt = (
                sa.select(
                    *self._columns(layout),
                    sa.func.ts_rank_cd(layout.table.c.tsv, tq.c.q).label("rank"),
                )
                .select_from(layout.table.join(tq, sa.true()))
                .where(layout.table.c.tsv.op("@@")(tq.c.q), where_clause(layout.table, where))
                .order_by(sa.desc("rank"), layout.table.c.id)
                .limit(k)
            )
            result = await conn.execute(stmt)
            return [self._hit(layout, r, r.rank) for r in result]


def _vector_text(vector: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"
