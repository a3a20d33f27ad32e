"""The workflow-level paths existing TBD Agents clients call (prompt, stream, halt, reset), on the
in-process backend over a real socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from tbd_agents.domain.auth import KeyScope
from tbd_agents.services.keys import ApiKeys
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tbd_agents.storage.postgres.schema import TABLES
from tests.api.live import live_server
from tests.runtime.conftest import make_workflow, runtime_settings
from tests.runtime.test_api import sse

OWNER = "workflow-paths-user"


@pytest.fixture
async def key(module_db: URL) -> AsyncIterator[str]:
    store = PostgresStore(create_engine(module_db, pool_size=1), url=module_db)
    async with store.unit_of_work() as repos:
        created = await ApiKeys(repos).create(OWNER, scope=KeyScope.USER, name="paths")
    yield created.plaintext
    await store.close()


async def test_prompt_stream_halt_and_reset(
    db: AsyncEngine, module_db: URL, key: str, tmp_path: Path
) -> None:
    workflow = await make_workflow(db, owner=OWNER)
    settings = runtime_settings(module_db, data_dir=tmp_path)
    with live_server(settings) as base:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            # Opened before the first run, the stream waits for it (the existing stream
            # never refused a workflow without runs).
            waiting = asyncio.create_task(sse(client, f"/api/workflows/{workflow}/stream"))
            nothing_to_halt = await client.post(f"/api/workflows/{workflow}/halt")
            assert nothing_to_halt.status_code == 400

            started = await client.post(
                f"/api/workflows/{workflow}/prompt", json={"prompt": "emit:2"}
            )
            assert started.status_code == 201, started.text
            events = await asyncio.wait_for(waiting, 30)
            assert events[-1]["data"]["data"]["status"] == "completed"
            assert [
                e["data"]["data"]["content"] for e in events if e["data"]["type"] == "message_delta"
            ] == ["d1", "d2"]
            assert await sse(client, f"/api/workflows/{workflow}/stream") == events
            resumed = await sse(
                client, f"/api/workflows/{workflow}/stream", **{"Last-Event-ID": "1"}
            )
            assert resumed == events[1:]

            marker = tmp_path / "blocking"
            await client.post(
                f"/api/workflows/{workflow}/prompt", json={"prompt": f"marker:{marker};block"}
            )
            deadline = time.monotonic() + 20
            while not marker.exists():
                assert time.monotonic() < deadline, "the run never started"
                await asyncio.sleep(0.05)
            busy = await client.post(f"/api/workflows/{workflow}/prompt", json={"prompt": "x"})
            assert busy.status_code == 400
            halted = await client.post(f"/api/workflows/{workflow}/halt")
            assert halted.status_code == 202, halted.text
            assert halted.json()["detail"] == "Halt signal sent"
            live = await sse(client, f"/api/workflows/{workflow}/stream")
            assert live[-1]["data"]["data"]["status"] == "halted"

            async with db.begin() as conn:
                await conn.execute(
                    TABLES["workflows"]
                    .update()
                    .where(TABLES["workflows"].c.id == workflow)
                    .values(messages=[{"role": "user", "content": "old"}])
                )
            reset = await client.post(f"/api/workflows/{workflow}/reset")
            assert reset.status_code == 200, reset.text
            assert reset.json()["tasks_aborted"] == 0
            assert reset.json()["workflow"]["messages"] == []
            assert reset.json()["workflow"]["status"] == "active"
            async with db.connect() as conn:
                runs = (
                    await conn.execute(
                        select(TABLES["task_executions"].c.id).where(
                            TABLES["task_executions"].c.workflow_id == workflow
                        )
                    )
                ).all()
            assert len(runs) == 2  # the history stays


async def test_inactive_workflows_refuse_prompts_and_prompt_guardrails_answer_422(
    db: AsyncEngine, module_db: URL, key: str, tmp_path: Path
) -> None:
    workflow = await make_workflow(db, owner=OWNER)
    settings = runtime_settings(module_db, data_dir=tmp_path)
    with live_server(settings) as base:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            path = f"/api/workflows/{workflow}"
            wrong = await client.patch(path, json={"status": "running"})
            assert wrong.status_code == 422 and "active or inactive" in wrong.text
            off = await client.patch(path, json={"status": "inactive"})
            assert off.status_code == 200 and off.json()["status"] == "inactive"
            refused = await client.post(f"{path}/prompt", json={"prompt": "emit:1"})
            assert refused.status_code == 400, refused.text
            assert "set its status to active" in refused.json()["error"]["message"]
            on = await client.patch(path, json={"status": "active"})
            assert on.status_code == 200 and on.json()["status"] == "active"

            rail = {"name": "needs-ticket", "guardrail_type": "prompt"}
            missing = await client.post("/api/guardrails", json=rail)
            assert missing.status_code == 422 and "prompt_config" in missing.text
            other = await client.post(
                "/api/guardrails", json={**rail, "prompt_config": {}, "output_config": {}}
            )
            assert other.status_code == 422 and "output_config applies to" in other.text
            created = await client.post(
                "/api/guardrails",
                json={**rail, "prompt_config": {"required_patterns": [r"ticket-\d+"]}},
            )
            assert created.status_code == 201, created.text
            tried = await client.post(
                f"/api/guardrails/{created.json()['id']}/try", json={"text": "no ticket"}
            )
            assert tried.json()["action"] == "block", tried.text
            attached = await client.patch(path, json={"guardrail_ids": [created.json()["id"]]})
            assert attached.status_code == 200, attached.text
            blocked = await client.post(f"{path}/prompt", json={"prompt": "emit:1"})
            assert blocked.status_code == 422, blocked.text
            assert "needs-ticket" in blocked.json()["error"]["message"]
            started = await client.post(f"{path}/prompt", json={"prompt": "emit:1;TICKET-9"})
            assert started.status_code == 201, started.text
            events = await sse(client, f"/api/workflows/{workflow}/stream")
            assert events[-1]["data"]["data"]["status"] == "completed"
            state = (await client.get(path)).json()
            assert state["status"] == "active"
