"""Agent memory: remember, recall (semantic and keyword), forget, expire, cap.

Scopes mean what they say:

* `session`: visible to the agent inside one workflow run / chat session (`session_id`);
* `agent`: visible to the agent in all its sessions;
* `global`: visible to every agent of the same owner (the agent's `created_by`).

Each memory has one vector (text `"<key>: <value>"`) in the `memories` vector collection. A row and
its vector change together: on pgvector in the same transaction (and ON DELETE CASCADE), on Qdrant
right after the row in the same unit of work, with search results re-checked against the rows so a
vector whose row is gone is never returned. Updates re-embed; expiry and the per-agent cap delete
rows and vectors together. These functions serve both the API and the agent's memory tools.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from tbd_agents.domain.enums import MemoryScope
from tbd_agents.domain.models import Agent, Memory
from tbd_agents.domain.types import utcnow
from tbd_agents.embeddings.base import Embedder
from tbd_agents.errors import Conflict, InvalidData
from tbd_agents.storage.protocol import DocumentStore, Query, asc, desc, eq, in_, lte
from tbd_agents.vectors.base import MEMORIES, VectorRecord, VectorStore, Where

_BATCH = 500


class _Keep(StrEnum):
    KEEP = "keep"


#: `MemoryService.update(expires_at=KEEP)`: the memory's expiry does not change.
KEEP = _Keep.KEEP


class SearchMode(StrEnum):
    SEMANTIC = "semantic"
    KEYWORD = "keyword"


@dataclass(frozen=True, slots=True)
class MemoryHit:
    memory: Memory
    score: float


def memory_text(key: str, value: str) -> str:
    """The text a memory's vector is made from."""
    return f"{key}: {value}"


def memory_vector_record(
    memory_id: str,
    *,
    agent_id: str,
    scope: MemoryScope | str,
    session_id: str | None,
    owner: str | None,
    key: str,
    value: str,
    vector: Sequence[float],
) -> VectorRecord:
    """The record of a memory in the `memories` vector collection: its text (`memory_text`) and
    the payload searches filter on (`owner` is the memory's `created_by`). The service writes
    these; the MongoDB migration builds the same ones from the migrated rows."""
    return VectorRecord(
        id=memory_id,
        vector=vector,
        text=memory_text(key, value),
        payload={
            "agent_id": agent_id,
            "scope": MemoryScope(scope).value,
            "session_id": session_id,
            "owner": owner,
            "key": key,
        },
    )


def visible_to(
    agent: Agent,
    session_id: str | None,
    scope: MemoryScope | None = None,
    *,
    every_session: bool = False,
) -> Where:
    """Memories an agent may read: its own agent-scoped ones, its session-scoped ones of
    `session_id`, and the global ones of its owner. With `scope`, only those of that scope.
    Without a session_id, `every_session` (or scope `session`) takes the agent's session
    memories of every session (what its owner may browse)."""
    groups: list[tuple[Any, ...]] = []
    if scope in (None, MemoryScope.AGENT):
        groups.append((eq("agent_id", agent.id), eq("scope", MemoryScope.AGENT.value)))
    if scope in (None, MemoryScope.SESSION):
        session = (eq("agent_id", agent.id), eq("scope", MemoryScope.SESSION.value))
        if session_id:
            groups.append((*session, eq("session_id", session_id)))
        elif every_session or scope is MemoryScope.SESSION:
            groups.append(session)
    if scope in (None, MemoryScope.GLOBAL):
        groups.append((eq("scope", MemoryScope.GLOBAL.value), eq("owner", agent.created_by)))
    return Where(any_of=tuple(groups))


class MemoryService:
    """Memory use cases over a document store, a vector store and an embedder."""

    def __init__(
        self,
        documents: DocumentStore,
        vectors: VectorStore,
        embedder: Embedder,
        *,
        max_per_agent: int = 1000,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.documents = documents
        self.vectors = vectors
        self.embedder = embedder
        self.max_per_agent = max_per_agent
        self.clock = clock

    async def remember(
        self,
        agent: Agent,
        key: str,
        value: str,
        *,
        scope: MemoryScope = MemoryScope.AGENT,
        session_id: str | None = None,
        ttl: timedelta | None = None,
        expires_at: datetime | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Memory:
        """Create or update the memory (agent, scope, key), re-embedding its text; then evict the
        agent's oldest memories beyond the cap (rows and vectors). It expires `ttl` from now or
        at `expires_at` (ttl wins when both are given)."""
        scope = MemoryScope(scope)
        if scope is MemoryScope.SESSION and not session_id:
            raise InvalidData(
                "a session-scoped memory needs session_id (the chat or workflow run)",
                details={"field": "session_id"},
            )
        if ttl is not None and ttl <= timedelta(0):
            raise InvalidData("ttl must be positive", details={"field": "ttl_seconds"})
        now = self.clock()
        if ttl is None and expires_at is not None:
            _check_expiry(expires_at, now)
            ttl = expires_at - now
        (vector,) = await self.embedder.embed([memory_text(key, value)])
        record = Memory(
            agent_id=agent.id,
            scope=scope,
            key=key,
            value=value,
            session_id=session_id if scope is MemoryScope.SESSION else None,
            embedding=vector,
            metadata=metadata or {},
            ttl=now + ttl if ttl else None,
            created_by=agent.created_by,
            created_at=now,
            updated_at=now,
        )
        fields = (
            "value",
            "session_id",
            "embedding",
            "metadata",
            "ttl",
            "created_by",
            "updated_at",
        )
        async with self.documents.unit_of_work() as repos:
            stored = await repos.for_model(Memory).upsert(
                record, ("agent_id", "scope", "key"), fields
            )
            await self.vectors.bind(repos).upsert(
                MEMORIES.name, [self._vector_record(stored, vector)], self.embedder.space
            )
        await self._enforce_cap(agent.id)
        return stored

    async def update(
        self,
        current: Memory,
        *,
        key: str,
        value: str,
        scope: MemoryScope,
        session_id: str | None,
        metadata: dict[str, Any],
        expires_at: datetime | _Keep | None = KEEP,
        expected_version: int | None = None,
    ) -> Memory:
        """Change the memory `current` in place, its vector re-embedded with it. Conflict when
        another memory of the agent already has the new (scope, key); with `expected_version`,
        VersionConflict when the memory is at another version. `updated_at` is the store's time
        of the change (in the order of the versions)."""
        scope = MemoryScope(scope)
        if scope is MemoryScope.SESSION and not session_id:
            raise InvalidData(
                "a session-scoped memory needs session_id (the chat or workflow run)",
                details={"field": "session_id"},
            )
        now = self.clock()
        changes: dict[str, Any] = {
            "key": key,
            "value": value,
            "scope": scope,
            "session_id": session_id if scope is MemoryScope.SESSION else None,
            "metadata": metadata,
        }
        if not isinstance(expires_at, _Keep):
            if expires_at is not None:
                _check_expiry(expires_at, now)
            changes["ttl"] = expires_at
        (vector,) = await self.embedder.embed([memory_text(key, value)])
        changes["embedding"] = vector
        async with self.documents.unit_of_work() as repos:
            repo = repos.for_model(Memory)
            if (scope, key) != (current.scope, current.key):
                taken = await repo.find_one(
                    eq("agent_id", current.agent_id), eq("scope", scope), eq("key", key)
                )
                if taken is not None:
                    raise Conflict(
                        f"the agent already has a {scope.value} memory {key!r} ({taken.id}): "
                        "change that one, or delete it first",
                        details={"field": "key", "existing": taken.id},
                    )
            stored = await repo.update(current.id, changes, expected_version=expected_version)
            await self.vectors.bind(repos).upsert(
                MEMORIES.name, [self._vector_record(stored, vector)], self.embedder.space
            )
        return stored

    async def recent(self, agent: Agent, limit: int) -> list[Memory]:
        """The agent's own live memories (every scope), most recently written first."""
        query = Query(
            filters=(eq("agent_id", agent.id),),
            sort=(desc("updated_at"), desc("id")),
            limit=limit + 20,  # room for expired rows not yet swept
        )
        async with self.documents.unit_of_work(readonly=True) as repos:
            page = await repos.for_model(Memory).list(query)
        now = self.clock()
        return [m for m in page.items if not _expired(m, now)][:limit]

    async def index_missing(self, batch_size: int = 256) -> int:
        """Embed and index every live memory that has no vector yet; return how many.

        Memories an existing deployment stored (the MongoDB profile reads them as they are) have
        no vector in this hub's store, so semantic search would never find them. Idempotent: a
        second call indexes nothing. Each batch is one read, one lookup of the vectors that exist
        and one embedding call."""
        await self.vectors.ensure_collection(MEMORIES.name, self.embedder.space)
        indexed = 0
        query = Query(sort=(asc("id"),), limit=batch_size)
        while True:
            async with self.documents.unit_of_work() as repos:
                page = await repos.for_model(Memory).list(query)
            now = self.clock()
            live = [m for m in page.items if not _expired(m, now)]
            if live:
                have = {h.id for h in await self.vectors.get(MEMORIES.name, [m.id for m in live])}
                missing = [m for m in live if m.id not in have]
                if missing:
                    vectors = await self.embedder.embed(
                        [memory_text(m.key, m.value) for m in missing]
                    )
                    records = [
                        self._vector_record(m, v) for m, v in zip(missing, vectors, strict=True)
                    ]
                    async with self.documents.unit_of_work() as repos:
                        await self.vectors.bind(repos).upsert(
                            MEMORIES.name, records, self.embedder.space
                        )
                    indexed += len(missing)
            if page.next_cursor is None:
                return indexed
            query = query.after(page.next_cursor)

    @staticmethod
    def _vector_record(memory: Memory, vector: Sequence[float]) -> VectorRecord:
        return memory_vector_record(
            memory.id,
            agent_id=memory.agent_id,
            scope=memory.scope,
            session_id=memory.session_id,
            owner=memory.created_by,
            key=memory.key,
            value=memory.value,
            vector=vector,
        )

    async def _delete(self, ids: Sequence[str]) -> int:
        """Delete memory rows and their vectors (same transaction on pgvector)."""
        if not ids:
            return 0
        async with self.documents.unit_of_work() as repos:
            removed = await repos.for_model(Memory).delete_where(in_("id", list(ids)))
            await self.vectors.bind(repos).delete(MEMORIES.name, list(ids))
        return removed

    async def _enforce_cap(self, agent_id: str) -> int:
        if self.max_per_agent <= 0:  # MEMORY_MAX_PER_AGENT=0 (LTM_MAX_ENTRIES=0): no cap
            return 0
        async with self.documents.unit_of_work() as repos:
            excess = (
                await repos.for_model(Memory).count(eq("agent_id", agent_id)) - self.max_per_agent
            )
            if excess <= 0:
                return 0
            query = Query(
                filters=(eq("agent_id", agent_id),), sort=(asc("updated_at"),), limit=excess
            )
            oldest = [m.id for m in (await repos.for_model(Memory).list(query)).items]
        return await self._delete(oldest)

    async def forget(self, agent: Agent, key: str, scope: MemoryScope = MemoryScope.AGENT) -> bool:
        """Delete the memory (agent, scope, key) and its vector; True if it existed."""
        async with self.documents.unit_of_work() as repos:
            found = await repos.for_model(Memory).find_one(
                eq("agent_id", agent.id), eq("scope", MemoryScope(scope)), eq("key", key)
            )
        return found is not None and await self._delete([found.id]) == 1

    async def delete(self, memory_id: str, *, expected_version: int | None = None) -> bool:
        """Delete one memory by id, with its vector; True if it existed. With
        `expected_version`, only at that version (VersionConflict otherwise, nothing deleted)."""
        if expected_version is None:
            return await self._delete([memory_id]) == 1
        async with self.documents.unit_of_work() as repos:
            existed = await repos.for_model(Memory).delete(
                memory_id, expected_version=expected_version
            )
            await self.vectors.bind(repos).delete(MEMORIES.name, [memory_id])
        return existed

    async def expire(self) -> int:
        """Delete every memory whose ttl has passed, with its vector; return how many."""
        total = 0
        while True:
            query = Query(filters=(lte("ttl", self.clock()),), limit=_BATCH)
            async with self.documents.unit_of_work() as repos:
                ids = [m.id for m in (await repos.for_model(Memory).list(query)).items]
            if not ids:
                return total
            total += await self._delete(ids)

    async def search(
        self,
        agent: Agent,
        query: str,
        *,
        session_id: str | None = None,
        k: int = 5,
        mode: SearchMode = SearchMode.SEMANTIC,
        scope: MemoryScope | None = None,
        every_session: bool = False,
    ) -> list[MemoryHit]:
        """Up to k memories visible to the agent (see `visible_to`, narrowed to `scope`), best
        first; expired ones are never returned."""
        where = visible_to(agent, session_id, scope, every_session=every_session)
        wanted = k * 2 + 5  # room for expired rows not yet swept
        if SearchMode(mode) is SearchMode.SEMANTIC:
            vector = await self.embedder.embed_query(query)
            hits = await self.vectors.search(
                MEMORIES.name, vector, self.embedder.space, wanted, where
            )
        else:
            hits = await self.vectors.text_search(MEMORIES.name, query, wanted, where)
        if not hits:
            return []
        async with self.documents.unit_of_work() as repos:
            page = await repos.for_model(Memory).list(
                Query(filters=(in_("id", [h.id for h in hits]),))
            )
        now = self.clock()
        rows = {m.id: m for m in page.items if not _expired(m, now)}
        # A vector whose text no longer matches its row (a write that failed half-way on a store
        # without shared transactions) is never returned.
        return [
            MemoryHit(rows[h.id], h.score)
            for h in hits
            if h.id in rows and h.text == memory_text(rows[h.id].key, rows[h.id].value)
        ][:k]

    async def recall(
        self, agent: Agent, key: str, *, scope: MemoryScope = MemoryScope.AGENT
    ) -> Memory | None:
        """The memory (agent, scope, key) if it exists and has not expired."""
        async with self.documents.unit_of_work() as repos:
            found = await repos.for_model(Memory).find_one(
                eq("agent_id", agent.id), eq("scope", MemoryScope(scope)), eq("key", key)
            )
        return None if found is None or _expired(found, self.clock()) else found


def _check_expiry(expires_at: datetime, now: datetime) -> None:
    if expires_at.tzinfo is None:
        raise InvalidData(
            "ttl must be a time with its UTC offset (e.g. 2030-01-01T00:00:00Z)",
            details={"field": "ttl"},
        )
    if expires_at <= now:
        raise InvalidData("ttl is in the past: give a future expiry time", details={"field": "ttl"})


def _expired(memory: Memory, now: datetime) -> bool:
    return memory.ttl is not None and memory.ttl <= now
