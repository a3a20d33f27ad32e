"""Knowledge and memory as the API uses them: built once per app from the settings.

Wraps the ingestion, retrieval and memory services of `tbd_agents.knowledge` and
`services/memory.py` with the API's access rules (a caller works only on knowledge sources and
agents it may see) and removes vectors with their rows on every backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tbd_agents.config import Settings
from tbd_agents.domain.enums import KnowledgeSourceStatus, MemoryScope
from tbd_agents.domain.models import Agent, KnowledgeItem, KnowledgeSource, Memory
from tbd_agents.embeddings.base import Embedder
from tbd_agents.errors import InvalidData, NotFound, TbdError
from tbd_agents.knowledge.external import EXTERNAL_TYPES, check_external, resolved_config
from tbd_agents.knowledge.extract import ExtractLimits
from tbd_agents.knowledge.files import FileStore, StoredFile
from tbd_agents.knowledge.ingest import ChunkingOptions, KnowledgeIngestion
from tbd_agents.knowledge.retrieval import KnowledgeRetriever, RetrievedChunk
from tbd_agents.security.cipher import KeyRingProvider, TokenCipher
from tbd_agents.security.outbound import OutboundGuard
from tbd_agents.services.access import Principal, owner_filters
from tbd_agents.services.memory import KEEP, MemoryHit, MemoryService, SearchMode
from tbd_agents.services.privilege import outbound_guard
from tbd_agents.services.records import Records, expected_version
from tbd_agents.storage.protocol import DocumentStore, Query, Sort, contains_any, eq
from tbd_agents.vectors.base import KNOWLEDGE_CHUNKS, VectorStore, Where

log = logging.getLogger("tbd_agents.api")


@dataclass
class KnowledgeServices:
    store: DocumentStore
    vectors: VectorStore
    embedder: Embedder
    files: FileStore
    ingestion: KnowledgeIngestion
    retriever: KnowledgeRetriever
    memory: MemoryService

    async def close(self) -> None:
        await self.vectors.close()

    # --- knowledge ------------------------------------------------------------------------
    async def _writable_source(self, principal: Principal, source_id: str) -> KnowledgeSource:
        principal.require_write()
        async with self.store.unit_of_work() as repos:
            try:
                source: KnowledgeSource = await Records(repos, principal, KnowledgeSource).get(
                    source_id
                )
            except NotFound as exc:
                raise InvalidData(
                    f"source_id: no knowledge_sources record {source_id!r}",
                    details={"field": "source_id", "missing": [source_id]},
                ) from exc
        if source.source_type in EXTERNAL_TYPES:
            raise InvalidData(
                f"knowledge source {source.name!r} is an external {source.source_type.value} "
                "collection, searched read-only: add documents to a source stored here "
                "(mongo_db or manual)",
                details={"field": "source_id"},
            )
        return source

    async def add_text(self, principal: Principal, data: dict[str, Any]) -> KnowledgeItem:
        source = await self._writable_source(principal, data["source_id"])
        return await self.ingestion.ingest_text(
            source.id,
            data.get("text_content", ""),
            title=data.get("name") or "",
            tags=data.get("tags", []),
            content_type=data.get("mime_type") or "text/plain",
            metadata=data.get("metadata") or {},
        )

    async def add_file(
        self,
        principal: Principal,
        source_id: str,
        file_name: str,
        payload: bytes,
        content_type: str | None,
        title: str,
        tags: list[str],
        metadata: dict[str, Any] | None = None,
    ) -> KnowledgeItem:
        source = await self._writable_source(principal, source_id)
        return await self.ingestion.ingest_file(
            source.id,
            file_name,
            payload,
            content_type=content_type,
            tags=tags,
            title=title,
            metadata=metadata,
        )

    async def update_item(
        self,
        principal: Principal,
        item_id: str,
        changes: dict[str, Any],
        *,
        expected_versions: Collection[int] | None = None,
    ) -> KnowledgeItem:
        """A partial update; a new `text_content` or `tags` indexes the item again. With
        `expected_versions` (If-Match), every write is conditional on the version before it."""
        text = changes.pop("text_content", None)
        tags = changes.pop("tags", None)
        async with self.store.unit_of_work() as repos:
            records = Records(repos, principal, KnowledgeItem)
            item: KnowledgeItem = await records.get(item_id)
            principal.require_write()
            expected = expected_version(item, expected_versions)
            new_text = text is not None and text != item.text_content
            if new_text and item.file_id is not None:
                raise InvalidData(
                    "text_content: this item's text was extracted from its file; upload the "
                    "file again to change it",
                    details={"field": "text_content"},
                )
            updated = (
                await records.update(item_id, changes, expected_versions=expected_versions)
                if changes
                else item
            )
        if not new_text and (tags is None or tags == item.tags):
            return updated
        return await self.ingestion.reindex(
            updated,
            text=text,
            tags=tags,
            expected_version=None if expected is None else updated.version,
        )

    async def content(
        self, principal: Principal, item_id: str
    ) -> tuple[KnowledgeItem, StoredFile | None]:
        async with self.store.unit_of_work() as repos:
            item: KnowledgeItem = await Records(repos, principal, KnowledgeItem).get(item_id)
            stored = await self.files.bind(repos).get(item.file_id) if item.file_id else None
        return item, stored

    async def delete_item(
        self,
        principal: Principal,
        item_id: str,
        *,
        expected_versions: Collection[int] | None = None,
    ) -> None:
        async with self.store.unit_of_work() as repos:
            item = await Records(repos, principal, KnowledgeItem).get(item_id)
            principal.require_write()
            expected = expected_version(item, expected_versions)
        await self.ingestion.delete_item(item_id, expected_version=expected)

    async def forget_source_vectors(self, source_id: str) -> None:
        """Chunks of a deleted source (a no-op on pgvector, where they cascade with the rows)."""
        await self.vectors.delete_where(KNOWLEDGE_CHUNKS.name, Where((eq("source_id", source_id),)))

    async def search(
        self, principal: Principal, query: str, source_ids: list[str], tags: list[str], k: int
    ) -> list[RetrievedChunk]:
        """Chunks of the given sources (each must be visible) or with any of the tags. No
        sources nor tags means every source the caller can list: a user's own, every source
        for an admin (as `GET /api/knowledge-sources` shows them). For users, tags match only
        in their own sources; for admins, anywhere."""
        within: list[str] | None = None
        async with self.store.unit_of_work(readonly=True) as repos:
            records = Records(repos, principal, KnowledgeSource)
            visible = [(await records.get(s)).id for s in source_ids]
            if not principal.is_admin or (not visible and not tags):
                listable = [
                    s.id
                    async for s in repos.for_model(KnowledgeSource).iterate(
                        Query(filters=owner_filters(KnowledgeSource, principal), sort=(Sort("id"),))
                    )
                ]
                if not principal.is_admin:
                    within = listable
                if not visible and not tags:
                    visible = listable
        return await self.retriever.retrieve(
            query, source_ids=visible, tags=tags, k=k, within=within
        )

    # --- memory ---------------------------------------------------------------------------
    async def _agent(self, principal: Principal, agent_id: str) -> Agent:
        async with self.store.unit_of_work() as repos:
            try:
                agent: Agent = await Records(repos, principal, Agent).get(agent_id)
            except NotFound as exc:
                raise InvalidData(
                    f"agent_id: no agents record {agent_id!r}",
                    details={"field": "agent_id", "missing": [agent_id]},
                ) from exc
        return agent

    async def remember(self, principal: Principal, data: dict[str, Any]) -> Memory:
        principal.require_write()
        agent = await self._agent(principal, data["agent_id"])
        ttl = data.get("ttl_seconds")
        metadata = data.get("metadata") or {}
        return await self.memory.remember(
            agent,
            data["key"],
            data.get("value", ""),
            scope=MemoryScope(data.get("scope", MemoryScope.AGENT)),
            session_id=data.get("session_id") or session_of(metadata),
            ttl=timedelta(seconds=ttl) if ttl else None,
            expires_at=data.get("ttl"),
            metadata=metadata,
        )

    async def update_memory(
        self,
        principal: Principal,
        memory_id: str,
        changes: dict[str, Any],
        *,
        expected_versions: Collection[int] | None = None,
    ) -> Memory:
        """Change a memory in place (row and vector, re-embedded): any of key, value, scope,
        session_id, metadata, ttl (an expiry time; null clears it) or ttl_seconds. With
        `expected_versions` (If-Match), only if it is still at one of them."""
        principal.require_write()
        async with self.store.unit_of_work() as repos:
            current: Memory = await Records(repos, principal, Memory).get(memory_id)
        expected = expected_version(current, expected_versions)
        expiry: Any = KEEP
        if changes.get("ttl_seconds") is not None:
            expiry = self.memory.clock() + timedelta(seconds=changes["ttl_seconds"])
        elif "ttl" in changes:
            expiry = changes["ttl"]
        metadata = changes.get("metadata")
        if metadata is None:
            metadata = current.metadata
        scope = MemoryScope(changes.get("scope") or current.scope)
        session_id = changes.get("session_id") or current.session_id or session_of(metadata)
        return await self.memory.update(
            current,
            key=changes.get("key") or current.key,
            value=current.value if changes.get("value") is None else changes["value"],
            scope=scope,
            session_id=session_id,
            metadata=metadata,
            expires_at=expiry,
            expected_version=expected,
        )

    async def delete_memory(
        self,
        principal: Principal,
        memory_id: str,
        *,
        expected_versions: Collection[int] | None = None,
    ) -> None:
        principal.require_write()
        async with self.store.unit_of_work() as repos:
            current = await Records(repos, principal, Memory).get(memory_id)
        expected = expected_version(current, expected_versions)
        await self.memory.delete(memory_id, expected_version=expected)

    async def search_memories(
        self,
        principal: Principal,
        agent_id: str,
        query: str,
        mode: SearchMode,
        session_id: str | None,
        k: int,
        scope: MemoryScope | None = None,
        every_session: bool = False,
    ) -> list[MemoryHit]:
        agent = await self._agent(principal, agent_id)
        return await self.memory.search(
            agent,
            query,
            session_id=session_id,
            k=k,
            mode=mode,
            scope=scope,
            every_session=every_session,
        )

    async def recent_memories(
        self, principal: Principal, agent_id: str, limit: int
    ) -> list[Memory]:
        """The agent's own memories (all scopes), most recently written first; NotFound for an
        agent the caller may not see."""
        async with self.store.unit_of_work(readonly=True) as repos:
            agent: Agent = await Records(repos, principal, Agent).get(agent_id)
        return await self.memory.recent(agent, limit)

    # --- knowledge items by tag, source tests -----------------------------------------------
    async def items_with_tags(
        self, principal: Principal, tags: list[str], limit: int
    ) -> list[KnowledgeItem]:
        """Items (of the caller's sources) having any of `tags`, newest first."""
        if not tags:
            return []
        async with self.store.unit_of_work(readonly=True) as repos:
            page = await Records(repos, principal, KnowledgeItem).list(
                [contains_any("tags", tags)], limit=limit
            )
        return list(page.items)


def session_of(metadata: dict[str, Any]) -> str | None:
    """The session a memory's metadata names (the existing system keeps `workflow_id` there)."""
    for key in ("session_id", "workflow_id"):
        value = metadata.get(key)
        if isinstance(value, str) and value:
            return value
    return None


async def test_source(
    store: DocumentStore,
    principal: Principal,
    cipher: Callable[[], TokenCipher],
    outbound: OutboundGuard,
    source_id: str,
) -> str | None:
    """Test a knowledge source's connection and record the outcome in its `status` (connected
    or error) and `last_error`; return the error (None on success). Sources stored in the hub
    itself (mongo_db, manual, ...) always succeed; external ones: see `check_external`."""
    principal.require_write()
    async with store.unit_of_work() as repos:
        source: KnowledgeSource = await Records(repos, principal, KnowledgeSource).get(source_id)
        error: str | None = None
        cfg: dict[str, Any] = {}
        policy = await outbound.policy_for(repos, source.created_by)
        if source.source_type in EXTERNAL_TYPES:
            try:
                cfg = await resolved_config(repos, cipher(), source)
            except TbdError as exc:
                error = exc.message
    if source.source_type in EXTERNAL_TYPES and error is None:
        try:
            await check_external(source, policy, cfg)
        except TbdError as exc:
            error = exc.message
        except Exception as exc:  # the driver's own errors: the answer, not a 500
            log.info("knowledge source %s failed its test: %r", source.id, exc)
            error = f"{type(exc).__name__}: {str(exc)[:500]}"
    status = KnowledgeSourceStatus.ERROR if error else KnowledgeSourceStatus.CONNECTED
    async with store.unit_of_work() as repos:
        await repos.for_model(KnowledgeSource).update(
            source.id, {"status": status, "last_error": error}
        )
    return error


def _ciphers(settings: Settings) -> Callable[[], TokenCipher]:
    """The token cipher, built on first use (external sources whose config names a token)."""
    ring: list[KeyRingProvider] = []

    def cipher() -> TokenCipher:
        if not ring:
            ring.append(KeyRingProvider(settings))
        return ring[0].cipher()

    return cipher


async def build_knowledge_services(settings: Settings, store: DocumentStore) -> KnowledgeServices:
    """Embedder (with its start-up fallback), vector store and file store of the settings."""
    from tbd_agents.embeddings.factory import load_embedder
    from tbd_agents.vectors.factory import open_vector_store

    choice = await load_embedder(settings)  # logs what it chose, once, with the reason
    vectors = open_vector_store(settings, store)
    files: FileStore
    engine = getattr(store, "engine", None)
    if store.backend == "postgres" and engine is not None:
        from tbd_agents.knowledge.files import PgFileStore

        files = PgFileStore(engine)
    else:
        from tbd_agents.knowledge.files import GridFsFileStore

        files = GridFsFileStore(getattr(store, "database"))  # noqa: B009
    chunking = ChunkingOptions(settings.knowledge_chunk_size, settings.knowledge_chunk_overlap)
    embedder = choice.embedder
    return KnowledgeServices(
        store=store,
        vectors=vectors,
        embedder=embedder,
        files=files,
        ingestion=KnowledgeIngestion(
            store, vectors, embedder, files, chunking, ExtractLimits.from_settings(settings)
        ),
        retriever=KnowledgeRetriever(
            store, vectors, embedder, outbound=outbound_guard(settings), cipher=_ciphers(settings)
        ),
        memory=MemoryService(store, vectors, embedder, max_per_agent=settings.memory_max_per_agent),
    )
