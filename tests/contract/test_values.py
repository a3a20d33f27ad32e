"""Contract: values come back exactly as stored (text, JSON, time) on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from tbd_agents.domain.models import Agent, ChatMessage, ChatSession, Memory, Workflow
from tbd_agents.storage.protocol import DocumentStore, Query, contains_any, eq, gt, in_

UNICODE = [
    "emoji 🤖🚀👩‍👩‍👧‍👦 and flags 🇫🇷",
    "مرحبا بالعالم — עברית",  # right-to-left scripts
    "你好世界 / こんにちは / 안녕하세요",
    "combining e\u0301 vs \u00e9, zero\u200bwidth",
]


async def test_unicode_round_trips_and_matches(store: DocumentStore) -> None:
    records = [Agent(name=text, description=text[::-1], tags=[text, "plain"]) for text in UNICODE]
    async with store.unit_of_work() as repos:
        await repos.agents.insert_many(records)
    async with store.unit_of_work() as repos:
        for record in records:
            assert await repos.agents.get(record.id) == record
            found = await repos.agents.find_one(eq("name", record.name))
            assert found is not None and found.id == record.id
        emoji = await repos.agents.list(Query(filters=(contains_any("tags", [UNICODE[0]]),)))
        rtl_cjk = await repos.agents.count(in_("name", [UNICODE[1], UNICODE[2]]))
    assert [a.id for a in emoji.items] == [records[0].id]
    assert rtl_cjk == 2


async def test_large_text_round_trips(store: DocumentStore) -> None:
    chunk = "lorem ipsum ✓ 日本 "
    big = (chunk * (1_000_000 // len(chunk) + 1))[:1_000_000]
    record = Agent(name="big", system_prompt=big)
    async with store.unit_of_work() as repos:
        await repos.agents.create(record)
    async with store.unit_of_work() as repos:
        loaded = await repos.agents.get(record.id)
    assert len(loaded.system_prompt) == 1_000_000
    assert loaded.system_prompt == big


def _deep(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": [1, -2, 2.5, 0.1, 1e-7, 2**62, True, False, None, "", "é"]}
    for level in range(depth):
        node = {f"level{level}": node, "n": level, "list": [node] if level % 10 == 0 else []}
    return node


def _leaf(node: dict[str, Any]) -> list[Any]:
    while "leaf" not in node:
        node = next(v for k, v in node.items() if k.startswith("level"))
    leaf: list[Any] = node["leaf"]
    return leaf


async def test_nested_json_round_trips(store: DocumentStore) -> None:
    payload = _deep(40)
    tool_defs = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
        {"empty_dict": {}, "empty_list": [], "null": None, "bools": [True, False]},
        {"unicode ключ": "значение", "numbers": [0, -0.5, 3.14159, 10**15]},
    ]
    record = Agent(name="json", tool_definitions=tool_defs)
    message = ChatMessage(
        session_id="s", role="tool", metadata=payload, usage=None, tool_calls=[payload]
    )
    async with store.unit_of_work() as repos:
        await repos.agents.create(record)
        session = await repos.chat_sessions.create(ChatSession(id="s", agent_id=record.id))
        await repos.chat_messages.create(message)
    async with store.unit_of_work() as repos:
        loaded = await repos.agents.get(record.id)
        loaded_message = await repos.chat_messages.get(message.id)
    assert session.id == "s"
    assert loaded.tool_definitions == tool_defs
    assert loaded_message.metadata == payload
    assert loaded_message.tool_calls == [payload]
    assert loaded_message.usage is None
    # Numbers keep their type (int stays int, float stays float), not only their value.
    leaf = _leaf(loaded_message.metadata)
    assert [type(v) for v in leaf] == [type(v) for v in _leaf(payload)]


async def test_json_field_set_to_none_is_null_and_can_be_set_again(store: DocumentStore) -> None:
    message = ChatMessage(session_id="s", role="assistant", usage={"tokens": 3})
    async with store.unit_of_work() as repos:
        await repos.chat_sessions.create(ChatSession(id="s", agent_id="a"))
        await repos.chat_messages.create(message)
        cleared = await repos.chat_messages.update(message.id, {"usage": None})
        assert cleared.usage is None
        restored = await repos.chat_messages.update(message.id, {"usage": {"tokens": 4}})
    assert restored.usage == {"tokens": 4}


async def test_aware_datetime_comes_back_equal_and_in_utc(store: DocumentStore) -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2024, 7, 1, 9, 15, 30, 250000, tzinfo=ist)
    record = Workflow(agent_id="a", last_run_at=local, created_at=local)
    async with store.unit_of_work() as repos:
        await repos.workflows.create(record)
    async with store.unit_of_work() as repos:
        loaded = await repos.workflows.get(record.id)
        matched = await repos.workflows.count(gt("last_run_at", local - timedelta(milliseconds=1)))
    assert loaded.last_run_at == local
    assert loaded.last_run_at is not None and loaded.last_run_at.utcoffset() == timedelta(0)
    assert loaded.last_run_at.hour == 3 and loaded.last_run_at.minute == 45
    assert loaded.created_at == local
    assert matched == 1


async def test_naive_datetime_is_taken_as_utc(store: DocumentStore) -> None:
    naive = datetime(2024, 1, 2, 3, 4, 5, 6000)
    memory = Memory(agent_id="a", key="k", ttl=naive)
    async with store.unit_of_work() as repos:
        await repos.memories.create(memory)
        await repos.memories.update(memory.id, {"created_by": "me"})
        by_naive_filter = await repos.memories.count(eq("ttl", naive))
    async with store.unit_of_work() as repos:
        loaded = await repos.memories.get(memory.id)
    assert loaded.ttl == naive.replace(tzinfo=UTC)
    assert loaded.ttl is not None and loaded.ttl.tzinfo is not None
    assert by_naive_filter == 1


async def test_update_with_an_offset_datetime_stores_utc(store: DocumentStore) -> None:
    minus_five = timezone(timedelta(hours=-5))
    memory = Memory(agent_id="a", key="k")
    async with store.unit_of_work() as repos:
        await repos.memories.create(memory)
        updated = await repos.memories.update(memory.id, {"ttl": "2024-05-05T20:00:00-05:00"})
    assert updated.ttl == datetime(2024, 5, 5, 20, tzinfo=minus_five)
    assert updated.ttl is not None and updated.ttl.utcoffset() == timedelta(0)
