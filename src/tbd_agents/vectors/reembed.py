"""Rebuild a vector collection with another embedding model (`tbd-agents vectors reembed`).

Every record keeps the text its vector was made from, so a collection can be re-embedded without
going back to the sources. The work is resumable: run the same command again after an
interruption and it continues where it stopped.

pgvector: a column `embedding_next` of the new type is added (`vector(n)`, or `halfvec(n)` above
2000 dimensions) and filled in committed batches (rows whose `embedding_next` is still NULL are
the ones left); then, in one transaction, the old column and its HNSW index are dropped, the new
column takes their place, the HNSW index is built, and `vector_collections` records the new model.
The index build runs with the server's maintenance_work_mem (the embedded server sets 512 MB).

Qdrant: the records are embedded into a collection `<name>__next`; then the old collection is
replaced by a copy of it (Qdrant cannot rename collections) and `<name>__next` is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from qdrant_client import models as qm

from tbd_agents.embeddings.base import Embedder, EmbeddingSpace
from tbd_agents.storage.postgres.schema_vectors import (
    HNSW_OPTIONS,
    MAX_VECTOR_INDEX_DIMENSION,
    VECTOR_TABLES,
)
from tbd_agents.vectors.base import collection_spec
from tbd_agents.vectors.pgvector import PgVectorStore
from tbd_agents.vectors.qdrant import QdrantVectorStore

Progress = Callable[[int, int], None]
"""Called with (records done, records in total) after each batch."""


def _noop(done: int, total: int) -> None:
    return None


def _sql_type(dimension: int) -> tuple[str, str]:
    """(column type, HNSW operator class) for a dimension."""
    if dimension <= MAX_VECTOR_INDEX_DIMENSION:
        return f"vector({dimension})", "vector_cosine_ops"
    return f"halfvec({dimension})", "halfvec_cosine_ops"


async def reembed_pgvector(
    store: PgVectorStore,
    name: str,
    embedder: Embedder,
    *,
    batch_size: int = 256,
    progress: Progress = _noop,
) -> EmbeddingSpace:
    """Re-embed collection `name` of a pgvector store with `embedder` (resumable)."""
    spec = collection_spec(name)
    table = VECTOR_TABLES[spec.name].name
    target = embedder.space
    col_type, opclass = _sql_type(target.dimension)
    async with store.engine.begin() as conn:
        await _begin_pending(conn, spec.name, target, table, col_type)
        total = int(await conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)
    done = total - await _left(store, table)
    progress(done, total)
    while True:
        async with store.engine.begin() as conn:
            rows = (
                await conn.execute(
                    sa.text(
                        f"SELECT id, text FROM {table} WHERE embedding_next IS NULL "
                        "ORDER BY id LIMIT :n"
                    ),
                    {"n": batch_size},
                )
            ).all()
            if not rows:
                break
            vectors = await embedder.embed([r.text for r in rows])
            await conn.execute(
                sa.text(
                    f"UPDATE {table} SET embedding_next = CAST(:v AS {col_type}) WHERE id = :id"
                ),
                [{"id": r.id, "v": _text(v)} for r, v in zip(rows, vectors, strict=True)],
            )
        done += len(rows)
        progress(min(done, total), total)
    async with store.engine.begin() as conn:
        await conn.execute(sa.text(f"DROP INDEX IF EXISTS idx_{table}_embedding"))
        await conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN embedding"))
        await conn.execute(
            sa.text(f"ALTER TABLE {table} RENAME COLUMN embedding_next TO embedding")
        )
        await conn.execute(sa.text(f"ALTER TABLE {table} ALTER COLUMN embedding SET NOT NULL"))
        options = ", ".join(f"{k} = {v}" for k, v in HNSW_OPTIONS.items())
        await conn.execute(
            sa.text(
                f"CREATE INDEX idx_{table}_embedding ON {table} USING hnsw "
                f"(embedding {opclass}) WITH ({options})"
            )
        )
        await conn.execute(
            sa.text(
                "UPDATE vector_collections SET model = :m, dimension = :d, pending_model = NULL, "
                "pending_dimension = NULL, updated_at = now() WHERE name = :n"
            ),
            {"m": target.model, "d": target.dimension, "n": spec.name},
        )
    store.forget_layouts()
    return target


async def _begin_pending(
    conn: Any, name: str, target: EmbeddingSpace, table: str, col_type: str
) -> None:
    """Record the target in vector_collections and make sure `embedding_next` has its type."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT pending_model, pending_dimension FROM vector_collections WHERE name = :n"
            ),
            {"n": name},
        )
    ).one_or_none()
    has_next = await conn.scalar(
        sa.text(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
            "AND attname = 'embedding_next' AND NOT attisdropped"
        ),
        {"t": table},
    )
    same_target = row is not None and (row.pending_model, row.pending_dimension) == (
        target.model,
        target.dimension,
    )
    if has_next and not same_target:
        await conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN embedding_next"))
        has_next = 0
    if not has_next:
        await conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN embedding_next {col_type}"))
    await conn.execute(
        sa.text(
            "INSERT INTO vector_collections (name, model, dimension, pending_model, "
            "pending_dimension) VALUES (:n, :m, :d, :m, :d) ON CONFLICT (name) DO UPDATE SET "
            "pending_model = :m, pending_dimension = :d, updated_at = now()"
        ),
        {"n": name, "m": target.model, "d": target.dimension},
    )


async def _left(store: PgVectorStore, table: str) -> int:
    async with store.engine.connect() as conn:
        return int(
            await conn.scalar(sa.text(f"SELECT count(*) FROM {table} WHERE embedding_next IS NULL"))
            or 0
        )


def _text(vector: list[float]) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


async def reembed_qdrant(
    store: QdrantVectorStore,
    name: str,
    embedder: Embedder,
    *,
    batch_size: int = 256,
    progress: Progress = _noop,
) -> EmbeddingSpace:
    """Re-embed collection `name` of a Qdrant store with `embedder` (resumable)."""
    collection_spec(name)
    client = store.client
    target = embedder.space
    nxt = f"{name}__next"
    if await client.collection_exists(nxt):
        meta = (await client.get_collection(nxt)).config.metadata or {}
        if (meta.get("model"), meta.get("dimension")) != (target.model, target.dimension):
            await client.delete_collection(nxt)
    if not await client.collection_exists(nxt):
        await client.create_collection(
            nxt,
            vectors_config=qm.VectorParams(size=target.dimension, distance=qm.Distance.COSINE),
            metadata={"model": target.model, "dimension": target.dimension},
        )
    if await client.collection_exists(name):
        total = (await client.count(name, exact=True)).count
        done = 0
        offset: Any = None
        while True:
            points, offset = await client.scroll(
                name, limit=batch_size, offset=offset, with_payload=True, with_vectors=False
            )
            present = {p.id for p in await client.retrieve(nxt, ids=[p.id for p in points])}
            todo = [p for p in points if p.id not in present]
            if todo:
                vectors = await embedder.embed(
                    [str((p.payload or {}).get("text", "")) for p in todo]
                )
                await client.upsert(
                    nxt,
                    points=[
                        qm.PointStruct(id=p.id, vector=v, payload=p.payload)
                        for p, v in zip(todo, vectors, strict=True)
                    ],
                    wait=True,
                )
            done += len(points)
            progress(done, total)
            if offset is None:
                break
        await client.delete_collection(name)
    if not await client.collection_exists(name):
        await client.create_collection(
            name,
            vectors_config=qm.VectorParams(size=target.dimension, distance=qm.Distance.COSINE),
            metadata={"model": target.model, "dimension": target.dimension},
        )
    offset = None
    while True:
        points, offset = await client.scroll(
            nxt, limit=batch_size, offset=offset, with_payload=True, with_vectors=True
        )
        if points:
            await client.upsert(
                name,
                points=[
                    qm.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in points
                ],
                wait=True,
            )
        if offset is None:
            break
    await client.delete_collection(nxt)
    store._spaces.pop(name, None)
    return target
