"""GET /api/tasks: the runs page's filters (trigger, text in prompt or error) with the others."""

from __future__ import annotations

import httpx

from tbd_agents.domain.enums import TaskStatus, TaskTrigger
from tbd_agents.domain.models import TaskExecution
from tests.api.conftest import Api
from tests.api.factory import create


async def _ids(client: httpx.AsyncClient, **params: object) -> set[str]:
    response = await client.get("/api/tasks", params={"limit": 200, **params})
    assert response.status_code == 200, response.text
    return {r["id"] for r in response.json()}


async def test_trigger_and_text_filters(api: Api, alice: httpx.AsyncClient) -> None:
    agent = await create(alice, "agents")
    flow = await create(alice, "workflows", agent_id=agent["id"])
    w = flow["id"]
    async with api.store.unit_of_work() as repos:

        def run(**kw: object) -> TaskExecution:
            return TaskExecution(workflow_id=w, agent_id=agent["id"], **kw)  # type: ignore[arg-type]

        nightly = await repos.task_executions.create(
            run(prompt="Summarise the NIGHTLY report", trigger=TaskTrigger.SCHEDULE)
        )
        broken = await repos.task_executions.create(
            run(prompt="check", status=TaskStatus.FAILED, error="Upstream Timeout after 30 s")
        )
        literal = await repos.task_executions.create(run(prompt="50%_off and a\\b"))
        plain = await repos.task_executions.create(run(prompt="hello", trigger=TaskTrigger.API))
    every = {nightly.id, broken.id, literal.id, plain.id}
    assert await _ids(alice, workflow_id=w) == every  # no new parameter: the same answer
    assert await _ids(alice, workflow_id=w, trigger="schedule") == {nightly.id}
    assert await _ids(alice, workflow_id=w, trigger="api") == {plain.id}
    assert await _ids(alice, workflow_id=w, q="nightly") == {nightly.id}  # any case, prompt
    assert await _ids(alice, workflow_id=w, q="timeout") == {broken.id}  # error
    assert await _ids(alice, workflow_id=w, q="%_") == {literal.id}  # wildcards taken literally
    assert await _ids(alice, workflow_id=w, q="a\\b") == {literal.id}
    assert await _ids(alice, workflow_id=w, q="   ") == every  # blank: no filter
    assert await _ids(alice, workflow_id=w, q="timeout", status="completed") == set()
    assert await _ids(alice, workflow_id=w, q="report", trigger="schedule") == {nightly.id}
    assert (await alice.get("/api/tasks", params={"trigger": "cron"})).status_code == 422
    assert (await alice.get("/api/tasks", params={"q": "x" * 201})).status_code == 422
    # paging keeps the filter: two pages of one each, newest first
    first = await alice.get("/api/tasks", params={"workflow_id": w, "q": "e", "limit": 1})
    cursor = first.headers["X-Next-Cursor"]
    second = await alice.get(
        "/api/tasks", params={"workflow_id": w, "q": "e", "limit": 1, "cursor": cursor}
    )
    assert [r["id"] for r in first.json() + second.json()] == [plain.id, broken.id]
