"""Bundles of agents that call agents as tools (`agent_tool_ids`): the agents an agent calls
travel with it, placed before it, and an import points the copies at each other."""

from __future__ import annotations

import httpx

from tests.api.factory import create


async def test_agent_export_carries_its_agent_tools_and_imports_whole(
    alice: httpx.AsyncClient,
) -> None:
    skill = await create(alice, "skills")
    leaf = await create(alice, "agents", skill_ids=[skill["id"]])  # its skill travels too
    middle = await create(alice, "agents", agent_tool_ids=[leaf["id"]])
    top = await create(alice, "agents", agent_tool_ids=[middle["id"]])
    unrelated = await create(alice, "agents")

    response = await alice.get("/api/export", params={"agent_id": top["id"]})
    assert response.status_code == 200, response.text
    bundle = response.json()
    # every agent after the agents it calls, so an import can create them in order
    assert [a["id"] for a in bundle["agents"]] == [leaf["id"], middle["id"], top["id"]]
    assert unrelated["id"] not in [a["id"] for a in bundle["agents"]]
    assert [s["id"] for s in bundle["skills"]] == [skill["id"]]

    report = (await alice.post("/api/import", params={"mode": "rename"}, json=bundle)).json()
    assert not report["agents"]["errors"], report["agents"]
    new = report["id_map"]["agents"]
    copy_top = (await alice.get(f"/api/agents/{new[top['id']]}")).json()
    copy_middle = (await alice.get(f"/api/agents/{new[middle['id']]}")).json()
    assert copy_top["agent_tool_ids"] == [new[middle["id"]]]
    assert copy_middle["agent_tool_ids"] == [new[leaf["id"]]]


async def test_full_export_orders_agents_by_delegation(alice: httpx.AsyncClient) -> None:
    """An agent edited to call one created after it still comes after it in a full export."""
    first = await create(alice, "agents")
    second = await create(alice, "agents")
    changed = await alice.put(
        f"/api/agents/{first['id']}", json={**first, "agent_tool_ids": [second["id"]]}
    )
    assert changed.status_code == 200, changed.text
    bundle = (await alice.get("/api/export")).json()
    order = [a["id"] for a in bundle["agents"]]
    assert order.index(second["id"]) < order.index(first["id"])
