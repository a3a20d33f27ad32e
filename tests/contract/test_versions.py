"""Record versions on every backend: `version` starts at 1 and every change raises it by one in
the same atomic write; `update` / `delete` with `expected_version` change nothing and raise
VersionConflict (naming the current version) when the record is at another; `updated_at` is set by
the backend when it applies the change, so ordering a record's versions orders its times.

These are the guarantees the API's `ETag` / `If-Match` (tests/faults/test_concurrent_edits.py)
stand on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from bson import ObjectId
from sqlalchemy import text

from tbd_agents.domain.models import Agent, ChatMessage, ChatSession, Memory
from tbd_agents.errors import InvalidData, NotFound, VersionConflict
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import DocumentStore
from tests.support.mongo import make_mongo_store

WRITERS = 12


async def _agent(store: DocumentStore, **fields: object) -> Agent:
    async with store.unit_of_work() as repos:
        created: Agent = await repos.agents.create(Agent(name="versioned", **fields))  # type: ignore[arg-type]
    return created


async def test_a_new_record_is_at_version_1_and_each_update_adds_one(
    store: DocumentStore,
) -> None:
    agent = await _agent(store)
    assert agent.version == 1
    async with store.unit_of_work() as repos:
        first = await repos.agents.update(agent.id, {"description": "one"})
        second = await repos.agents.update(agent.id, {"tags": ["x"]})
        loaded = await repos.agents.get(agent.id)
    assert (first.version, second.version, loaded.version) == (2, 3, 3)
    assert loaded == second


async def test_a_conditional_update_at_the_current_version_applies(store: DocumentStore) -> None:
    agent = await _agent(store)
    async with store.unit_of_work() as repos:
        changed = await repos.agents.update(agent.id, {"description": "mine"}, expected_version=1)
    assert (changed.version, changed.description) == (2, "mine")


async def test_a_stale_conditional_update_changes_nothing(store: DocumentStore) -> None:
    agent = await _agent(store, description="before")
    async with store.unit_of_work() as repos:
        await repos.agents.update(agent.id, {"model": "m"})  # someone else: version 2
    with pytest.raises(VersionConflict) as caught:
        async with store.unit_of_work() as repos:
            await repos.agents.update(agent.id, {"description": "lost?"}, expected_version=1)
    assert caught.value.current == 2 and caught.value.expected == [1]
    assert caught.value.http_status == 412
    assert "version 2" in caught.value.message
    async with store.unit_of_work() as repos:
        loaded = await repos.agents.get(agent.id)
    assert (loaded.version, loaded.description, loaded.model) == (2, "before", "m")


async def test_a_conditional_update_of_a_missing_record_is_not_found(
    store: DocumentStore,
) -> None:
    async with store.unit_of_work() as repos:
        with pytest.raises(NotFound):
            await repos.agents.update(str(ObjectId()), {"description": "x"}, expected_version=1)


async def test_a_stale_conditional_delete_deletes_nothing(store: DocumentStore) -> None:
    agent = await _agent(store)
    async with store.unit_of_work() as repos:
        session = await repos.chat_sessions.create(ChatSession(agent_id=agent.id))
        await repos.chat_messages.create(ChatMessage(session_id=session.id, role="user"))
        await repos.chat_sessions.update(session.id, {"title": "renamed"})
    with pytest.raises(VersionConflict) as caught:
        async with store.unit_of_work() as repos:
            await repos.chat_sessions.delete(session.id, expected_version=1)
    # Version 2: the message raised the session's counters; 3: the rename.
    assert caught.value.current == 3
    async with store.unit_of_work() as repos:
        assert (await repos.chat_sessions.get(session.id)).version == 3
        assert await repos.chat_messages.count() == 1  # the children stay with their parent
        assert await repos.chat_sessions.delete(session.id, expected_version=3) is True
        assert await repos.chat_messages.count() == 0
        assert await repos.chat_sessions.delete(session.id, expected_version=3) is False


async def test_the_version_is_not_a_field_an_update_may_set(store: DocumentStore) -> None:
    agent = await _agent(store)
    async with store.unit_of_work() as repos:
        with pytest.raises(InvalidData, match="expected_version"):
            await repos.agents.update(agent.id, {"version": 7})


async def test_updated_at_is_the_backends_time_of_the_change(store: DocumentStore) -> None:
    agent = await _agent(store)
    before = datetime.now(UTC).replace(microsecond=0)
    async with store.unit_of_work() as repos:
        changed = await repos.agents.update(agent.id, {"description": "now"})
    assert changed.updated_at >= before
    assert changed.updated_at >= agent.updated_at
    named = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)  # a caller that names it keeps it
    async with store.unit_of_work() as repos:
        kept = await repos.agents.update(agent.id, {"description": "old", "updated_at": named})
    assert kept.updated_at == named and kept.version == 3


async def test_concurrent_conditional_updates_at_one_version_let_exactly_one_through(
    store: DocumentStore,
) -> None:
    agent = await _agent(store)

    async def write(i: int) -> str:
        try:
            async with store.unit_of_work() as repos:
                await repos.agents.update(agent.id, {"description": f"w{i}"}, expected_version=1)
        except VersionConflict as exc:
            return "conflict" if exc.current == 2 else f"conflict at {exc.current}"
        return f"w{i}"

    outcomes = await asyncio.gather(*(write(i) for i in range(WRITERS)))
    winners = [o for o in outcomes if o != "conflict"]
    assert len(winners) == 1
    async with store.unit_of_work() as repos:
        loaded = await repos.agents.get(agent.id)
    assert (loaded.version, loaded.description) == (2, winners[0])


async def test_concurrent_unconditional_updates_each_get_their_own_version_in_time_order(
    store: DocumentStore,
) -> None:
    agent = await _agent(store)

    async def write(i: int) -> Agent:
        async with store.unit_of_work() as repos:
            changed: Agent = await repos.agents.update(agent.id, {"description": f"w{i}"})
        return changed

    results = sorted(
        await asyncio.gather(*(write(i) for i in range(WRITERS))), key=lambda a: a.version
    )
    assert [a.version for a in results] == list(range(2, WRITERS + 2))
    times = [a.updated_at for a in results]
    assert times == sorted(times), "updated_at must follow the order of the versions"
    async with store.unit_of_work() as repos:
        final = await repos.agents.get(agent.id)
    assert final == results[-1]


async def test_an_upsert_that_updates_raises_the_version(store: DocumentStore) -> None:
    agent = await _agent(store)
    memory = Memory(agent_id=agent.id, key="k", value="one")
    async with store.unit_of_work() as repos:
        first = await repos.memories.upsert(memory, ("agent_id", "scope", "key"))
        again = Memory(agent_id=agent.id, key="k", value="two")
        second = await repos.memories.upsert(again, ("agent_id", "scope", "key"))
    assert (first.version, second.version, second.value) == (1, 2, "two")
    assert second.id == first.id


async def test_a_mongo_document_without_version_is_at_version_0() -> None:
    store = await make_mongo_store()
    try:
        raw = ObjectId()
        collection = store.database.get_collection("agents")
        await collection.insert_one({"_id": raw, "name": "legacy", "created_at": datetime.now(UTC)})
        async with store.unit_of_work() as repos:
            legacy = await repos.agents.get(str(raw))
            assert legacy.version == 0
            with pytest.raises(VersionConflict) as caught:
                await repos.agents.update(str(raw), {"description": "x"}, expected_version=1)
            assert caught.value.current == 0
            changed = await repos.agents.update(str(raw), {"description": "x"}, expected_version=0)
            assert changed.version == 1
            assert (await repos.agents.update(str(raw), {"description": "y"})).version == 2
        other = ObjectId()
        await collection.insert_one({"_id": other, "name": "legacy-2"})
        async with store.unit_of_work() as repos:
            assert await repos.agents.delete(str(other), expected_version=0) is True
    finally:
        await store.close()


async def test_a_row_written_without_version_starts_at_1(pg_store: PostgresStore) -> None:
    async with pg_store.engine.begin() as conn:  # as a tool that does not name the column
        await conn.execute(text("INSERT INTO agents (id, name) VALUES ('raw-row', 'raw')"))
    async with pg_store.unit_of_work() as repos:
        assert (await repos.agents.get("raw-row")).version == 1
        changed = await repos.agents.update("raw-row", {"description": "x"}, expected_version=1)
        assert changed.version == 2


async def test_a_write_that_waited_for_a_later_commit_gets_the_later_time(
    pg_store: PostgresStore,
) -> None:
    """`updated_at` is `clock_timestamp()` when the UPDATE runs, not `now()` (the start of its
    transaction): a transaction that began first but writes after another's commit carries the
    later version and the later time."""
    async with pg_store.unit_of_work() as repos:
        agent = await repos.agents.create(Agent(name="clock"))
    async with pg_store.unit_of_work() as slow:
        await slow.agents.get(agent.id)  # the transaction has begun: now() is fixed from here
        await asyncio.sleep(0.01)
        async with pg_store.unit_of_work() as fast:
            first = await fast.agents.update(agent.id, {"description": "fast"})
        await asyncio.sleep(0.01)
        second = await slow.agents.update(agent.id, {"description": "slow"})
    assert (first.version, second.version) == (2, 3)
    assert second.updated_at > first.updated_at
