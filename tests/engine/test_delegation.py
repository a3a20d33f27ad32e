"""Agents as tools of other agents (engine/delegation.py), end to end: the runtime executing
workflow runs in-process, chat turns, the real `openai` SDK against the scripted protocol server
(a responder that plays each agent by its system prompt), a migrated embedded PostgreSQL, and
the API on a real socket for the save-time cycle check.

A → B → C: the answer flows back up, the children are task executions linked to the run that
called them, the parent's stream shows them, and their usage is rolled up into the parent's. A
cycle is refused at save (422 naming it) and, when stored data holds one anyway, at run time.
The depth limit, a failing child and halting the parent are covered too."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from tbd_agents.config import Settings
from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.enums import OutputFormat, ProviderType, TaskStatus, TaskTrigger
from tbd_agents.domain.models import Agent, Provider, TaskExecution, Token, Workflow
from tbd_agents.engine.chat import chat_stream, open_session
from tbd_agents.engine.inprocess import engine_services, preview_context
from tbd_agents.runtime.legacy_stream import frame_of
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.protocol import Query, Sort, eq
from tests.api.conftest import make_settings
from tests.api.live import live_server
from tests.engine.protocol_server import ProtocolServer, Recorded, Turn
from tests.support import pg

FERNET = f"1:{Fernet.generate_key().decode()}"
OWNER = "dana"
#: Every scripted model call reports this usage (the protocol server's default Turn usage).
CALL_IN, CALL_OUT = 100, 20


@pytest.fixture(scope="module")
def model() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    yield server
    server.stop()


@pytest.fixture
async def world(
    pg18_server: str, model: ProtocolServer, tmp_path: Any
) -> AsyncIterator[dict[str, Any]]:
    url = pg.create_migrated_database(pg18_server, prefix="delegation")
    settings = Settings(
        postgres_uri=url.render_as_string(hide_password=False),
        token_encryption_key=FERNET,
        outbound_allowed_hosts="127.0.0.1",  # the scripted model
        redis_url=None,
        run_lease_seconds=5.0,
        embedding_provider="hashing",
        data_dir=tmp_path,
    )
    engine = create_engine(url, application_name="delegation-tests", pool_size=4)
    store = PostgresStore(engine, owns_engine=False)
    cipher = KeyRingProvider(settings).cipher()
    async with store.unit_of_work() as repos:
        value, version = cipher.encrypt("sk-dana")
        await repos.tokens.create(
            Token(name="openai-key", encrypted_value=value, key_version=version, created_by=OWNER)
        )
        provider = await repos.providers.create(
            Provider(name="p", provider_type=ProviderType.OPENAI, api_key_token_name="openai-key",
                     base_url=f"{model.url}/v1", created_by=OWNER)
        )  # fmt: skip
    model.reset()
    rt = await Runtime.open(settings, engine, role="api", store=store)
    await rt.start()
    yield {"rt": rt, "store": store, "settings": settings, "provider": provider}
    await rt.aclose(drain_seconds=5)
    await engine.dispose()
    pg.drop_database(url)


async def make_agents(
    world: dict[str, Any], *names: str, tools: dict[str, list[str]] | None = None
) -> dict[str, Agent]:
    """Agents `names` (system prompt "You are <name>."), each listing the agents `tools` names
    for it, written straight through the repositories (so a cycle can be stored)."""
    tools = tools or {}
    ids = {name: uuid.uuid4().hex for name in names}
    agents: dict[str, Agent] = {}
    async with world["store"].unit_of_work() as repos:
        for name in names:
            agents[name] = await repos.agents.create(
                Agent(id=ids[name], name=name, description=f"The {name} specialist.",
                      system_prompt=f"You are {name}.", model="gpt-4o",
                      provider_id=world["provider"].id, created_by=OWNER, max_turns=5,
                      agent_tool_ids=[ids[t] for t in tools.get(name, [])])
            )  # fmt: skip
    return agents


def who(rec: Recorded) -> str:
    """The agent a request is for, from its system prompt ("You are <name>.")."""
    system = rec.conversation()[0]["text"]
    return system.split("You are ", 1)[1].split(".", 1)[0]


def tool_results(rec: Recorded) -> list[str]:
    return [text for e in rec.conversation() for _, text in e["tool_results"]]


def relay(calls: dict[str, str], answers: dict[str, str]) -> Callable[[Recorded], Turn]:
    """A responder: agent X first calls the agent tool `calls[X]` with a task, then answers
    `answers[X]` followed by what the tool returned; an agent without a call answers at once."""

    def respond(rec: Recorded) -> Turn:
        name = who(rec)
        results = tool_results(rec)
        if name in calls and not results:
            return Turn(tool_calls=[(calls[name], {"task": f"help {name}", "context": "ctx"})])
        return Turn(text=" ".join([answers[name], *results]))

    return respond


async def run_workflow(world: dict[str, Any], agent: Agent) -> tuple[TaskExecution, list[Any]]:
    async with world["store"].unit_of_work() as repos:
        workflow = await repos.workflows.create(
            Workflow(
                agent_id=agent.id,
                title="delegation",
                github_user=OWNER,
                output_format=OutputFormat.TEXT,
            )
        )
    task = await world["rt"].start_run(workflow.id, "go")
    events = await asyncio.wait_for(_collect(world["rt"], task.id), 90)
    return await stored(world, task.id), events


async def _collect(rt: Runtime, task_id: str) -> list[Any]:
    return [e async for e in rt.follow(task_id, 0)]


async def stored(world: dict[str, Any], task_id: str) -> TaskExecution:
    async with world["store"].unit_of_work(readonly=True) as repos:
        task: TaskExecution = await repos.task_executions.get(task_id)
    return task


async def children(world: dict[str, Any], root_id: str) -> list[TaskExecution]:
    async with world["store"].unit_of_work(readonly=True) as repos:
        page = await repos.task_executions.list(
            Query(filters=(eq("root_task_id", root_id),), sort=(Sort("delegation_depth"),))
        )
    return page.items


def of_type(events: list[Any], kind: str) -> list[dict[str, Any]]:
    return [dict(e.data) for e in events if e.type == kind]


async def test_three_levels_answer_flows_back_with_linked_runs_and_usage(
    world: dict[str, Any], model: ProtocolServer
) -> None:
    agents = await make_agents(
        world, "alpha", "beta", "gamma", tools={"alpha": ["beta"], "beta": ["gamma"]}
    )
    model.responder = relay(
        {"alpha": "beta", "beta": "gamma"},
        {"alpha": "alpha:", "beta": "beta:", "gamma": "gamma-fact-42"},
    )
    task, events = await run_workflow(world, agents["alpha"])

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.response == "alpha: beta: gamma-fact-42"
    # alpha saw one tool, named after beta, with the task parameter
    first = next(r for r in model.requests if who(r) == "alpha")
    assert first.tool_names() == ["beta"]
    # usage: alpha 2 calls, beta 2, gamma 1 — all rolled up into the run alpha's
    assert task.usage is not None
    assert (task.usage["input_tokens"], task.usage["output_tokens"]) == (5 * CALL_IN, 5 * CALL_OUT)

    kids = await children(world, task.id)
    assert [(k.agent_id, k.delegation_depth) for k in kids] == [
        (agents["beta"].id, 1),
        (agents["gamma"].id, 2),
    ]
    beta_run, gamma_run = kids
    assert beta_run.parent_task_id == task.id and gamma_run.parent_task_id == beta_run.id
    assert {k.workflow_id for k in kids} == {task.workflow_id}  # listed with the workflow
    assert all(k.trigger is TaskTrigger.DELEGATION for k in kids)
    assert all(k.status is TaskStatus.COMPLETED for k in kids)
    assert gamma_run.response == "gamma-fact-42"
    assert beta_run.response == "beta: gamma-fact-42"
    assert beta_run.prompt == "help alpha\n\nContext:\nctx"
    assert beta_run.usage is not None and beta_run.usage["input_tokens"] == 3 * CALL_IN
    assert gamma_run.usage is not None and gamma_run.usage["input_tokens"] == CALL_IN

    # the parent's stream: the child started and finished, with its usage
    [started] = of_type(events, "delegation_started")
    assert started["child_task_id"] == beta_run.id
    assert (started["agent_id"], started["agent_name"], started["depth"]) == (
        agents["beta"].id, "beta", 1,
    )  # fmt: skip
    [finished] = of_type(events, "delegation_finished")
    assert finished["child_task_id"] == beta_run.id and finished["status"] == "completed"
    assert finished["usage"]["input_tokens"] == 3 * CALL_IN
    assert finished["elapsed"] >= 0
    # the existing workflow stream shows them as `log` events, a type its clients know
    legacy = [frame_of(e) for e in events if e.type.startswith("delegation_")]
    assert [(f["type"], f["data"]["event"]) for f in legacy] == [
        ("log", "delegation_started"),
        ("log", "delegation_finished"),
    ]
    assert legacy[0]["data"]["detail"] == "beta: help alpha\n\nContext:\nctx"
    [result] = [d for d in of_type(events, "tool_result") if d["name"] == "beta"]
    assert result["content"] == "beta: gamma-fact-42" and not result["is_error"]
    assert result["source"] == "agent:beta"
    assert result["origin"] == {"kind": "agent", "name": "beta"}
    # the child's own event log: followed to its final status, showing its own delegation
    beta_events = await asyncio.wait_for(_collect(world["rt"], beta_run.id), 30)
    assert beta_events[-1].type == "status" and beta_events[-1].data["status"] == "completed"
    assert [d["child_task_id"] for d in of_type(beta_events, "delegation_started")] == [
        gamma_run.id
    ]

    # the usage ledger: each call once, under the agent that made it and its own task
    usage = await _ledger(world)
    by_task = {(c["agent_id"], c["task_id"]) for c in usage}
    assert by_task == {
        (agents["alpha"].id, task.id),
        (agents["beta"].id, beta_run.id),
        (agents["gamma"].id, gamma_run.id),
    }
    assert len(usage) == 5
    assert {c["user_id"] for c in usage} == {OWNER}
    assert {c["workflow_id"] for c in usage} == {task.workflow_id}


async def _ledger(world: dict[str, Any]) -> list[dict[str, Any]]:
    from sqlalchemy import text

    async with world["store"].engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT agent_id, task_id, user_id, workflow_id FROM usage_calls")
        )
        return [dict(r._mapping) for r in rows]


async def test_chat_turn_delegates_and_streams_the_child(
    world: dict[str, Any], model: ProtocolServer
) -> None:
    agents = await make_agents(world, "lead", "helper", tools={"lead": ["helper"]})
    model.responder = relay({"lead": "helper"}, {"lead": "lead says", "helper": "helper-42"})
    services = await engine_services(world["settings"], world["store"])
    frames: list[tuple[str, dict[str, Any]]] = []
    try:
        session, history = await open_session(services, agents["lead"], None, OWNER, "go")
        async for frame in chat_stream(services, agents["lead"], session, history, "go"):
            name = frame.split("event: ", 1)[1].split("\n", 1)[0]
            frames.append((name, json.loads(frame.split("data: ", 1)[1])))
        # the agent builder's context view lists the agent tool as a run offers it
        context = await preview_context(services, agents["lead"], "")
    finally:
        await services.aclose()
    [offered] = [t["definition"] for t in context["tools"] if t["name"] == "helper"]
    assert offered["parameters"]["required"] == ["task"]
    assert offered["description"].startswith("The helper specialist.")
    done = frames[-1][1]
    assert frames[-1][0] == "done" and done["status"] == "completed", frames[-3:]
    assert done["result"] == "lead says helper-42"
    assert done["usage"]["input_tokens"] == 3 * CALL_IN  # lead 2 calls + helper 1
    [started] = [d for n, d in frames if n == "delegation_started"]
    [finished] = [d for n, d in frames if n == "delegation_finished"]
    assert started["agent_name"] == "helper" and started["depth"] == 1
    assert finished["child_task_id"] == started["child_task_id"]
    assert finished["status"] == "completed"
    names = [n for n, _ in frames]
    assert names.index("tool_call") < names.index("delegation_started")
    assert names.index("delegation_finished") < names.index("tool_result")
    child = await stored(world, started["child_task_id"])
    assert child.status is TaskStatus.COMPLETED and child.response == "helper-42"
    assert child.chat_session_id == session.id
    assert child.parent_task_id is None and child.root_task_id == child.id


async def test_cycle_in_stored_data_is_refused_at_run_time(
    world: dict[str, Any], model: ProtocolServer
) -> None:
    agents = await make_agents(world, "ping", "pong", tools={"ping": ["pong"], "pong": ["ping"]})
    model.responder = relay({"ping": "pong", "pong": "ping"}, {"ping": "ping:", "pong": "pong:"})
    task, _ = await run_workflow(world, agents["ping"])

    assert task.status is TaskStatus.COMPLETED, task.error
    [pong_run] = await children(world, task.id)  # pong never ran ping again
    assert pong_run.agent_id == agents["pong"].id
    pong_events = await asyncio.wait_for(_collect(world["rt"], pong_run.id), 30)
    [refused] = [d for d in of_type(pong_events, "tool_result") if d["name"] == "ping"]
    assert refused["is_error"]
    assert "cycle" in refused["content"] and "ping → pong → ping" in refused["content"]
    assert not of_type(pong_events, "delegation_started")
    # the refusal reached pong's model, whose answer reached ping's
    assert pong_run.response is not None and "cycle" in pong_run.response
    assert task.response is not None and task.response.startswith("ping: pong:")


async def test_depth_limit_returns_an_error_result(
    world: dict[str, Any], model: ProtocolServer
) -> None:
    agents = await make_agents(world, "top", "mid", "leaf", tools={"top": ["mid"], "mid": ["leaf"]})
    model.responder = relay({"top": "mid", "mid": "leaf"}, {"top": "top:", "mid": "mid:"})
    settings = world["settings"].model_copy(update={"delegation_max_depth": 1})
    services = await engine_services(settings, world["store"])
    frames: list[tuple[str, dict[str, Any]]] = []
    try:
        session, history = await open_session(services, agents["top"], None, OWNER, "go")
        async for frame in chat_stream(services, agents["top"], session, history, "go"):
            name = frame.split("event: ", 1)[1].split("\n", 1)[0]
            frames.append((name, json.loads(frame.split("data: ", 1)[1])))
    finally:
        await services.aclose()
    assert frames[-1][1]["status"] == "completed", frames[-3:]
    [started] = [d for n, d in frames if n == "delegation_started"]
    mid_run = await stored(world, started["child_task_id"])
    assert mid_run.status is TaskStatus.COMPLETED
    assert mid_run.response is not None and "depth limit" in mid_run.response
    assert "DELEGATION_MAX_DEPTH" in mid_run.response
    assert not [r for r in model.requests if who(r) == "leaf"]  # leaf never ran


async def test_a_delegated_run_obeys_its_agents_tool_policy(
    world: dict[str, Any], model: ProtocolServer
) -> None:
    """The child runs under its own agent's policy: mid may not call leaf (`never`), so leaf
    never runs and mid's model is told why (an `ask` would pause it in place, as
    test_delegation_runs.py shows for the workflow's policy)."""
    agents = await make_agents(world, "top", "mid", "leaf", tools={"top": ["mid"], "mid": ["leaf"]})
    async with world["store"].unit_of_work() as repos:
        await repos.agents.update(
            agents["mid"].id, {"tool_policy": {"rules": [{"tool": "leaf", "action": "never"}]}}
        )
    model.responder = relay({"top": "mid", "mid": "leaf"}, {"top": "top:", "mid": "mid:"})
    task, _ = await run_workflow(world, agents["top"])
    assert task.status is TaskStatus.COMPLETED
    [mid_run] = await children(world, task.id)
    assert mid_run.response is not None and "refused by policy" in mid_run.response
    assert not [r for r in model.requests if who(r) == "leaf"]


async def test_child_failure_is_an_error_result(
    world: dict[str, Any], model: ProtocolServer
) -> None:
    agents = await make_agents(world, "boss", "broken", tools={"boss": ["broken"]})

    def respond(rec: Recorded) -> Turn:
        if who(rec) == "broken":
            return Turn(status=400, error_body={"error": {"message": "model not available"}})
        results = tool_results(rec)
        return (
            Turn(text="handled: " + results[0])
            if results
            else Turn(tool_calls=[("broken", {"task": "do it"})])
        )

    model.responder = respond
    task, events = await run_workflow(world, agents["boss"])
    assert task.status is TaskStatus.COMPLETED, task.error
    [child] = await children(world, task.id)
    assert child.status is TaskStatus.FAILED and child.error
    [result] = [d for d in of_type(events, "tool_result") if d["name"] == "broken"]
    assert result["is_error"] and "did not complete" in result["content"]
    assert task.response is not None and task.response.startswith("handled: Error:")
    [finished] = of_type(events, "delegation_finished")
    assert finished["status"] == "failed"


async def test_halting_the_parent_halts_the_child(
    world: dict[str, Any], model: ProtocolServer
) -> None:
    agents = await make_agents(world, "chief", "slow", tools={"chief": ["slow"]})

    def respond(rec: Recorded) -> Turn:
        if who(rec) == "slow":
            return Turn(text="too late", hang=20)
        return Turn(tool_calls=[("slow", {"task": "take your time"})])

    model.responder = respond
    async with world["store"].unit_of_work() as repos:
        workflow = await repos.workflows.create(
            Workflow(agent_id=agents["chief"].id, title="halt", github_user=OWNER)
        )
    rt: Runtime = world["rt"]
    task = await rt.start_run(workflow.id, "go")

    async def until_halted() -> list[Any]:
        seen: list[Any] = []
        async for event in rt.follow(task.id, 0):
            seen.append(event)
            if event.type == "delegation_started":
                await rt.halt(task.id)
        return seen

    events = await asyncio.wait_for(until_halted(), 60)
    assert events[-1].data["status"] == "halted"
    [child] = await children(world, task.id)
    assert child.status is TaskStatus.HALTED
    assert child.finished_at is not None
    [finished] = of_type(events, "delegation_finished")
    assert finished["status"] == "halted"


async def test_halting_the_child_alone_is_an_error_result_for_the_parent(
    world: dict[str, Any], model: ProtocolServer
) -> None:
    agents = await make_agents(world, "manager", "dawdler", tools={"manager": ["dawdler"]})

    def respond(rec: Recorded) -> Turn:
        if who(rec) == "dawdler":
            return Turn(text="too late", hang=20)
        results = tool_results(rec)
        if results:
            return Turn(text="gave up: " + results[0])
        return Turn(tool_calls=[("dawdler", {"task": "take your time"})])

    model.responder = respond
    async with world["store"].unit_of_work() as repos:
        workflow = await repos.workflows.create(
            Workflow(agent_id=agents["manager"].id, title="halt child", github_user=OWNER,
                     output_format=OutputFormat.TEXT)
        )  # fmt: skip
    rt: Runtime = world["rt"]
    task = await rt.start_run(workflow.id, "go")

    async def halting_the_child() -> list[Any]:
        seen: list[Any] = []
        async for event in rt.follow(task.id, 0):
            seen.append(event)
            if event.type == "delegation_started":
                await rt.halt(event.data["child_task_id"])
        return seen

    events = await asyncio.wait_for(halting_the_child(), 60)
    assert events[-1].data["status"] == "completed"
    [child] = await children(world, task.id)
    assert child.status is TaskStatus.HALTED
    parent = await stored(world, task.id)
    assert parent.response is not None
    assert parent.response.startswith("gave up: Error: the agent 'dawdler' did not complete")


# --- the save-time check, through the API on a real socket ---------------------------------


@dataclass
class LiveApi:
    url: str
    db: Any

    def key(self, owner: str) -> str:
        """A new API key of `owner`."""

        async def make() -> str:
            store = PostgresStore(create_engine(self.db, pool_size=1), url=self.db)
            try:
                async with store.unit_of_work() as repos:
                    created = await ApiKeys(repos).create(owner, scope=KeyScope.USER, name="t")
                return created.plaintext
            finally:
                await store.close()

        return asyncio.run(make())

    def client(self, owner: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key(owner)}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def live(pg18_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    db = pg.create_migrated_database(pg18_server, prefix="delegation_api")
    settings = make_settings(
        tmp_path_factory.mktemp("delegation"),
        postgres_uri=db.render_as_string(hide_password=False),
        postgres_pool_size=4,
        outbound_allowed_hosts="127.0.0.1",  # the users' provider is the scripted model
    )
    with live_server(settings) as url:
        yield LiveApi(url, db)
    pg.drop_database(db)


@pytest.fixture(scope="module")
def api(live: LiveApi) -> Iterator[httpx.Client]:
    with live.client("erik") as client:
        yield client


def _agent(api: httpx.Client, name: str, tools: list[str] | None = None) -> dict[str, Any]:
    body = {"name": name, "agent_tool_ids": tools or []}
    response = api.post("/api/agents", json=body)
    assert response.status_code in (200, 201), response.text
    created: dict[str, Any] = response.json()
    return created


def test_cycle_refused_at_save(api: httpx.Client) -> None:
    a = _agent(api, "a")
    b = _agent(api, "b", [a["id"]])
    assert b["agent_tool_ids"] == [a["id"]]
    response = api.put(f"/api/agents/{a['id']}", json={**a, "agent_tool_ids": [b["id"]]})
    assert response.status_code == 422, response.text
    assert "a → b → a" in response.text
    # a longer one, and an agent naming itself
    c = _agent(api, "c", [b["id"]])
    response = api.put(f"/api/agents/{a['id']}", json={**a, "agent_tool_ids": [c["id"]]})
    assert response.status_code == 422 and "a → c → b → a" in response.text
    response = api.put(f"/api/agents/{c['id']}", json={**c, "agent_tool_ids": [c["id"]]})
    assert response.status_code == 422 and "c → c" in response.text
    # nothing was changed by the refused saves
    assert api.get(f"/api/agents/{a['id']}").json()["agent_tool_ids"] == []
    # a chain without a cycle is fine, and an agent another one calls cannot be deleted
    response = api.put(f"/api/agents/{a['id']}", json={**a, "agent_tool_ids": []})
    assert response.status_code == 200
    assert api.delete(f"/api/agents/{a['id']}").status_code == 409


def test_unknown_agent_tool_refused(api: httpx.Client) -> None:
    response = api.post("/api/agents", json={"name": "x", "agent_tool_ids": ["nope"]})
    assert response.status_code == 422
    assert "agent_tool_ids" in response.text


def test_chat_through_the_api_shows_the_child_run_to_the_session_owner(
    live: LiveApi, model: ProtocolServer
) -> None:
    model.reset()
    with live.client("fiona") as fiona, live.client("gus") as gus:
        token = fiona.post("/api/tokens", json={"name": "k", "value": "sk-fiona"})
        assert token.status_code in (200, 201), token.text
        provider = fiona.post(
            "/api/providers",
            json={"name": "p", "provider_type": "openai", "api_key_token_name": "k",
                  "base_url": f"{model.url}/v1"},
        ).json()  # fmt: skip
        agent = {"model": "gpt-4o", "provider_id": provider["id"]}
        helper = fiona.post(
            "/api/agents", json={**agent, "name": "helper", "system_prompt": "You are helper."}
        ).json()
        lead = fiona.post(
            "/api/agents",
            json={**agent, "name": "lead", "system_prompt": "You are lead.",
                  "agent_tool_ids": [helper["id"]]},
        ).json()  # fmt: skip
        model.responder = relay({"lead": "helper"}, {"lead": "lead:", "helper": "helper-7"})
        with fiona.stream(
            "POST", f"/api/agents/{lead['id']}/chat", json={"message": "go"}
        ) as response:
            assert response.status_code == 200
            frames = [
                json.loads(line.removeprefix("data: "))
                for line in response.iter_lines()
                if line.startswith("data: ")
            ]
        done = frames[-1]
        assert done["type"] == "done" and done["result"] == "lead: helper-7", frames[-3:]
        [started] = [f for f in frames if f["type"] == "delegation_started"]
        [finished] = [f for f in frames if f["type"] == "delegation_finished"]
        assert finished["status"] == "completed"
        [call] = [f for f in frames if f["type"] == "tool_call"]
        assert call["origin"] == {"kind": "agent", "name": "helper"}
        child_id = started["child_task_id"]

        child = fiona.get(f"/api/tasks/{child_id}")
        assert child.status_code == 200, child.text
        body = child.json()
        assert body["response"] == "helper-7" and body["delegation_depth"] == 1
        assert body["chat_session_id"] == done["session_id"]
        listed = fiona.get("/api/tasks", params={"chat_session_id": done["session_id"]})
        assert listed.status_code == 200, listed.text
        assert [t["id"] for t in _items(listed.json())] == [child_id]
        with fiona.stream("GET", f"/api/tasks/{child_id}/events") as events:
            assert events.status_code == 200
            text = "".join(events.iter_text())
        assert '"status": "completed"' in text or '"status":"completed"' in text
        # nobody else sees it
        assert gus.get(f"/api/tasks/{child_id}").status_code == 404
        assert gus.get(f"/api/tasks/{child_id}/events").status_code == 404
        others = gus.get("/api/tasks", params={"chat_session_id": done["session_id"]})
        assert _items(others.json()) == []


def _items(body: Any) -> list[dict[str, Any]]:
    """A list answer's records (a bare array, or a page's `items`)."""
    items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
    return items


async def test_delegation_on_mongodb(model: ProtocolServer, tmp_path: Any) -> None:
    """The same chain on the MongoDB backend (its emulation, tests/support/mongo.py): the child
    runs are stored, leased and logged by the MongoDB run store."""
    from tbd_agents.storage.mongo.repository import MongoStore
    from tests.support.mongo import make_mongo_store

    store: MongoStore = await make_mongo_store()
    settings = make_settings(
        tmp_path, db_backend="mongo", postgres_uri=None, token_encryption_key=FERNET,
        outbound_allowed_hosts="127.0.0.1", run_lease_seconds=3.0,
    )  # fmt: skip
    cipher = KeyRingProvider(settings).cipher()
    async with store.unit_of_work() as repos:
        value, version = cipher.encrypt("sk-dana")
        await repos.tokens.create(
            Token(name="openai-key", encrypted_value=value, key_version=version, created_by=OWNER)
        )
        provider = await repos.providers.create(
            Provider(name="p", provider_type=ProviderType.OPENAI, api_key_token_name="openai-key",
                     base_url=f"{model.url}/v1", created_by=OWNER)
        )  # fmt: skip
    world = {"store": store, "provider": provider}
    agents = await make_agents(
        world, "one", "two", "three", tools={"one": ["two"], "two": ["three"]}
    )
    model.reset()
    model.responder = relay(
        {"one": "two", "two": "three"}, {"one": "1:", "two": "2:", "three": "3"}
    )
    services = await engine_services(settings, store)
    frames: list[tuple[str, dict[str, Any]]] = []
    try:
        session, history = await open_session(services, agents["one"], None, OWNER, "go")
        async for frame in chat_stream(services, agents["one"], session, history, "go"):
            name = frame.split("event: ", 1)[1].split("\n", 1)[0]
            frames.append((name, json.loads(frame.split("data: ", 1)[1])))
        done = frames[-1][1]
        assert done["status"] == "completed" and done["result"] == "1: 2: 3", frames[-3:]
        assert done["usage"]["input_tokens"] == 5 * CALL_IN
        [started] = [d for n, d in frames if n == "delegation_started"]
        kids = await children(world, started["child_task_id"])
        assert [(k.agent_id, k.delegation_depth, k.status) for k in kids] == [
            (agents["two"].id, 1, TaskStatus.COMPLETED),
            (agents["three"].id, 2, TaskStatus.COMPLETED),
        ]
        assert kids[1].parent_task_id == kids[0].id
        logged = await services.run_store().events.read(kids[1].id)
        assert logged[0].data["status"] == "running"
        assert logged[-1].type == "status" and logged[-1].data["status"] == "completed"
    finally:
        await services.aclose()
        await store.close()
