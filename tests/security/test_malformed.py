"""L1: malformed input is a 4xx naming the field, never a 500 — sent over HTTP to the real app on
an embedded PostgreSQL 18 (integers beyond 32/64 bits, NUL characters outside bodies, unbounded
Last-Event-ID, URLs and headers HTTP cannot carry, impossible MCP timeouts)."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from tbd_agents.api.schemas import INT4_MAX, create_schema, update_schema
from tbd_agents.domain.models import (
    ENTITIES,
    Agent,
    CustomTool,
    Entity,
    ScheduledAgent,
    TaskExecution,
    Workflow,
)
from tests.api.conftest import Api, admin, alice, api, api_db  # noqa: F401
from tests.api.factory import body_for, create, post, uniq

BIG = [2**31, 2**63, 2**64 + 1, 10**30]


def _int_fields(schema: type[BaseModel]) -> list[str]:
    props = schema.model_json_schema()["properties"]
    return [
        name
        for name, prop in props.items()
        if "integer" in str([prop.get("type"), *(p.get("type") for p in prop.get("anyOf", []))])
    ]


def test_every_request_integer_is_bounded_to_int4() -> None:
    """Walk the request models: every integer field (all are PostgreSQL `integer` columns) has a
    maximum no larger than 2**31-1 and a minimum, so nothing reaches the driver out of range."""
    seen = 0
    for model in ENTITIES:
        for schema in (create_schema(model), update_schema(model)):
            for name in _int_fields(schema):
                prop = schema.model_json_schema()["properties"][name]
                bounds = prop.get("anyOf", [prop])[0]
                assert bounds.get("maximum", math.inf) <= INT4_MAX, (schema.__name__, name)
                assert "minimum" in bounds, (schema.__name__, name)
                seen += 1
    assert seen >= 10


ROUTES: dict[str, tuple[str, type[Entity]]] = {
    "agents": ("/api/agents", Agent),
    "workflows": ("/api/workflows", Workflow),
    "scheduled-agents": ("/api/scheduled-agents", ScheduledAgent),
    "custom-tools": ("/api/custom-tools", CustomTool),
}


async def _body(client: httpx.AsyncClient, resource: str) -> dict[str, Any]:
    if resource == "tasks":
        return {"workflow_id": (await create(client, "workflows"))["id"]}
    return await body_for(client, resource)


@pytest.mark.parametrize("value", BIG, ids=["2^31", "2^63", "2^64+1", "1e30"])
async def test_oversized_integers_are_422(admin: httpx.AsyncClient, value: int) -> None:  # noqa: F811
    for resource, (path, model) in ROUTES.items():
        for field in _int_fields(create_schema(model)):
            body = {**await _body(admin, resource), field: value}
            got = await admin.post(path, json=body)
            assert got.status_code == 422, (path, field, got.status_code, got.text)
            assert field in got.text
        record = await admin.post(path, json=await _body(admin, resource))
        if record.status_code != 201:
            continue  # tasks are created by runs only
        for field in _int_fields(update_schema(model)):
            got = await admin.patch(f"{path}/{record.json()['id']}", json={field: value})
            assert got.status_code == 422, (path, field, got.status_code, got.text)


@pytest.fixture
async def task_id(api: Api, alice: httpx.AsyncClient) -> str:  # noqa: F811
    workflow = await create(alice, "workflows")
    async with api.store.unit_of_work() as repos:
        task = await repos.for_model(TaskExecution).create(
            TaskExecution(workflow_id=workflow["id"], prompt="x")
        )
    return task.id


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"last_event_id": str(2**31)}, {}),
        ({"last_event_id": str(2**63)}, {}),
        ({"last_event_id": "9" * 5000}, {}),
        ({}, {"Last-Event-ID": str(2**31)}),
        ({}, {"Last-Event-ID": str(2**64)}),
        ({}, {"Last-Event-ID": "9" * 5000}),
        ({}, {"Last-Event-ID": "12abc"}),
        ({}, {"Last-Event-ID": "-1"}),
    ],
    ids=["q2^31", "q2^63", "q5000", "h2^31", "h2^64", "h5000", "h-text", "h-neg"],
)
async def test_last_event_id_out_of_range(
    alice: httpx.AsyncClient,  # noqa: F811
    task_id: str,
    params: dict[str, str],
    headers: dict[str, str],
) -> None:
    got = await alice.get(f"/api/tasks/{task_id}/events", params=params, headers=headers)
    assert got.status_code in (400, 422), got.text
    assert "last_event_id" in got.text.lower() or "last-event-id" in got.text.lower()


async def test_nul_in_run_prompt_and_query_parameters(
    alice: httpx.AsyncClient,  # noqa: F811
) -> None:
    workflow = await create(alice, "workflows")
    got = await alice.post(f"/api/workflows/{workflow['id']}/runs", json={"prompt": "a\x00b"})
    assert got.status_code == 422 and "prompt" in got.text, got.text
    agent = await post(alice, "/api/agents", {"name": uniq("a")})
    for mode in ("keyword", "semantic"):
        got = await alice.get(
            "/api/memories/search", params={"agent_id": agent["id"], "q": "x\x00y", "mode": mode}
        )
        assert got.status_code == 422 and "'q'" in got.text, got.text
    got = await alice.get("/api/agents", params={"name": "a\x00"})
    assert got.status_code == 422, got.text
    got = await alice.get("/api/agents/a%00b")
    assert got.status_code == 422, got.text


BAD_PROVIDERS: list[dict[str, Any]] = [
    {"base_url": "http://example.com/\r\nX-Injected: 1"},
    {"base_url": "http://exämple\u2603.com:99999/v1"},
    {"base_url": "ftp://example.com"},
    {"extra_headers": {"X-Org": "caf\u00e9 \u2603"}},
    {"extra_headers": {"X-Org": "a\r\nX-Injected: 1"}},
    {"extra_headers": {"Bad Name": "v"}},
]


@pytest.mark.parametrize("fields", BAD_PROVIDERS)
async def test_provider_urls_and_headers_refused_at_save(
    alice: httpx.AsyncClient,  # noqa: F811
    fields: dict[str, Any],
) -> None:
    body = {"name": uniq("p"), "provider_type": "custom", "base_url": "http://models.example:9/v1"}
    got = await alice.post("/api/providers", json={**body, **fields})
    assert got.status_code == 422, got.text
    assert next(iter(fields)) in got.text
    ok = await post(alice, "/api/providers", body)
    got = await alice.patch(f"/api/providers/{ok['id']}", json=fields)
    assert got.status_code == 422, got.text


@pytest.mark.parametrize(
    "value", ["http://127.0.0.1:9/\r\nX: 1", "http://h\u2603st.invalid\u0000/"], ids=["crlf", "nul"]
)
async def test_model_refresh_with_unsendable_resolved_url(
    alice: httpx.AsyncClient,  # noqa: F811
    value: str,
) -> None:
    """The base_url is a token reference (accepted at save); the token's value cannot be sent."""
    token = await post(alice, "/api/tokens", {"name": uniq("u"), "value": value.replace("\0", "")})
    provider = await post(
        alice,
        "/api/providers",
        {
            "name": uniq("p"),
            "provider_type": "custom",
            "base_url": "{{token:" + token["name"] + "}}",
            "extra_headers": {"X-Org": "{{token:" + token["name"] + "}}"},
        },
    )
    got = await alice.get(f"/api/providers/{provider['id']}/models", params={"refresh": True})
    assert got.status_code == 422, got.text
    assert "base_url" in got.text


@pytest.mark.parametrize(
    "raw",
    ['"soon"', "-1", "0", "NaN", "Infinity", "1e309", "true", "1e9"],
)
async def test_mcp_timeouts_refused_at_save(alice: httpx.AsyncClient, raw: str) -> None:  # noqa: F811
    for key in ("connect_timeout", "call_timeout"):
        config = f'{{"command": "echo", "{key}": {raw}}}'
        text = f'{{"name": "{uniq("m")}", "connection_config": {config}}}'
        got = await alice.post(
            "/api/mcps", content=text, headers={"Content-Type": "application/json"}
        )
        assert got.status_code == 422, (raw, got.text)
        assert key in got.text


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-0.5", "2.5", "1e309"])
async def test_temperature_refused_at_save(alice: httpx.AsyncClient, raw: str) -> None:  # noqa: F811
    text = f'{{"name": "{uniq("a")}", "temperature": {raw}}}'
    got = await alice.post(
        "/api/agents", content=text, headers={"Content-Type": "application/json"}
    )
    assert got.status_code == 422, (raw, got.text)
    assert "temperature" in got.text
