"""The runtime's HTTP endpoints and a chat turn on the MongoDB profile: the app on the MongoDB
store (in-process emulation) with Qdrant in local mode, requests through the ASGI transport.

- runs started over HTTP execute in the app (no Redis), their events stream as SSE and resume
  with Last-Event-ID, halts stop them, webhook secrets and schedule history answer;
- a chat turn with the agent engine gets the agent's memory and its knowledge source in its
  context (vector store from the factory: Qdrant), and so does a workflow run on the runtime.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tbd_agents.api import create_app
from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.enums import ProviderType
from tbd_agents.domain.models import Agent, KnowledgeSource, Provider, ScheduledAgent, Token
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.mongo.repository import MongoStore
from tests.api.conftest import make_settings
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.runtime.conftest import make_workflow
from tests.support.mongo import make_mongo_store

OWNER = "mongo-runtime-user"


def parse_sse(body: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in body.splitlines():
        if not line:
            if current:
                events.append(current)
            current = {}
        elif line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
    return events


async def sse(client: httpx.AsyncClient, path: str, **headers: str) -> list[dict[str, Any]]:
    """The whole SSE stream of a run (the ASGI transport hands it over once it has ended)."""
    response = await client.get(path, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_sse(response.text)


@asynccontextmanager
async def app_client(
    store: MongoStore, settings: Any, owner: str = OWNER
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(settings, store)
    async with app.router.lifespan_context(app):
        async with store.unit_of_work() as repos:
            key = (await ApiKeys(repos).create(owner, scope=KeyScope.USER, name="rt")).plaintext
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://mongo-runtime",
            headers={"Authorization": f"Bearer {key}"},
        ) as client:
            yield app, client


@pytest.fixture
async def store() -> AsyncIterator[MongoStore]:
    opened = await make_mongo_store()
    yield opened
    await opened.close()


async def test_runs_over_http_on_mongodb(store: MongoStore, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        db_backend="mongo",
        postgres_uri=None,
        run_executor="tests.runtime.scripted:build_executor",
        run_lease_seconds=3.0,
    )
    workflow = await make_workflow(store, owner=OWNER)
    other = await make_workflow(store, owner="someone-else")
    async with app_client(store, settings) as (app, client):
        runtime = app.state.ctx.services["runtime"]
        assert runtime.runs.backend == "mongo"

        started = await client.post(f"/api/workflows/{workflow}/runs", json={"prompt": "emit:3"})
        assert started.status_code == 202, started.text
        task_id = started.json()["id"]
        events = await sse(client, f"/api/tasks/{task_id}/events")
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        assert events[0]["data"]["status"] == "running"
        assert [e["data"]["text"] for e in events if e["event"] == "message_delta"] == [
            "d1",
            "d2",
            "d3",
        ]
        assert events[-1]["data"]["status"] == "completed"
        resumed = await sse(client, f"/api/tasks/{task_id}/events", **{"Last-Event-ID": "2"})
        assert resumed == events[2:]
        task = (await client.get(f"/api/tasks/{task_id}")).json()
        assert task["status"] == "completed" and task["response"] == "done: emit:3"

        marker = tmp_path / "blocking"
        blocking = await client.post(
            f"/api/workflows/{workflow}/prompt", json={"prompt": f"marker:{marker};block"}
        )
        assert blocking.status_code == 201, blocking.text
        blocking_id = blocking.json()["task_id"]
        stream = asyncio.create_task(sse(client, f"/api/workflows/{workflow}/stream"))
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert time.monotonic() < deadline, "the run never started"
            await asyncio.sleep(0.05)
        halted = await client.post(f"/api/tasks/{blocking_id}/halt")
        assert halted.status_code == 200 and halted.json()["result"] == "halting"
        live = await asyncio.wait_for(stream, 20)
        # The workflow stream speaks the existing format: data = {id, type, data, timestamp}.
        assert live[-1]["data"]["type"] == "status"
        assert live[-1]["data"]["data"]["status"] == "halted"
        assert (await client.post(f"/api/tasks/{blocking_id}/halt")).status_code == 409
        assert (await client.post(f"/api/workflows/{workflow}/halt")).status_code == 400
        reset = await client.post(f"/api/workflows/{workflow}/reset")
        assert reset.status_code == 200, reset.text
        assert reset.json()["tasks_aborted"] == 0

        secret = (await client.post(f"/api/workflows/{workflow}/webhook-secret")).json()
        again = (await client.post(f"/api/workflows/{workflow}/webhook-secret")).json()
        rotated = (
            await client.post(f"/api/workflows/{workflow}/webhook-secret?rotate=true")
        ).json()
        assert secret["secret"] == again["secret"] != rotated["secret"]
        assert (await client.get(f"/api/workflows/{workflow}/webhook-deliveries")).json() == []

        async with store.unit_of_work() as repos:
            schedule = await repos.scheduled_agents.create(
                ScheduledAgent(
                    workflow_id=workflow,
                    prompt="emit:1",
                    next_run_at=datetime.now(UTC) - timedelta(seconds=1),
                    github_user=OWNER,
                )
            )
        report = await runtime.scheduler().tick()
        [fired] = [c for c in report.fired if c.schedule_id == schedule.id]
        await sse(client, f"/api/tasks/{fired.task_id}/events")
        history = (await client.get(f"/api/scheduled-agents/{schedule.id}/history")).json()
        assert [(h["outcome"], h["task_status"]) for h in history] == [("fired", "completed")]

        assert (
            await client.post(f"/api/workflows/{other}/runs", json={"prompt": "x"})
        ).status_code == 404
        bad = await client.get(f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 422


@pytest.fixture(scope="module")
def model_server() -> Iterator[ProtocolServer]:
    server = ProtocolServer().start()
    yield server
    server.stop()


async def test_chat_and_runs_use_memory_and_knowledge_on_mongodb(
    store: MongoStore, tmp_path: Path, model_server: ProtocolServer
) -> None:
    settings = make_settings(
        tmp_path,
        db_backend="mongo",
        postgres_uri=None,
        outbound_allowed_hosts="127.0.0.1",  # the user's provider is the local scripted model
        run_lease_seconds=15.0,
    )
    value, version = KeyRingProvider(settings).cipher().encrypt("sk-mongo")
    async with store.unit_of_work() as repos:
        await repos.tokens.create(
            Token(name="k", encrypted_value=value, key_version=version, created_by=OWNER)
        )
        provider = await repos.providers.create(
            Provider(
                name="local-model",
                provider_type=ProviderType.OPENAI,
                api_key_token_name="k",
                base_url=f"{model_server.url}/v1",
                created_by=OWNER,
            )
        )
        source = await repos.knowledge_sources.create(
            KnowledgeSource(name="handbook", created_by=OWNER)
        )
        agent = await repos.agents.create(
            Agent(
                name="mongo-agent",
                model="gpt-4o",
                provider_id=provider.id,
                knowledge_source_ids=[source.id],
                memory_enabled=True,
                created_by=OWNER,
            )
        )
    async with app_client(store, settings) as (app, client):
        assert app.state.ctx.services["vector_store"].backend == "qdrant"
        item = await client.post(
            "/api/knowledge-items",
            json={
                "source_id": source.id,
                "name": "Refund policy",
                "text_content": "Refunds are accepted within 30 days of purchase.",
            },
        )
        assert item.status_code == 201, item.text
        memory = await client.post(
            "/api/memories",
            json={"agent_id": agent.id, "key": "favourite colour", "value": "teal"},
        )
        assert memory.status_code == 201, memory.text

        model_server.reset()
        model_server.script(Turn(text="Within 30 days [1]; you like teal."))
        chat = await client.post(
            f"/api/agents/{agent.id}/chat",
            json={"message": "How long do refunds take, and what is my favourite colour?"},
            timeout=30,
        )
        assert chat.status_code == 200, chat.text
        chat_events = parse_sse(chat.text)
        assert chat_events[-1]["event"] == "done", chat_events[-1]
        system = model_server.requests[0].conversation()[0]["text"]
        assert "[1] Refund policy" in system and "30 days" in system
        assert "favourite colour: teal" in system
        assert chat_events[-1]["data"]["citations"][0]["item_id"] == item.json()["id"]

        # A workflow run of the same agent, executed by the runtime's engine executor.
        workflow = await client.post(
            "/api/workflows", json={"agent_id": agent.id, "title": "on mongo"}
        )
        assert workflow.status_code == 201, workflow.text
        model_server.reset()
        model_server.script(Turn(text="30 days."))
        run = await client.post(
            f"/api/workflows/{workflow.json()['id']}/runs",
            json={"prompt": "What is the refund period? Also my favourite colour?"},
        )
        events = await sse(client, f"/api/tasks/{run.json()['id']}/events")
        assert events[-1]["data"]["status"] == "completed", events[-1]
        system = model_server.requests[0].conversation()[0]["text"]
        assert "[1] Refund policy" in system and "favourite colour: teal" in system


async def test_a_run_of_a_deleted_workflow_is_seen_by_admins_only(
    store: MongoStore, tmp_path: Path
) -> None:
    # Existing deployments kept the runs of deleted workflows; they have no owner left.
    from tbd_agents.domain.models import TaskExecution

    settings = make_settings(tmp_path, db_backend="mongo", postgres_uri=None)
    orphan = TaskExecution(workflow_id="65e11a80000000000000dead", prompt="old", status="completed")
    async with store.unit_of_work() as repos:
        await repos.task_executions.create(orphan)
        admin_key = (await ApiKeys(repos).create("ops", scope=KeyScope.ADMIN, name="a")).plaintext
    async with app_client(store, settings) as (_app, client):
        assert (await client.get(f"/api/tasks/{orphan.id}/events")).status_code == 404
        assert (await client.get(f"/api/tasks/{orphan.id}")).status_code == 404
        admin = {"Authorization": f"Bearer {admin_key}"}
        seen = await client.get(f"/api/tasks/{orphan.id}", headers=admin)
        assert seen.status_code == 200 and seen.json()["prompt"] == "old"
        events = await client.get(f"/api/tasks/{orphan.id}/events", headers=admin)
        assert events.status_code == 200, events.text
