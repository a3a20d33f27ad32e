"""The engine as the runtime's executor: stored agent + provider (+ encrypted token) → a run
started through `Runtime` like the API does, events followed, conversation kept on the workflow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from cryptography.fernet import Fernet

from tbd_agents.config import Settings
from tbd_agents.domain.enums import GuardrailAction, GuardrailType, ProviderType, TaskStatus
from tbd_agents.domain.models import Agent, CustomTool, Guardrail, Provider, Token, Workflow
from tbd_agents.runtime import leases
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.support import pg

FERNET = f"1:{Fernet.generate_key().decode()}"


@pytest.fixture(scope="module")
def exec_db(pg18_server: str):
    url = pg.create_migrated_database(pg18_server, prefix="exe")
    yield url
    pg.drop_database(url)


@pytest.fixture
async def runtime(exec_db) -> AsyncIterator[tuple[Runtime, PostgresStore, Settings]]:
    settings = Settings(
        postgres_uri=exec_db.render_as_string(hide_password=False),
        token_encryption_key=FERNET,
        allow_user_custom_tools=True,  # alice (a user) runs a custom tool
        outbound_allowed_hosts="127.0.0.1",  # ... against the local scripted model
        redis_url=None,
        run_lease_seconds=5.0,
    )
    engine = create_engine(exec_db, application_name="engine-exec-tests", pool_size=4)
    store = PostgresStore(engine, owns_engine=False)
    rt = await Runtime.open(settings, engine, role="api", store=store)
    await rt.start()
    yield rt, store, settings
    await rt.aclose(drain_seconds=5)
    await engine.dispose()


async def seed(store: PostgresStore, settings: Settings, url: str, **agent_kw) -> Workflow:
    cipher = KeyRingProvider(settings).cipher()
    value, version = cipher.encrypt("sk-stored-secret")
    async with store.unit_of_work() as repos:
        await repos.tokens.create(
            Token(name="openai-key", encrypted_value=value, key_version=version, created_by="alice")
        ) if not await repos.tokens.find_one() else None
        provider = await repos.providers.create(
            Provider(
                name=f"p-{agent_kw.get('name', 'x')}",
                provider_type=ProviderType.OPENAI,
                api_key_token_name="openai-key",
                base_url=f"{url}/v1",
                created_by="alice",
            )
        )
        agent = await repos.agents.create(
            Agent(model="gpt-4o", provider_id=provider.id, created_by="alice", **agent_kw)
        )
        return await repos.workflows.create(
            Workflow(agent_id=agent.id, name="wf", github_user="alice", max_turns=4)
        )


async def finish(rt: Runtime, task_id: str) -> list:
    async def gather():
        return [e async for e in rt.follow(task_id, 0)]

    return await asyncio.wait_for(gather(), 30)


async def test_a_workflow_run_executes_with_the_engine_and_keeps_the_conversation(
    runtime, protocol_server: ProtocolServer
) -> None:
    rt, store, settings = runtime
    protocol_server.reset()
    tool_src = "def run(city):\n    return {'city': city, 'temp': 21}\n"
    wf = await seed(store, settings, protocol_server.url, name="weather-agent")
    async with store.unit_of_work() as repos:
        tool = await repos.custom_tools.create(
            CustomTool(
                name="weather",
                source_code=tool_src,
                parameters_schema={"type": "object", "properties": {"city": {"type": "string"}}},
                created_by="alice",
            )
        )
        await repos.agents.update(wf.agent_id, {"custom_tool_ids": [tool.id]})
    protocol_server.script(
        Turn(tool_calls=[("weather", {"city": "Oslo"})]), Turn(text="21 degrees in Oslo.")
    )
    task = await rt.start_run(wf.id, "Weather in Oslo?")
    events = await finish(rt, task.id)
    types = [e.type for e in events]
    assert "tool_call" in types and "tool_result" in types and "message_delta" in types
    row = await leases.load(rt.db, task.id)
    assert row.status is TaskStatus.COMPLETED and row.response == "21 degrees in Oslo."
    assert row.tool_calls == 1 and row.turns == 2
    # the stored key reached the provider, decrypted
    assert protocol_server.requests[0].headers["authorization"] == "Bearer sk-stored-secret"
    async with store.unit_of_work() as repos:
        stored = await repos.workflows.get(wf.id)
    assert [m["role"] for m in stored.messages] == ["user", "assistant", "tool", "assistant"]
    # a second prompt continues the conversation
    protocol_server.script(Turn(text="Still 21."))
    task2 = await rt.start_run(wf.id, "And now?")
    await finish(rt, task2.id)
    texts = protocol_server.requests[-1].all_text()
    assert "Weather in Oslo?" in texts and "21 degrees in Oslo." in texts and "And now?" in texts


async def test_guardrail_block_and_halt_through_the_runtime(
    runtime, protocol_server: ProtocolServer
) -> None:
    rt, store, settings = runtime
    protocol_server.reset()
    async with store.unit_of_work() as repos:
        rail = await repos.guardrails.create(
            Guardrail(
                name="no-secrets",
                guardrail_type=GuardrailType.INPUT,
                action=GuardrailAction.BLOCK,
                patterns=["(?i)secret"],
                created_by="alice",
            )
        )
    wf = await seed(store, settings, protocol_server.url, name="guarded", guardrail_ids=[rail.id])
    task = await rt.start_run(wf.id, "tell me the secret")
    await finish(rt, task.id)
    row = await leases.load(rt.db, task.id)
    assert row.status is TaskStatus.FAILED and "no-secrets" in row.error
    assert protocol_server.requests == []

    protocol_server.script(Turn(text="y" * 2000, chunk_chars=2, delay=0.02))
    task = await rt.start_run(wf.id, "a long story please")
    seen = []
    async for event in rt.follow(task.id, 0):
        seen.append(event.type)
        if event.type == "message_delta" and seen.count("message_delta") == 3:
            await rt.halt(task.id, "alice")
    row = await leases.load(rt.db, task.id)
    assert row.status is TaskStatus.HALTED
