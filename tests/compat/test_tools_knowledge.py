"""The existing API's routes for tools, knowledge, memories and models (reference §1.4, §1.7 to §1.11),
route by route: status, response shape (the field lists of the official SDK's types) and values.

PostgreSQL backend (a migrated database per module); the MongoDB backend at the end."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tbd_agents.api import create_app
from tbd_agents.domain.auth import KeyScope
from tbd_agents.services.keys import ApiKeys
from tests.api.conftest import make_settings
from tests.api.factory import create, post, uniq
from tests.engine.mcp_fixtures import SERVERS, http_server
from tests.support import pg
from tests.support.mongo import make_mongo_store

# Field lists of the SDK's response types (packages/python/src/tbd_agents/types.py).
MCP_SERVER = {"id", "name", "transport_type", "connection_config", "allowed_tools", "tags"}
MCP_SERVER |= {"status", "last_error", "created_at", "updated_at"}
MCP_TEST_RESULT = {"success", "tools", "error"}
MCP_TOOL = {"name", "description", "input_schema"}
KNOWLEDGE_SOURCE = {"id", "name", "description", "source_type", "connection_config", "tags"}
KNOWLEDGE_SOURCE |= {"status", "last_error", "created_at", "updated_at"}
SOURCE_TEST_RESULT = {"success", "error"}
KNOWLEDGE_ITEM = {"id", "source_id", "name", "content_type", "text_content", "file_id"}
KNOWLEDGE_ITEM |= {"file_name", "file_size", "mime_type", "tags", "metadata"}
KNOWLEDGE_ITEM |= {"created_at", "updated_at"}
MEMORY = {"id", "agent_id", "scope", "key", "value", "metadata", "ttl", "created_at", "updated_at"}
CUSTOM_TOOL = {"id", "name", "description", "source_code", "parameters_schema", "env_config"}
CUSTOM_TOOL |= {"tags", "is_enabled", "is_plugin", "created_at", "updated_at"}
RUN_RESPONSE = {"tool_name", "result", "success", "error"}
VALIDATE_RESPONSE = {"valid", "inferred_schema", "error"}
ENV_MAPPING = {"tool_id", "tool_name", "env_vars", "available_tokens"}
ENV_VAR = {"env_var", "current_token", "template"}
TOKEN_REF = {"id", "name", "description", "masked_value"}
MODEL_INFO = {"id", "name", "capabilities"}  # Copilot SDK ModelInfo.to_dict()

SECRET = "compat-secret-value-8d1e"


def has(fields: set[str], body: dict[str, Any]) -> None:
    missing = fields - set(body)
    assert not missing, f"missing {sorted(missing)} in {body}"


def rows(response: httpx.Response) -> list[dict[str, Any]]:
    """A list route's records: a bare JSON array."""
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    assert isinstance(listed, list)
    return listed


def error_message(response: httpx.Response) -> str:
    """The error's message: `detail` (the existing clients read it) and `error.message`."""
    body = response.json()
    assert body["detail"] == body["error"]["message"], body
    message: str = body["detail"]
    return message


async def token(client: httpx.AsyncClient, value: str = SECRET) -> str:
    name = uniq("tok").replace("-", "_")
    await post(client, "/api/tokens", {"name": name, "value": value})
    return name


# --- §1.9 MCP servers ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    with http_server("streamable-http") as url:
        yield url


async def test_mcp_test_answers_the_existing_shape_and_records_status(
    admin: httpx.AsyncClient, mcp_url: str
) -> None:
    # An admin's record may reach the local server (a user's would need OUTBOUND_ALLOWED_HOSTS).
    server = await post(
        admin,
        "/api/mcps",
        {"name": uniq("mcp"), "transport_type": "http", "connection_config": {"url": mcp_url}},
    )
    has(MCP_SERVER, server)
    assert server["status"] == "registered"
    resp = await admin.post(f"/api/mcps/{server['id']}/test")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    has(MCP_TEST_RESULT, body)
    assert body["success"] is True and body["error"] is None
    tools = {t["name"]: t for t in body["tools"]}
    for tool in tools.values():
        has(MCP_TOOL, tool)
    assert tools["add"]["input_schema"]["type"] == "object"
    assert set(tools["add"]["input_schema"]["properties"]) == {"a", "b"}
    record = (await admin.get(f"/api/mcps/{server['id']}")).json()
    assert record["status"] == "connected" and record["last_error"] is None

    # Any update of the record makes the last test stale: status back to registered.
    changed = await admin.put(f"/api/mcps/{server['id']}", json={"tags": ["x"]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["status"] == "registered" and changed.json()["last_error"] is None
    assert changed.json()["tags"] == ["x"]
    assert (await admin.post(f"/api/mcps/{server['id']}/test")).json()["success"] is True
    patched = await admin.patch(f"/api/mcps/{server['id']}", json={"description": "d"})
    assert patched.json()["status"] == "registered"


async def test_mcp_test_failure_records_the_error(admin: httpx.AsyncClient) -> None:
    server = await post(
        admin,
        "/api/mcps",
        {"name": uniq("mcp"), "connection_config": {"command": "/nonexistent/mcp-server"}},
    )
    body = (await admin.post(f"/api/mcps/{server['id']}/test")).json()
    assert body["success"] is False and body["tools"] == []
    assert body["error"]
    record = (await admin.get(f"/api/mcps/{server['id']}")).json()
    assert record["status"] == "error" and record["last_error"] == body["error"]


async def test_mcp_live_tools_and_allowlist(
    admin: httpx.AsyncClient, bob: httpx.AsyncClient, mcp_url: str
) -> None:
    server = await post(
        admin,
        "/api/mcps",
        {"name": uniq("mcp"), "transport_type": "http", "connection_config": {"url": mcp_url}},
    )
    listed = await admin.get(f"/api/mcps/{server['id']}/tools")
    assert listed.status_code == 200, listed.text
    assert set(listed.json()) >= {"tools"}
    names = [t["name"] for t in listed.json()["tools"]]
    assert {"add", "lookup_order"} <= set(names)
    for tool in listed.json()["tools"]:
        has(MCP_TOOL, tool)
        assert tool["allowed"] is True  # an empty allowlist offers every tool

    saved = await admin.put(
        f"/api/mcps/{server['id']}/tools", json={"allowed_tools": ["add", "add"]}
    )
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"allowed_tools": ["add"]}
    record = (await admin.get(f"/api/mcps/{server['id']}")).json()
    assert record["allowed_tools"] == ["add"]
    allowed = {t["name"]: t["allowed"] for t in (await admin.get(
        f"/api/mcps/{server['id']}/tools"
    )).json()["tools"]}  # fmt: skip
    assert allowed["add"] is True and allowed["lookup_order"] is False

    bad = await admin.put(f"/api/mcps/{server['id']}/tools", json={"allowed_tools": "add"})
    assert bad.status_code == 422
    assert (await bob.get(f"/api/mcps/{server['id']}/tools")).status_code == 404
    assert (
        await bob.put(f"/api/mcps/{server['id']}/tools", json={"allowed_tools": []})
    ).status_code == 404


async def test_mcp_live_tools_of_an_unreachable_server_is_502(admin: httpx.AsyncClient) -> None:
    server = await post(
        admin,
        "/api/mcps",
        {
            "name": uniq("mcp"),
            "transport_type": "http",
            "connection_config": {"url": "http://127.0.0.1:9/mcp", "connect_timeout": 2},
        },
    )
    resp = await admin.get(f"/api/mcps/{server['id']}/tools")
    assert resp.status_code == 502, resp.text
    assert "failed to connect" in error_message(resp)
    record = (await admin.get(f"/api/mcps/{server['id']}")).json()
    assert record["status"] == "registered"  # a GET does not record anything

    # A config that cannot be used is the caller's to fix: its own error, not a 502.
    no_token = await post(
        admin,
        "/api/mcps",
        {
            "name": uniq("mcp"),
            "transport_type": "http",
            "connection_config": {
                "url": "http://127.0.0.1:9/mcp",
                "headers": {"Authorization": "{{token:no_such_token}}"},
            },
        },
    )
    missing = await admin.get(f"/api/mcps/{no_token['id']}/tools")
    assert missing.status_code == 422, missing.text
    assert "no_such_token" in error_message(missing)


# --- §1.4 custom tools --------------------------------------------------------------------
TOOL_SOURCE = b"""
def run(city: str, days: int = 3, detailed: bool = False) -> dict:
    return {"city": city, "days": days}
"""


async def test_custom_tool_upload(alice: httpx.AsyncClient) -> None:
    resp = await alice.post(
        "/api/custom-tools/upload",
        files={"file": ("weather_tool.py", TOOL_SOURCE, "text/x-python")},
    )
    assert resp.status_code == 201, resp.text
    tool = resp.json()
    has(CUSTOM_TOOL, tool)
    assert tool["name"] == "weather_tool"
    assert tool["description"] == "Uploaded from weather_tool.py"
    assert tool["source_code"] == TOOL_SOURCE.decode()
    assert tool["parameters_schema"] == {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer", "default": 3},
            "detailed": {"type": "boolean", "default": False},
        },
        "required": ["city"],
    }
    # The SDK's upload sends name, description and tags (a JSON array string) too.
    name = uniq("sdk_tool").replace("-", "_")
    sdk = await alice.post(
        "/api/custom-tools/upload",
        files={"file": (f"{name}.py", TOOL_SOURCE, "text/plain")},
        data={"name": name, "description": "from the SDK", "tags": json.dumps(["a", "b"])},
    )
    assert sdk.status_code == 201, sdk.text
    assert (sdk.json()["name"], sdk.json()["description"], sdk.json()["tags"]) == (
        name,
        "from the SDK",
        ["a", "b"],
    )

    not_py = await alice.post(
        "/api/custom-tools/upload", files={"file": ("notes.txt", b"def run(): pass", "text/plain")}
    )
    assert not_py.status_code == 400, not_py.text
    assert ".py" in error_message(not_py)
    broken = await alice.post(
        "/api/custom-tools/upload", files={"file": ("broken.py", b"def run(:\n", "text/x-python")}
    )
    assert broken.status_code == 422
    assert "syntax error" in error_message(broken)
    no_entry = await alice.post(
        "/api/custom-tools/upload", files={"file": ("nothing.py", b"x = 1\n", "text/x-python")}
    )
    assert no_entry.status_code == 422


async def test_custom_tool_schema_is_inferred_unless_given(alice: httpx.AsyncClient) -> None:
    """Create without parameters_schema: inferred from the signature; a source change re-infers
    it; a written schema is kept."""
    tool = await create(alice, "custom-tools", source_code="def run(q: str, n: int = 2):\n  pass\n")
    assert tool["parameters_schema"] == {
        "type": "object",
        "properties": {"q": {"type": "string"}, "n": {"type": "integer", "default": 2}},
        "required": ["q"],
    }
    changed = await alice.patch(
        f"/api/custom-tools/{tool['id']}", json={"source_code": "def run(limit: float):\n  pass\n"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["parameters_schema"] == {
        "type": "object",
        "properties": {"limit": {"type": "number"}},
        "required": ["limit"],
    }
    written = {"type": "object", "properties": {"q": {"type": "string", "maxLength": 5}}}
    own = await create(
        alice, "custom-tools", source_code="def run(q):\n  pass\n", parameters_schema=written
    )
    assert own["parameters_schema"] == written
    kept = await alice.patch(
        f"/api/custom-tools/{own['id']}", json={"source_code": "def run(q, r=1):\n  pass\n"}
    )
    assert kept.json()["parameters_schema"] == written


async def test_custom_tool_validate(alice: httpx.AsyncClient) -> None:
    resp = await alice.post(
        "/api/custom-tools/validate",
        json={
            "name": "lookup",
            "source_code": "def lookup(order_id: int, *, full=False):\n  pass\n",
        },
    )
    assert resp.status_code == 200
    body = resp.json()
    has(VALIDATE_RESPONSE, body)
    assert body["valid"] is True and body["error"] is None
    assert body["inferred_schema"] == {
        "type": "object",
        "properties": {"order_id": {"type": "integer"}, "full": {"default": False}},
        "required": ["order_id"],
    }
    bad = (
        await alice.post(
            "/api/custom-tools/validate", json={"name": "t", "source_code": "def t(:\n"}
        )
    ).json()
    assert bad["valid"] is False and bad["inferred_schema"] is None
    assert "syntax error at line 1" in bad["error"]


async def test_custom_tool_run(alice: httpx.AsyncClient) -> None:
    tool = await create(
        alice,
        "custom-tools",
        source_code="def run(a: int, b: int):\n    return {'sum': a + b}\n",
        parameters_schema={
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    )
    resp = await alice.post(
        f"/api/custom-tools/{tool['id']}/run", json={"arguments": {"a": 2, "b": 5}}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    has(RUN_RESPONSE, body)
    assert body["tool_name"] == tool["name"] and body["success"] is True and body["error"] is None
    assert isinstance(body["result"], str) and json.loads(body["result"]) == {"sum": 7}

    failed = (
        await alice.post(f"/api/custom-tools/{tool['id']}/run", json={"arguments": {"a": "x"}})
    ).json()
    assert failed["success"] is False and failed["result"] is None
    assert "parameters_schema" in failed["error"]

    off = await alice.patch(f"/api/custom-tools/{tool['id']}", json={"is_enabled": False})
    assert off.status_code == 200
    disabled = await alice.post(f"/api/custom-tools/{tool['id']}/run", json={"arguments": {}})
    assert disabled.status_code == 409, disabled.text
    assert "disabled" in error_message(disabled)


async def test_custom_tool_env_mapping(alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    api_key = await token(alice)
    other = await token(alice, "another-secret-value")
    tool = await create(
        alice,
        "custom-tools",
        source_code="import os\ndef run():\n    return os.environ.get('SERVICE_KEY')\n",
        env_config={"SERVICE_KEY": "literal", "REGION": "{{token:" + other + "}}"},
    )
    resp = await alice.get(f"/api/custom-tools/{tool['id']}/env-mapping")
    assert resp.status_code == 200, resp.text
    mapping = resp.json()
    has(ENV_MAPPING, mapping)
    assert (mapping["tool_id"], mapping["tool_name"]) == (tool["id"], tool["name"])
    env = {e["env_var"]: e for e in mapping["env_vars"]}
    for entry in env.values():
        has(ENV_VAR, entry)
    assert env["SERVICE_KEY"] == {
        "env_var": "SERVICE_KEY",
        "current_token": None,
        "template": "literal",
    }
    assert env["REGION"]["current_token"] == other
    tokens = {t["name"]: t for t in mapping["available_tokens"]}
    assert {api_key, other} <= set(tokens)
    for ref in tokens.values():
        has(TOKEN_REF, ref)
    assert tokens[api_key]["masked_value"] == "…" + SECRET[-4:]  # as GET /api/tokens shows it
    assert SECRET not in resp.text

    put = await alice.put(
        f"/api/custom-tools/{tool['id']}/env-mapping",
        json={"env_var_mapping": {"SERVICE_KEY": api_key, "REGION": ""}},
    )
    assert put.status_code == 200, put.text
    env = {e["env_var"]: e for e in put.json()["env_vars"]}
    assert env["SERVICE_KEY"]["template"] == "{{token:" + api_key + "}}"
    assert env["SERVICE_KEY"]["current_token"] == api_key
    assert env["REGION"] == {"env_var": "REGION", "current_token": None, "template": ""}
    stored = (await alice.get(f"/api/custom-tools/{tool['id']}")).json()
    assert stored["env_config"] == {"SERVICE_KEY": "{{token:" + api_key + "}}", "REGION": ""}
    ran = (await alice.post(f"/api/custom-tools/{tool['id']}/run", json={})).json()
    assert ran["success"] is True and json.loads(ran["result"]) == SECRET  # resolved at run

    unknown_env = await alice.put(
        f"/api/custom-tools/{tool['id']}/env-mapping",
        json={"env_var_mapping": {"NOT_DECLARED": api_key}},
    )
    assert unknown_env.status_code == 422 and "NOT_DECLARED" in error_message(unknown_env)
    unknown_token = await alice.put(
        f"/api/custom-tools/{tool['id']}/env-mapping",
        json={"env_var_mapping": {"SERVICE_KEY": "no_such_token"}},
    )
    assert unknown_token.status_code == 422 and "no_such_token" in error_message(unknown_token)
    wrong_key = await alice.put(
        f"/api/custom-tools/{tool['id']}/env-mapping", json={"env_mapping": {"SERVICE_KEY": ""}}
    )
    assert wrong_key.status_code == 422
    assert (await bob.get(f"/api/custom-tools/{tool['id']}/env-mapping")).status_code == 404


# --- §1.7 knowledge sources ---------------------------------------------------------------
async def test_knowledge_source_test_of_a_hub_source(alice: httpx.AsyncClient) -> None:
    source = await create(alice, "knowledge-sources", source_type="mongo_db")
    has(KNOWLEDGE_SOURCE, source)
    resp = await alice.post(f"/api/knowledge-sources/{source['id']}/test")
    assert resp.status_code == 200, resp.text
    has(SOURCE_TEST_RESULT, resp.json())
    assert resp.json()["success"] is True and resp.json()["error"] is None
    record = (await alice.get(f"/api/knowledge-sources/{source['id']}")).json()
    assert record["status"] == "connected" and record["last_error"] is None


async def test_knowledge_source_test_of_pgvector(
    admin: httpx.AsyncClient, api_db: URL, pg18_server: str
) -> None:
    dsn = api_db.render_as_string(hide_password=False)  # migrated: has the vector extension
    good = await create(
        admin,
        "knowledge-sources",
        source_type="pgvector",
        connection_config={"dsn": dsn, "collection": "docs"},
    )
    body = (await admin.post(f"/api/knowledge-sources/{good['id']}/test")).json()
    assert body == {"success": True, "error": None, "status": "connected"}

    plain = pg.create_database(pg18_server, prefix="novector")  # no vector extension
    try:
        bad = await create(
            admin,
            "knowledge-sources",
            source_type="pgvector",
            connection_config={
                "dsn": plain.render_as_string(hide_password=False),
                "collection": "docs",
            },
        )
        body = (await admin.post(f"/api/knowledge-sources/{bad['id']}/test")).json()
        assert body["success"] is False and "vector" in body["error"]
        record = (await admin.get(f"/api/knowledge-sources/{bad['id']}")).json()
        assert record["status"] == "error" and record["last_error"] == body["error"]

        # Pointing it elsewhere makes the result stale: registered again, error cleared.
        moved = await admin.put(
            f"/api/knowledge-sources/{bad['id']}",
            json={"connection_config": {"dsn": dsn, "collection": "docs"}},
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["status"] == "registered" and moved.json()["last_error"] is None
        assert (await admin.post(f"/api/knowledge-sources/{bad['id']}/test")).json()["success"]
        renamed = await admin.patch(
            f"/api/knowledge-sources/{bad['id']}", json={"description": "same connection"}
        )
        assert renamed.json()["status"] == "connected"  # not a connection change
    finally:
        pg.drop_database(plain)


async def test_knowledge_source_test_of_qdrant(admin: httpx.AsyncClient, tmp_path: Path) -> None:
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as qm

    local = QdrantClient(path=str(tmp_path / "qdrant"))
    local.create_collection(
        "docs", vectors_config=qm.VectorParams(size=4, distance=qm.Distance.COSINE)
    )
    local.close()
    found = await create(
        admin,
        "knowledge-sources",
        source_type="vector_db",
        connection_config={"path": str(tmp_path / "qdrant"), "collection": "docs"},
    )
    body = (await admin.post(f"/api/knowledge-sources/{found['id']}/test")).json()
    assert body["success"] is True, body
    missing = await create(
        admin,
        "knowledge-sources",
        source_type="vector_db",
        connection_config={"path": str(tmp_path / "qdrant"), "collection": "nope"},
    )
    body = (await admin.post(f"/api/knowledge-sources/{missing['id']}/test")).json()
    assert body["success"] is False and "nope" in body["error"]
    assert (await admin.get(f"/api/knowledge-sources/{missing['id']}")).json()["status"] == "error"


async def test_knowledge_source_test_is_for_the_owner(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    source = await create(alice, "knowledge-sources")
    assert (await bob.post(f"/api/knowledge-sources/{source['id']}/test")).status_code == 404


# --- §1.8 knowledge items -----------------------------------------------------------------
async def test_knowledge_items_query_by_tags(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    source = await create(alice, "knowledge-sources", source_type="mongo_db")
    tag = uniq("tag")
    made = []
    for n, tags in enumerate([[tag, "x"], [tag], ["other"]]):
        made.append(
            await post(
                alice,
                "/api/knowledge-items",
                {
                    "source_id": source["id"],
                    "name": f"n{n}",
                    "text_content": f"Item {n} text.",
                    "metadata": {"origin": "compat"},
                    "tags": tags,
                },
            )
        )
    assert made[0]["metadata"]["origin"] == "compat"  # the create body's metadata is kept
    resp = await alice.post("/api/knowledge-items/query", json={"tags": [tag, "nothing"]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"items"}
    for item in body["items"]:
        has(KNOWLEDGE_ITEM, item)
    assert {i["id"] for i in body["items"]} == {made[0]["id"], made[1]["id"]}
    one = (await alice.post("/api/knowledge-items/query", json={"tags": [tag], "limit": 1})).json()
    assert len(one["items"]) == 1
    assert (await bob.post("/api/knowledge-items/query", json={"tags": [tag]})).json() == {
        "items": []
    }
    assert (await alice.post("/api/knowledge-items/query", json={"limit": 2})).status_code == 422


async def test_knowledge_item_upload_with_existing_form_fields(alice: httpx.AsyncClient) -> None:
    source = await create(alice, "knowledge-sources", source_type="mongo_db")
    text = b"Runbook: restart the ingest worker with `systemctl restart ingest`.\n"
    resp = await alice.post(
        "/api/knowledge-items/upload",
        data={
            "source_id": source["id"],
            "tags": json.dumps(["runbook", "ops"]),
            "metadata": json.dumps({"team": "sre", "rev": 2}),
        },
        files={"file": ("runbook.txt", text, "text/plain")},
    )
    assert resp.status_code == 201, resp.text
    item = resp.json()
    has(KNOWLEDGE_ITEM, item)
    assert item["tags"] == ["runbook", "ops"]
    assert {k: item["metadata"][k] for k in ("team", "rev")} == {"team": "sre", "rev": 2}
    assert (item["content_type"], item["file_name"], item["file_size"]) == (
        "file",
        "runbook.txt",
        len(text),
    )
    assert item["mime_type"].startswith("text/plain")

    # The docs' `tags=runbook,ops` (a 400 in the existing system) is accepted too.
    comma = await alice.post(
        "/api/knowledge-items/upload",
        data={"source_id": source["id"], "tags": "a, b,,a"},
        files={"file": ("other.txt", b"Another file with words.", "text/plain")},
    )
    assert comma.status_code == 201, comma.text
    assert comma.json()["tags"] == ["a", "b"]

    content = await alice.get(f"/api/knowledge-items/{item['id']}/content")
    assert content.status_code == 200 and content.content == text
    assert 'filename="runbook.txt"' in content.headers["content-disposition"]

    for field, value, needle in (
        ("metadata", "{not json", "metadata"),
        ("metadata", "[1, 2]", "JSON object"),
        ("tags", '["a", 1]', "tags"),
    ):
        bad = await alice.post(
            "/api/knowledge-items/upload",
            data={"source_id": source["id"], field: value},
            files={"file": ("bad.txt", b"Some words here.", "text/plain")},
        )
        assert bad.status_code == 422, (field, value, bad.text)
        assert needle in error_message(bad)


# --- §1.10 memories -----------------------------------------------------------------------
async def test_memory_upsert_list_and_ttl(alice: httpx.AsyncClient) -> None:
    agent = await create(alice, "agents")
    body = {"agent_id": agent["id"], "scope": "agent", "key": "colour", "value": "teal"}
    first = await alice.post("/api/memories", json={**body, "embedding": None, "metadata": {}})
    assert first.status_code == 201, first.text
    memory = first.json()
    has(MEMORY, memory)
    assert "embedding" not in memory
    again = await alice.post(
        "/api/memories", json={**body, "value": "amber", "embedding": [0.1, 0.2]}
    )
    assert again.status_code == 201
    assert again.json()["id"] == memory["id"] and again.json()["value"] == "amber"
    assert "embedding" not in again.json()

    expiry = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    timed = await alice.post(
        "/api/memories",
        json={
            "agent_id": agent["id"],
            "scope": "global",
            "key": "deadline",
            "value": "Friday",
            "ttl": expiry.isoformat(),
            "metadata": {"tags": ["plans"]},
        },
    )
    assert timed.status_code == 201, timed.text
    assert datetime.fromisoformat(timed.json()["ttl"]) == expiry
    past = await alice.post(
        "/api/memories",
        json={**body, "key": "old", "ttl": (datetime.now(UTC) - timedelta(hours=1)).isoformat()},
    )
    assert past.status_code == 422 and "past" in error_message(past)
    # scope session: the existing clients keep the workflow in metadata.workflow_id
    session = await alice.post(
        "/api/memories",
        json={**body, "scope": "session", "key": "draft", "metadata": {"workflow_id": "wf-1"}},
    )
    assert session.status_code == 201, session.text
    assert session.json()["session_id"] == "wf-1"

    listed = rows(await alice.get("/api/memories", params={"agent_id": agent["id"]}))
    assert {m["key"] for m in listed} == {"colour", "deadline", "draft"}
    assert all("embedding" not in m for m in listed)
    scoped = rows(
        await alice.get("/api/memories", params={"agent_id": agent["id"], "scope": "global"})
    )
    assert [m["key"] for m in scoped] == ["deadline"]


async def test_memory_put_reembeds_and_search(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    agent = await create(alice, "agents")
    memory = await post(
        alice,
        "/api/memories",
        {"agent_id": agent["id"], "scope": "agent", "key": "home", "value": "Lisbon"},
    )
    await post(
        alice,
        "/api/memories",
        {"agent_id": agent["id"], "scope": "global", "key": "hq", "value": "Lisbon office"},
    )
    await post(alice, "/api/memories", {"agent_id": agent["id"], "key": "pet", "value": "a cat"})

    found = await alice.post(
        "/api/memories/search", json={"agent_id": agent["id"], "query": "Lisbon"}
    )
    assert found.status_code == 200, found.text
    hits = found.json()
    assert isinstance(hits, list)
    for hit in hits:
        has(MEMORY, hit)
        assert "embedding" not in hit
    assert {h["key"] for h in hits} == {"home", "hq"}
    scoped = (
        await alice.post(
            "/api/memories/search",
            json={"agent_id": agent["id"], "query": "Lisbon", "scope": "agent"},
        )
    ).json()
    assert [h["key"] for h in scoped] == ["home"]
    one = (
        await alice.post(
            "/api/memories/search", json={"agent_id": agent["id"], "query": "Lisbon", "limit": 1}
        )
    ).json()
    assert len(one) == 1
    semantic = (
        await alice.post(
            "/api/memories/search",
            json={"agent_id": agent["id"], "query": "cat", "mode": "semantic", "limit": 3},
        )
    ).json()
    assert semantic[0]["key"] == "pet"

    put = await alice.put(
        f"/api/memories/{memory['id']}", json={"value": "Porto", "key": "home_city"}
    )
    assert put.status_code == 200, put.text
    assert (put.json()["id"], put.json()["key"], put.json()["value"]) == (
        memory["id"],
        "home_city",
        "Porto",
    )
    assert "embedding" not in put.json()
    # The vector moved with the row: the new value is found, the old one no longer.
    porto = (
        await alice.post("/api/memories/search", json={"agent_id": agent["id"], "query": "Porto"})
    ).json()
    assert [h["id"] for h in porto] == [memory["id"]]
    lisbon = (
        await alice.post("/api/memories/search", json={"agent_id": agent["id"], "query": "Lisbon"})
    ).json()
    assert memory["id"] not in [h["id"] for h in lisbon]

    clash = await alice.put(f"/api/memories/{memory['id']}", json={"key": "pet"})
    assert clash.status_code == 409, clash.text
    assert (await bob.put(f"/api/memories/{memory['id']}", json={"value": "x"})).status_code == 404
    assert (
        await bob.post("/api/memories/search", json={"agent_id": agent["id"], "query": "Porto"})
    ).status_code == 422
    assert (
        await alice.post("/api/memories/search", json={"agent_id": agent["id"]})
    ).status_code == 422
    assert (await alice.delete(f"/api/memories/{memory['id']}")).status_code == 204
    gone = (
        await alice.post("/api/memories/search", json={"agent_id": agent["id"], "query": "Porto"})
    ).json()
    assert gone == []


async def test_memory_short_term_newest_first(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    agent = await create(alice, "agents")
    ids = {}
    for key in ("first", "second", "third"):
        made = await post(
            alice, "/api/memories", {"agent_id": agent["id"], "key": key, "value": key}
        )
        ids[key] = made["id"]
    await alice.put(f"/api/memories/{ids['first']}", json={"value": "touched"})
    resp = await alice.get(f"/api/memories/stm/{agent['id']}")
    assert resp.status_code == 200, resp.text
    stm = resp.json()
    assert [m["key"] for m in stm] == ["first", "third", "second"]
    for entry in stm:
        has(MEMORY, entry)
        assert "embedding" not in entry
    assert [
        m["key"] for m in (await alice.get(f"/api/memories/stm/{agent['id']}?limit=1")).json()
    ] == ["first"]
    assert (await bob.get(f"/api/memories/stm/{agent['id']}")).status_code == 404
    empty = await create(alice, "agents")
    assert (await alice.get(f"/api/memories/stm/{empty['id']}")).json() == []


# --- §1.11 models -------------------------------------------------------------------------
KEY = "sk-compat-models-3f9a"


class _Models(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        data: list[dict[str, Any]] | None = None
        if self.path == "/v1/models" and self.headers.get("Authorization") == f"Bearer {KEY}":
            data = [
                {
                    "id": "gpt-x",
                    "name": "GPT X",
                    "capabilities": {
                        "supports": {"vision": True},
                        "limits": {"max_prompt_tokens": 9},
                    },
                    "billing": {"multiplier": 1.5},
                    "policy": {"state": "enabled", "terms": "t"},
                },
                {"id": "plain", "object": "model", "owned_by": "me", "created": 1},
            ]
        elif (
            self.path == "/anthropic/v1/models?limit=1000"
            and self.headers.get("x-api-key") == KEY
            and self.headers.get("anthropic-version")
        ):
            data = [{"id": "claude-x", "display_name": "Claude X", "type": "model"}]
        elif (
            self.path == "/azure/openai/models?api-version=2024-12-01-preview"
            and self.headers.get("api-key") == KEY
        ):
            data = [{"id": "gpt-4o", "object": "model"}]
        body = json.dumps({"data": data}).encode() if data is not None else b'{"error": "no"}'
        self.send_response(200 if data is not None else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def models_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_models_of_a_provider(admin: httpx.AsyncClient, models_api: str) -> None:
    key = await token(admin, KEY)
    copilot_like = await create(
        admin, "providers", provider_type="openai", base_url=f"{models_api}/v1", api_key_token_name=key,
        default_model="plain",
    )  # fmt: skip
    resp = await admin.get("/api/models", params={"provider_id": copilot_like["id"]})
    assert resp.status_code == 200, resp.text
    models = {m["id"]: m for m in resp.json()}
    assert set(models) == {"gpt-x", "plain"}
    for model in models.values():
        has(MODEL_INFO, model)
        assert model["provider_id"] == copilot_like["id"]
    assert models["gpt-x"]["name"] == "GPT X"
    assert models["gpt-x"]["capabilities"]["supports"]["vision"] is True
    assert models["gpt-x"]["capabilities"]["limits"] == {"max_prompt_tokens": 9}
    assert models["gpt-x"]["billing"] == {"multiplier": 1.5}
    assert models["gpt-x"]["policy"]["state"] == "enabled"
    assert models["plain"]["name"] == "plain" and models["plain"]["owned_by"] == "me"
    assert models["plain"]["capabilities"] == {"supports": {"vision": False}, "limits": {}}
    assert models["plain"]["is_default"] is True
    assert KEY not in resp.text

    claude = await create(
        admin, "providers", provider_type="anthropic", base_url=f"{models_api}/anthropic/v1",
        api_key_token_name=key,
    )  # fmt: skip
    listed = (await admin.get("/api/models", params={"provider_id": claude["id"]})).json()
    assert [(m["id"], m["name"], m["provider_type"]) for m in listed] == [
        ("claude-x", "Claude X", "anthropic")
    ]
    azure = await create(
        admin, "providers", provider_type="azure_openai", base_url=f"{models_api}/azure",
        api_key_token_name=key, azure_deployment="gpt-4o",
    )  # fmt: skip
    listed = (await admin.get("/api/models", params={"provider_id": azure["id"]})).json()
    assert [m["id"] for m in listed] == ["gpt-4o"]

    refused = await create(admin, "providers", provider_type="custom", base_url=f"{models_api}/v1")
    failed = await admin.get("/api/models", params={"provider_id": refused["id"]})
    assert failed.status_code == 502, failed.text  # no key: the provider answers 401
    assert "401" in error_message(failed)
    assert (await admin.get("/api/models", params={"provider_id": "nope"})).status_code == 404


async def test_models_without_a_provider_are_the_configured_ones(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    mine = await create(alice, "providers", models=["m1", "m2"], default_model="m2")
    resp = await alice.get("/api/models")
    assert resp.status_code == 200, resp.text
    listed = [m for m in resp.json() if m["provider_id"] == mine["id"]]
    assert [(m["id"], m["is_default"]) for m in listed] == [("m1", False), ("m2", True)]
    for model in listed:
        has(MODEL_INFO, model)
    assert all(m["provider_id"] != mine["id"] for m in (await bob.get("/api/models")).json())


# --- the same routes on the MongoDB backend -----------------------------------------------
@pytest.fixture(scope="module")
async def mongo_api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Any, Any]]:
    store = await make_mongo_store()
    settings = make_settings(
        tmp_path_factory.mktemp("mongo-compat"), db_backend="mongo", postgres_uri=None
    )
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        yield app, store
    await store.close()


async def _mongo_client(mongo_api: tuple[Any, Any], owner: str) -> httpx.AsyncClient:
    app, store = mongo_api
    async with store.unit_of_work() as repos:
        key = (await ApiKeys(repos).create(owner, scope=KeyScope.USER)).plaintext
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://m",
        headers={"Authorization": f"Bearer {key}"},
    )


async def test_the_routes_on_mongo(mongo_api: tuple[Any, Any]) -> None:
    async with await _mongo_client(mongo_api, "mongo-ann") as ann:
        source = await create(ann, "knowledge-sources", source_type="mongo_db")
        tested = (await ann.post(f"/api/knowledge-sources/{source['id']}/test")).json()
        assert tested["success"] is True
        assert (await ann.get(f"/api/knowledge-sources/{source['id']}")).json()[
            "status"
        ] == "connected"
        uploaded = await ann.post(
            "/api/knowledge-items/upload",
            data={"source_id": source["id"], "tags": '["ops"]', "metadata": '{"k": 1}'},
            files={"file": ("n.txt", b"Rotate the pager weekly.", "text/plain")},
        )
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["metadata"]["k"] == 1
        queried = (await ann.post("/api/knowledge-items/query", json={"tags": ["ops"]})).json()
        assert [i["id"] for i in queried["items"]] == [uploaded.json()["id"]]

        agent = await create(ann, "agents")
        memory = await post(
            ann, "/api/memories", {"agent_id": agent["id"], "key": "city", "value": "Lisbon"}
        )
        await post(ann, "/api/memories", {"agent_id": agent["id"], "key": "pet", "value": "a cat"})
        put = await ann.put(f"/api/memories/{memory['id']}", json={"value": "Porto"})
        assert put.status_code == 200, put.text
        hits = (
            await ann.post("/api/memories/search", json={"agent_id": agent["id"], "query": "Porto"})
        ).json()
        assert [h["id"] for h in hits] == [memory["id"]]
        stm = (await ann.get(f"/api/memories/stm/{agent['id']}")).json()
        assert [m["key"] for m in stm] == ["city", "pet"]

        tool = await create(
            ann, "custom-tools", source_code="def run():\n  return 1\n", env_config={"K": "v"}
        )
        key = await token(ann)
        mapped = await ann.put(
            f"/api/custom-tools/{tool['id']}/env-mapping", json={"env_var_mapping": {"K": key}}
        )
        assert mapped.status_code == 200, mapped.text
        assert mapped.json()["env_vars"][0]["current_token"] == key
        server = await post(
            ann,
            "/api/mcps",
            {
                "name": uniq("mcp"),
                "connection_config": {
                    "command": sys.executable,
                    "args": [str(SERVERS / "demo_mcp.py"), "stdio"],
                },
            },
        )
        saved = await ann.put(f"/api/mcps/{server['id']}/tools", json={"allowed_tools": ["add"]})
        assert saved.json() == {"allowed_tools": ["add"]}
