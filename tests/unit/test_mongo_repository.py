"""MongoDB-specific behaviour of MongoRepository / MongoStore (the shared behaviour is in the
contract suite): existing documents as older TBD Agents versions wrote them, mixed id types,
millisecond dates, indexes, and errors."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
from bson import Int64, ObjectId
from pymongo import AsyncMongoClient

from tbd_agents.domain.enums import McpServerStatus
from tbd_agents.domain.models import (
    Agent,
    ChatMessage,
    ChatSession,
    Memory,
    Skill,
    Token,
    Workflow,
)
from tbd_agents.errors import (
    DatabaseUnreachable,
    DuplicateKey,
    InvalidData,
    NotFound,
    StorageError,
    UnsupportedQuery,
)
from tbd_agents.storage.mongo.indexes import ensure_indexes, index_plan
from tbd_agents.storage.mongo.repository import MongoStore
from tbd_agents.storage.protocol import (
    Query,
    asc,
    contains_all,
    contains_any,
    desc,
    eq,
    gt,
    gte,
    in_,
    lt,
    lte,
    ne,
    not_in,
)
from tests.support.mongo import EmulatedClient, make_mongo_store

OID_A = ObjectId("65a1b2c3d4e5f60718293a4b")
OID_B = ObjectId("65a1b2c3d4e5f60718293a4c")
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store() -> MongoStore:
    s = await make_mongo_store()
    yield s
    await s.close()


def raw(store: MongoStore, collection: str):  # the collection as the driver sees it
    return store.database.get_collection(collection)


async def test_objectid_and_string_references_both_match(store: MongoStore) -> None:
    await raw(store, "chat_sessions").insert_one(
        {"_id": OID_A, "agent_id": OID_B, "title": "legacy", "created_at": T0}
    )
    async with store.unit_of_work() as repos:
        new = await repos.chat_sessions.create(ChatSession(agent_id=str(OID_B), title="new"))
        other = await repos.chat_sessions.create(ChatSession(agent_id="elsewhere"))

        by_ref = await repos.chat_sessions.list(Query(filters=(eq("agent_id", str(OID_B)),)))
        assert {s.title for s in by_ref.items} == {"legacy", "new"}
        assert await repos.chat_sessions.count(in_("agent_id", [str(OID_B), "x"])) == 2
        assert await repos.chat_sessions.count(ne("agent_id", str(OID_B))) == 1
        assert await repos.chat_sessions.count(not_in("agent_id", [str(OID_B)])) == 1
        assert (await repos.chat_sessions.get(str(OID_A))).agent_id == str(OID_B)
        assert await repos.chat_sessions.count(in_("id", [str(OID_A), new.id, other.id])) == 3


async def test_objectid_references_in_lists_match(store: MongoStore) -> None:
    await raw(store, "agents").insert_one({"_id": OID_A, "name": "a", "mcp_server_ids": [OID_B]})
    async with store.unit_of_work() as repos:
        assert await repos.agents.count(contains_any("mcp_server_ids", [str(OID_B)])) == 1
        assert await repos.agents.count(contains_all("mcp_server_ids", [str(OID_B)])) == 1
        assert await repos.agents.count(contains_all("mcp_server_ids", [str(OID_B), "z"])) == 0


async def test_legacy_upper_case_enum_values_match_filters(store: MongoStore) -> None:
    await raw(store, "mcp_servers").insert_many(
        [
            {"_id": "s1", "name": "one", "status": "CONNECTED"},
            {"_id": "s2", "name": "two", "status": "connected"},
            {"_id": "s3", "name": "three", "status": "ERROR"},
        ]
    )
    async with store.unit_of_work() as repos:
        assert await repos.mcp_servers.count(eq("status", McpServerStatus.CONNECTED)) == 2
        assert await repos.mcp_servers.count(eq("status", "Connected")) == 2
        assert await repos.mcp_servers.count(ne("status", "connected")) == 1
        assert (await repos.mcp_servers.get("s3")).status is McpServerStatus.ERROR


async def test_pages_cross_objectid_string_and_integer_ids(store: MongoStore) -> None:
    """All records share created_at, so the `_id` tie-break alone orders the pages."""
    ids = [OID_A, OID_B, "a-string", "z-string", Int64(7), 3]
    await raw(store, "skills").insert_many(
        [{"_id": i, "name": f"s{n}", "created_at": T0, "updated_at": T0} for n, i in enumerate(ids)]
    )
    expected_asc = ["3", "7", "a-string", "z-string", str(OID_A), str(OID_B)]
    async with store.unit_of_work() as repos:
        for sort, expected in (
            ((asc("created_at"),), expected_asc),
            ((desc("created_at"), desc("id")), expected_asc[::-1]),
        ):
            seen: list[str] = []
            cursor = None
            for _ in range(10):
                page = await repos.skills.list(Query(sort=sort, limit=2, cursor=cursor))
                seen += [s.id for s in page.items]
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert seen == expected
            assert [s.id async for s in repos.skills.iterate(Query(sort=sort), batch_size=4)] == (
                expected
            )
        assert (await repos.skills.get("7")).name == "s4"
        assert await repos.skills.delete("3") is True


async def test_mixed_direction_keyset_pages(store: MongoStore) -> None:
    async with store.unit_of_work() as repos:
        for n in range(9):
            at = T0 + timedelta(minutes=n // 2)
            await repos.skills.create(Skill(name=f"n{n % 3}", created_at=at, updated_at=at))
        query = Query(sort=(asc("name"), desc("created_at")), limit=4)
        whole = (await repos.skills.list(Query(sort=query.sort))).items
        pages: list[str] = []
        cursor = None
        while True:
            page = await repos.skills.list(query.after(cursor))
            pages += [s.id for s in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert pages == [s.id for s in whole]
        assert [(s.name, s.created_at) for s in whole] == sorted(
            ((s.name, s.created_at) for s in whole), key=lambda p: (p[0], -p[1].timestamp())
        )


async def test_dates_keep_milliseconds_and_ranges_round_correctly(store: MongoStore) -> None:
    fine = datetime(2024, 1, 1, 10, 0, 0, 500, tzinfo=UTC)  # 0.5 ms past a millisecond
    async with store.unit_of_work() as repos:
        created = await repos.agents.create(Agent(name="a", created_at=fine))
        assert created.created_at == fine.replace(microsecond=0)
        assert (await repos.agents.get(created.id)).created_at == created.created_at
        stored = created.created_at  # 10:00:00.000
        assert await repos.agents.count(eq("created_at", stored)) == 1
        assert await repos.agents.count(eq("created_at", fine)) == 0
        assert await repos.agents.count(ne("created_at", fine)) == 1
        assert await repos.agents.count(gt("created_at", fine)) == 0
        assert await repos.agents.count(gte("created_at", fine)) == 0
        assert await repos.agents.count(lt("created_at", fine)) == 1
        assert await repos.agents.count(lte("created_at", fine)) == 1
        assert await repos.agents.count(gte("created_at", stored)) == 1


async def test_duplicate_keys_name_their_fields(store: MongoStore) -> None:
    async with store.unit_of_work() as repos:
        token = await repos.tokens.create(Token(name="gh", encrypted_value="x"))
        with pytest.raises(DuplicateKey) as exc:
            await repos.tokens.create(Token(name="gh", encrypted_value="y"))
        assert exc.value.fields == ["name"]
        with pytest.raises(DuplicateKey) as exc:
            await repos.tokens.create(Token(id=token.id, name="other", encrypted_value="y"))
        assert exc.value.fields == ["id"]
        other = await repos.tokens.create(Token(name="other", encrypted_value="y"))
        with pytest.raises(DuplicateKey) as exc:
            await repos.tokens.update(other.id, {"name": "gh"})
        assert exc.value.fields == ["name"]


async def test_insert_many_is_all_or_none(store: MongoStore) -> None:
    async with store.unit_of_work() as repos:
        await repos.tokens.create(Token(name="taken", encrypted_value="x"))
        batch = [Token(name=f"t{i}", encrypted_value="x") for i in range(3)]
        batch.append(Token(name="taken", encrypted_value="x"))
        with pytest.raises(DuplicateKey):
            await repos.tokens.insert_many(batch)
        assert await repos.tokens.count() == 1
        assert await repos.tokens.insert_many(batch[:3]) == 3


async def test_upsert_matches_a_legacy_objectid_key(store: MongoStore) -> None:
    await raw(store, "memories").insert_one(
        {"_id": OID_A, "agent_id": OID_B, "scope": "AGENT", "key": "k", "value": "old"}
    )
    async with store.unit_of_work() as repos:
        mem = Memory(agent_id=str(OID_B), key="k", value="new")
        got = await repos.memories.upsert(mem, key=("agent_id", "scope", "key"))
        assert (got.id, got.value) == (str(OID_A), "new")
        assert await repos.memories.count() == 1
        doc = await raw(store, "memories").find_one({"_id": OID_A})
        assert doc["agent_id"] == OID_B  # the key fields are left as they were stored


async def test_deleting_a_parent_deletes_its_children(store: MongoStore) -> None:
    await raw(store, "chat_messages").insert_one(
        {"_id": "legacy-msg", "session_id": OID_A, "role": "user"}
    )
    await raw(store, "chat_sessions").insert_one({"_id": OID_A, "agent_id": "a"})
    async with store.unit_of_work() as repos:
        other = await repos.chat_sessions.create(ChatSession(agent_id="a"))
        await repos.chat_messages.create(ChatMessage(session_id=str(OID_A), role="assistant"))
        kept = await repos.chat_messages.create(ChatMessage(session_id=other.id, role="user"))
        assert await repos.chat_sessions.delete(str(OID_A)) is True
        assert [m.id for m in (await repos.chat_messages.list()).items] == [kept.id]
        wf = await repos.workflows.create(Workflow(agent_id="a"))
        assert await repos.workflows.delete_where(eq("agent_id", "a")) == 1
        with pytest.raises(NotFound):
            await repos.workflows.get(wf.id)


async def test_malformed_ids_are_not_found(store: MongoStore) -> None:
    async with store.unit_of_work() as repos:
        for bad in ("", "x" * 129):
            with pytest.raises(NotFound):
                await repos.agents.get(bad)
            assert await repos.agents.delete(bad) is False
            with pytest.raises(NotFound):
                await repos.agents.update(bad, {"name": "n"})


async def test_values_bson_cannot_hold_are_invalid_data(store: MongoStore) -> None:
    async with store.unit_of_work() as repos:
        with pytest.raises(InvalidData, match="8-byte ints"):
            await repos.agents.create(Agent(name="big", tool_definitions=[{"n": 2**70}]))
        assert await repos.agents.count() == 0


async def test_unit_of_work_is_not_transactional_and_says_so(store: MongoStore) -> None:
    assert store.transactional is False

    async def fail_after_a_write() -> None:
        async with store.unit_of_work() as repos:
            await repos.agents.create(Agent(name="kept"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail_after_a_write()
    async with store.unit_of_work() as repos:
        assert await repos.agents.count() == 1


async def test_delete_where_refuses_no_filter(store: MongoStore) -> None:
    async with store.unit_of_work() as repos:
        with pytest.raises(UnsupportedQuery, match="at least one filter"):
            await repos.agents.delete_where()


async def test_bad_cursor_is_refused(store: MongoStore) -> None:
    from tbd_agents.storage.protocol import encode_cursor

    async with store.unit_of_work() as repos:
        cursor = encode_cursor([T0.isoformat(), "no-type-tag"])
        with pytest.raises(UnsupportedQuery, match="cursor"):
            await repos.agents.list(Query(limit=1, cursor=cursor))


# --- indexes ----------------------------------------------------------------------------------


async def test_open_creates_the_planned_indexes_once(store: MongoStore) -> None:
    info = await raw(store, "memories").index_information()
    assert info["uq_memories_agent_id_scope_key"]["unique"] is True
    assert info["idx_memories_created_at"]["key"] == [("created_at", 1), ("_id", 1)]
    assert {s.name for s in index_plan(Memory)} <= set(info)
    assert await ensure_indexes(store.database, [Memory, Token]) == []


async def test_an_existing_index_under_another_name_is_kept() -> None:
    db = EmulatedClient().get_database("legacy")
    await db.get_collection("tokens").create_index([("name", 1)], name="name_1", unique=True)
    created = await ensure_indexes(db, [Token])
    assert "uq_tokens_name" not in created
    assert "uq_tokens_name" not in await db.get_collection("tokens").index_information()


async def test_a_non_unique_index_where_a_unique_one_is_needed_is_refused() -> None:
    db = EmulatedClient().get_database("legacy")
    await db.get_collection("tokens").create_index([("name", 1)], name="name_1")
    with pytest.raises(StorageError, match=r'dropIndex\("name_1"\)'):
        await ensure_indexes(db, [Token])


async def test_duplicates_that_block_a_unique_index_are_reported() -> None:
    db = EmulatedClient().get_database("legacy")
    await db.get_collection("providers").insert_many([{"name": "p"}, {"name": "p"}])
    with pytest.raises(StorageError, match=r"uq_providers_name.*Remove or rename the duplicates"):
        await MongoStore(db).open()  # type: ignore[arg-type]


async def test_duplicate_memories_of_an_existing_database_do_not_stop_the_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The existing TBD Agents had no unique index on memories, so concurrent writes could store
    # two documents with the same key: the store opens, keeps both, and says what to do.
    db = EmulatedClient().get_database("legacy")
    twin = {"agent_id": "a", "scope": "agent", "key": "k"}
    await db.get_collection("memories").insert_many(
        [{**twin, "value": "1"}, {**twin, "value": "2"}]
    )
    store = MongoStore(db)  # type: ignore[arg-type]
    await store.open()
    assert (
        "uq_memories_agent_id_scope_key"
        not in await db.get_collection("memories").index_information()
    )
    assert "Remove the older duplicates" in caplog.text
    async with store.unit_of_work() as repos:
        assert sorted(m.value for m in (await repos.memories.list()).items) == ["1", "2"]


# --- the real driver --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_server_names_target_and_fix() -> None:
    """pymongo's own AsyncMongoClient against a port where nothing listens."""
    port = _free_port()
    client: AsyncMongoClient = AsyncMongoClient(
        f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=150, tz_aware=True
    )
    store = MongoStore(client.get_database("x"), client=client, target=f"127.0.0.1:{port}")
    try:
        with pytest.raises(DatabaseUnreachable) as exc:
            await store.open()
        assert f"127.0.0.1:{port}" in exc.value.message
        assert "COMPOSE_PROFILES=qdrant" in exc.value.message
        async with store.unit_of_work() as repos:
            with pytest.raises(DatabaseUnreachable):
                await repos.agents.get(str(OID_A))
    finally:
        await store.close()


async def test_open_mongo_store_builds_the_client_from_settings() -> None:
    from tbd_agents.config import Settings
    from tbd_agents.storage.mongo.connect import mongo_client, open_mongo_store

    port = _free_port()
    settings = Settings(
        db_backend="mongo",
        mongo_uri=f"mongodb://app:s3cret@127.0.0.1:{port}/?serverSelectionTimeoutMS=150",
        mongo_db_name="hub",
        application_name="tbd-test",
    )
    client = mongo_client(settings)
    try:
        assert client.codec_options.tz_aware is True
        assert client.options.pool_options.metadata["application"] == {"name": "tbd-test"}
    finally:
        await client.close()
    with pytest.raises(DatabaseUnreachable) as exc:
        await open_mongo_store(settings)
    assert f"127.0.0.1:{port}" in exc.value.message
    assert "s3cret" not in exc.value.message


async def test_open_store_routes_db_backend_mongo_to_mongodb() -> None:
    from tbd_agents.config import Settings
    from tbd_agents.storage.factory import open_store

    port = _free_port()
    settings = Settings(
        db_backend="mongo", mongo_uri=f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=150"
    )
    with pytest.raises(DatabaseUnreachable, match="Cannot reach MongoDB"):
        await open_store(settings)


@pytest.mark.parametrize("record_id", [str(OID_A), "plain-text-id"])
async def test_upsert_on_id_keeps_the_stored_id_type(store: MongoStore, record_id: str) -> None:
    async with store.unit_of_work() as repos:
        first = await repos.skills.upsert(Skill(id=record_id, name="one"), key=["id"])
        second = await repos.skills.upsert(Skill(id=record_id, name="two"), key=["id"])
        assert (first.id, second.id, second.name) == (record_id, record_id, "two")
        assert second.created_at == first.created_at
        assert await repos.skills.count() == 1
    doc = await raw(store, "skills").find_one({})
    assert type(doc["_id"]) is (ObjectId if record_id == str(OID_A) else str)
