"""Referential integrity: unknown references are 422 naming the field; deletes cascade or 409."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tbd_agents.domain.approvals import ToolApproval
from tbd_agents.domain.enums import TaskTrigger
from tbd_agents.domain.models import TaskExecution
from tbd_agents.storage.protocol import eq
from tests.api.conftest import Api
from tests.api.factory import create, uniq

AGENT_REFS = [
    ("provider_id", "x-missing"),
    ("mcp_server_ids", ["x-missing"]),
    ("knowledge_source_ids", ["x-missing"]),
    ("custom_tool_ids", ["x-missing"]),
    ("skill_ids", ["x-missing"]),
    ("guardrail_ids", ["x-missing"]),
]


@pytest.mark.parametrize(("field", "value"), AGENT_REFS)
async def test_agent_with_unknown_reference_is_422(
    alice: httpx.AsyncClient, field: str, value: object
) -> None:
    response = await alice.post("/api/agents", json={"name": "a", field: value})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["details"]["field"] == field
    assert error["details"]["missing"] == ["x-missing"]
    assert ["body", field] in [e["loc"] for e in error["details"]["errors"]]
    agent = await create(alice, "agents")
    patched = await alice.patch(f"/api/agents/{agent['id']}", json={field: value})
    assert patched.status_code == 422


@pytest.mark.parametrize(
    ("resource", "field"),
    [
        ("/api/workflows", "agent_id"),
        ("/api/chat/sessions", "agent_id"),
        ("/api/memories", "agent_id"),
        ("/api/scheduled-agents", "workflow_id"),
        ("/api/knowledge-items", "source_id"),
    ],
)
async def test_children_with_unknown_parent_are_422(
    alice: httpx.AsyncClient, resource: str, field: str
) -> None:
    body = (
        {field: "missing-id", "key": "k"} if resource == "/api/memories" else {field: "missing-id"}
    )
    response = await alice.post(resource, json=body)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == field


async def test_references_to_other_users_records_are_422(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    skill = await create(bob, "skills")
    agent = await create(bob, "agents")
    assert (
        await alice.post("/api/agents", json={"name": "a", "skill_ids": [skill["id"]]})
    ).status_code == 422
    assert (await alice.post("/api/workflows", json={"agent_id": agent["id"]})).status_code == 422


async def test_provider_token_reference_by_name(alice: httpx.AsyncClient) -> None:
    missing = await alice.post(
        "/api/providers", json={"name": uniq(), "api_key_token_name": "nope"}
    )
    assert missing.status_code == 422
    assert missing.json()["error"]["details"]["field"] == "api_key_token_name"
    token = await create(alice, "tokens")
    provider = await create(alice, "providers", api_key_token_name=token["name"])
    blocked = await alice.delete(f"/api/tokens/{token['id']}")
    assert blocked.status_code == 409
    assert blocked.json()["error"]["details"]["dependants"] == {"providers": [provider["id"]]}


async def test_valid_references_are_accepted(alice: httpx.AsyncClient) -> None:
    provider = await create(alice, "providers")
    refs = {
        "mcp_server_ids": [(await create(alice, "mcps"))["id"]],
        "knowledge_source_ids": [(await create(alice, "knowledge-sources"))["id"]],
        "custom_tool_ids": [(await create(alice, "custom-tools"))["id"]],
        "skill_ids": [(await create(alice, "skills"))["id"]],
        "guardrail_ids": [(await create(alice, "guardrails"))["id"]],
    }
    agent = await create(alice, "agents", provider_id=provider["id"], **refs)
    for field, value in refs.items():
        assert agent[field] == value
    for field, path in [
        ("provider_id", "/api/providers"),
        ("mcp_server_ids", "/api/mcps"),
        ("knowledge_source_ids", "/api/knowledge-sources"),
        ("custom_tool_ids", "/api/custom-tools"),
        ("skill_ids", "/api/skills"),
        ("guardrail_ids", "/api/guardrails"),
    ]:
        target = agent[field] if isinstance(agent[field], str) else agent[field][0]
        refused = await alice.delete(f"{path}/{target}")
        assert refused.status_code == 409, path
        assert refused.json()["error"]["details"]["dependants"]["agents"] == [agent["id"]]


async def test_agent_delete_is_refused_while_workflows_or_sessions_use_it(
    alice: httpx.AsyncClient,
) -> None:
    agent = await create(alice, "agents")
    workflow = await create(alice, "workflows", agent_id=agent["id"])
    session = await create(alice, "chat-sessions", agent_id=agent["id"])
    refused = await alice.delete(f"/api/agents/{agent['id']}")
    assert refused.status_code == 409
    dependants = refused.json()["error"]["details"]["dependants"]
    assert dependants == {"workflows": [workflow["id"]], "chat_sessions": [session["id"]]}
    assert (await alice.delete(f"/api/workflows/{workflow['id']}")).status_code == 204
    assert (await alice.delete(f"/api/chat/sessions/{session['id']}")).status_code == 204
    memory = await create(alice, "memories", agent_id=agent["id"])
    assert (await alice.delete(f"/api/agents/{agent['id']}")).status_code == 204
    assert (await alice.get(f"/api/memories/{memory['id']}")).status_code == 404


async def test_cascades(api: Api, alice: httpx.AsyncClient) -> None:
    session = await create(alice, "chat-sessions")
    path = f"/api/chat/sessions/{session['id']}/messages"
    for text in ("one", "two"):
        assert (await alice.post(path, json={"role": "user", "content": text})).status_code == 201
    counted = (await alice.get(f"/api/chat/sessions/{session['id']}")).json()
    assert counted["message_count"] == 2 and counted["last_message_at"] is not None
    messages = (await alice.get(path)).json()
    assert [m["content"] for m in messages] == ["one", "two"]
    async with api.store.unit_of_work() as repos:  # a run a turn of the chat delegated to
        child = await repos.task_executions.create(
            TaskExecution(workflow_id="", trigger=TaskTrigger.DELEGATION,
                          chat_session_id=session["id"], delegation_depth=1)
        )  # fmt: skip
    assert (await alice.delete(f"/api/chat/sessions/{session['id']}")).status_code == 204
    async with api.store.unit_of_work() as repos:
        left = await repos.chat_messages.count(eq("session_id", session["id"]))
        assert await repos.task_executions.count(eq("id", child.id)) == 0
    assert left == 0

    source = await create(alice, "knowledge-sources")
    item = await create(alice, "knowledge-items", source_id=source["id"])
    assert (await alice.delete(f"/api/knowledge-sources/{source['id']}")).status_code == 204
    assert (await alice.get(f"/api/knowledge-items/{item['id']}")).status_code == 404

    schedule = await create(alice, "scheduled-agents")
    workflow_id = schedule["workflow_id"]
    async with api.store.unit_of_work() as repos:
        task = await repos.task_executions.create(TaskExecution(workflow_id=workflow_id))
        other = await repos.task_executions.create(TaskExecution(workflow_id=workflow_id))
        approvals = repos.for_model(ToolApproval)
        for run in (task, other):
            await approvals.create(
                ToolApproval(task_id=run.id, workflow_id=workflow_id, tool_name="search",
                             expires_at=datetime.now(UTC) + timedelta(hours=1))
            )  # fmt: skip
    # a run deleted alone takes its approvals with it; a workflow, those of all its runs
    assert (await alice.delete(f"/api/tasks/{other.id}")).status_code == 204
    async with api.store.unit_of_work() as repos:
        assert await repos.for_model(ToolApproval).count(eq("task_id", other.id)) == 0
        assert await repos.for_model(ToolApproval).count(eq("task_id", task.id)) == 1
    assert (await alice.delete(f"/api/workflows/{workflow_id}")).status_code == 204
    assert (await alice.get(f"/api/scheduled-agents/{schedule['id']}")).status_code == 404
    assert (await alice.get(f"/api/tasks/{task.id}")).status_code == 404
    async with api.store.unit_of_work() as repos:
        assert await repos.for_model(ToolApproval).count(eq("workflow_id", workflow_id)) == 0
