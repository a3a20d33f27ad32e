"""Chat history order (issue #16 point 9): a conversation's order comes from a counter, not a clock.

The fault: the messages of one turn (the assistant's tool calls, their results, the answer) are
stored within the same millisecond, and ids are random UUIDs, so ordering by `(created_at, id)`
shuffled them; the next turn sent `assistant, tool, assistant, tool` and the provider refused it
(400), for good. How often two writes share a tick depends on the machine, so the fault is made
certain here: the hub's clock (`domain.types.utcnow`, which stamps every record) is given a
resolution of one second, as a coarse or stepped clock would have it — every message of a turn
then has the same timestamp. Many sessions run turns with tool calls at the same time, through
the real engine, against the scripted OpenAI / Anthropic servers, which refuse a history whose tool results
do not follow their calls as the real APIs do (`protocol_server.history_problem`). Every turn must
succeed, and the list API, the session detail and the history sent to the model must hold every
session's messages in the order they were produced — on PostgreSQL (the API on a real socket) and
on the MongoDB backend (the in-process emulation, through the ASGI transport).

Also: a session stored out of order before messages were numbered is replayed with every tool
result after its call (it heals); existing rows are numbered in `(created_at, id)` order by the
revision that adds `seq` (PostgreSQL), when the store opens (MongoDB, `created_at` then ObjectId
order) and by the Mongo→PostgreSQL migration (the same order, idempotent, verified).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import bson
import pytest
from bson import ObjectId

import tbd_agents.domain.types
from tbd_agents.domain.enums import MessageRole
from tbd_agents.domain.models import ChatMessage, ChatSession
from tbd_agents.domain.types import utcnow
from tbd_agents.storage.postgres import migrate
from tbd_agents.storage.postgres.engine import create_engine, libpq_url
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.engine.protocol_server import ProtocolServer, Recorded, Turn, history_problem
from tests.faults import chat_hub
from tests.faults.chat_hub import OWNER, Hub, PgHub, chat, listed, pg_hub
from tests.integration.test_migration import MIGRATE, VERIFY, run_script
from tests.support import pg
from tests.support.dumps import DB
from tests.support.mongo import make_mongo_store

SESSIONS = 8
TURNS = 3
#: The roles of one turn as the engine produces it (see `responder`).
TURN_ROLES = ["user", "assistant", "tool", "tool", "assistant", "tool", "assistant"]


def todo(title: str) -> dict[str, Any]:
    return {"todos": [{"title": title, "status": "done"}]}


def responder(rec: Recorded) -> Turn:
    """Per turn: two tool calls at once, then one more, then the answer (the server is shared
    by all sessions, so the next step is read from the conversation it receives)."""
    conversation = rec.conversation()
    last_user = max(
        i for i, e in enumerate(conversation) if e["role"] == "user" and not e["tool_results"]
    )
    calls = sum(1 for e in conversation[last_user + 1 :] if e["tool_calls"])
    if calls == 0:
        return Turn(tool_calls=[("update_todos", todo("a")), ("update_todos", todo("b"))])
    if calls == 1:
        return Turn(tool_calls=[("update_todos", todo("c"))])
    return Turn(text=f"answer to: {conversation[last_user]['text']}")


class CoarseClock(datetime):
    """`datetime` whose `now()` has a resolution of one second."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> Any:
        return datetime.now(tz).replace(microsecond=0)


@pytest.fixture
def coarse_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub's record timestamps (`utcnow`) to the whole second: the messages of a turn share
    one (the fault, made certain)."""
    monkeypatch.setattr(tbd_agents.domain.types, "datetime", CoarseClock)


@pytest.fixture(scope="module")
def model() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pg_api(pg18_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgHub]:
    yield from pg_hub(pg18_server, tmp_path_factory.mktemp("chatorder"), "chatorder")


def hub(backend: str, kind: str, model: ProtocolServer, pg_api: PgHub, tmp_path: Path) -> Any:
    return chat_hub.hub(
        backend, kind, model.url, pg_api, tmp_path,
        builtin_tools=["update_todos"], max_turns=6,
    )  # fmt: skip


async def turn(h: Hub, message: str, session_id: str | None = None) -> str:
    """One chat turn; its session id. Fails on an `error` frame or a turn that did not end
    `completed` (a refused history ends the turn failed)."""
    response, got = await chat(h, message, session_id)
    assert response.status_code == 200, response.text
    errors = [data for name, data in got if name == "error"]
    assert not errors, f"turn {message!r} failed: {errors}"
    assert got[-1][0] == "done" and got[-1][1]["status"] == "completed", got[-3:]
    return str(got[0][1]["session_id"])


def check_order(messages: list[dict[str, Any]], session: int) -> None:
    """The session's messages, turn after turn, in the order the engine produced them."""
    assert [m["role"] for m in messages] == TURN_ROLES * TURNS, [
        (m["role"], m.get("tool_call_id")) for m in messages
    ]
    for t in range(TURNS):
        first = messages[t * len(TURN_ROLES) : (t + 1) * len(TURN_ROLES)]
        assert first[0]["content"] == f"s{session} t{t}"
        calls = [c["id"] for c in first[1]["tool_calls"]]
        assert [first[2]["tool_call_id"], first[3]["tool_call_id"]] == calls
        assert first[5]["tool_call_id"] == first[4]["tool_calls"][0]["id"]
        assert first[6]["content"] == f"answer to: s{session} t{t}"
    numbers = [m.get("seq") for m in messages]
    assert numbers == list(range(1, len(messages) + 1)), numbers


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("backend", ["postgres", "mongo"])
async def test_concurrent_turns_with_tool_calls_keep_their_order(
    backend: str,
    kind: str,
    model: ProtocolServer,
    pg_api: PgHub,
    tmp_path: Path,
    coarse_clock: None,
) -> None:
    model.reset()
    model.responder = responder
    async with hub(backend, kind, model, pg_api, tmp_path) as h:

        async def conversation(n: int) -> str:
            session_id = await turn(h, f"s{n} t0")
            for t in range(1, TURNS):
                await turn(h, f"s{n} t{t}", session_id)
            return session_id

        sessions = await asyncio.gather(*(conversation(n) for n in range(SESSIONS)))
        assert not model.refused, model.refused[:3]
        for n, session_id in enumerate(sessions):
            check_order(await listed(h, session_id), n)
            detail = await h.client.get(f"/api/agents/{h.agent_id}/chat/sessions/{session_id}")
            assert detail.status_code == 200, detail.text
            shown = detail.json()["messages"]
            assert [m["id"] for m in shown] == [m["id"] for m in await listed(h, session_id)]
            assert detail.json()["message_count"] == len(TURN_ROLES) * TURNS
    # every request of the last turns carried the whole history, in order
    assert all(history_problem(r) is None for r in model.requests)
    assert len(model.requests) == SESSIONS * TURNS * 3


def _message(session_id: str, role: MessageRole, **fields: Any) -> ChatMessage:
    return ChatMessage(session_id=session_id, role=role, **fields)


@pytest.mark.parametrize("backend", ["postgres", "mongo"])
async def test_a_session_stored_out_of_order_is_replayed_in_order(
    backend: str, model: ProtocolServer, pg_api: PgHub, tmp_path: Path
) -> None:
    """A session whose stored order puts a tool result before its call (as the old ordering
    left many): the next turn sends every result right after its call, and succeeds."""
    model.reset()
    model.responder = responder
    async with hub(backend, "openai", model, pg_api, tmp_path) as h:
        same_time = utcnow() - timedelta(minutes=5)
        call = {"id": "call_old", "name": "update_todos", "arguments": todo("x")}
        # In (created_at, id) order — the order before numbering, and the order the revision
        # numbers existing rows in — the result comes before its call.
        rows = [
            ("00000000-0000-4000-8000-000000000001", MessageRole.USER, {"content": "hello"}),
            ("00000000-0000-4000-8000-000000000002", MessageRole.TOOL,
             {"content": "Todo list updated", "tool_call_id": "call_old", "name": "update_todos"}),
            ("00000000-0000-4000-8000-000000000003", MessageRole.ASSISTANT,
             {"tool_calls": [call]}),
            ("00000000-0000-4000-8000-000000000004", MessageRole.ASSISTANT, {"content": "ok"}),
        ]  # fmt: skip
        async with h.store.unit_of_work() as repos:
            session = await repos.chat_sessions.create(  # numbered as the revision leaves it
                ChatSession(agent_id=h.agent_id, github_user=OWNER, title="old", message_seq=4)
            )
            for i, (row_id, role, fields) in enumerate(rows, start=1):
                await repos.chat_messages.create(
                    _message(session.id, role, id=row_id, created_at=same_time, seq=i, **fields)
                )
        await turn(h, "s9 t1", session.id)
        first = model.requests[0]
        assert history_problem(first) is None
        sent = [(e["role"], [c[0] for c in e["tool_calls"]], [r[0] for r in e["tool_results"]])
                for e in first.conversation() if e["role"] != "system"]  # fmt: skip
        assert sent[:4] == [
            ("user", [], []),
            ("assistant", ["call_old"], []),
            ("tool", [], ["call_old"]),
            ("assistant", [], []),
        ]


async def test_existing_rows_are_numbered_by_the_revision(pg18_server: str) -> None:
    """The revision that adds `seq` numbers each session's rows in (created_at, id) order and
    sets the session's counter; the next message is numbered after them."""
    url = pg.create_database(pg18_server, "seqrev")
    try:
        await migrate.upgrade_to_head(url, "6a1f0c3e9b27")
        conn = await asyncpg.connect(url.render_as_string(hide_password=False))
        try:
            await conn.execute(
                "INSERT INTO agents (id, name) VALUES ('a1', 'a');"
                "INSERT INTO chat_sessions (id, agent_id) VALUES ('s1', 'a1'), ('s2', 'a1');"
                "INSERT INTO chat_messages (id, session_id, role, created_at) VALUES "
                "('m-c', 's1', 'user', '2026-01-01T00:00:01Z'),"
                "('m-b', 's1', 'assistant', '2026-01-01T00:00:00Z'),"
                "('m-d', 's1', 'user', '2026-01-01T00:00:01Z'),"
                "('m-a', 's2', 'user', '2026-01-01T00:00:00Z')"
            )
        finally:
            await conn.close()
        await migrate.upgrade_to_head(url)
        store = PostgresStore(create_engine(url, pool_size=1), url=url)
        try:
            async with store.unit_of_work() as repos:
                page = await repos.chat_messages.list()
                numbered = {m.id: (m.session_id, m.seq) for m in page.items}
                assert numbered == {
                    "m-b": ("s1", 1), "m-c": ("s1", 2), "m-d": ("s1", 3), "m-a": ("s2", 1),
                }  # fmt: skip
                assert (await repos.chat_sessions.get("s1")).message_seq == 3
                new = await repos.chat_messages.create(
                    ChatMessage(session_id="s1", role=MessageRole.USER, content="next")
                )
                assert new.seq == 4
        finally:
            await store.close()
        await migrate.check(url)
    finally:
        pg.drop_database(url)


async def test_mongo_documents_without_seq_are_numbered_when_the_store_opens() -> None:
    """Documents of an existing deployment (no `seq`, ObjectId ids, a message sharing its
    millisecond with the next) are numbered in created_at, then ObjectId order when the store
    opens; a second open changes nothing; new messages come after them."""
    store = await make_mongo_store()
    try:
        db: Any = store.database
        session_id = ObjectId()
        await db["chat_sessions"].insert_one({"_id": session_id, "agent_id": "a", "title": "t"})
        at = utcnow()
        ids = [ObjectId() for _ in range(4)]  # increasing: the insertion order
        docs = [
            {"_id": ids[2], "session_id": session_id, "role": "user", "created_at": at},
            {"_id": ids[0], "session_id": str(session_id), "role": "user",
             "created_at": at - timedelta(seconds=1)},
            {"_id": ids[3], "session_id": session_id, "role": "assistant", "created_at": at},
            {"_id": ids[1], "session_id": session_id, "role": "assistant",
             "created_at": at - timedelta(seconds=1)},
        ]  # fmt: skip
        for doc in docs:
            await db["chat_messages"].insert_one(doc)
        await store.open()
        await store.open()
        async with store.unit_of_work() as repos:
            session = await repos.chat_sessions.get(str(session_id))
            assert session.message_seq == 4
            new = await repos.chat_messages.create(
                ChatMessage(session_id=str(session_id), role=MessageRole.USER, content="new")
            )
            assert new.seq == 5
        stored = await db["chat_messages"].find({}, {"seq": 1}).to_list(None)
        assert {d["_id"]: d["seq"] for d in stored if d["_id"] in ids} == {
            ids[0]: 1, ids[1]: 2, ids[2]: 3, ids[3]: 4,
        }  # fmt: skip
    finally:
        await store.close()


def _legacy_dump(root: Path) -> tuple[Path, list[ObjectId], ObjectId]:
    """A dump of the existing system: one session whose messages are stored out of their
    order (two of them in the same millisecond), another with one message."""
    directory = root / DB
    directory.mkdir(parents=True)
    first, second = ObjectId(), ObjectId()
    ids = [ObjectId() for _ in range(4)]  # increasing: the order they were inserted in
    at = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    created = [at, at, at + timedelta(seconds=1), at - timedelta(seconds=1)]
    (directory / "chat_sessions.bson").write_bytes(
        b"".join(bson.encode({"_id": s, "agent_id": "a", "title": "t"}) for s in (first, second))
    )
    order = [2, 0, 3, 1]  # the dump's order is not the conversation's
    messages = [
        {"_id": ids[i], "session_id": first, "role": "user", "content": f"m{i}",
         "created_at": created[i]}
        for i in order
    ]  # fmt: skip
    messages.append({"_id": ObjectId(), "session_id": second, "role": "user", "created_at": at})
    (directory / "chat_messages.bson").write_bytes(b"".join(bson.encode(m) for m in messages))
    return root, ids, first


async def test_the_migration_numbers_legacy_messages_in_their_original_order(
    pg18_server: str, tmp_path: Path
) -> None:
    """`migrate_mongo_to_postgres.py` gives each session's messages 1, 2, 3… in created_at,
    then ObjectId order, and the session's counter; a second run changes nothing; the
    verification passes."""
    dump, ids, session = _legacy_dump(tmp_path / "dump")
    target = pg.create_migrated_database(pg18_server, "seqmig")
    try:
        for _ in range(2):
            done = run_script(MIGRATE, "--from-dump", str(dump), url=target, cwd=tmp_path)
            assert done.returncode == 0, done.stdout + done.stderr
        assert "chat_messages: numbered" not in done.stdout  # the second run numbered nothing
        conn = await asyncpg.connect(libpq_url(target))
        try:
            rows = await conn.fetch("SELECT id, seq FROM chat_messages WHERE session_id = $1",
                                    str(session))  # fmt: skip
            counter = await conn.fetchval(
                "SELECT message_seq FROM chat_sessions WHERE id = $1", str(session)
            )
            unchanged = await conn.fetchval(
                "SELECT unchanged FROM migration_checkpoints WHERE collection = 'chat_messages'"
            )
        finally:
            await conn.close()
        assert {r["id"]: r["seq"] for r in rows} == {
            str(ids[3]): 1, str(ids[0]): 2, str(ids[1]): 3, str(ids[2]): 4,
        }  # fmt: skip
        assert counter == 4
        assert unchanged == 5  # the second run rewrote no row
        verified = run_script(VERIFY, "--from-dump", str(dump), url=target, cwd=tmp_path)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        pg.drop_database(target)
