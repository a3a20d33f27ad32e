"""Qdrant collections → pgvector tables: knowledge chunk vectors and memory vectors.

In the qdrant profile the vectors live in Qdrant (`knowledge_chunks`, `memories`), each point
carrying the record id (`_id`), the text it was embedded from and its payload fields; the
collection's metadata records the embedding space (model + dimension). They are copied point by
point into `knowledge_chunks` / `memory_vectors`, after `PgVectorStore.ensure_collection` has
checked that the target column and its recorded space fit (otherwise it stops with the message
that names `tbd-agents vectors reembed`). A point whose parent row (knowledge item, memory) is not
in PostgreSQL is quarantined as an orphan. Writes rewrite only rows that differ, so re-running
copies nothing twice; the copy is not checkpointed (a re-run scrolls the collection again).

Vectors are compared at float32 precision (what both Qdrant and pgvector store).
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.storage.postgres.schema_vectors import VECTOR_TABLES
from tbd_agents.tools.migration.batch import Rejection
from tbd_agents.tools.migration.rows import row_digest
from tbd_agents.vectors.base import COLLECTIONS, FieldKind

# qdrant-client is heavy (~100 MB resident): imported only where vectors are copied.
if TYPE_CHECKING:
    from tbd_agents.vectors.qdrant import QdrantVectorStore

#: Qdrant collection → (parent table, column of the vector table that references it).
PARENTS = {"knowledge_chunks": ("knowledge_items", "item_id"), "memories": ("memories", "id")}
PREFIX = "qdrant:"


def float32(values: Sequence[float]) -> list[float]:
    """`values` rounded to float32, as both stores keep them."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def vector_text(values: Sequence[float]) -> str:
    return "[" + ",".join(repr(v) for v in values) + "]"


def parse_vector(text: str) -> list[float]:
    return [float(v) for v in text.strip("[]").split(",")] if text.strip("[]") else []


def point_row(name: str, point: Any) -> dict[str, Any] | None:
    """The vector-table row of a Qdrant point (None when it has no record id)."""
    payload = dict(point.payload or {})
    record_id = payload.get("_id")
    if record_id is None:
        return None
    spec = COLLECTIONS[name]
    row: dict[str, Any] = {
        "id": str(record_id),
        "text": str(payload.get("text", "")).replace("\x00", ""),
    }
    for column, kind in spec.fields.items():
        value = payload.get(column)
        row[column] = list(value or []) if kind is FieldKind.STR_LIST else value
    vector = point.vector if isinstance(point.vector, list) else []
    row["embedding"] = float32(vector)
    return row


def digest(row: dict[str, Any]) -> bytes:
    return row_digest({**row, "embedding": float32(row["embedding"])})


@dataclass
class VectorBatch:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    read: int = 0


async def scroll(qdrant: QdrantVectorStore, name: str, batch_size: int) -> AsyncIterator[list[Any]]:
    """Every point of a Qdrant collection, with payload and vector, in pages."""
    offset = None
    while True:
        points, offset = await qdrant.client.scroll(
            name, limit=batch_size, offset=offset, with_payload=True, with_vectors=True
        )
        if points:
            yield list(points)
        if offset is None:
            return


async def batches(
    qdrant: QdrantVectorStore, conn: asyncpg.Connection | None, name: str, batch_size: int
) -> AsyncIterator[VectorBatch]:
    """Points as rows, orphans (parent not in PostgreSQL) and id-less points set apart."""
    parent, column = PARENTS[name]
    async for points in scroll(qdrant, name, batch_size):
        batch = VectorBatch(read=len(points))
        candidates = []
        for point in points:
            row = point_row(name, point)
            if row is None:
                batch.rejected.append(
                    Rejection(
                        None, "invalid: point without _id in its payload", _as_document(point)
                    )
                )
            else:
                candidates.append((row, point))
        wanted = sorted({row[column] for row, _ in candidates if row[column] is not None})
        found: set[str] = set()
        if conn is not None and wanted:
            found = {
                r["id"]
                for r in await conn.fetch(
                    f'SELECT id FROM "{parent}" WHERE id = ANY($1::text[])', wanted
                )
            }
        for row, point in candidates:
            if row[column] in found:
                batch.rows.append(row)
            else:
                batch.rejected.append(
                    Rejection(
                        row["id"], f"orphan: {parent} {row[column]} not found", _as_document(point)
                    )
                )
        yield batch


def _as_document(point: Any) -> dict[str, Any]:
    return {"_id": str(point.id), "payload": dict(point.payload or {}), "vector": point.vector}


async def prepare_target(engine: AsyncEngine, name: str, space: EmbeddingSpace) -> None:
    """Record (or check) the collection's embedding space on the pgvector side."""
    from tbd_agents.vectors.pgvector import PgVectorStore

    await PgVectorStore(engine).ensure_collection(name, space)


async def column_type(conn: asyncpg.Connection, table: str) -> str:
    """`vector(n)` or `halfvec(n)`: the type of a vector table's embedding column."""
    return str(
        await conn.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = $1::regclass AND attname = 'embedding'",
            table,
        )
    )


_SQL_TYPES = {"chunk_index": "integer", "start_offset": "integer", "end_offset": "integer"}


def _array_literal(items: Sequence[str]) -> str:
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "{" + ",".join(quoted) + "}"


async def write(
    conn: asyncpg.Connection, name: str, rows: Sequence[dict[str, Any]], vector_type: str
) -> tuple[int, int]:
    """Upsert rows into the collection's table, rewriting only those that differ; return
    (inserted, updated)."""
    if not rows:
        return 0, 0
    columns = [c for c in rows[0] if c != "embedding"]
    # unnest() flattens arrays of arrays: TEXT[] values travel as their literal and are cast back.
    params: list[list[Any]] = [
        [_array_literal(r[c]) for r in rows] if c == "tags" else [r[c] for r in rows]
        for c in columns
    ]
    params.append([vector_text(r["embedding"]) for r in rows])
    args = [f"${i + 1}::{_SQL_TYPES.get(c, 'text')}[]" for i, c in enumerate(columns)]
    args.append(f"${len(columns) + 1}::text[]")
    select = [f"u.{c}::text[]" if c == "tags" else f"u.{c}" for c in columns]
    select.append(f"u.embedding::{vector_type}")
    assign = [*columns[1:], "embedding"]
    sql = (
        f"INSERT INTO {VECTOR_TABLES[name].name} AS t ({', '.join(columns)}, embedding) "
        f"SELECT {', '.join(select)} FROM unnest({', '.join(args)}) "
        f"AS u({', '.join(columns)}, embedding) "
        "ON CONFLICT (id) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in assign)
        + " WHERE ("
        + ", ".join(f"t.{c}" for c in assign)
        + ") IS DISTINCT FROM ("
        + ", ".join(f"EXCLUDED.{c}" for c in assign)
        + ") RETURNING (xmax = 0) AS inserted"
    )
    written = await conn.fetch(sql, *params)
    inserted = sum(1 for r in written if r["inserted"])
    return inserted, len(written) - inserted


@dataclass
class VectorSource:
    """Where the vectors come from (Qdrant) and the engine the pgvector side is checked with."""

    qdrant: QdrantVectorStore
    engine: AsyncEngine
    label: str


COLLECTION_NAMES = tuple(PREFIX + name for name in PARENTS)


async def target_rows(
    conn: asyncpg.Connection, name: str
) -> AsyncIterator[list[tuple[str, bytes]]]:
    """(id, digest) of every row of a vector table, in batches (for verification)."""
    spec = COLLECTIONS[name]
    columns = ", ".join(["id", "text", *spec.fields])
    query = f"SELECT {columns}, embedding::text AS embedding FROM {VECTOR_TABLES[name].name}"
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        batch: list[tuple[str, bytes]] = []
        async for record in conn.cursor(query, prefetch=1000):
            row = dict(record)
            row["embedding"] = parse_vector(row["embedding"])
            batch.append((row["id"], digest(row)))
            if len(batch) >= 1000:
                yield batch
                batch = []
        if batch:
            yield batch
