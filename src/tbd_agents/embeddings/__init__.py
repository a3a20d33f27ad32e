"""Embedding providers behind one interface (`Embedder`), chosen once from settings."""

from tbd_agents.embeddings.base import Embedder, EmbeddingError, EmbeddingSpace
from tbd_agents.embeddings.factory import EmbedderChoice, load_embedder
from tbd_agents.embeddings.hashing import HashingEmbedder

__all__ = [
    "Embedder",
    "EmbedderChoice",
    "EmbeddingError",
    "EmbeddingSpace",
    "HashingEmbedder",
    "load_embedder",
]
