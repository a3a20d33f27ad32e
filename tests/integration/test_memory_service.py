"""The memory service on both stacks: PostgreSQL + pgvector, and MongoDB (in-process emulation)
+ Qdrant local mode. Upsert re-embeds; scopes; search; delete, expiry and the cap leave no stale
vector."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tbd_agents.domain.enums import MemoryScope
from tbd_agents.domain.models import Agent
from tbd_agents.embeddings.hashing import HashingEmbedder
from tbd_agents.errors import InvalidData
from tbd_agents.services.memory import MemoryService, SearchMode
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import eq
from tbd_agents.vectors.base import Where
from tests.support.mongo import make_mongo_store
from tests.support.vectors import BACKENDS, open_backend


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@dataclass
class Env:
    service: MemoryService
    vectors: object
    clock: Clock


@pytest.fixture(params=BACKENDS)
async def env(
    request: pytest.FixtureRequest, pg18_server: str, tmp_path: Path
) -> AsyncIterator[Env]:
    clock = Clock()
    async with open_backend(request.param, pg18_server, tmp_path) as backend:
        if backend.engine is not None:
            docs = PostgresStore(backend.engine, owns_engine=False)
        else:
            docs = await make_mongo_store()
        service = MemoryService(
            docs, backend.store, HashingEmbedder(384), max_per_agent=3, clock=clock
        )
        yield Env(service, backend.store, clock)
        if backend.engine is None:
            await docs.close()


ALICE_1 = Agent(name="a1", created_by="alice")
ALICE_2 = Agent(name="a2", created_by="alice")
BOB = Agent(name="b", created_by="bob")


async def vector_count(env: Env, agent: Agent | None = None) -> int:
    where = Where((eq("agent_id", agent.id),)) if agent else None
    return await env.vectors.count("memories", where)  # type: ignore[attr-defined]


async def test_update_re_embeds_in_place(env: Env) -> None:
    first = await env.service.remember(ALICE_1, "favourite colour", "blue")
    env.clock.advance(seconds=1)
    second = await env.service.remember(ALICE_1, "favourite colour", "green")
    assert second.id == first.id
    assert second.value == "green"
    assert await vector_count(env) == 1
    (vec,) = await env.vectors.get("memories", [first.id])  # type: ignore[attr-defined]
    assert vec.text == "favourite colour: green"
    hits = await env.service.search(ALICE_1, "green", mode=SearchMode.KEYWORD)
    assert [h.memory.value for h in hits] == ["green"]
    assert await env.service.search(ALICE_1, "blue", mode=SearchMode.KEYWORD) == []


async def test_scopes_mean_what_they_say(env: Env) -> None:
    s = env.service
    await s.remember(ALICE_1, "deploy day", "Tuesday deploys only", scope=MemoryScope.AGENT)
    await s.remember(
        ALICE_1, "ticket", "ticket 42 in progress", scope=MemoryScope.SESSION, session_id="s1"
    )
    await s.remember(ALICE_1, "timezone", "team timezone is CET", scope=MemoryScope.GLOBAL)

    async def keys(agent: Agent, session: str | None) -> set[str]:
        hits = await s.search(agent, "deploys ticket timezone", session_id=session, k=10)
        return {h.memory.key for h in hits}

    assert await keys(ALICE_1, "s1") == {"deploy day", "ticket", "timezone"}
    assert await keys(ALICE_1, "s2") == {"deploy day", "timezone"}
    assert await keys(ALICE_1, None) == {"deploy day", "timezone"}
    assert await keys(ALICE_2, "s1") == {"timezone"}  # same owner: global only
    assert await keys(BOB, "s1") == set()  # other owner: nothing
    with pytest.raises(InvalidData, match="needs session_id"):
        await s.remember(ALICE_1, "k", "v", scope=MemoryScope.SESSION)


async def test_semantic_and_keyword_search_rank_the_relevant_memory_first(env: Env) -> None:
    s = env.service
    await s.remember(ALICE_1, "lunch", "the user is vegetarian and avoids meat")
    await s.remember(ALICE_1, "editor", "prefers vim keybindings in every editor")
    await s.remember(ALICE_1, "pets", "has two cats called Miso and Tofu")
    for mode in SearchMode:
        hits = await s.search(ALICE_1, "which editor keybindings does the user like?", mode=mode)
        assert hits[0].memory.key == "editor", mode


async def test_forget_and_delete_remove_row_and_vector(env: Env) -> None:
    s = env.service
    m1 = await s.remember(ALICE_1, "a", "alpha")
    await s.remember(ALICE_1, "b", "beta")
    assert await s.forget(ALICE_1, "b")
    assert not await s.forget(ALICE_1, "b")
    assert await s.delete(m1.id)
    assert await s.recall(ALICE_1, "a") is None
    assert await vector_count(env) == 0


async def test_expiry_deletes_row_and_vector(env: Env) -> None:
    s = env.service
    await s.remember(ALICE_1, "otp", "one-time code 123456", ttl=timedelta(minutes=1))
    await s.remember(ALICE_1, "name", "the user is called Ada")
    assert (await s.recall(ALICE_1, "otp")) is not None
    env.clock.advance(minutes=2)
    assert await s.recall(ALICE_1, "otp") is None
    assert [h.memory.key for h in await s.search(ALICE_1, "one-time code", k=5)] == ["name"]
    assert await s.expire() == 1
    assert await vector_count(env) == 1
    assert await s.expire() == 0


async def test_cap_evicts_oldest_rows_with_their_vectors(env: Env) -> None:
    s = env.service
    for i in range(5):
        await s.remember(ALICE_1, f"fact {i}", f"value {i}")
        env.clock.advance(seconds=1)
    await s.remember(ALICE_2, "other agent", "kept")
    left = await s.search(ALICE_1, "fact value", k=10, mode=SearchMode.KEYWORD)
    assert sorted(h.memory.key for h in left) == ["fact 2", "fact 3", "fact 4"]
    assert await vector_count(env, ALICE_1) == 3
    assert await vector_count(env, ALICE_2) == 1


async def test_a_vector_out_of_step_with_its_row_is_never_returned(env: Env) -> None:
    """Simulates a write that updated the row but failed before the vector (no shared
    transaction in the qdrant profile): search must not serve the stale vector."""
    from tbd_agents.embeddings.hashing import HashingEmbedder
    from tbd_agents.vectors.base import VectorRecord

    mem = await env.service.remember(ALICE_1, "city", "lives in Lisbon")
    stale_vector = await HashingEmbedder(384).embed_query("city: lives in Porto")
    record = VectorRecord(
        id=mem.id,
        vector=stale_vector,
        text="city: lives in Porto",
        payload={
            "agent_id": ALICE_1.id,
            "scope": "agent",
            "session_id": None,
            "owner": "alice",
            "key": "city",
        },
    )
    await env.vectors.upsert("memories", [record], HashingEmbedder(384).space)  # type: ignore[attr-defined]
    assert await env.service.search(ALICE_1, "Porto", mode=SearchMode.KEYWORD) == []
    await env.service.remember(ALICE_1, "city", "lives in Lisbon")  # re-embeds
    hits = await env.service.search(ALICE_1, "Lisbon", mode=SearchMode.KEYWORD)
    assert [h.memory.value for h in hits] == ["lives in Lisbon"]


async def test_memories_stored_without_a_vector_are_indexed_once(env: Env) -> None:
    # Memories an existing deployment wrote (read as they are on the MongoDB profile, or
    # written behind the service's back) have no vector: semantic search cannot find them
    # until `index_missing` embeds them; expired ones are left out.
    from tbd_agents.domain.models import Memory

    old = Memory(agent_id=ALICE_1.id, key="city", value="lives in Porto", created_by="alice")
    gone = Memory(
        agent_id=ALICE_1.id,
        key="mood",
        value="cheerful",
        created_by="alice",
        ttl=env.clock.now - timedelta(days=1),
    )
    async with env.service.documents.unit_of_work() as repos:
        await repos.memories.create(old)
        await repos.memories.create(gone)
    await env.service.remember(ALICE_1, "pet", "a cat named Miso")
    assert await vector_count(env, ALICE_1) == 1
    assert await env.service.index_missing(batch_size=1) == 1
    assert await vector_count(env, ALICE_1) == 2
    hits = await env.service.search(ALICE_1, "city: lives in Porto", k=1)
    assert [h.memory.id for h in hits] == [old.id]
    assert await env.service.index_missing() == 0
