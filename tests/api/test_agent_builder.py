"""The agent builder's routes on both backends: versions recorded at every save (numbered by the
agent's record version, with changed fields and who saved), one version with its snapshot,
restore (a new version; If-Match honoured), versions deleted with the agent; the context view
(system prompt sections and tool definitions with token counts, a draft applied unsaved, a bad
draft refused); a preview chat turn that runs the unsaved draft against a local model server
and stores no chat session."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tbd_agents.api import create_app
from tbd_agents.domain.auth import KeyScope
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.api.conftest import make_settings
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.support.mongo import make_mongo_store


@pytest.fixture(scope="module")
def model_server() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["postgres", "mongo"])
async def app_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[FastAPI, Any]]:
    if request.param == "postgres":
        url = request.getfixturevalue("api_db")
        store: Any = PostgresStore(create_engine(url, pool_size=4, max_overflow=4), url=url)
        settings = make_settings(
            tmp_path_factory.mktemp("builder"), outbound_allowed_hosts="127.0.0.1"
        )
    else:
        store = await make_mongo_store()
        settings = make_settings(
            tmp_path_factory.mktemp("builder-mongo"),
            db_backend="mongo",
            postgres_uri=None,
            outbound_allowed_hosts="127.0.0.1",
        )
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        yield app, store
    await store.close()


async def _client(app_store: tuple[FastAPI, Any], owner: str | None = None) -> httpx.AsyncClient:
    app, store = app_store
    async with store.unit_of_work() as repos:
        key = (
            await ApiKeys(repos).create(owner or f"u-{uuid.uuid4().hex[:6]}", scope=KeyScope.USER)
        ).plaintext
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://b",
        headers={"Authorization": f"Bearer {key}"},
    )


async def _agent(client: httpx.AsyncClient, model_server: ProtocolServer) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:6]
    token = await client.post("/api/tokens", json={"name": f"k-{suffix}", "value": "sk-local"})
    assert token.status_code == 201, token.text
    provider = await client.post(
        "/api/providers",
        json={"name": f"p-{suffix}", "provider_type": "custom",
              "base_url": f"{model_server.url}/v1", "api_key_token_name": f"k-{suffix}",
              "default_model": "llama3.1"},
    )  # fmt: skip
    assert provider.status_code == 201, provider.text
    agent = await client.post(
        "/api/agents",
        json={"name": f"a-{suffix}", "system_prompt": "Prompt one.",
              "provider_id": provider.json()["id"], "builtin_tools": ["update_todos"]},
    )  # fmt: skip
    assert agent.status_code == 201, agent.text
    return dict(agent.json())


async def test_versions_are_recorded_listed_restored_and_deleted(
    app_store: tuple[FastAPI, Any], model_server: ProtocolServer
) -> None:
    async with await _client(app_store, "vera") as vera, await _client(app_store) as other:
        agent = await _agent(vera, model_server)
        path = f"/api/agents/{agent['id']}"
        assert (await vera.put(path, json={"system_prompt": "Prompt two."})).status_code == 200
        third = await vera.patch(path, json={"temperature": 0.5, "description": "d"})
        assert third.status_code == 200
        listed = (await vera.get(f"{path}/versions")).json()
        assert [v["number"] for v in listed] == [3, 2, 1]
        assert listed[0]["changed_fields"] == ["description", "temperature"]
        assert listed[1]["changed_fields"] == ["system_prompt"]
        assert listed[2]["summary"] == "created" and "name" in listed[2]["changed_fields"]
        assert {v["github_user"] for v in listed} == {"vera"}
        one = (await vera.get(f"{path}/versions/1")).json()
        assert one["snapshot"]["system_prompt"] == "Prompt one."
        assert "id" not in one["snapshot"] and "created_by" not in one["snapshot"]
        # Another user sees neither the agent nor its versions.
        assert (await other.get(f"{path}/versions")).status_code == 404
        assert (await other.post(f"{path}/versions/1/restore")).status_code == 404
        assert (await vera.get(f"{path}/versions/9")).status_code == 404
        # A restore naming a stale version changes nothing.
        stale = await vera.post(f"{path}/versions/1/restore", headers={"If-Match": '"2"'})
        assert stale.status_code == 412
        restored = await vera.post(f"{path}/versions/1/restore", headers={"If-Match": '"3"'})
        assert restored.status_code == 200, restored.text
        body = restored.json()
        assert body["system_prompt"] == "Prompt one." and body["temperature"] is None
        assert restored.headers["etag"] == '"4"'
        newest = (await vera.get(f"{path}/versions")).json()[0]
        assert newest["number"] == 4 and newest["summary"] == "restored from 1"
        assert newest["changed_fields"] == ["description", "system_prompt", "temperature"]
        # Deleting the agent deletes its versions.
        assert (await vera.delete(path)).status_code == 204
        _, store = app_store
        from tbd_agents.domain.versions import AgentVersion
        from tbd_agents.storage.protocol import eq

        async with store.unit_of_work() as repos:
            left = await repos.for_model(AgentVersion).count(eq("agent_id", agent["id"]))
        assert left == 0


async def test_context_shows_sections_with_token_counts_and_applies_a_draft(
    app_store: tuple[FastAPI, Any], model_server: ProtocolServer
) -> None:
    async with await _client(app_store) as client:
        agent = await _agent(client, model_server)
        path = f"/api/agents/{agent['id']}/context"
        stored = await client.post(path, json={})
        assert stored.status_code == 200, stored.text
        ctx = stored.json()
        kinds = [p["kind"] for p in ctx["parts"]]
        assert kinds[0] == "prompt" and kinds[-1] == "format"
        assert ctx["parts"][0]["text"] == "Prompt one."
        assert all(p["tokens"] > 0 for p in ctx["parts"])
        assert [t["name"] for t in ctx["tools"]] == ["update_todos"]
        assert ctx["tools"][0]["tokens"] > 0
        assert ctx["total_tokens"] == ctx["system_tokens"] + ctx["tool_tokens"]
        assert ctx["context_window"] > 0 and ctx["model"] == "llama3.1"
        long_prompt = "Be precise and cite every source you use. " * 20
        drafted = (await client.post(path, json={"draft": {"system_prompt": long_prompt}})).json()
        assert drafted["parts"][0]["text"] == long_prompt.strip()
        assert drafted["parts"][0]["tokens"] > ctx["parts"][0]["tokens"] + 100
        # The draft was not saved.
        saved = (await client.get(f"/api/agents/{agent['id']}")).json()
        assert saved["system_prompt"] == "Prompt one."
        bad = await client.post(path, json={"draft": {"temperature": 9}})
        assert bad.status_code == 422
        assert "temperature" in bad.json()["error"]["message"]


async def test_preview_chat_runs_the_draft_and_stores_nothing(
    app_store: tuple[FastAPI, Any], model_server: ProtocolServer
) -> None:
    async with await _client(app_store) as client:
        agent = await _agent(client, model_server)
        model_server.reset()
        model_server.script(Turn(text="Draft answer."))
        body = {
            "draft": {"system_prompt": "You are the DRAFT prompt."},
            "message": "Hi again",
            "history": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
            ],
        }
        answer = await client.post(f"/api/agents/{agent['id']}/preview-chat", json=body)
        assert answer.status_code == 200
        events = [
            json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")
        ]
        types = [e["type"] for e in events]
        assert types[0] == "preview" and types[-1] == "done", types
        assert "".join(e["content"] for e in events if e["type"] == "delta") == "Draft answer."
        sent = model_server.requests[-1].conversation()
        assert sent[0]["role"] == "system" and "You are the DRAFT prompt." in sent[0]["text"]
        assert [m["role"] for m in sent[1:]] == ["user", "assistant", "user"]
        assert sent[-1]["text"] == "Hi again"
        sessions = await client.get(f"/api/agents/{agent['id']}/chat/sessions")
        assert sessions.json() == []
        saved = (await client.get(f"/api/agents/{agent['id']}")).json()
        assert saved["system_prompt"] == "Prompt one."
        refused = await client.post(
            f"/api/agents/{agent['id']}/preview-chat",
            json={**body, "history": [{"role": "system", "content": "x"}]},
        )
        assert refused.status_code == 422


async def test_concurrent_saves_get_distinct_version_numbers(
    app_store: tuple[FastAPI, Any], model_server: ProtocolServer
) -> None:
    async with await _client(app_store) as client:
        agent = await _agent(client, model_server)
        path = f"/api/agents/{agent['id']}"
        answers = await asyncio.gather(
            *(client.patch(path, json={"description": f"edit {i}"}) for i in range(6))
        )
        assert [a.status_code for a in answers] == [200] * 6
        listed = (await client.get(f"{path}/versions")).json()
        assert sorted(v["number"] for v in listed) == list(range(1, 8))
        final = (await client.get(path)).json()
        newest = (await client.get(f"{path}/versions/{listed[0]['number']}")).json()
        assert newest["number"] == final["version"]
        assert newest["snapshot"]["description"] == final["description"]
