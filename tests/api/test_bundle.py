"""Export from one fresh instance, import into another: ids remapped, references intact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Api
from tests.api.factory import create, post, uniq

SECRET = "bundle-secret-5c1e0b"


@pytest.fixture
async def second_api(pg18_server: str, tmp_path: Path) -> AsyncIterator[Api]:
    from tbd_agents.api import create_app
    from tbd_agents.storage.postgres.engine import create_engine
    from tbd_agents.storage.postgres.repository import PostgresStore
    from tests.api.conftest import make_settings
    from tests.support import pg

    url = pg.create_migrated_database(pg18_server, prefix="apib")
    store = PostgresStore(create_engine(url, pool_size=2, max_overflow=2), url=url)
    app = create_app(make_settings(tmp_path / "b"), store)
    async with app.router.lifespan_context(app):
        yield Api(app, store, app.state.ctx.settings)
    await store.close()
    pg.drop_database(url)


async def _populate(client: httpx.AsyncClient) -> dict[str, Any]:
    token = await post(client, "/api/tokens", {"name": uniq("key"), "value": SECRET})
    provider = await create(client, "providers", api_key_token_name=token["name"])
    skill = await create(client, "skills")
    mcp = await create(client, "mcps")
    tool = await create(client, "custom-tools")
    guard = await create(client, "guardrails")
    source = await create(client, "knowledge-sources")
    item = await create(client, "knowledge-items", source_id=source["id"])
    agent = await create(
        client,
        "agents",
        provider_id=provider["id"],
        skill_ids=[skill["id"]],
        mcp_server_ids=[mcp["id"]],
        custom_tool_ids=[tool["id"]],
        guardrail_ids=[guard["id"]],
        knowledge_source_ids=[source["id"]],
    )
    workflow = await create(client, "workflows", agent_id=agent["id"], title="nightly")
    schedule = await create(client, "scheduled-agents", workflow_id=workflow["id"])
    return {
        "token": token,
        "agent": agent,
        "workflow": workflow,
        "schedule": schedule,
        "item": item,
    }


async def _all(client: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await client.get(path, params={"limit": 200})).json()
    return items


def _created(report: dict[str, Any]) -> dict[str, int]:
    return {k: v["created"] for k, v in report.items() if isinstance(v, dict) and v.get("created")}


async def test_round_trip_between_instances(fresh_api: Api, second_api: Api) -> None:
    async with await fresh_api.user("exporter") as a, await second_api.user("importer") as b:
        made = await _populate(a)
        bundle = (await a.get("/api/export", params={"include_items": True})).json()
        assert (bundle["version"], bundle["resource_type"]) == ("1.0", "bundle")
        assert made["token"]["name"] in bundle["tokens_required"]
        assert SECRET not in str(bundle) and "created_by" not in str(bundle)

        dry = (await b.post("/api/import", params={"dry_run": True}, json=bundle)).json()
        assert dry["dry_run"] is True and dry["agents"]["created"] == 1
        assert await _all(b, "/api/agents") == []  # a dry run writes nothing

        report = (await b.post("/api/import", json=bundle)).json()
        assert _created(report) == {
            "providers": 1,
            "skills": 1,
            "mcp_servers": 1,
            "custom_tools": 1,
            "guardrails": 1,
            "knowledge_sources": 1,
            "knowledge_items": 1,
            "agents": 1,
            "workflows": 1,
            "scheduled_agents": 1,
        }
        assert all(
            not v["errors"] for v in report.values() if isinstance(v, dict) and "errors" in v
        )
        assert report["missing_tokens"] == [made["token"]["name"]]

        (agent,) = await _all(b, "/api/agents")
        assert agent["id"] != made["agent"]["id"] and agent["created_by"] == "importer"
        for field, path in [
            ("mcp_server_ids", "/api/mcps"),
            ("skill_ids", "/api/skills"),
            ("custom_tool_ids", "/api/custom-tools"),
            ("guardrail_ids", "/api/guardrails"),
            ("knowledge_source_ids", "/api/knowledge-sources"),
        ]:
            assert agent[field] == [r["id"] for r in await _all(b, path)]
        (provider,) = await _all(b, "/api/providers")
        assert agent["provider_id"] == provider["id"]
        (workflow,) = await _all(b, "/api/workflows")
        assert workflow["agent_id"] == agent["id"]
        (schedule,) = await _all(b, "/api/scheduled-agents")
        assert schedule["workflow_id"] == workflow["id"]
        (item,) = await _all(b, "/api/knowledge-items")
        assert item["source_id"] == agent["knowledge_source_ids"][0]
        assert item["status"] == "indexed"  # imported items are chunked and indexed like uploads
        assert report["knowledge_items"]["ids"] == [item["id"]]
        hits = (await b.post("/api/knowledge/search", json={"query": "hello"})).json()
        assert [h["citation"]["item_id"] for h in hits] == [item["id"]]
        assert report["id_map"]["agents"] == {made["agent"]["id"]: agent["id"]}
        assert report["id_map"]["knowledge_items"] == {made["item"]["id"]: item["id"]}

        again = (await b.post("/api/import", params={"mode": "skip"}, json=bundle)).json()
        assert _created(again) == {}
        assert (
            sum(v["skipped"] for v in again.values() if isinstance(v, dict) and "skipped" in v)
            == 10
        )
        assert len(await _all(b, "/api/agents")) == 1 and len(await _all(b, "/api/workflows")) == 1

        conflicts = (
            await b.post("/api/import", params={"dry_run": True, "mode": "overwrite"}, json=bundle)
        ).json()
        assert {c["collection"] for c in conflicts["conflicts"]} >= {
            "agents",
            "providers",
            "workflows",
        }
        assert all(c["action"] == "overwritten" for c in conflicts["conflicts"])

        bundle["agents"][0]["description"] = "from the bundle"
        over = (await b.post("/api/import", params={"mode": "overwrite"}, json=bundle)).json()
        assert over["agents"]["overwritten"] == 1 and _created(over) == {}
        assert (await _all(b, "/api/agents"))[0]["description"] == "from the bundle"

        renamed = (await b.post("/api/import", params={"mode": "rename"}, json=bundle)).json()
        assert renamed["agents"]["created"] == 1
        names = sorted(a["name"] for a in await _all(b, "/api/agents"))
        assert names == sorted([agent["name"], agent["name"] + " (imported)"])
        copy = next(a for a in await _all(b, "/api/agents") if a["name"].endswith("(imported)"))
        assert copy["provider_id"] != agent["provider_id"]  # references point at the renamed copies

        # The default, as the existing system: always insert. Provider names are unique, so that
        # item is an error saying which mode to use; the rest is created.
        plain = (await b.post("/api/import", json=bundle)).json()
        (taken,) = plain["providers"]["errors"]
        assert "mode=rename" in taken and plain["providers"]["created"] == 0
        assert plain["agents"]["created"] == 0
        assert "provider_id" in plain["agents"]["errors"][0]
        assert plain["skills"]["created"] == 1


async def test_dangling_references_are_item_errors(alice: httpx.AsyncClient) -> None:
    bundle = {
        "format": "tbd-agents-bundle",
        "version": 1,
        "resources": {
            "agents": [
                {"id": "a1", "name": "x", "provider_id": "not-in-bundle"},
                {"id": "a2", "name": "y"},
            ]
        },
    }
    response = await alice.post("/api/import", json=bundle)
    assert response.status_code == 200, response.text
    report = response.json()
    (error,) = report["agents"]["errors"]
    assert error.startswith("agents[0] 'x': provider_id:") and "not-in-bundle" in error
    assert [a["name"] for a in await _all(alice, "/api/agents")] == ["y"]
    future = await alice.post("/api/import", json={"format": "tbd-agents-bundle", "version": 99})
    assert future.status_code == 422
    wrong = await alice.post("/api/import", json={"format": "other"})
    assert wrong.status_code == 422
    unknown = await alice.post("/api/import", json={"resources": {"users": []}})
    assert unknown.status_code == 422
