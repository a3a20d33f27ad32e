"""The embedding interface every provider implements, and the batching they share."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tbd_agents.errors import UpstreamError
from tbd_agents.observability.metrics import EMBEDDING_REQUESTS


class EmbeddingError(UpstreamError):
    """The embedding model or endpoint failed (unreachable, refused, or returned nonsense)."""

    code = "embedding_failed"


@dataclass(frozen=True, slots=True)
class EmbeddingSpace:
    """What makes two vectors comparable: the model that made them and their size."""

    model: str
    dimension: int

    def describe(self) -> str:
        return f"'{self.model}' ({self.dimension} dimensions)"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of one embedding space.

    `embed` returns one L2-normalised vector of `space.dimension` floats per text, in order.
    """

    @property
    def space(self) -> EmbeddingSpace: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def embed_query(self, text: str) -> list[float]: ...


def normalise(vector: Sequence[float]) -> list[float]:
    """`vector` scaled to unit length (a zero vector is returned unchanged)."""
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        return [float(v) for v in vector]
    return [float(v) / norm for v in vector]


class BatchedEmbedder(ABC):
    """Base for providers: splits input into batches of `batch_size` and checks every result."""

    def __init__(self, space: EmbeddingSpace, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._space = space
        self.batch_size = batch_size

    @property
    def space(self) -> EmbeddingSpace:
        return self._space

    @abstractmethod
    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        """Vectors for one batch (at most `batch_size` texts)."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One normalised vector per text, in input order; raises EmbeddingError on bad output.
        Each batch counts one `embeddings_requests_total{status}` (success or error)."""
        out: list[list[float]] = []
        items = list(texts)
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            try:
                vectors = await self._embed_batch(batch)
            except Exception:
                EMBEDDING_REQUESTS.labels("error").inc()
                raise
            if len(vectors) != len(batch):
                EMBEDDING_REQUESTS.labels("error").inc()
                raise EmbeddingError(
                    f"embedding model {self._space.model} returned {len(vectors)} vectors for "
                    f"{len(batch)} texts"
                )
            if any(len(vector) != self._space.dimension for vector in vectors):
                EMBEDDING_REQUESTS.labels("error").inc()
            else:
                EMBEDDING_REQUESTS.labels("success").inc()
            for vector in vectors:
                if len(vector) != self._space.dimension:
                    raise EmbeddingError(
                        f"embedding model {self._space.model} returned a vector of "
                        f"{len(vector)} dimensions, expected {self._space.dimension}: set "
                        "EMBEDDING_DIMENSIONS to the model's real size"
                    )
                out.append(normalise(vector))
        return out

    async def embed_query(self, text: str) -> list[float]:
        """The vector of one query text."""
        (vector,) = await self.embed([text])
        return vector
