"""Create / list / get / PUT / DELETE of every configuration resource, with the bodies the official
SDKs send (their `*Create` models dumped with `exclude_none`, so every defaulted field is present)
and the response fields their response models require (reference §1.2 to §1.17)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.api.factory import create, uniq

Body = dict[str, Any]


def _when(value: Any) -> bool:
    return (
        isinstance(value, str) and datetime.fromisoformat(value.replace("Z", "+00:00")) is not None
    )


#: Response fields the SDK models declare without a default (type checks) — plus those with one.
STR, OPT_STR, LIST, DICT, INT, BOOL, WHEN = (
    lambda v: isinstance(v, str),
    lambda v: v is None or isinstance(v, str),
    lambda v: isinstance(v, list),
    lambda v: isinstance(v, dict),
    lambda v: isinstance(v, int) and not isinstance(v, bool),
    lambda v: isinstance(v, bool),
    _when,
)
COMMON = {"id": STR, "created_at": WHEN, "updated_at": WHEN}


@dataclass(frozen=True)
class Case:
    path: str
    body: Callable[[httpx.AsyncClient], Awaitable[Body]]
    fields: dict[str, Callable[[Any], bool]]
    change: Body  # a PUT body as the SDK's *Update model sends it (exclude_none)


async def _skill(_: httpx.AsyncClient) -> Body:
    return {"name": uniq("skill"), "description": "", "instructions": "Be careful.", "tags": []}


async def _agent(_: httpx.AsyncClient) -> Body:
    return {
        "name": uniq("agent"),
        "description": "",
        "system_prompt": "You are a helpful assistant.",
        "mcp_server_ids": [],
        "mcp_server_tags": [],
        "tool_definitions": [],
        "knowledge_source_ids": [],
        "knowledge_tags": [],
        "builtin_tools": [],
        "custom_tool_ids": [],
    }


async def _mcp(_: httpx.AsyncClient) -> Body:
    return {
        "name": uniq("mcp"),
        "transport_type": "stdio",
        "connection_config": {"command": "python", "args": ["-V"], "env": {}},
        "allowed_tools": [],
        "tags": ["ops"],
    }


async def _source(_: httpx.AsyncClient) -> Body:
    return {
        "name": uniq("src"),
        "description": "",
        "source_type": "mongo_db",
        "connection_config": {},
        "tags": [],
    }


async def _item(client: httpx.AsyncClient) -> Body:
    source = await client.post("/api/knowledge-sources", json=await _source(client))
    return {
        "source_id": source.json()["id"],
        "name": "Runbook",
        "content_type": "text",
        "text_content": "Restart the service.",
        "tags": ["runbook"],
        "metadata": {},
    }


async def _provider(client: httpx.AsyncClient) -> Body:
    # The key's token exists first: unlike the existing system, a provider naming a token that
    # does not exist is refused (422) rather than failing at run time.
    token = await client.post("/api/tokens", json={"name": uniq("OPENAI_KEY"), "value": "sk-x"})
    return {
        "name": uniq("prov"),
        "provider_type": "openai",
        "api_key_token_name": token.json()["name"],
        "azure_api_version": "2024-12-01-preview",
        "description": "",
    }


async def _token(_: httpx.AsyncClient) -> Body:
    return {"name": uniq("TOK"), "value": "sk-test-0123456789abcdef", "description": ""}


async def _workflow(client: httpx.AsyncClient) -> Body:
    agent = await create(client, "agents", model="gpt-4.1")
    return {
        "agent_id": agent["id"],
        "output_format": "json",
        "skill_ids": [],
        "skill_tags": [],
        "infinite_session": True,
        "caveman": False,
        "bypass_memory": False,
        "auto_memory": False,
        "tsv_tool_results": False,
        "guardrail_ids": [],
        "guardrail_tags": [],
        "repository_ids": [],
        "repository_tags": [],
    }


async def _custom_tool(_: httpx.AsyncClient) -> Body:
    return {
        "name": uniq("tool").replace("-", "_"),
        "description": "Adds two numbers",
        "source_code": "def run(a: int, b: int) -> int:\n    return a + b\n",
        "parameters_schema": {},
        "env_config": {},
        "tags": [],
        "is_enabled": True,
    }


async def _guardrail(_: httpx.AsyncClient) -> Body:
    return {
        "name": uniq("guard"),
        "description": "",
        "guardrail_type": "output",
        "tags": [],
        "enabled": True,
        "output_config": {"blocked_patterns": ["(?i)password"]},
    }


CASES: dict[str, Case] = {
    "skills": Case(
        "/api/skills",
        _skill,
        {**COMMON, "name": STR, "description": STR, "instructions": STR, "tags": LIST},
        {"instructions": "Be very careful."},
    ),
    "agents": Case(
        "/api/agents",
        _agent,
        {
            **COMMON,
            "name": STR,
            "description": STR,
            "system_prompt": STR,
            "model": OPT_STR,
            "mcp_server_ids": LIST,
            "mcp_server_tags": LIST,
            "tool_definitions": LIST,
            "knowledge_source_ids": LIST,
            "knowledge_tags": LIST,
            "builtin_tools": LIST,
            "custom_tool_ids": LIST,
            "provider_id": OPT_STR,
        },
        {"model": "gpt-4.1"},
    ),
    "mcps": Case(
        "/api/mcps",
        _mcp,
        {
            **COMMON,
            "name": STR,
            "transport_type": STR,
            "connection_config": DICT,
            "allowed_tools": LIST,
            "tags": LIST,
            "status": STR,
            "last_error": OPT_STR,
        },
        {"allowed_tools": ["add"]},
    ),
    "knowledge-sources": Case(
        "/api/knowledge-sources",
        _source,
        {
            **COMMON,
            "name": STR,
            "description": STR,
            "source_type": STR,
            "connection_config": DICT,
            "tags": LIST,
            "status": STR,
            "last_error": OPT_STR,
        },
        {"description": "The team's notes"},
    ),
    "knowledge-items": Case(
        "/api/knowledge-items",
        _item,
        {
            **COMMON,
            "source_id": STR,
            "name": STR,
            "content_type": STR,
            "text_content": OPT_STR,
            "file_id": OPT_STR,
            "file_name": OPT_STR,
            "mime_type": OPT_STR,
            "tags": LIST,
            "metadata": DICT,
        },
        {"text_content": "Restart the service, then check the logs.", "tags": ["ops"]},
    ),
    "providers": Case(
        "/api/providers",
        _provider,
        {
            **COMMON,
            "name": STR,
            "provider_type": STR,
            "api_key_token_name": STR,
            "base_url": OPT_STR,
            "azure_api_version": STR,
            "azure_deployment": OPT_STR,
            "description": STR,
        },
        {"description": "OpenAI, team account"},
    ),
    "tokens": Case(
        "/api/tokens",
        _token,
        {
            **COMMON,
            "name": STR,
            "description": STR,
            "masked_value": STR,
            "created_by": STR,
        },
        {"description": "rotated"},
    ),
    "workflows": Case(
        "/api/workflows",
        _workflow,
        {
            **COMMON,
            "title": OPT_STR,
            "agent_id": STR,
            "github_user": STR,
            "model": STR,
            "max_turns": INT,
            "current_turn": INT,
            "session_id": OPT_STR,
            "skill_ids": LIST,
            "skill_tags": LIST,
            "status": STR,
            "output_format": STR,
            "infinite_session": BOOL,
            "caveman": BOOL,
            "bypass_memory": BOOL,
            "auto_memory": BOOL,
            "tsv_tool_results": BOOL,
            "reasoning_effort": OPT_STR,
            "guardrail_ids": LIST,
            "guardrail_tags": LIST,
            "repo_url": OPT_STR,
            "repo_branch": OPT_STR,
            "repo_token_name": OPT_STR,
            "repository_ids": LIST,
            "repository_tags": LIST,
            "logs": LIST,
            "messages": LIST,
            "task_count": INT,
            "last_task_status": OPT_STR,
            "last_task_at": OPT_STR,
        },
        {"title": "Nightly report", "caveman": True},
    ),
    "custom-tools": Case(
        "/api/custom-tools",
        _custom_tool,
        {
            **COMMON,
            "name": STR,
            "description": STR,
            "source_code": STR,
            "parameters_schema": DICT,
            "env_config": DICT,
            "tags": LIST,
            "is_enabled": BOOL,
            "is_plugin": BOOL,
        },
        {"description": "Adds two integers"},
    ),
    "guardrails": Case(
        "/api/guardrails",
        _guardrail,
        {
            **COMMON,
            "name": STR,
            "description": STR,
            "guardrail_type": STR,
            "tags": LIST,
            "enabled": BOOL,
        },
        {"enabled": False},
    ),
}


def _check_shape(name: str, record: Body) -> None:
    wrong = {
        field: record.get(field, "<missing>")
        for field, ok in CASES[name].fields.items()
        if field not in record or not ok(record[field])
    }
    assert not wrong, f"{name}: fields missing or of the wrong type: {wrong}"


@pytest.mark.parametrize("name", sorted(CASES))
async def test_the_sdk_lifecycle_of(
    alice: httpx.AsyncClient, admin: httpx.AsyncClient, name: str
) -> None:
    case = CASES[name]
    # stdio MCP servers run a command on the host: admins only (docs/api.md), so an admin's key.
    client = admin if name == "mcps" else alice
    body = await case.body(client)
    created = await client.post(case.path, json=body)
    assert created.status_code == 201, created.text
    record = created.json()
    _check_shape(name, record)
    for field, value in body.items():
        if field in ("value", "parameters_schema"):
            continue
        if isinstance(value, dict):  # the hub may add keys (e.g. an item's chunk count)
            assert value.items() <= record[field].items(), (field, record[field], value)
        else:
            assert record[field] == value, (field, record[field], value)

    listed = await client.get(case.path)
    assert listed.status_code == 200 and isinstance(listed.json(), list)
    found = [r for r in listed.json() if r["id"] == record["id"]]
    assert len(found) == 1
    _check_shape(name, found[0])

    got = await client.get(f"{case.path}/{record['id']}")
    assert got.status_code == 200
    _check_shape(name, got.json())

    changed = await client.put(f"{case.path}/{record['id']}", json=case.change)
    assert changed.status_code == 200, changed.text
    _check_shape(name, changed.json())
    for field, value in case.change.items():
        assert changed.json()[field] == value
    untouched = next(f for f in body if f not in case.change and f not in ("value",))
    assert changed.json()[untouched] == record[untouched]

    # A record sent back as it was read, with one change (what a GET-modify-PUT client does):
    # the read-only fields it carries are ignored, a token's masked value is not a new secret.
    echoed = {**changed.json(), **case.change}
    roundtrip = await client.put(f"{case.path}/{record['id']}", json=echoed)
    assert roundtrip.status_code == 200, roundtrip.text
    assert roundtrip.json()["updated_at"] >= changed.json()["updated_at"]
    for field, value in case.change.items():
        assert roundtrip.json()[field] == value
    if name == "tokens":
        assert roundtrip.json()["masked_value"] == record["masked_value"] != "********"

    deleted = await client.delete(f"{case.path}/{record['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    gone = await client.get(f"{case.path}/{record['id']}")
    assert gone.status_code == 404 and "not found" in gone.json()["detail"].lower()
