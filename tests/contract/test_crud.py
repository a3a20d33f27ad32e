"""Contract: create / read / update / upsert / delete, unique keys, NotFound — on every backend."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tbd_agents.domain.enums import MemoryScope, OutputFormat
from tbd_agents.domain.models import (
    Agent,
    Memory,
    Provider,
    ScheduledAgent,
    Skill,
    TaskExecution,
    Token,
    Workflow,
)
from tbd_agents.errors import DuplicateKey, InvalidData, NotFound, UnsupportedQuery
from tbd_agents.storage.protocol import DocumentStore, eq, in_
from tests.contract.data import T0, seed_agents


async def test_create_then_get_returns_equal_record(store: DocumentStore) -> None:
    record = Agent(name="alpha", tags=["ops"], max_turns=3, temperature=0.5, created_at=T0)
    async with store.unit_of_work() as repos:
        created = await repos.agents.create(record)
    async with store.unit_of_work() as repos:
        loaded = await repos.agents.get(record.id)
    assert created == record
    assert loaded == record
    assert isinstance(loaded, Agent)


async def test_find_one_returns_first_match_or_none(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        await repos.agents.insert_many(seed_agents())
        first = await repos.agents.find_one(eq("model", "gpt"))
        missing = await repos.agents.find_one(eq("model", "nope"))
    assert first is not None and first.name == "alpha"  # default order: created_at, id
    assert missing is None


@pytest.mark.parametrize(
    "bad_id", ["no-such-id", "", "x" * 129, "nul\x00byte", "   ", "ÿ" * 128, 42, None]
)
async def test_get_unknown_or_malformed_id_is_not_found(
    store: DocumentStore, bad_id: object
) -> None:
    async with store.unit_of_work() as repos:
        await repos.agents.create(Agent(name="present"))
        with pytest.raises(NotFound) as info:
            await repos.agents.get(bad_id)  # type: ignore[arg-type]
    assert info.value.entity == "Agent"


async def test_insert_many_stores_every_record(store: DocumentStore) -> None:
    records = [Skill(name=f"skill {i}") for i in range(120)]
    async with store.unit_of_work() as repos:
        assert await repos.skills.insert_many(records) == 120
        assert await repos.skills.insert_many([]) == 0
    async with store.unit_of_work() as repos:
        assert await repos.skills.count() == 120
        assert {s.id for s in (await repos.skills.list()).items} == {r.id for r in records}


# --- unique keys ------------------------------------------------------------------------------


async def test_duplicate_token_name_is_duplicate_key(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        await repos.tokens.create(Token(name="github", encrypted_value="v1"))
        with pytest.raises(DuplicateKey) as info:
            await repos.tokens.create(Token(name="github", encrypted_value="v2"))
        # The unit of work is still usable after the clash.
        assert await repos.tokens.count() == 1
    assert info.value.fields == ["name"]
    assert info.value.http_status == 409


async def test_duplicate_provider_name_is_duplicate_key(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        await repos.providers.create(Provider(name="openai"))
        with pytest.raises(DuplicateKey) as info:
            await repos.providers.create(Provider(name="openai", base_url="http://other"))
    assert info.value.fields == ["name"]
    async with store.unit_of_work() as repos:
        stored = await repos.providers.find_one(eq("name", "openai"))
    assert stored is not None and stored.base_url is None


async def test_duplicate_memory_key_is_duplicate_key(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        await repos.memories.create(Memory(agent_id="ag", scope=MemoryScope.AGENT, key="k"))
        # Same key under another scope or another agent is a different memory.
        await repos.memories.create(Memory(agent_id="ag", scope=MemoryScope.GLOBAL, key="k"))
        await repos.memories.create(Memory(agent_id="other", scope=MemoryScope.AGENT, key="k"))
        with pytest.raises(DuplicateKey) as info:
            await repos.memories.create(Memory(agent_id="ag", scope="agent", key="k", value="x"))
        assert await repos.memories.count() == 3
    assert sorted(info.value.fields) == ["agent_id", "key", "scope"]


async def test_duplicate_id_is_duplicate_key(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        await repos.skills.create(Skill(id="same", name="one"))
        with pytest.raises(DuplicateKey) as info:
            await repos.skills.create(Skill(id="same", name="two"))
        assert (await repos.skills.get("same")).name == "one"
    assert info.value.fields == ["id"]


async def test_insert_many_with_a_clash_is_duplicate_key(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        await repos.tokens.create(Token(name="taken", encrypted_value="v"))
        batch = [Token(name=f"n{i}", encrypted_value="v") for i in range(5)]
        batch.append(Token(name="taken", encrypted_value="v"))
        with pytest.raises(DuplicateKey):
            await repos.tokens.insert_many(batch)
        stored = await repos.tokens.count()
    # Transactional backends insert all or nothing; others may keep the rows before the clash.
    if store.transactional:
        assert stored == 1
    else:
        assert 1 <= stored <= 6


# --- update -----------------------------------------------------------------------------------


async def test_update_changes_only_named_fields(store: DocumentStore) -> None:
    original = Agent(name="alpha", description="keep me", model="gpt", tags=["a"], created_at=T0)
    async with store.unit_of_work() as repos:
        await repos.agents.create(original)
        updated = await repos.agents.update(
            original.id, {"name": "renamed", "output_format": "MARKDOWN", "tags": ["x", "y"]}
        )
    async with store.unit_of_work() as repos:
        loaded = await repos.agents.get(original.id)
    assert updated == loaded
    assert loaded.name == "renamed"
    assert loaded.output_format is OutputFormat.MARKDOWN
    assert loaded.tags == ["x", "y"]
    assert loaded.description == "keep me" and loaded.model == "gpt"
    assert loaded.created_at == original.created_at
    assert loaded.updated_at >= original.updated_at


async def test_update_with_none_clears_a_nullable_field(store: DocumentStore) -> None:
    record = Agent(name="alpha", model="gpt", max_turns=4)
    async with store.unit_of_work() as repos:
        await repos.agents.create(record)
        await repos.agents.update(record.id, {"model": None, "max_turns": None})
        loaded = await repos.agents.get(record.id)
        assert await repos.agents.count(eq("model", "gpt")) == 0
    assert loaded.model is None and loaded.max_turns is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"no_such_field": 1}, "no_such_field"),
        ({"max_turns": 0}, "max_turns"),
        ({"temperature": "hot"}, "temperature"),
        ({"name": None}, "name"),
        ({"system_prompt": ["not", "text"]}, "system_prompt"),
        ({"output_format": "yaml"}, "output_format"),
        ({"tags": "not-a-list"}, "tags"),
        ({"id": "new-id"}, "id"),
        ({"created_at": datetime(2020, 1, 1, tzinfo=UTC)}, "created_at"),
    ],
)
async def test_update_rejects_bad_changes_and_keeps_the_record(
    store: DocumentStore, changes: dict[str, object], field: str
) -> None:
    record = Agent(name="alpha", max_turns=2)
    async with store.unit_of_work() as repos:
        await repos.agents.create(record)
        with pytest.raises(InvalidData) as info:
            await repos.agents.update(record.id, changes)
        assert await repos.agents.get(record.id) == record
    assert info.value.details["field"] == field
    assert field in info.value.message


@pytest.mark.parametrize("bad_id", ["missing", "", "x" * 200])
async def test_update_unknown_id_is_not_found(store: DocumentStore, bad_id: str) -> None:
    async with store.unit_of_work() as repos:
        with pytest.raises(NotFound):
            await repos.agents.update(bad_id, {"name": "x"})


# --- upsert -----------------------------------------------------------------------------------


async def test_upsert_inserts_then_updates_on_the_unique_key(store: DocumentStore) -> None:
    first = Token(name="github", encrypted_value="v1", description="first", created_at=T0)
    async with store.unit_of_work() as repos:
        inserted = await repos.tokens.upsert(first, key=["name"])
    second = Token(name="github", encrypted_value="v2", description="second")
    async with store.unit_of_work() as repos:
        updated = await repos.tokens.upsert(second, key=["name"])
        assert await repos.tokens.count() == 1
        loaded = await repos.tokens.get(first.id)
    assert inserted == first
    assert updated.id == first.id  # the stored record keeps its id
    assert updated.created_at == first.created_at
    assert updated.encrypted_value == "v2" and updated.description == "second"
    assert loaded == updated


async def test_upsert_overwrites_only_update_fields(store: DocumentStore) -> None:
    key = ["agent_id", "scope", "key"]
    async with store.unit_of_work() as repos:
        await repos.memories.upsert(Memory(agent_id="ag", key="k", value="v1"), key=key)
        changed = await repos.memories.upsert(
            Memory(agent_id="ag", key="k", value="v2", metadata={"n": 1}),
            key=key,
            update_fields=["metadata"],
        )
    assert changed.value == "v1"
    assert changed.metadata == {"n": 1}


async def test_upsert_on_a_key_that_is_not_unique_is_refused(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        with pytest.raises(UnsupportedQuery, match="unique key"):
            await repos.agents.upsert(Agent(name="x"), key=["name"])
        with pytest.raises(InvalidData):
            await repos.tokens.upsert(
                Token(name="t", encrypted_value="v"), key=["name"], update_fields=["id"]
            )


# --- delete and count ---------------------------------------------------------------------------


async def test_delete_reports_whether_the_record_existed(store: DocumentStore) -> None:
    record = Skill(name="gone")
    async with store.unit_of_work() as repos:
        await repos.skills.create(record)
        assert await repos.skills.delete(record.id) is True
        assert await repos.skills.delete(record.id) is False
        assert await repos.skills.delete("") is False
        assert await repos.skills.delete("x" * 300) is False
        with pytest.raises(NotFound):
            await repos.skills.get(record.id)


async def test_delete_where_and_count(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        await repos.agents.insert_many(seed_agents())
        assert await repos.agents.count() == 5
        assert await repos.agents.count(eq("model", "gpt")) == 2
        assert await repos.agents.delete_where(eq("model", "gpt")) == 2
        assert await repos.agents.delete_where(eq("model", "gpt")) == 0
        assert await repos.agents.count() == 3
        assert await repos.agents.delete_where(in_("name", ["bravo", "echo", "zulu"])) == 2
    async with store.unit_of_work() as repos:
        assert [a.name for a in (await repos.agents.list()).items] == ["charlie"]


async def test_a_task_or_schedule_may_outlive_its_workflow_but_deleting_one_cascades(
    store: DocumentStore,
) -> None:
    """Existing deployments hold task executions and schedules of deleted workflows: they can be
    stored and read. Deleting a workflow (by id or by filter) deletes its tasks and schedules,
    and only those."""
    kept, gone, other = Workflow(agent_id="a"), Workflow(agent_id="a"), Workflow(agent_id="b")
    async with store.unit_of_work() as repos:
        await repos.workflows.insert_many([kept, gone, other])
        orphan = await repos.task_executions.create(TaskExecution(workflow_id="deleted-long-ago"))
        lonely = await repos.scheduled_agents.create(ScheduledAgent(workflow_id="deleted-too"))
        for workflow in (kept, gone, other):
            await repos.task_executions.insert_many(
                [TaskExecution(workflow_id=workflow.id) for _ in range(2)]
            )
            await repos.scheduled_agents.create(ScheduledAgent(workflow_id=workflow.id))
    async with store.unit_of_work() as repos:
        assert (await repos.task_executions.get(orphan.id)).workflow_id == "deleted-long-ago"
        assert (await repos.scheduled_agents.get(lonely.id)).workflow_id == "deleted-too"
        assert await repos.workflows.delete(gone.id) is True
        assert await repos.workflows.delete_where(eq("agent_id", "b")) == 1
    async with store.unit_of_work() as repos:
        tasks = {t.workflow_id for t in (await repos.task_executions.list()).items}
        schedules = {s.workflow_id for s in (await repos.scheduled_agents.list()).items}
        assert await repos.task_executions.count() == 3
    assert tasks == {kept.id, "deleted-long-ago"}
    assert schedules == {kept.id, "deleted-too"}


async def test_delete_where_refuses_an_empty_filter(store: DocumentStore) -> None:
    async with store.unit_of_work() as repos:
        await repos.skills.create(Skill(name="kept"))
        with pytest.raises(UnsupportedQuery, match="at least one filter"):
            await repos.skills.delete_where()
        assert await repos.skills.count() == 1
