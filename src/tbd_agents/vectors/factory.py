"""Build the vector store chosen by the settings (once, at start-up)."""

from __future__ import annotations

from typing import Any

from tbd_agents.config import Settings, VectorBackend
from tbd_agents.errors import ConfigurationError
from tbd_agents.vectors.base import VectorStore


def open_vector_store(settings: Settings, document_store: Any) -> VectorStore:
    """pgvector on the document store's PostgreSQL engine, or Qdrant (server or local mode)."""
    if settings.vector_backend is VectorBackend.PGVECTOR:
        from tbd_agents.vectors.pgvector import PgVectorStore

        engine = getattr(document_store, "engine", None)
        if engine is None or getattr(document_store, "backend", None) != "postgres":
            raise ConfigurationError(
                "VECTOR_STORE_BACKEND=pgvector needs DB_BACKEND=postgres (vectors live in the "
                "same PostgreSQL as the documents)"
            )
        return PgVectorStore(engine)
    from tbd_agents.vectors.qdrant import open_qdrant

    return open_qdrant(settings)
