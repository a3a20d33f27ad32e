"""The engine as the runtime's executor: stored agent + provider (+ encrypted token) → a run
started through `Runtime` like the API does, events followed, conversation kept on the workflow."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from cryptography.fernet import Fernet

from tbd_agents.config import Settings
from tbd_agents.domain.enums import GuardrailAction, GuardrailType, ProviderType, TaskStatus
from tbd_agents.domain.models import (
    Agent,
    CustomTool,
    Guardrail,
    McpServer,
    Provider,
    Token,
    Workflow,
)
from tbd_agents.errors import Conflict, InvalidData
from tbd_agents.runtime import leases
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.services.workflow_runs import prepare_prompt
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.engine.mcp_fixtures import http_server
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


async def seed(
    store: PostgresStore, settings: Settings, url: str, workflow_kw: dict | None = None, **agent_kw
) -> Workflow:
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
            Workflow(
                agent_id=agent.id,
                title="wf",
                github_user="alice",
                max_turns=4,
                **(workflow_kw or {}),
            )
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
    assert row.status is TaskStatus.COMPLETED
    # output_format json (the default) wraps the answer as the existing system did
    assert json.loads(row.response) == {"response": "21 degrees in Oslo."}
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


# --- what a run leaves, as the existing TBD Agents showed it ---------------------------------
async def _weather_tool(store: PostgresStore, wf: Workflow) -> None:
    async with store.unit_of_work() as repos:
        tool = await repos.custom_tools.create(
            CustomTool(
                name="weather",
                source_code="def run(city):\n    return {'city': city, 'temp': 21}\n",
                parameters_schema={"type": "object", "properties": {"city": {"type": "string"}}},
                created_by="alice",
            )
        )
        await repos.agents.update(wf.agent_id, {"custom_tool_ids": [tool.id]})


async def test_a_run_records_model_effort_logs_messages_and_usage(
    runtime, protocol_server: ProtocolServer
) -> None:
    rt, store, settings = runtime
    protocol_server.reset()
    wf = await seed(
        store, settings, protocol_server.url,
        {"output_format": "markdown", "reasoning_effort": "high"}, name="recorder",
    )  # fmt: skip
    await _weather_tool(store, wf)
    protocol_server.script(
        Turn(tool_calls=[("weather", {"city": "Oslo"})], usage=(100, 20)),
        Turn(text="**Sunny** in Oslo.", usage=(50, 10)),
    )
    task = await rt.start_run(wf.id, "Weather in Oslo?")
    await finish(rt, task.id)
    row = await leases.load(rt.db, task.id)
    assert row.status is TaskStatus.COMPLETED
    assert row.response == "**Sunny** in Oslo."  # markdown: left as it is
    assert row.model == "gpt-4o" and row.reasoning_effort == "high"
    assert row.worker and row.finished_at is not None and row.started_at is not None
    usage = row.usage
    assert usage["total_input_tokens"] == 150 and usage["total_output_tokens"] == 30
    assert usage["total_premium_requests"] == 0 and usage["total_cache_read_tokens"] == 0
    assert usage["total_cost"] == usage["cost_usd"]
    events = [entry["event"] for entry in row.logs]
    assert events[0] == "prompt_received" and events[-1] == "completed"
    for name in ("model_call", "tool_call", "tool_result", "model_response"):
        assert name in events, events
    call = next(e for e in row.logs if e["event"] == "tool_call")
    assert call["detail"] == "weather" and call["tool_input"] == {"city": "Oslo"}
    result = next(e for e in row.logs if e["event"] == "tool_result")
    assert "21" in result["tool_output"] and "timestamp" in result
    assert [(m["role"], m.get("content")) for m in row.messages] == [
        ("user", "Weather in Oslo?"),
        ("assistant", ""),
        ("assistant", "**Sunny** in Oslo."),
    ]
    assert row.messages[1]["tool_calls"][0]["name"] == "weather"
    async with store.unit_of_work() as repos:
        stored = await repos.workflows.get(wf.id)
    assert stored.status.value == "active"  # the outcome stays on the task
    assert stored.current_turn == 1  # tool calls of the last run
    assert stored.usage == usage and stored.logs == row.logs


async def test_an_inactive_workflow_refuses_runs_and_a_failed_run_leaves_it_ready(
    runtime, protocol_server: ProtocolServer
) -> None:
    rt, store, settings = runtime
    protocol_server.reset()
    wf = await seed(store, settings, protocol_server.url, name="switch")
    async with store.unit_of_work() as repos:
        await repos.workflows.update(wf.id, {"status": "inactive"})
    task = await rt.start_run(wf.id, "hello")  # as a schedule would: no API check before
    await finish(rt, task.id)
    row = await leases.load(rt.db, task.id)
    assert row.status is TaskStatus.FAILED
    assert "inactive" in row.error and "set its status to active" in row.error
    assert protocol_server.requests == []
    async with store.unit_of_work() as repos:
        assert (await repos.workflows.get(wf.id)).status.value == "inactive"
        await repos.workflows.update(wf.id, {"status": "active"})

    protocol_server.script(Turn(status=401, error_body={"error": {"message": "bad key"}}))
    task = await rt.start_run(wf.id, "hello")
    await finish(rt, task.id)
    assert (await leases.load(rt.db, task.id)).status is TaskStatus.FAILED
    async with store.unit_of_work() as repos:
        assert (await repos.workflows.get(wf.id)).status.value == "active"
    protocol_server.script(Turn(text="hi"))
    task = await rt.start_run(wf.id, "hello again")
    await finish(rt, task.id)
    row = await leases.load(rt.db, task.id)
    assert row.status is TaskStatus.COMPLETED and json.loads(row.response) == {"response": "hi"}


async def test_workflow_guardrails_by_id_and_tag_apply_to_its_runs(
    runtime, protocol_server: ProtocolServer
) -> None:
    rt, store, settings = runtime
    protocol_server.reset()
    async with store.unit_of_work() as repos:
        prompt_rail = await repos.guardrails.create(
            Guardrail(
                name="needs-ticket",
                guardrail_type=GuardrailType.PROMPT,
                prompt_config={"required_patterns": [r"ticket-\d+"]},
                created_by="alice",
            )
        )
        await repos.guardrails.create(
            Guardrail(
                name="no-internal",
                guardrail_type=GuardrailType.OUTPUT,
                action=GuardrailAction.FLAG,
                output_config={"forbidden_patterns": ["internal"]},
                tags=["support"],
                created_by="alice",
            )
        )
    wf = await seed(
        store, settings, protocol_server.url,
        {"guardrail_ids": [prompt_rail.id], "guardrail_tags": ["support"]}, name="support",
    )  # fmt: skip
    task = await rt.start_run(wf.id, "help me please")
    await finish(rt, task.id)
    row = await leases.load(rt.db, task.id)
    assert row.status is TaskStatus.FAILED and "needs-ticket" in row.error
    assert "required pattern" in row.error and protocol_server.requests == []

    protocol_server.script(Turn(text="See the INTERNAL wiki."))
    task = await rt.start_run(wf.id, "help with TICKET-7")
    await finish(rt, task.id)
    row = await leases.load(rt.db, task.id)
    assert row.status is TaskStatus.COMPLETED  # flag: reported, not blocked
    violation = next(e for e in row.logs if e["event"] == "output_guardrail_violation")
    assert "no-internal" in violation["detail"]


async def test_a_structured_request_is_prepared_and_checked_by_request_guardrails(
    runtime, protocol_server: ProtocolServer
) -> None:
    rt, store, settings = runtime
    protocol_server.reset()
    schema = {
        "type": "object",
        "required": ["order_id"],
        "properties": {"order_id": {"type": "integer"}},
    }
    async with store.unit_of_work() as repos:
        rail = await repos.guardrails.create(
            Guardrail(
                name="order-shape",
                guardrail_type=GuardrailType.REQUEST,
                request_config={"json_schema": schema},
                created_by="alice",
            )
        )
    wf = await seed(
        store, settings, protocol_server.url, {"guardrail_ids": [rail.id]}, name="orders"
    )
    async with store.unit_of_work() as repos:
        with pytest.raises(InvalidData, match=r"order-shape.*order_id"):
            await prepare_prompt(repos, wf, prompt=None, request={"order_id": "seven"})
        with pytest.raises(InvalidData, match="structured request"):
            await prepare_prompt(repos, wf, prompt="order seven please")
        prepared = await prepare_prompt(repos, wf, prompt=None, request={"order_id": 7})
    assert json.loads(prepared.prompt) == {"order_id": 7}

    protocol_server.script(Turn(text="Order 7 shipped."))
    task = await rt.start_run(wf.id, prepared.prompt)
    await finish(rt, task.id)
    row = await leases.load(rt.db, task.id)
    assert row.status is TaskStatus.COMPLETED and row.prompt == prepared.prompt
    assert '"order_id": 7' in protocol_server.requests[0].all_text()
    # a run whose prompt is not a matching request (a schedule's, say) is blocked in the run
    task = await rt.start_run(wf.id, '{"order_id": "x"}')
    await finish(rt, task.id)
    row = await leases.load(rt.db, task.id)
    assert row.status is TaskStatus.FAILED and "order-shape" in row.error

    async with store.unit_of_work() as repos:
        await repos.workflows.update(wf.id, {"status": "inactive"})
        current = await repos.workflows.get(wf.id)
        with pytest.raises(Conflict, match="set its status to active"):
            await prepare_prompt(repos, current, prompt=None, request={"order_id": 7})


@pytest.fixture(scope="module")
def streamable_url() -> Iterator[str]:
    with http_server("streamable-http") as url:
        yield url


async def test_stored_mcp_servers_over_http_are_used_unless_disabled(
    runtime, protocol_server: ProtocolServer, streamable_url: str
) -> None:
    """Records as the existing system stored them: transport `http` (streamable HTTP), status
    `registered`; only `disabled` keeps a server out of a run."""
    rt, store, settings = runtime
    protocol_server.reset()
    wf = await seed(store, settings, protocol_server.url, name="mcp-user")
    async with store.unit_of_work() as repos:
        ids = []
        for name, status in (("calc", "registered"), ("calc-off", "disabled")):
            server = McpServer.model_validate(
                {
                    "name": name,
                    "transport_type": "http",
                    "connection_config": {"url": streamable_url, "headers": {}},
                    "allowed_tools": ["add"],
                    "status": status,
                    "created_by": "alice",
                }
            )
            ids.append((await repos.mcp_servers.create(server)).id)
        await repos.agents.update(wf.agent_id, {"mcp_server_ids": ids})
    protocol_server.script(Turn(tool_calls=[("add", {"a": 2, "b": 3})]), Turn(text="It is 5."))
    task = await rt.start_run(wf.id, "2+3?")
    await finish(rt, task.id)
    row = await leases.load(rt.db, task.id)
    assert row.status is TaskStatus.COMPLETED, row.error
    assert protocol_server.requests[0].tool_names() == ["add"]  # the disabled one is not there
    result = next(e for e in row.logs if e["event"] == "tool_result")
    assert result["tool_output"] == "5"
