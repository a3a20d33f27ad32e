"""Hybrid retrieval over knowledge chunks: full-text search and vector search, fused with
weighted reciprocal rank fusion (RRF, see knowledge/fusion.py), scoped to an agent's knowledge
sources and tags, with citations.

Vector candidates below `min_similarity` (cosine) are dropped before fusion, so a query about
something the knowledge does not contain returns nothing rather than the least-bad chunks;
keyword matches always count (they share words with the question).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tbd_agents.domain.models import Agent, KnowledgeItem, KnowledgeSource
from tbd_agents.embeddings.base import Embedder
from tbd_agents.knowledge.external import (
    EXTERNAL_TYPES,
    ExternalHit,
    resolved_config,
    search_external,
)
from tbd_agents.knowledge.fusion import FusionWeights, fuse, keyword_hits, weights_for
from tbd_agents.security.cipher import TokenCipher
from tbd_agents.security.outbound import HostPolicy, OutboundGuard, OutboundPolicy
from tbd_agents.services.privilege import AdminDirectory
from tbd_agents.storage.protocol import (
    DocumentStore,
    Filter,
    Query,
    Sort,
    contains_any,
    eq,
    in_,
    is_null,
)
from tbd_agents.vectors.base import KNOWLEDGE_CHUNKS, VectorHit, VectorStore, Where


@dataclass(frozen=True, slots=True)
class Citation:
    """Where a chunk comes from. External collections have no item: `item_id` is then
    `external:<record id>` and `external_id` the record's id in that collection (offsets span the
    record's text)."""

    item_id: str
    chunk_index: int
    start_offset: int
    end_offset: int
    source_id: str
    title: str
    file_name: str | None
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class RetrievedChunk:
    text: str
    score: float
    citation: Citation
    similarity: float | None  # cosine similarity, when found by vector search
    keyword_rank: int | None  # 1-based rank in the full-text results, when found there


def scope_of(
    source_ids: Sequence[str], tags: Sequence[str], within: Sequence[str] | None = None
) -> Where | None:
    """Chunks of the given sources or carrying any of the tags; None when both are empty.

    Tags are shared words, not owned names: `within` (the sources the caller may search)
    confines tag matches to those sources. None means no confinement (admins)."""
    groups: list[tuple[Filter, ...]] = []
    if source_ids:
        groups.append((in_("source_id", list(source_ids)),))
    if tags and (within is None or within):
        tagged: tuple[Filter, ...] = (contains_any("tags", list(tags)),)
        if within is not None:
            tagged = (*tagged, in_("source_id", list(within)))
        groups.append(tagged)
    return Where(any_of=tuple(groups)) if groups else None


class KnowledgeRetriever:
    def __init__(
        self,
        documents: DocumentStore,
        vectors: VectorStore,
        embedder: Embedder,
        *,
        outbound: OutboundGuard | None = None,
        cipher: Callable[[], TokenCipher] | None = None,
        weights: FusionWeights | None = None,
    ) -> None:
        self.documents = documents
        self.vectors = vectors
        self.embedder = embedder
        #: Which addresses an external source may reach, by its owner (security.outbound).
        self.outbound = outbound or OutboundGuard(HostPolicy(), AdminDirectory())
        #: Gives the cipher that reads the tokens an external source's config refers to (None:
        #: such configs fail with the reason).
        self.cipher = cipher
        #: How vector and keyword hits count in the fusion (None: what suits the embedder).
        self.weights = weights

    async def _connection(self, source: KnowledgeSource) -> tuple[OutboundPolicy, dict[str, Any]]:
        """What the source may reach, and its connection config with tokens resolved."""
        async with self.documents.unit_of_work(readonly=True) as repos:
            policy = await self.outbound.policy_for(repos, source.created_by)
            cipher = self.cipher() if self.cipher is not None else None
            return policy, await resolved_config(repos, cipher, source)

    async def _external_sources(
        self, source_ids: Sequence[str], tags: Sequence[str], within: Sequence[str] | None
    ) -> list[KnowledgeSource]:
        """External sources (Qdrant, vector_db, pgvector) among `source_ids` or carrying one of
        `tags` (tag matches only among `within`, when given), in id order."""
        kinds = in_("source_type", sorted(t.value for t in EXTERNAL_TYPES))
        groups: list[tuple[Filter, ...]] = []
        if source_ids:
            groups.append((in_("id", list(source_ids)), kinds))
        if tags and (within is None or within):
            tagged: tuple[Filter, ...] = (contains_any("tags", list(tags)), kinds)
            groups.append(tagged if within is None else (*tagged, in_("id", list(within))))
        found: dict[str, KnowledgeSource] = {}
        async with self.documents.unit_of_work(readonly=True) as repos:
            for group in groups:
                page = await repos.for_model(KnowledgeSource).list(
                    Query(filters=group, sort=(Sort("id"),), limit=100)
                )
                found.update((s.id, s) for s in page.items)
        return [found[k] for k in sorted(found)]

    async def for_agent(
        self, agent: Agent, query: str, *, k: int = 5, min_similarity: float = 0.0
    ) -> list[RetrievedChunk]:
        """The agent's knowledge (its source ids and knowledge tags) for `query`, including
        external collections among its sources (queried read-only). Only sources with the
        agent's owner (ownerless agents: ownerless sources) are searched, by id or by tag."""
        owner = agent.created_by
        mine = eq("created_by", owner) if owner is not None else is_null("created_by")
        async with self.documents.unit_of_work(readonly=True) as repos:
            owned = [
                s
                async for s in repos.for_model(KnowledgeSource).iterate(
                    Query(filters=(mine,), sort=(Sort("id"),))
                )
            ]
        wanted = set(agent.knowledge_source_ids)
        external = [s for s in owned if s.id in wanted and s.source_type in EXTERNAL_TYPES]
        return await self.retrieve(
            query,
            source_ids=[s.id for s in owned if s.id in wanted],
            tags=agent.knowledge_tags,
            k=k,
            min_similarity=min_similarity,
            external_sources=external,
            within=[s.id for s in owned],
        )

    async def retrieve(
        self,
        query: str,
        *,
        source_ids: Sequence[str] = (),
        tags: Sequence[str] = (),
        k: int = 5,
        min_similarity: float = 0.0,
        external_sources: Sequence[KnowledgeSource] | None = None,
        within: Sequence[str] | None = None,
    ) -> list[RetrievedChunk]:
        """Up to k chunks of the given sources/tags (and external collections), best first,
        each with its citation; tag matches only in the sources `within` (None: anywhere).

        Sources of every status are searched (`registered` and `connected` as `ready`). The
        external collections searched are `external_sources`, or, when None, the external
        sources among `source_ids` and those carrying one of `tags`."""
        where = scope_of(source_ids, tags, within)
        if where is None or not query.strip() or k < 1:
            return []
        if external_sources is None:
            external_sources = await self._external_sources(source_ids, tags, within)
        depth = max(4 * k, 20)
        vector = await self.embedder.embed_query(query)
        by_vector = await self.vectors.search(
            KNOWLEDGE_CHUNKS.name, vector, self.embedder.space, depth, where
        )
        by_vector = [h for h in by_vector if h.score >= min_similarity]
        weights = self.weights or weights_for(self.embedder.space)
        by_keyword = await keyword_hits(
            self.vectors, KNOWLEDGE_CHUNKS.name, query, depth, where, loose=weights.loose > 0
        )
        by_text = [k.hit for k in by_keyword]
        # External collections hold vectors of the same embedding space (checked), so their
        # hits join the vector list, ranked by the same cosine similarity.
        outside: dict[str, ExternalHit] = {}
        for source in external_sources:
            policy, config = await self._connection(source)
            found = await search_external(
                source, vector, self.embedder.space, depth, policy, config
            )
            for h in found:
                if h.score >= min_similarity:
                    outside[f"external:{h.source.id}:{h.id}"] = h
        by_vector = sorted(
            [*by_vector, *(VectorHit(key, h.score, h.text, {}) for key, h in outside.items())],
            key=lambda h: -h.score,
        )[:depth]
        fused = fuse(by_vector, by_keyword, weights)[:k]
        similarity = {h.id: h.score for h in by_vector}
        hits = {h.id: h for h in (*by_text, *by_vector)}
        keyword_rank = {h.id: rank for rank, h in enumerate(by_text, start=1)}
        items = await self._items(
            {str(hits[i].payload["item_id"]) for i, _ in fused if i not in outside}
        )
        out = []
        for chunk_id, score in fused:
            if chunk_id in outside:
                out.append(_external_result(outside[chunk_id], score))
                continue
            hit = hits[chunk_id]
            item = items.get(str(hit.payload["item_id"]))
            if item is None:  # deleted while we searched
                continue
            citation = Citation(
                item_id=item.id,
                chunk_index=int(hit.payload["chunk_index"]),
                start_offset=int(hit.payload["start_offset"]),
                end_offset=int(hit.payload["end_offset"]),
                source_id=item.source_id,
                title=item.name,
                file_name=item.file_name,
            )
            out.append(
                RetrievedChunk(
                    hit.text, score, citation, similarity.get(chunk_id), keyword_rank.get(chunk_id)
                )
            )
        return out

    async def _items(self, ids: set[str]) -> dict[str, KnowledgeItem]:
        if not ids:
            return {}
        async with self.documents.unit_of_work() as repos:
            page = await repos.for_model(KnowledgeItem).list(
                Query(filters=(in_("id", sorted(ids)),))
            )
        return {i.id: i for i in page.items}


def _external_result(hit: ExternalHit, score: float) -> RetrievedChunk:
    citation = Citation(
        item_id=f"external:{hit.id}",
        chunk_index=0,
        start_offset=0,
        end_offset=len(hit.text),
        source_id=hit.source.id,
        title=hit.title or hit.source.name,
        file_name=None,
        external_id=hit.id,
    )
    return RetrievedChunk(hit.text, score, citation, hit.score, None)
