"""Minimal valid records for every resource, created over HTTP (parents first)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx


def uniq(prefix: str = "n") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Resource:
    path: str
    patch: dict[str, Any]  # a change every record of the resource accepts


RESOURCES: dict[str, Resource] = {
    "agents": Resource("/api/agents", {"description": "changed"}),
    "skills": Resource("/api/skills", {"description": "changed"}),
    "mcps": Resource("/api/mcps", {"description": "changed"}),
    "custom-tools": Resource("/api/custom-tools", {"description": "changed"}),
    "guardrails": Resource("/api/guardrails", {"description": "changed"}),
    "providers": Resource("/api/providers", {"default_model": "changed"}),
    "tokens": Resource("/api/tokens", {"description": "changed"}),
    "knowledge-sources": Resource("/api/knowledge-sources", {"description": "changed"}),
    "knowledge-items": Resource("/api/knowledge-items", {"name": "changed"}),
    "memories": Resource("/api/memories", {"value": "changed"}),
    "workflows": Resource("/api/workflows", {"description": "changed"}),
    "scheduled-agents": Resource("/api/scheduled-agents", {"prompt": "changed"}),
    "chat-sessions": Resource("/api/chat/sessions", {"title": "changed"}),
}


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def body_for(
    client: httpx.AsyncClient, name: str, given: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A valid create body for resource `name`, creating the parents it needs (unless `given`
    names them)."""
    given = given or {}
    if name in ("agents", "skills", "custom-tools", "guardrails", "knowledge-sources"):
        return {"name": uniq(name), "tags": ["t1"]}
    if name == "mcps":
        return {"name": uniq("mcp"), "connection_config": {"command": "echo"}, "tags": ["t1"]}
    if name == "providers":
        return {"name": uniq("prov"), "provider_type": "openai"}
    if name == "tokens":
        return {"name": uniq("tok"), "value": "not-a-real-secret"}
    if name == "knowledge-items":
        source_id = given.get("source_id") or (await create(client, "knowledge-sources"))["id"]
        return {"source_id": source_id, "name": "item", "text_content": "hello", "tags": ["t1"]}
    if name in ("memories", "workflows", "chat-sessions"):
        agent_id = given.get("agent_id") or (await create(client, "agents"))["id"]
        extra = {"key": uniq("k")} if name == "memories" else {}
        return {"agent_id": agent_id, **extra}
    if name == "scheduled-agents":
        workflow_id = given.get("workflow_id") or (await create(client, "workflows"))["id"]
        return {"workflow_id": workflow_id, "name": uniq("sched")}
    raise KeyError(name)


async def create(client: httpx.AsyncClient, resource: str, **overrides: Any) -> dict[str, Any]:
    body = await body_for(client, resource, overrides)
    body.update(overrides)
    return await post(client, RESOURCES[resource].path, body)
