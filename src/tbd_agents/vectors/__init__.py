"""Vector stores behind one interface: pgvector (in PostgreSQL) and Qdrant (server or local)."""

from tbd_agents.vectors.base import (
    KNOWLEDGE_CHUNKS,
    MEMORIES,
    CollectionInfo,
    CollectionSpec,
    EmbeddingMismatch,
    VectorHit,
    VectorRecord,
    VectorStore,
    Where,
)

__all__ = [
    "KNOWLEDGE_CHUNKS",
    "MEMORIES",
    "CollectionInfo",
    "CollectionSpec",
    "EmbeddingMismatch",
    "VectorHit",
    "VectorRecord",
    "VectorStore",
    "Where",
]
