"""Summarise-then-prune of long chats (RETENTION_CHAT_SUMMARY_AFTER_MESSAGES) with the engine's
summariser: the session's agent's model (the scripted model server, real wire protocol) writes the
summary from the older messages' transcript; branched sessions are left whole."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from tbd_agents.domain.enums import MessageRole
from tbd_agents.domain.models import ChatMessage, ChatSession
from tbd_agents.engine.chat_summary import engine_chat_summariser
from tbd_agents.engine.compaction import SUMMARY_PREFIX
from tbd_agents.engine.inprocess import engine_services
from tbd_agents.services.retention import Retention, RetentionPolicy
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.postgres.schema_usage import usage_calls
from tbd_agents.storage.protocol import Query, asc, eq
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.engine.test_workflow_runs import runs_db, seed, settings_for  # noqa: F401


async def long_chat(store: PostgresStore, agent_id: str, *, branched: bool = False) -> str:
    async with store.unit_of_work() as repos:
        session = await repos.chat_sessions.create(
            ChatSession(agent_id=agent_id, github_user="dana",
                        metadata={"branched": True} if branched else {})
        )  # fmt: skip
        for i in range(8):
            role = MessageRole.USER if i % 2 == 0 else MessageRole.ASSISTANT
            await repos.chat_messages.create(
                ChatMessage(session_id=session.id, role=role, content=f"topic {i}")
            )
    return str(session.id)


async def contents(store: PostgresStore, session_id: str) -> list[str]:
    async with store.unit_of_work(readonly=True) as repos:
        query = Query(filters=(eq("session_id", session_id),), sort=(asc("seq"),))
        return [m.content async for m in repos.chat_messages.iterate(query)]


async def test_the_agents_model_summarises_a_long_chats_older_messages(
    runs_db: Any,  # noqa: F811 - the fixture imported above
    protocol_server: ProtocolServer,
) -> None:
    protocol_server.reset()
    settings = settings_for(runs_db)
    store = PostgresStore(create_engine(runs_db, pool_size=3), url=runs_db)
    engine = await engine_services(settings, store)
    try:
        wf = await seed(store, protocol_server.url, "dana")
        long, branched = (
            await long_chat(store, wf.agent_id),
            await long_chat(store, wf.agent_id, branched=True),
        )
        protocol_server.script(Turn(text="Dana asked about topics 0 to 5."))
        rules = RetentionPolicy(summary_after_messages=6, summary_keep_recent=2)
        report = await Retention(store, rules, summariser=engine_chat_summariser(engine)).prune()
        assert report.counts["chat_messages"] == 5
        assert await contents(store, long) == [
            SUMMARY_PREFIX + "Dana asked about topics 0 to 5.",
            "topic 6",
            "topic 7",
        ]
        assert len(await contents(store, branched)) == 8  # a tree: left whole
        (request,) = protocol_server.requests
        sent = str(request.body["messages"])
        assert all(f"topic {i}" in sent for i in range(6)) and "topic 6" not in sent
        # the summary is a model call like any other: in the usage ledger, once, for the owner
        async with store.engine.connect() as conn:
            calls = (
                await conn.execute(
                    select(usage_calls.c.purpose, usage_calls.c.session_id,
                           usage_calls.c.user_id, usage_calls.c.agent_id,
                           usage_calls.c.input_tokens, usage_calls.c.output_tokens)
                )
            ).all()  # fmt: skip
        assert len(calls) == 1
        purpose, session_id, user_id, agent_id, tokens_in, tokens_out = calls[0]
        assert (purpose, session_id, user_id, agent_id) == (
            "chat_summary",
            long,
            "dana",
            wf.agent_id,
        )
        assert tokens_in > 0 and tokens_out > 0
    finally:
        await engine.aclose()
        await store.close()
