"""Adapters from the knowledge and memory services to the engine's narrow protocols."""

from __future__ import annotations

from collections.abc import Sequence

from tbd_agents.domain.enums import MemoryScope
from tbd_agents.domain.models import Agent
from tbd_agents.engine.sources import MemoryItem, Passage
from tbd_agents.knowledge.retrieval import KnowledgeRetriever
from tbd_agents.services.memory import MemoryService


class RetrieverKnowledge:
    """`KnowledgeSearch` over the hybrid retriever (vector + full text, fused)."""

    def __init__(self, retriever: KnowledgeRetriever, min_similarity: float = 0.0) -> None:
        self.retriever = retriever
        self.min_similarity = min_similarity

    async def search(
        self, query: str, *, source_ids: Sequence[str], tags: Sequence[str], limit: int
    ) -> list[Passage]:
        return await self.search_within(
            query, source_ids=source_ids, tags=tags, limit=limit, within=None
        )

    async def search_within(
        self,
        query: str,
        *,
        source_ids: Sequence[str],
        tags: Sequence[str],
        limit: int,
        within: Sequence[str] | None,
    ) -> list[Passage]:
        """`search`, with tag matches only in the sources `within` (None: anywhere)."""
        chunks = await self.retriever.retrieve(
            query, source_ids=source_ids, tags=tags, k=limit,
            min_similarity=self.min_similarity, within=within,
        )  # fmt: skip
        return [
            Passage(
                text=c.text,
                source_id=c.citation.source_id,
                item_id=c.citation.item_id,
                chunk_index=c.citation.chunk_index,
                title=c.citation.title or (c.citation.file_name or ""),
                score=c.score,
                start=c.citation.start_offset,
                end=c.citation.end_offset,
            )
            for c in chunks
        ]


class ServiceMemory:
    """`MemoryStore` over the memory service, for one agent."""

    def __init__(self, service: MemoryService, agent: Agent) -> None:
        self.service = service
        self.agent = agent

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
        await self.service.remember(
            self.agent, key, value, scope=MemoryScope(scope), session_id=session_id
        )

    async def search(
        self,
        *,
        agent_id: str,
        query: str,
        limit: int,
        session_id: str | None,
        owner: str | None,
    ) -> list[MemoryItem]:
        hits = await self.service.search(self.agent, query, session_id=session_id, k=limit)
        return [
            MemoryItem(h.memory.key, h.memory.value, h.memory.scope.value, h.score) for h in hits
        ]

    async def recent(self, *, limit: int, session_id: str | None = None) -> list[MemoryItem]:
        """The agent's most recently written memories (the short-term memory, STM_MAX_ENTRIES);
        session memories only of `session_id` (another workflow's are not this run's)."""
        found = await self.service.recent(self.agent, limit + 20)
        kept = [
            m for m in found if m.scope is not MemoryScope.SESSION or m.session_id == session_id
        ]
        return [MemoryItem(m.key, m.value, m.scope.value) for m in kept[:limit]]
