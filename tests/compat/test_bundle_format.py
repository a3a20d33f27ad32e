"""Bundles in the existing TBD Agents format (reference §1.5, §4.17; SDK export-bundle types).

The bundles below are written by hand, exactly in the shapes the existing server exports and its
SDK sends (string version "1.0", lists at the top level, items without ids); ours must import
every record of them, full and per resource. Our own export must carry every field of the SDK's
export models (an existing client validates it), keep secrets out, and import again with the
references pointing at the records the import created.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import httpx

from tbd_agents.domain.models import KnowledgeSource
from tests.api.conftest import Api
from tests.api.factory import create, uniq

# --- the existing format, literally -------------------------------------------------------

SKILL = {
    "name": "Code review",
    "description": "Reviews a diff for bugs and style",
    "instructions": "Read the diff. List bugs first, then style issues, each with a line number.",
    "tags": ["engineering", "review"],
}
AGENT = {
    "name": "Release notes writer",
    "description": "Turns merged pull requests into release notes",
    "system_prompt": "You write concise release notes for end users.",
    "model": "gpt-4.1",
    "mcp_server_ids": [],
    "mcp_server_tags": ["github"],
    "tool_definitions": [{"name": "list_pull_requests", "description": "PRs merged since a tag"}],
    "knowledge_source_ids": [],
    "knowledge_tags": ["product-docs"],
    "builtin_tools": ["read", "grep"],
    "custom_tool_ids": [],
    "provider_id": None,
}
KNOWLEDGE_SOURCES = [
    {
        "name": "Product handbook",
        "description": "Documents uploaded through the dashboard",
        "source_type": "mongo_db",
        "connection_config": {},
        "tags": ["product-docs"],
    },
    {
        "name": "Support answers",
        "description": "Qdrant collection of resolved tickets",
        "source_type": "vector_db",
        "connection_config": {
            "url": "https://qdrant.example.com:6333",
            "collection": "support_answers",
            "api_key_token_name": "QDRANT_API_KEY",
        },
        "tags": ["support"],
    },
]


def workflow(agent_id: str) -> dict[str, Any]:
    """An exported workflow (SDK `ExportedWorkflow`) of the agent `agent_id`."""
    return {
        "title": "Weekly release notes",
        "agent_id": agent_id,
        "model": "gpt-4.1",
        "max_turns": 12,
        "skill_ids": [],
        "skill_tags": ["review"],
        "output_format": "markdown",
        "infinite_session": False,
        "caveman": False,
        "bypass_memory": True,
        "auto_memory": False,
        "tsv_tool_results": True,
        "reasoning_effort": "medium",
        "guardrail_ids": [],
        "guardrail_tags": ["pii"],
        "repo_url": "https://github.com/acme/shop",
        "repo_branch": "main",
        "repo_token_name": "GITHUB_PAT",
        "repository_ids": [],
        "repository_tags": [],
    }


def full_bundle(agent_id: str) -> dict[str, Any]:
    """`GET /api/export` of the existing server (FullExportBundle)."""
    return {
        "version": "1.0",
        "exported_at": "2025-05-14T09:12:44.518000",
        "resource_type": "bundle",
        "skills": [SKILL],
        "agents": [AGENT],
        "workflows": [workflow(agent_id)],
        "knowledge_sources": KNOWLEDGE_SOURCES,
    }


# --- the SDK's export models, as field lists (name → JSON types; required ones marked) -------

STR, LIST, BOOL, INT, OBJ, NULL = str, list, bool, int, dict, type(None)
SDK_FIELDS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "skills": {
        "name": ((STR,), True),
        "description": ((STR,), False),
        "instructions": ((STR,), True),
        "tags": ((LIST,), False),
    },
    "agents": {
        "name": ((STR,), True),
        "description": ((STR,), False),
        "system_prompt": ((STR,), False),
        "model": ((STR, NULL), False),
        "mcp_server_ids": ((LIST,), False),
        "mcp_server_tags": ((LIST,), False),
        "tool_definitions": ((LIST,), False),
        "knowledge_source_ids": ((LIST,), False),
        "knowledge_tags": ((LIST,), False),
        "builtin_tools": ((LIST,), False),
        "custom_tool_ids": ((LIST,), False),
        "provider_id": ((STR, NULL), False),
    },
    "workflows": {
        "title": ((STR, NULL), False),
        "agent_id": ((STR,), True),
        "model": ((STR, NULL), False),
        "max_turns": ((INT,), False),
        "skill_ids": ((LIST,), False),
        "skill_tags": ((LIST,), False),
        "output_format": ((STR,), False),
        "infinite_session": ((BOOL,), False),
        "caveman": ((BOOL,), False),
        "bypass_memory": ((BOOL,), False),
        "auto_memory": ((BOOL,), False),
        "tsv_tool_results": ((BOOL,), False),
        "reasoning_effort": ((STR, NULL), False),
        "guardrail_ids": ((LIST,), False),
        "guardrail_tags": ((LIST,), False),
        "repo_url": ((STR, NULL), False),
        "repo_branch": ((STR, NULL), False),
        "repo_token_name": ((STR, NULL), False),
    },
    "knowledge_sources": {
        "name": ((STR,), True),
        "description": ((STR,), False),
        "source_type": ((STR,), True),
        "connection_config": ((OBJ,), False),
        "tags": ((LIST,), False),
    },
}
RESOURCE_TYPES = {
    "skills": "skill",
    "agents": "agent",
    "workflows": "workflow",
    "knowledge_sources": "knowledge_source",
}
PATHS = {
    "skills": "skills",
    "agents": "agents",
    "workflows": "workflows",
    "knowledge_sources": "knowledge-sources",
}


def sdk_problems(key: str, item: dict[str, Any]) -> list[str]:
    """What an SDK `Exported*` model would refuse in `item` (a missing required field, a value
    of the wrong JSON type); extra keys are allowed by its models (`extra="allow"`)."""
    problems = []
    for name, (types, required) in SDK_FIELDS[key].items():
        if name not in item:
            if required:
                problems.append(f"{key}: {name} missing")
            continue
        value = item[name]
        if not isinstance(value, types) or (BOOL not in types and isinstance(value, bool)):
            problems.append(f"{key}: {name} is {type(value).__name__}")
    return problems


def message(response: httpx.Response) -> str:
    """The error message, from `detail` (a string) or `error.message`."""
    body = response.json()
    if isinstance(body.get("detail"), str):
        return str(body["detail"])
    return str(body["error"]["message"])


def rows(response: httpx.Response) -> list[dict[str, Any]]:
    """A list response as a list (a bare array, or an `items` page)."""
    assert response.status_code == 200, response.text
    body = response.json()
    found: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
    return found


async def listing(client: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    return rows(await client.get(path, params={"limit": 200}))


# --- tests --------------------------------------------------------------------------------


async def test_an_existing_full_bundle_imports_every_record(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    target = await create(alice, "agents")  # the workflow's agent, on this instance
    response = await alice.post("/api/import", json=full_bundle(target["id"]))
    assert response.status_code == 200, response.text
    report = response.json()
    for key, count in (("skills", 1), ("agents", 1), ("workflows", 1), ("knowledge_sources", 2)):
        assert report[key]["created"] == count and report[key]["errors"] == [], report[key]
        assert len(report[key]["ids"]) == count

    skill = (await alice.get(f"/api/skills/{report['skills']['ids'][0]}")).json()
    assert {k: skill[k] for k in SKILL} == SKILL
    agent = (await alice.get(f"/api/agents/{report['agents']['ids'][0]}")).json()
    assert {k: agent[k] for k in AGENT} == AGENT
    flow = (await alice.get(f"/api/workflows/{report['workflows']['ids'][0]}")).json()
    expected = {k: v for k, v in workflow(target["id"]).items() if not k.startswith("repository")}
    assert {k: flow[k] for k in expected} == expected
    assert flow["status"] == "active"
    me = (await alice.get("/api/me")).json()["identity"]
    assert flow["github_user"] == me  # imported workflows belong to the importer
    assert (await bob.get(f"/api/workflows/{flow['id']}")).status_code == 404
    sources = [
        (await alice.get(f"/api/knowledge-sources/{i}")).json()
        for i in report["knowledge_sources"]["ids"]
    ]
    assert [(s["name"], s["source_type"], s["connection_config"]) for s in sources] == [
        (s["name"], s["source_type"], s["connection_config"]) for s in KNOWLEDGE_SOURCES
    ]

    # The existing system always inserts: the same bundle again makes copies, not a 409.
    again = (await alice.post("/api/import", json=full_bundle(target["id"]))).json()
    assert again["agents"]["created"] == 1 and again["agents"]["ids"] != report["agents"]["ids"]
    names = [a["name"] for a in await listing(alice, "/api/agents")]
    assert names.count(AGENT["name"]) == 2


async def test_existing_per_resource_bundles_import(alice: httpx.AsyncClient) -> None:
    target = await create(alice, "agents")
    items = {
        "skills": [SKILL],
        "agents": [AGENT, {**AGENT, "name": "Triage bot", "model": None}],
        "workflows": [workflow(target["id"])],
        "knowledge_sources": KNOWLEDGE_SOURCES,
    }
    for key, records in items.items():
        # what the SDK's `import_(...)` sends: `{"items": [...]}` (Skill/Agent/...ImportBundle)
        response = await alice.post(f"/api/{PATHS[key]}/import", json={"items": records})
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["created"] == len(records) and result["errors"] == [], result
        assert len(result["ids"]) == len(records)
        for new_id, record in zip(result["ids"], records, strict=True):
            got = (await alice.get(f"/api/{PATHS[key]}/{new_id}")).json()
            same = {k: v for k, v in record.items() if not k.startswith("repository")}
            assert {k: got[k] for k in same} == same
    # an exported per-resource bundle (envelope included) imports the same way
    exported = {
        "version": "1.0",
        "exported_at": "2025-05-14T09:12:44.518000",
        "resource_type": "skill",
        "items": [{**SKILL, "name": "Second opinion"}],
    }
    response = await alice.post("/api/skills/import", json=exported)
    assert response.status_code == 200 and response.json()["created"] == 1
    # and so does it at /api/import, which reads `resource_type`
    response = await alice.post("/api/import", json=exported)
    assert response.status_code == 200 and response.json()["skills"]["created"] == 1


async def test_our_export_fits_the_existing_models_and_reimports_with_ids_remapped(
    api: Api,
) -> None:
    owner = f"exporter-{uuid.uuid4().hex[:8]}"
    password = "pw-" + uuid.uuid4().hex
    async with await api.user(owner) as client:
        skill = await create(client, "skills", instructions="Be brief.")
        guard = await create(client, "guardrails")
        source = await create(client, "knowledge-sources")
        agent = await create(
            client,
            "agents",
            skill_ids=[skill["id"]],
            guardrail_ids=[guard["id"]],
            knowledge_source_ids=[source["id"]],
        )
        flow = await create(
            client,
            "workflows",
            agent_id=agent["id"],
            title="digest",
            webhook_url="https://hooks.example.com/tbd",
            credential_overrides={"API_KEY": "vendor-key"},
        )
        # A source saved before passwords were moved into tokens (as migrated): plaintext DSN.
        legacy = KnowledgeSource(
            name=uniq("pg"),
            source_type="pgvector",
            connection_config={"dsn": f"postgresql://app:{password}@db.example.com/rag"},
            created_by=owner,
        )
        async with api.store.unit_of_work() as repos:
            await repos.knowledge_sources.create(legacy)

        response = await client.get("/api/export")
        assert response.status_code == 200
        bundle = response.json()
        assert password not in response.text
        assert (bundle["version"], bundle["resource_type"]) == ("1.0", "bundle")
        assert bundle["exported_at"]
        for key in SDK_FIELDS:
            assert bundle[key], key
            for item in bundle[key]:
                assert sdk_problems(key, item) == []
        (exported_flow,) = bundle["workflows"]
        for hidden in (
            "github_user",
            "status",
            "credential_overrides",
            "webhook_url",
            "error_webhook_url",
            "messages",
            "logs",
            "current_turn",
            "session_id",
            "usage",
            "created_at",
        ):
            assert hidden not in exported_flow, hidden
        assert all("created_by" not in i for key in SDK_FIELDS for i in bundle[key])
        dsn = next(s for s in bundle["knowledge_sources"] if s["name"] == legacy.name)
        assert dsn["connection_config"]["dsn"] == "postgresql://app@db.example.com/rag"
        index = bundle["knowledge_sources"].index(dsn)
        assert bundle["redacted"] == [f"knowledge_sources.{index}.connection_config.dsn"]

        # per resource: the same items, in the per-resource envelope
        for key, kind in RESOURCE_TYPES.items():
            every = (await client.get(f"/api/{PATHS[key]}/export")).json()
            assert (every["version"], every["resource_type"]) == ("1.0", kind)
            assert every["items"] == bundle[key]
        one = (await client.get(f"/api/agents/{agent['id']}/export")).json()
        assert one["resource_type"] == "agent" and one["items"] == bundle["agents"]
        assert (await client.get("/api/agents/nope/export")).status_code == 404

        # Import into the same account: new records, references pointing at the new ones.
        report = (await client.post("/api/import", json=bundle)).json()
        assert all(report[k]["errors"] == [] for k in SDK_FIELDS), report
        (new_agent_id,) = report["agents"]["ids"]
        assert new_agent_id != agent["id"]
        new_agent = (await client.get(f"/api/agents/{new_agent_id}")).json()
        assert new_agent["skill_ids"] == report["skills"]["ids"]
        assert new_agent["guardrail_ids"] == report["guardrails"]["ids"]
        new_source = report["id_map"]["knowledge_sources"][source["id"]]
        assert new_agent["knowledge_source_ids"] == [new_source] != [source["id"]]
        (new_flow_id,) = report["workflows"]["ids"]
        new_flow = (await client.get(f"/api/workflows/{new_flow_id}")).json()
        assert new_flow["agent_id"] == new_agent_id
        assert report["id_map"]["workflows"] == {flow["id"]: new_flow_id}
        assert new_flow["webhook_url"] is None and new_flow["credential_overrides"] == {}


async def test_references_that_resolve_nowhere_are_item_errors(alice: httpx.AsyncClient) -> None:
    taken = await create(alice, "providers")
    missing = "665f1c2e9b1e4a3d2c8b4567"  # an ObjectId of the instance the bundle came from
    bundle = {
        "version": "1.0",
        "resource_type": "bundle",
        "providers": [{"name": taken["name"], "provider_type": "openai"}],
        "skills": [SKILL, "not an object"],
        "agents": [
            {"id": "a-ok", "name": "kept"},
            {"id": "a-bad", "name": "ghost tools", "mcp_server_ids": [missing]},
            {"id": "a-long", "name": "n" * 600},
        ],
        "workflows": [
            {"title": "fine", "agent_id": "a-ok"},
            {"title": "of a failed agent", "agent_id": "a-bad"},
            {"title": "of an unknown agent", "agent_id": missing},
        ],
    }
    response = await alice.post("/api/import", json=bundle)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["skills"]["created"] == 1
    assert report["skills"]["errors"] == ["skills[1]: an item is a JSON object, not str"]
    (provider_error,) = report["providers"]["errors"]
    assert "mode=rename" in provider_error and taken["name"] in provider_error
    assert report["agents"]["created"] == 1
    bad, long = report["agents"]["errors"]
    assert bad.startswith("agents[1] 'ghost tools': mcp_server_ids:") and missing in bad
    assert "neither in the bundle nor" in bad
    assert long.startswith("agents[2]") and "name" in long
    assert report["workflows"]["created"] == 1
    failed, unknown = report["workflows"]["errors"]
    assert "'a-bad' of this bundle was not imported" in failed
    assert missing in unknown and "agent_id" in unknown
    (kept,) = [a for a in await listing(alice, "/api/agents") if a["name"] == "kept"]
    (flow,) = [w for w in await listing(alice, "/api/workflows") if w["title"] == "fine"]
    assert flow["agent_id"] == kept["id"]  # the bundle's "a-ok", remapped


async def test_a_bundle_of_our_previous_version_still_imports(alice: httpx.AsyncClient) -> None:
    legacy = {
        "format": "tbd-agents-bundle",
        "version": 1,
        "exported_at": "2025-09-01T10:00:00+00:00",
        "tokens_required": ["vendor-key"],
        "resources": {
            "skills": [{"id": "s1", "name": uniq("tone"), "instructions": "Be kind.", "tags": []}],
            "agents": [{"id": "a1", "name": uniq("concierge"), "skill_ids": ["s1"]}],
            "workflows": [
                {
                    "id": "w1",
                    "agent_id": "a1",
                    "title": "daily",
                    "status": "running",
                    "webhook_url": "https://hooks.example.com/x",
                }
            ],
            "scheduled_agents": [
                {
                    "id": "sa1",
                    "workflow_id": "w1",
                    "name": "every day",
                    "prompt": "go",
                    "interval_value": 1,
                    "interval_unit": "days",
                }
            ],
        },
    }
    dry = (await alice.post("/api/import", params={"dry_run": True}, json=legacy)).json()
    assert dry["dry_run"] is True and dry["agents"]["created"] == 1, dry
    assert dry["agents"]["ids"] == []
    assert dry["missing_tokens"] == ["vendor-key"]
    assert not [a for a in await listing(alice, "/api/agents") if a["skill_ids"]]

    report = (await alice.post("/api/import", json=legacy)).json()
    assert [report[k]["created"] for k in ("skills", "agents", "workflows")] == [1, 1, 1]
    assert report["scheduled_agents"]["created"] == 1
    ids = report["id_map"]
    agent = (await alice.get(f"/api/agents/{ids['agents']['a1']}")).json()
    assert agent["skill_ids"] == [ids["skills"]["s1"]]
    flow = (await alice.get(f"/api/workflows/{ids['workflows']['w1']}")).json()
    assert flow["agent_id"] == agent["id"] and flow["status"] == "active"
    schedule = (await alice.get(f"/api/scheduled-agents/{ids['scheduled_agents']['sa1']}")).json()
    assert schedule["workflow_id"] == flow["id"]


async def test_unreadable_bundles_are_refused_with_422(alice: httpx.AsyncClient) -> None:
    target = await create(alice, "agents")
    good = full_bundle(target["id"])
    cases: list[tuple[str, Any, str]] = [
        ("/api/import", {**good, "version": "2.0"}, "unsupported bundle version '2.0'"),
        ("/api/import", {**good, "version": 3}, "unsupported bundle version 3"),
        ("/api/import", {}, "none of the lists of a bundle"),
        ("/api/import", {"version": "1.0", "resource_type": "bundle"}, "none of the lists"),
        ("/api/import", {"agent": [AGENT]}, "none of the lists"),
        ("/api/import", {**good, "agents": {"name": "x"}}, "agents must be a list"),
        ("/api/import", {"items": [AGENT]}, "needs its resource_type"),
        ("/api/import", {**good, "resource_type": "users"}, "unknown resource_type 'users'"),
        ("/api/import", {"format": "other", "agents": []}, "unknown bundle format"),
        (
            "/api/import",
            {"format": "tbd-agents-bundle", "version": 99, "resources": {}},
            "unsupported bundle version 99",
        ),
        ("/api/import", {"resources": {"users": []}}, "unknown collections"),
        ("/api/agents/import", {"resource_type": "skill", "items": [SKILL]}, "/api/skills/import"),
        ("/api/agents/import", good, "no `items`"),
        ("/api/agents/import", {"items": AGENT}, "items must be a list"),
        ("/api/skills/import", {"version": "0.9", "items": [SKILL]}, "unsupported bundle version"),
    ]
    for path, body, fragment in cases:
        response = await alice.post(path, json=body)
        assert response.status_code == 422, (body, response.text)
        assert fragment in message(response), (fragment, message(response))
    not_an_object = await alice.post("/api/import", json=[good])
    assert not_an_object.status_code == 422
    assert [a["id"] for a in await listing(alice, "/api/agents")] == [target["id"]]
    assert await listing(alice, "/api/skills") == []


async def test_import_modes_for_existing_names(alice: httpx.AsyncClient) -> None:
    bundle = {"version": "1.0", "resource_type": "skill", "items": [copy.deepcopy(SKILL)]}
    first = (await alice.post("/api/skills/import", json=bundle)).json()
    skipped = (await alice.post("/api/skills/import", params={"mode": "skip"}, json=bundle)).json()
    assert skipped["created"] == 0 and skipped["skipped"] == 1 and skipped["ids"] == []
    bundle["items"][0]["description"] = "changed by the bundle"
    over = (
        await alice.post("/api/skills/import", params={"mode": "overwrite"}, json=bundle)
    ).json()
    assert over["overwritten"] == 1
    assert (await alice.get(f"/api/skills/{first['ids'][0]}")).json()["description"] == (
        "changed by the bundle"
    )
    renamed = (
        await alice.post("/api/skills/import", params={"mode": "rename"}, json=bundle)
    ).json()
    assert renamed["created"] == 1 and renamed["renamed"][0]["to"] == SKILL["name"] + " (2)"
    assert json.dumps(sorted(s["name"] for s in await listing(alice, "/api/skills"))) == json.dumps(
        sorted([SKILL["name"], SKILL["name"] + " (2)"])
    )
