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
        assert names == sorted([agent["name"], agent["name"] + " (2)"])
        copy = next(a for a in await _all(b, "/api/agents") if a["name"].endswith(" (2)"))
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


async def test_export_of_one_agent_carries_what_it_uses(alice: httpx.AsyncClient) -> None:
    token = await post(alice, "/api/tokens", {"name": uniq("key"), "value": SECRET})
    provider = await create(alice, "providers", api_key_token_name=token["name"])
    skill = await create(alice, "skills")
    tag = uniq("tag")
    tagged = await create(alice, "skills", tags=[tag])  # selected by the agent's skill_tags
    unused = await create(alice, "skills")
    mcp = await create(alice, "mcps")
    tool = await create(alice, "custom-tools")
    guard = await create(alice, "guardrails")
    source = await create(alice, "knowledge-sources")
    item = await create(alice, "knowledge-items", source_id=source["id"])
    other = await create(alice, "agents")
    agent = await create(
        alice, "agents", provider_id=provider["id"], skill_ids=[skill["id"]], skill_tags=[tag],
        mcp_server_ids=[mcp["id"]], custom_tool_ids=[tool["id"]], guardrail_ids=[guard["id"]],
        knowledge_source_ids=[source["id"]],
    )  # fmt: skip
    await create(alice, "workflows", agent_id=agent["id"])  # uses the agent: not exported

    response = await alice.get("/api/export", params={"agent_id": agent["id"]})
    assert response.status_code == 200, response.text
    bundle = response.json()
    ids = {k: [r["id"] for r in v] for k, v in bundle.items() if isinstance(v, list) and k not in
           ("tokens_required", "redacted")}  # fmt: skip
    assert ids["agents"] == [agent["id"]] and other["id"] not in ids["agents"]
    assert ids["providers"] == [provider["id"]]
    assert ids["skills"] == [skill["id"], tagged["id"]] and unused["id"] not in ids["skills"]
    assert ids["mcp_servers"] == [mcp["id"]] and ids["custom_tools"] == [tool["id"]]
    assert ids["guardrails"] == [guard["id"]]
    assert ids["knowledge_sources"] == [source["id"]]
    assert ids["workflows"] == [] and "knowledge_items" not in ids
    assert bundle["tokens_required"] == [token["name"]] and SECRET not in response.text
    with_items = await alice.get(
        "/api/export", params={"agent_id": agent["id"], "include_items": True}
    )
    assert [i["id"] for i in with_items.json()["knowledge_items"]] == [item["id"]]
    missing = await alice.get("/api/export", params={"agent_id": "no-such-agent"})
    assert missing.status_code == 404

    # it imports as a whole: the copies point at each other (rename: every name is taken)
    report = (await alice.post("/api/import", params={"mode": "rename"}, json=bundle)).json()
    assert all(not v["errors"] for v in report.values() if isinstance(v, dict) and "errors" in v)
    new_agent = await alice.get(f"/api/agents/{report['agents']['ids'][0]}")
    copy = new_agent.json()
    assert copy["name"] == agent["name"] + " (2)"
    assert copy["provider_id"] == report["providers"]["ids"][0] != provider["id"]
    assert copy["skill_ids"] == [report["id_map"]["skills"][skill["id"]]]


async def test_rename_never_makes_two_records_with_one_name(alice: httpx.AsyncClient) -> None:
    name = uniq("dup")
    await create(alice, "skills", name=name)
    await create(alice, "skills", name=f"{name} (2)")
    bundle = {"skills": [{"id": "s1", "name": name}, {"id": "s2", "name": name},
                         {"id": "s3", "name": f"{name} (2)"}],
              "agents": [{"id": "a1", "name": name, "skill_ids": ["s2"]}],
              "providers": [{"id": "p1", "name": name}, {"id": "p2", "name": name}]}  # fmt: skip
    for dry_run in (True, False):  # a dry run names the same copies (nothing written to see)
        report = (
            await alice.post("/api/import", params={"mode": "rename", "dry_run": dry_run},
                             json=bundle)
        ).json()  # fmt: skip
        skills = [(r["from"], r["to"]) for r in report["renamed"] if r["collection"] == "skills"]
        assert skills == [(name, f"{name} (3)"), (name, f"{name} (4)"),
                          (f"{name} (2)", f"{name} (5)")]  # fmt: skip
        providers = [r["to"] for r in report["renamed"] if r["collection"] == "providers"]
        assert providers == [f"{name} (2)"]  # the first provider takes the free name
        assert report["providers"]["created"] == 2 and report["skills"]["created"] == 3
    names = [s["name"] for s in await _all(alice, "/api/skills") if s["name"].startswith(name)]
    assert sorted(names) == sorted([name] + [f"{name} ({n})" for n in range(2, 6)])
    # the agent's reference follows its renamed skill
    (agent,) = [a for a in await _all(alice, "/api/agents") if a["name"] == name]
    (linked,) = [s for s in await _all(alice, "/api/skills") if s["id"] == agent["skill_ids"][0]]
    assert linked["name"] == f"{name} (4)"
    # create mode: two providers of one name in one bundle — the second is an item error
    plain = {"providers": [{"name": uniq("p")}, {"name": "x"}]}
    plain["providers"][1]["name"] = plain["providers"][0]["name"]
    dry = (await alice.post("/api/import", params={"dry_run": True}, json=plain)).json()
    assert dry["providers"]["created"] == 1 and "mode=rename" in dry["providers"]["errors"][0]
