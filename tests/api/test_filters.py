"""List filters users search by: tags, parent ids, status, enabled flags, created time range."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx

from tbd_agents.domain.enums import TaskStatus
from tbd_agents.domain.models import TaskExecution
from tests.api.conftest import Api
from tests.api.factory import create


async def _ids(client: httpx.AsyncClient, path: str, **params: object) -> set[str]:
    response = await client.get(path, params={"limit": 200, **params})
    assert response.status_code == 200, response.text
    return {r["id"] for r in response.json()}


async def test_tags_filter_needs_every_tag(alice: httpx.AsyncClient) -> None:
    both = await create(alice, "agents", tags=["ops", "prod"])
    ops = await create(alice, "agents", tags=["ops"])
    await create(alice, "agents", tags=["dev"])
    assert await _ids(alice, "/api/agents", tags="ops") >= {both["id"], ops["id"]}
    found = await _ids(alice, "/api/agents", tags=["ops", "prod"])
    assert both["id"] in found and ops["id"] not in found


async def test_parent_and_status_filters(api: Api, alice: httpx.AsyncClient) -> None:
    a1 = await create(alice, "agents")
    a2 = await create(alice, "agents")
    w1 = await create(alice, "workflows", agent_id=a1["id"])
    w2 = await create(alice, "workflows", agent_id=a2["id"])
    assert await _ids(alice, "/api/workflows", agent_id=a1["id"]) == {w1["id"]}
    assert w2["id"] in await _ids(alice, "/api/workflows", status="active")
    assert await _ids(alice, "/api/workflows", agent_id=a1["id"], status="running") == set()
    assert (await alice.get("/api/workflows", params={"status": "sleeping"})).status_code == 422
    async with api.store.unit_of_work() as repos:
        done = await repos.task_executions.create(
            TaskExecution(workflow_id=w1["id"], status=TaskStatus.COMPLETED)
        )
        await repos.task_executions.create(
            TaskExecution(workflow_id=w1["id"], status=TaskStatus.FAILED)
        )
    assert await _ids(alice, "/api/tasks", workflow_id=w1["id"], status="completed") == {done.id}
    s1 = await create(alice, "chat-sessions", agent_id=a1["id"])
    assert await _ids(alice, "/api/chat/sessions", agent_id=a1["id"]) == {s1["id"]}


async def test_boolean_and_name_filters(alice: httpx.AsyncClient) -> None:
    on = await create(alice, "guardrails", enabled=True)
    off = await create(alice, "guardrails", enabled=False)
    assert off["id"] in await _ids(alice, "/api/guardrails", enabled="false")
    assert on["id"] not in await _ids(alice, "/api/guardrails", enabled="false")
    assert await _ids(alice, "/api/guardrails", name=on["name"]) == {on["id"]}


async def test_created_time_range(alice: httpx.AsyncClient) -> None:
    before = await create(alice, "skills")
    await asyncio.sleep(0.05)
    middle = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.05)
    after = await create(alice, "skills")
    late = await _ids(alice, "/api/skills", created_after=middle)
    early = await _ids(alice, "/api/skills", created_before=middle)
    assert after["id"] in late and before["id"] not in late
    assert before["id"] in early and after["id"] not in early
    assert (
        await alice.get("/api/skills", params={"created_after": "not-a-date"})
    ).status_code == 422


async def test_newest_first(alice: httpx.AsyncClient) -> None:
    first = await create(alice, "custom-tools")
    second = await create(alice, "custom-tools")
    items = (await alice.get("/api/custom-tools", params={"limit": 2})).json()
    assert [i["id"] for i in items] == [second["id"], first["id"]]
