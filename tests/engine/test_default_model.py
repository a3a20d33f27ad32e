"""Agents without provider_id run on the default model — GitHub Copilot with GITHUB_TOKEN or the
caller's own GitHub token, or DEFAULT_PROVIDER_ID — on every path (chat, workflow prompt,
schedule), over real HTTP against the local fake of GitHub and Copilot."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from tbd_agents.config import Settings
from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.enums import AuthType, IntervalUnit, ProviderType, TaskStatus
from tbd_agents.domain.models import Agent, Provider, ScheduledAgent, TaskExecution, Workflow
from tbd_agents.domain.types import utcnow
from tbd_agents.engine.builder import load_plan
from tbd_agents.engine.config import EngineConfig
from tbd_agents.engine.default_provider import caller_github_token
from tbd_agents.engine.providers.copilot import forget_sessions
from tbd_agents.errors import InvalidData
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import Query, eq
from tests.api.live import live_server
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.support import pg

SERVER_GH = "ghp_serverOperatorToken0123456789abcdefAB"
DANA_GH = "gho_danaOwnGitHubToken0123456789abcdefXY"
MODELS = [
    {
        "id": "gpt-4.1",
        "name": "GPT-4.1",
        "version": "gpt-4.1-2025-04-14",
        "capabilities": {
            "type": "chat",
            "family": "gpt-4.1",
            "limits": {"max_context_window_tokens": 128000, "max_output_tokens": 16384},
            "supports": {"tool_calls": True},
        },
        "model_picker_enabled": True,
    },
    {"id": "claude-sonnet-4", "name": "Claude Sonnet 4", "capabilities": {"type": "chat"}},
]


@pytest.fixture(scope="module")
def env(
    pg18_server: str, protocol_server: ProtocolServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Settings, Any]]:
    url = pg.create_migrated_database(pg18_server, prefix="dflt")
    settings = Settings(
        postgres_uri=url.render_as_string(hide_password=False),
        token_encryption_key=f"1:{Fernet.generate_key().decode()}",
        data_dir=tmp_path_factory.mktemp("dflt"),
        embedding_provider="hashing",
        outbound_allowed_hosts="127.0.0.1",
        github_token=SERVER_GH,
        github_auth=True,
        github_api_url=protocol_server.url,
        copilot_token_url=f"{protocol_server.url}/copilot_internal/v2/token",
    )
    with live_server(settings) as base:
        yield base, settings, url
    pg.drop_database(url)


@pytest.fixture
async def world(env, protocol_server: ProtocolServer) -> AsyncIterator[dict[str, Any]]:
    base, settings, url = env
    protocol_server.reset()
    forget_sessions()
    fake = protocol_server.copilot
    fake.github_tokens = {SERVER_GH, DANA_GH}
    fake.users = {DANA_GH: "dana"}
    fake.models = MODELS
    fake.enforce = True  # the chat API takes only session tokens the exchange issued
    store = PostgresStore(create_engine(url, pool_size=2), url=url)
    async with store.unit_of_work() as repos:
        admin = (await ApiKeys(repos).create("ops", scope=KeyScope.ADMIN)).plaintext
        user = (await ApiKeys(repos).create("carol")).plaintext
    clients = {
        name: httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        for name, key in (("admin", admin), ("carol", user), ("dana", DANA_GH))
    }
    yield {"store": store, "settings": settings, "url": url, **clients}
    for client in clients.values():
        await client.aclose()
    await store.close()
    forget_sessions()


async def chat(client: httpx.AsyncClient, agent_id: str, text: str) -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = []
    name = None
    async with client.stream(
        "POST", f"/api/agents/{agent_id}/chat", json={"message": text}
    ) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                out.append((name, json.loads(line[6:])))
    return out


async def new_agent(client: httpx.AsyncClient, **fields: Any) -> str:
    body = {"name": f"default-{id(fields)}-{utcnow().timestamp()}", **fields}
    response = await client.post("/api/agents", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def finished(store: PostgresStore, task_id: str) -> TaskExecution:
    for _ in range(600):
        async with store.unit_of_work(readonly=True) as repos:
            task: TaskExecution = await repos.task_executions.get(task_id)
        if task.status not in (TaskStatus.PENDING, TaskStatus.RUNNING):
            return task
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish")


def leaked(value: Any, *secrets: str) -> bool:
    text = json.dumps(value, default=str)
    return any(s in text for s in secrets)


async def test_chat_of_an_operator_agent_runs_on_copilot_with_github_token(
    world, protocol_server: ProtocolServer
) -> None:
    agent_id = await new_agent(world["admin"])
    protocol_server.script(Turn(text="Hello from Copilot."))
    events = await chat(world["admin"], agent_id, "hi")
    assert events[-1][0] == "done", events
    assert "".join(d["delta"] for n, d in events if n == "delta") == "Hello from Copilot."
    fake = protocol_server.copilot
    assert [e["authorization"] for e in fake.exchanges] == [f"token {SERVER_GH}"]
    [request] = protocol_server.requests
    assert request.headers["authorization"] == f"Bearer {fake.issued[0]}"
    assert request.body["model"] == "gpt-4.1"  # DEFAULT_MODEL unset: the Copilot default
    usage = events[-1][1]["usage"]
    # Copilot bills premium requests, not tokens: no dollars at gpt-4.1's API price.
    assert usage["input_tokens"] > 0 and usage["cost_usd"] == 0
    assert not leaked(events, SERVER_GH, fake.issued[0])
    session = await world["admin"].get(f"/api/chat/sessions/{events[0][1]['session_id']}/messages")
    assert not leaked(session.json(), SERVER_GH, fake.issued[0])


async def test_a_workflow_prompt_runs_on_the_default_with_the_workflows_model(
    world, protocol_server: ProtocolServer
) -> None:
    admin = world["admin"]
    agent_id = await new_agent(admin, model="claude-sonnet-4")
    wf = (await admin.post("/api/workflows", json={"agent_id": agent_id, "model": "gpt-4o"})).json()
    protocol_server.script(Turn(text="Workflow done."))
    started = await admin.post(f"/api/workflows/{wf['id']}/prompt", json={"prompt": "go"})
    assert started.status_code == 201, started.text
    task = await finished(world["store"], started.json()["task_id"])
    assert task.status is TaskStatus.COMPLETED, task.error
    [request] = protocol_server.requests
    assert request.body["model"] == "gpt-4o"  # workflow.model before agent.model
    assert request.headers["authorization"] == f"Bearer {protocol_server.copilot.issued[0]}"
    assert task.caller_credential is None  # an API-key caller lends no GitHub token
    shown = (await admin.get(f"/api/tasks/{task.id}")).json()
    assert not leaked(shown, SERVER_GH) and "caller_credential" not in shown


async def test_a_schedule_fired_run_uses_github_token(
    world, protocol_server: ProtocolServer
) -> None:
    store: PostgresStore = world["store"]
    async with store.unit_of_work() as repos:
        agent = await repos.agents.create(Agent(name="scheduled-default", created_by="ops"))
        workflow = await repos.workflows.create(Workflow(agent_id=agent.id, github_user="ops"))
        now = utcnow()
        schedule = await repos.scheduled_agents.create(
            ScheduledAgent(
                workflow_id=workflow.id, prompt="tick", interval_value=1,
                interval_unit=IntervalUnit.HOURS, start_at=now - timedelta(seconds=5),
                next_run_at=now - timedelta(seconds=5), github_user="ops",
            )
        )  # fmt: skip
    protocol_server.script(Turn(text="Scheduled answer."))
    engine = create_engine(world["url"], pool_size=2)
    rt = await Runtime.open(world["settings"], engine, role="api", store=store)
    await rt.start()
    try:
        await rt.scheduler().tick()
        task = None
        for _ in range(600):  # this scheduler or the API's fired it: exactly one run
            async with store.unit_of_work(readonly=True) as repos:
                page = await repos.task_executions.list(
                    Query(filters=(eq("scheduled_agent_id", schedule.id),))
                )
            if page.items:
                task = await finished(store, page.items[0].id)
                break
            await asyncio.sleep(0.05)
    finally:
        await rt.aclose(drain_seconds=5)
        await engine.dispose()
    assert task is not None and task.status is TaskStatus.COMPLETED, task and task.error
    assert "Scheduled answer." in (task.response or "")
    assert [e["authorization"] for e in protocol_server.copilot.exchanges] == [f"token {SERVER_GH}"]


async def test_a_github_caller_lends_its_own_token_sealed_and_cleared(
    world, protocol_server: ProtocolServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dana = world["dana"]
    agent_id = await new_agent(dana)
    fake = protocol_server.copilot
    protocol_server.script(Turn(text="Chat on your own Copilot."))
    events = await chat(dana, agent_id, "hi")
    assert events[-1][0] == "done", events
    assert [e["authorization"] for e in fake.exchanges] == [f"token {DANA_GH}"]

    wf = (await dana.post("/api/workflows", json={"agent_id": agent_id})).json()
    protocol_server.script(Turn(text="Run on your own Copilot.", hang=3.0))
    started = await dana.post(f"/api/workflows/{wf['id']}/prompt", json={"prompt": "go"})
    assert started.status_code == 201, started.text
    body = started.json()
    assert not leaked(body, DANA_GH) and "caller_credential" not in body["task"]
    store: PostgresStore = world["store"]
    for _ in range(600):  # while the model call hangs, the run holds the token sealed
        if len(protocol_server.requests) == 2:
            break
        await asyncio.sleep(0.05)
    async with store.unit_of_work(readonly=True) as repos:
        running: TaskExecution = await repos.task_executions.get(body["task_id"])
    sealed = running.caller_credential
    assert sealed and DANA_GH not in sealed
    assert KeyRingProvider(world["settings"]).cipher().decrypt(sealed) == DANA_GH
    task = await finished(store, body["task_id"])
    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.caller_credential is None  # cleared when the run ended
    assert not leaked(task.model_dump(mode="json"), DANA_GH)
    assert protocol_server.requests[-1].headers["authorization"].startswith("Bearer tid=")
    stream = await dana.get(f"/api/tasks/{task.id}/events")  # the run's stored events
    assert stream.status_code == 200 and "Run on your own Copilot." in stream.text
    sessions = protocol_server.copilot.issued
    assert not leaked(stream.text, DANA_GH, *sessions)
    assert not leaked(caplog.text, DANA_GH, *sessions)


async def test_a_users_agent_does_not_get_the_operators_token(
    world, protocol_server: ProtocolServer
) -> None:
    carol = world["carol"]
    agent_id = await new_agent(carol)
    events = await chat(carol, agent_id, "hi")
    assert events[-1][0] == "error"
    message = events[-1][1]["message"]
    assert "DEFAULT_PROVIDER_FOR_USERS" in message and "provider_id" in message
    assert protocol_server.copilot.exchanges == [] and protocol_server.requests == []


async def test_models_lists_copilots_models_for_who_may_ask(
    world, protocol_server: ProtocolServer
) -> None:
    listed = await world["admin"].get("/api/models")
    assert listed.status_code == 200, listed.text
    defaults = [m for m in listed.json() if m["provider_id"] is None]
    assert [m["id"] for m in defaults] == ["gpt-4.1", "claude-sonnet-4"]
    first = defaults[0]
    assert first["provider_type"] == "github_copilot" and first["is_default"] is True
    assert first["capabilities"]["limits"]["max_context_window_tokens"] == 128000
    assert "X-Models-Warning" not in listed.headers

    as_dana = await world["dana"].get("/api/models")
    assert [m["id"] for m in as_dana.json() if m["provider_id"] is None] == [
        "gpt-4.1",
        "claude-sonnet-4",
    ]
    tokens = [e["authorization"] for e in protocol_server.copilot.exchanges]
    assert tokens == [f"token {SERVER_GH}", f"token {DANA_GH}"]

    as_carol = await world["carol"].get("/api/models")
    assert as_carol.status_code == 200
    assert [m for m in as_carol.json() if m["provider_id"] is None] == []
    assert "GITHUB_TOKEN" in as_carol.headers["X-Models-Warning"]

    created = await world["admin"].post(
        "/api/providers", json={"name": "operator-copilot", "provider_type": "github_copilot"}
    )
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    one = await world["admin"].get("/api/models", params={"provider_id": pid})
    assert one.status_code == 200, one.text
    assert [(m["id"], m["provider_id"]) for m in one.json()] == [
        ("gpt-4.1", pid),
        ("claude-sonnet-4", pid),
    ]
    refreshed = await world["admin"].get(f"/api/providers/{pid}/models", params={"refresh": True})
    assert refreshed.json()["models"] == ["claude-sonnet-4", "gpt-4.1"]


# --- load_plan without the API: the three fixes, DEFAULT_PROVIDER_ID, users -------------------


async def test_no_credential_names_the_three_fixes(world) -> None:
    store: PostgresStore = world["store"]
    cipher = KeyRingProvider(world["settings"]).cipher()
    async with store.unit_of_work() as repos:
        agent = await repos.agents.create(Agent(name="no-credential", created_by=None))
        with pytest.raises(InvalidData) as caught:
            await load_plan(repos, cipher, agent, EngineConfig())
    message = caught.value.message
    assert "provider_id" in message and "GITHUB_TOKEN" in message
    assert "DEFAULT_PROVIDER_ID" in message


async def test_default_provider_id_replaces_copilot(world, protocol_server: ProtocolServer) -> None:
    store: PostgresStore = world["store"]
    cipher = KeyRingProvider(world["settings"]).cipher()
    async with store.unit_of_work() as repos:
        ollama = await repos.providers.create(
            Provider(
                name="local-ollama", provider_type=ProviderType.CUSTOM,
                base_url=f"{protocol_server.url}/v1", auth_type=AuthType.NONE,
                default_model="llama3.1",
            )
        )  # fmt: skip
        ops_agent = await repos.agents.create(Agent(name="ops-default", created_by=None))
        user_agent = await repos.agents.create(Agent(name="carol-default", created_by="carol"))
        config = EngineConfig(copilot_token=SERVER_GH, default_provider_id=ollama.id)
        plan = await load_plan(repos, cipher, ops_agent, config)
        assert (plan.provider.name, plan.provider.base_url) == ("local-ollama", ollama.base_url)
        assert plan.model == "llama3.1" and plan.provider.api_key is None
        with caller_github_token(DANA_GH):  # DEFAULT_PROVIDER_ID wins over the caller's token
            again = await load_plan(repos, cipher, ops_agent, config)
        assert again.provider.provider_type is ProviderType.CUSTOM
        with pytest.raises(InvalidData, match="DEFAULT_PROVIDER_FOR_USERS"):
            await load_plan(repos, cipher, user_agent, config)
        for_users = EngineConfig(default_provider_id=ollama.id, default_provider_for_users=True)
        assert (await load_plan(repos, cipher, user_agent, for_users)).model == "llama3.1"
        missing = EngineConfig(default_provider_id="no-such-provider")
        with pytest.raises(InvalidData, match="DEFAULT_PROVIDER_ID names provider"):
            await load_plan(repos, cipher, ops_agent, missing)


async def test_users_get_the_operators_copilot_only_when_allowed(world) -> None:
    store: PostgresStore = world["store"]
    cipher = KeyRingProvider(world["settings"]).cipher()
    async with store.unit_of_work() as repos:
        agent = await repos.agents.create(Agent(name="carol-copilot", created_by="carol"))
        with pytest.raises(InvalidData, match="sign in with your GitHub token"):
            await load_plan(repos, cipher, agent, EngineConfig(copilot_token=SERVER_GH))
        allowed = EngineConfig(copilot_token=SERVER_GH, default_provider_for_users=True)
        plan = await load_plan(repos, cipher, agent, allowed)
        assert plan.provider.api_key == SERVER_GH and plan.model == "gpt-4.1"
        with caller_github_token(DANA_GH):
            own = await load_plan(repos, cipher, agent, EngineConfig(default_model="gpt-4o"))
        assert own.provider.api_key == DANA_GH and own.model == "gpt-4o"
        assert own.provider.provider_type is ProviderType.GITHUB_COPILOT
        assert SERVER_GH not in repr(plan) and DANA_GH not in repr(own)


async def test_a_run_halted_before_it_started_drops_the_sealed_token(world) -> None:
    """A run that never reaches the executor (halted while queued) does not keep the token."""
    store: PostgresStore = world["store"]
    async with store.unit_of_work() as repos:
        agent = await repos.agents.create(Agent(name="queued-default", created_by="dana"))
        workflow = await repos.workflows.create(Workflow(agent_id=agent.id, github_user="dana"))
    engine = create_engine(world["url"], pool_size=2)
    rt = await Runtime.open(world["settings"], engine, role="api", store=store)
    try:
        task = await rt.runs.create_run(workflow.id, "never runs")
        sealed, _ = KeyRingProvider(world["settings"]).cipher().encrypt(DANA_GH)
        async with store.unit_of_work() as repos:
            await repos.task_executions.update(task.id, {"caller_credential": sealed})
        await rt.halt(task.id, "dana")
        async with store.unit_of_work(readonly=True) as repos:
            halted: TaskExecution = await repos.task_executions.get(task.id)
    finally:
        await rt.aclose(drain_seconds=5)
        await engine.dispose()
    assert halted.status is TaskStatus.HALTED and halted.caller_credential is None
