"""Users see and change only their own records (children through their parent); admins all."""

from __future__ import annotations

import httpx
import pytest

from tbd_agents.domain.models import TaskExecution
from tests.api.conftest import Api
from tests.api.factory import RESOURCES, create

NAMES = sorted(RESOURCES)


@pytest.mark.parametrize("name", NAMES)
async def test_other_users_records_are_invisible_and_unchangeable(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, name: str
) -> None:
    path = RESOURCES[name].path
    record = await create(alice, name)
    url = f"{path}/{record['id']}"
    assert (await bob.get(url)).status_code == 404
    assert (await bob.patch(url, json=RESOURCES[name].patch)).status_code == 404
    assert (await bob.delete(url)).status_code == 404
    listed = (await bob.get(path, params={"limit": 200})).json()
    assert record["id"] not in [r["id"] for r in listed]
    assert (await alice.get(url)).status_code == 200


@pytest.mark.parametrize("name", NAMES)
async def test_admin_sees_and_changes_everything(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient, name: str
) -> None:
    path = RESOURCES[name].path
    record = await create(alice, name)
    url = f"{path}/{record['id']}"
    assert (await admin.get(url)).json()["id"] == record["id"]
    changed = await admin.patch(url, json=RESOURCES[name].patch)
    assert changed.status_code == 200
    owner_field = next((f for f in ("created_by", "github_user") if f in record), None)
    if owner_field:
        assert changed.json()[owner_field] == record[owner_field]  # admin edits keep the owner
    assert (await admin.delete(url)).status_code == 204


async def test_owner_filter(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    a = await create(alice, "agents")
    b = await create(bob, "agents")
    alice_id = a["created_by"]
    only_alice = (await admin.get("/api/agents", params={"owner": alice_id, "limit": 200})).json()
    assert {r["created_by"] for r in only_alice} == {alice_id}
    assert a["id"] in [r["id"] for r in only_alice] and b["id"] not in [r["id"] for r in only_alice]
    assert (await bob.get("/api/agents", params={"owner": alice_id})).status_code == 403
    assert (await alice.get("/api/agents", params={"owner": alice_id})).status_code == 200


async def test_children_follow_their_parent(
    api: Api, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    source = await create(alice, "knowledge-sources")
    item = await create(alice, "knowledge-items", source_id=source["id"])
    assert (await bob.get(f"/api/knowledge-items/{item['id']}")).status_code == 404
    hidden = await bob.get("/api/knowledge-items", params={"source_id": source["id"]})
    assert hidden.status_code == 200 and hidden.json() == []
    stolen = await bob.post("/api/knowledge-items", json={"source_id": source["id"], "name": "x"})
    assert stolen.status_code == 422
    assert stolen.json()["error"]["details"]["field"] == "source_id"

    session = await create(alice, "chat-sessions")
    path = f"/api/chat/sessions/{session['id']}/messages"
    assert (await alice.post(path, json={"role": "user", "content": "hi"})).status_code == 201
    assert (await bob.get(path)).status_code == 404
    assert (await bob.post(path, json={"role": "user", "content": "x"})).status_code == 404

    workflow = await create(alice, "workflows")
    async with api.store.unit_of_work() as repos:
        task = await repos.task_executions.create(
            TaskExecution(workflow_id=workflow["id"], prompt="p")
        )
    assert (await alice.get(f"/api/tasks/{task.id}")).json()["workflow_id"] == workflow["id"]
    assert (await bob.get(f"/api/tasks/{task.id}")).status_code == 404
    assert task.id not in [t["id"] for t in (await bob.get("/api/tasks")).json()]
    assert task.id in [t["id"] for t in (await alice.get("/api/tasks")).json()]
