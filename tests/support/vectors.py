"""Vector stores for tests: pgvector on a fresh migrated database of the embedded PostgreSQL 18,
and Qdrant's local mode in a temporary directory. Both come with a `parents` helper that creates
the rows the pgvector tables reference (knowledge items, memories); Qdrant needs none."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.embeddings.base import EmbeddingSpace
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.vectors.pgvector import PgVectorStore
from tbd_agents.vectors.qdrant import QdrantVectorStore
from tests.support import pg

SPACE = EmbeddingSpace("test-model", 384)
BACKENDS = ("pgvector", "qdrant")


def unit_vectors(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@dataclass
class VectorBackend:
    name: str
    store: Any
    engine: AsyncEngine | None = None
    made: set[str] = field(default_factory=set)

    async def knowledge_items(self, item_ids: Sequence[str], source_id: str = "src") -> None:
        """Create knowledge items (and their source) that chunks may reference."""
        if self.engine is None:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO knowledge_sources (id, name) VALUES (:s, :s) ON CONFLICT DO NOTHING"
                ),
                {"s": source_id},
            )
            await conn.execute(
                text(
                    "INSERT INTO knowledge_items (id, source_id) VALUES (:i, :s) "
                    "ON CONFLICT DO NOTHING"
                ),
                [{"i": i, "s": source_id} for i in item_ids],
            )

    async def memories(self, memory_ids: Sequence[str], agent_id: str = "agent") -> None:
        """Create memory rows that memory vectors may reference."""
        if self.engine is None:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO memories (id, agent_id, key) VALUES (:i, :a, :i) "
                    "ON CONFLICT DO NOTHING"
                ),
                [{"i": i, "a": agent_id} for i in memory_ids],
            )


@asynccontextmanager
async def open_backend(
    name: str, pg_server: str | None, tmp: Path, **pg_options: Any
) -> AsyncIterator[VectorBackend]:
    """A fresh, empty vector store of backend `name`."""
    if name == "pgvector":
        assert pg_server is not None
        url = pg.create_migrated_database(pg_server, prefix="vec")
        engine = create_engine(url, application_name="tests-vectors", pool_size=2)
        try:
            yield VectorBackend(name, PgVectorStore(engine, **pg_options), engine)
        finally:
            await engine.dispose()
            pg.drop_database(url)
    else:
        store = QdrantVectorStore.at_path(tmp / "qdrant")
        try:
            yield VectorBackend(name, store)
        finally:
            await store.close()
