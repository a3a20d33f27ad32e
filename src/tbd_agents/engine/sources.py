"""The narrow views of knowledge and memory the engine needs.

The engine never touches storage or vectors directly: whoever builds a run hands it objects that
satisfy these protocols (adapters over the knowledge retrieval and memory services).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved knowledge chunk with what is needed to cite it."""

    text: str
    source_id: str
    item_id: str
    chunk_index: int = 0
    title: str = ""
    score: float = 0.0
    start: int | None = None
    end: int | None = None

    def citation(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "item_id": self.item_id,
            "chunk_index": self.chunk_index,
            "title": self.title,
            "score": round(self.score, 4),
            "start": self.start,
            "end": self.end,
        }


@dataclass(frozen=True, slots=True)
class MemoryItem:
    key: str
    value: str
    scope: str = "agent"
    score: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


class KnowledgeSearch(Protocol):
    async def search(
        self, query: str, *, source_ids: Sequence[str], tags: Sequence[str], limit: int
    ) -> list[Passage]:
        """The best passages for `query` within the given sources / tags (either may be empty)."""
        ...


class MemoryStore(Protocol):
    async def store(
        self,
        *,
        agent_id: str,
        key: str,
        value: str,
        scope: str,
        session_id: str | None,
        owner: str | None,
    ) -> None:
        """Create or replace the memory (agent_id, scope, key)."""
        ...

    async def search(
        self,
        *,
        agent_id: str,
        query: str,
        limit: int,
        session_id: str | None,
        owner: str | None,
    ) -> list[MemoryItem]:
        """Memories visible to the agent (its own, its session's, its owner's global ones)."""
        ...
