"""Workflow status over the API: clients set `active` or `inactive` (the existing TBD Agents'
rule); the statuses that describe runs are the run-time's to set."""

from __future__ import annotations

import httpx

from tests.api.factory import create


async def test_a_workflow_starts_active_and_can_be_made_inactive(alice: httpx.AsyncClient) -> None:
    agent = await create(alice, "agents")
    workflow = await create(alice, "workflows", agent_id=agent["id"])
    assert workflow["status"] == "active"
    changed = await alice.patch(f"/api/workflows/{workflow['id']}", json={"status": "inactive"})
    assert changed.status_code == 200 and changed.json()["status"] == "inactive"
    again = await alice.patch(f"/api/workflows/{workflow['id']}", json={"status": "ACTIVE"})
    assert again.status_code == 200 and again.json()["status"] == "active"
    created = await create(alice, "workflows", agent_id=agent["id"], status="inactive")
    assert created["status"] == "inactive"


async def test_run_statuses_are_not_settable(alice: httpx.AsyncClient) -> None:
    agent = await create(alice, "agents")
    workflow = await create(alice, "workflows", agent_id=agent["id"])
    for status in ("running", "completed", "idle"):
        refused = await alice.patch(f"/api/workflows/{workflow['id']}", json={"status": status})
        assert refused.status_code == 422, refused.text
        assert "active or inactive" in refused.text
    unknown = await alice.patch(f"/api/workflows/{workflow['id']}", json={"status": "paused"})
    assert unknown.status_code == 422
    assert (await alice.get(f"/api/workflows/{workflow['id']}")).json()["status"] == "active"
