"""The run, task, chat and schedule routes as existing TBD Agents clients call them (reference
§1.3, §1.13, §1.15, §1.17-§1.19): status codes, response field sets of the official SDK's types,
values, and SSE frames read the way the SDK's `_sse.py` reads them.

Runs execute in the app with the run-time's scripted executor (`tests/runtime/scripted.py`: the
prompt is the script); chat turns run the real engine against the local protocol server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from tbd_agents.domain.enums import ProviderType, TaskStatus
from tbd_agents.domain.models import Agent, Provider, TaskExecution, Token, Workflow
from tbd_agents.runtime.webhooks import error_kind, payload_of
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.services.task_views import summary_fields
from tbd_agents.storage.postgres.schema_runtime import webhook_deliveries
from tests.compat.conftest import CompatApi
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.support.statements import from_background

# Field sets of the SDK's response types (packages/python/src/tbd_agents/types.py).
PROMPT_RESPONSE = {
    "workflow_id", "status", "current_turn", "max_turns", "response", "output_format",
    "infinite_session", "caveman", "tsv_tool_results", "usage", "logs", "messages",
}  # fmt: skip
TASK_SUMMARY = {
    "id", "workflow_id", "workflow_title", "agent_name", "prompt", "status", "worker", "model",
    "reasoning_effort", "tool_calls", "started_at", "finished_at", "elapsed_seconds", "created_at",
}  # fmt: skip
TASK_DETAIL = TASK_SUMMARY | {"celery_task_id", "response", "progress", "logs", "messages", "usage"}
CHAT_SESSION = {"id", "agent_id", "title", "message_count", "created_at", "updated_at"}
CHAT_MESSAGE = {"id", "role", "content", "usage", "created_at"}
SCHEDULED_AGENT = {
    "id", "name", "workflow_id", "prompt", "interval_value", "interval_unit", "start_at",
    "end_at", "enabled", "last_run_at", "next_run_at", "created_at", "updated_at",
}  # fmt: skip
STREAM_TYPES = {
    "log", "message", "message_delta", "usage", "status", "progress",
    "output_guardrail_violation",
}  # fmt: skip
TERMINAL = {s.value for s in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.HALTED)}


# --- SSE, read as the SDK reads it ----------------------------------------------------------


@dataclass
class Message:
    data: str
    event: str | None
    event_id: str | None


def sdk_messages(lines: Iterable[str]) -> Iterator[Message]:
    """Messages of an SSE body by the rules the SDK's `iter_sse_messages` follows: a blank line
    ends a message, `:` lines are comments, `field: value` with one optional space."""
    data: list[str] = []
    event: str | None = None
    event_id: str | None = None
    for raw in [*lines, ""]:
        line = raw.rstrip("\r")
        if line == "":
            if data or event is not None or event_id is not None:
                yield Message("\n".join(data), event, event_id)
            data, event, event_id = [], None, None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            event_id = value


async def stream_frames(
    client: httpx.AsyncClient, path: str, **headers: str
) -> tuple[httpx.Response, list[Message]]:
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response, list(sdk_messages(response.text.splitlines()))


# --- helpers --------------------------------------------------------------------------------


async def new_workflow(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    agent = await client.post("/api/agents", json={"name": f"agent-{time.monotonic_ns()}"})
    assert agent.status_code == 201, agent.text
    body = {"agent_id": agent.json()["id"], "title": "compat workflow", **fields}
    created = await client.post("/api/workflows", json=body)
    assert created.status_code == 201, created.text
    return dict(created.json())


async def wait_task(
    client: httpx.AsyncClient, task_id: str, statuses: set[str], timeout: float = 20
) -> dict[str, Any]:
    """Poll the task until its status is one of `statuses` (fails after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        task = (await client.get(f"/api/tasks/{task_id}")).json()
        if task["status"] in statuses:
            return dict(task)
        assert time.monotonic() < deadline, f"task stayed {task['status']}"
        await asyncio.sleep(0.05)


async def prompt(client: httpx.AsyncClient, workflow_id: str, **body: Any) -> httpx.Response:
    return await client.post(f"/api/workflows/{workflow_id}/prompt", json=body)


# --- workflows: prompt, stream, halt, stop, reset, tasks (both run stores) --------------------


async def test_prompt_answers_201_prompt_response_and_the_stream_speaks_the_existing_format(
    both: CompatApi,
) -> None:
    async with await both.user() as alice:
        wf = await new_workflow(alice, max_turns=7, output_format="markdown")
        started = await prompt(alice, wf["id"], prompt="emit:2", reasoning_effort="high")
        assert started.status_code == 201, started.text
        body = started.json()
        assert set(body) >= PROMPT_RESPONSE
        assert body["workflow_id"] == wf["id"] and body["status"] == "running"
        assert (body["current_turn"], body["max_turns"], body["response"]) == (0, 7, None)
        assert body["output_format"] == "markdown" and body["logs"] == []
        assert body["infinite_session"] is True and body["caveman"] is False
        task_id = body["task_id"]

        response, frames = await stream_frames(alice, f"/api/workflows/{wf['id']}/stream")
        assert response.headers["content-type"].startswith("text/event-stream")
        # The existing stream said no-cache; every /api answer of ours says no-store (stricter:
        # nothing caches it either way; see api/docs.py SecurityHeaders).
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        events = [json.loads(m.data) for m in frames]
        assert all(m.event is None for m in frames)  # no `event:` line, as before
        assert [int(m.event_id or 0) for m in frames] == [e["id"] for e in events]
        assert all(set(e) == {"id", "type", "data", "timestamp"} for e in events)
        assert {e["type"] for e in events} <= STREAM_TYPES
        datetime.fromisoformat(events[0]["timestamp"])
        deltas = [e["data"]["content"] for e in events if e["type"] == "message_delta"]
        assert deltas == ["d1", "d2"]
        statuses = [e["data"] for e in events if e["type"] == "status"]
        assert statuses[0]["status"] == "running" and statuses[-1]["status"] == "completed"
        assert all(isinstance(s["current_turn"], int) for s in statuses)

        _, resumed = await stream_frames(
            alice, f"/api/workflows/{wf['id']}/stream", **{"Last-Event-ID": "2"}
        )
        assert [json.loads(m.data) for m in resumed] == events[2:]

        task = (await alice.get(f"/api/tasks/{task_id}")).json()
        assert TASK_DETAIL - {"workflow_title", "agent_name", "elapsed_seconds"} <= set(task)
        assert task["status"] == "completed" and task["reasoning_effort"] == "high"
        assert task["prompt"] == "emit:2"


async def test_prompt_refusals_halt_and_stop(both: CompatApi) -> None:
    async with await both.user() as alice:
        wf = await new_workflow(alice)
        path = f"/api/workflows/{wf['id']}"
        nothing = await alice.post(f"{path}/halt")
        assert nothing.status_code == 400 and "no pending or running run" in nothing.text

        off = await alice.patch(path, json={"status": "inactive"})
        assert off.status_code == 200, off.text
        inactive = await prompt(alice, wf["id"], prompt="emit:1")
        assert inactive.status_code == 400, inactive.text
        assert "inactive" in inactive.json()["error"]["message"]
        assert (await alice.patch(path, json={"status": "active"})).status_code == 200

        blocking = await prompt(alice, wf["id"], prompt="block")
        assert blocking.status_code == 201, blocking.text
        task_id = blocking.json()["task_id"]
        await wait_task(alice, task_id, {"running"})
        busy = await prompt(alice, wf["id"], prompt="emit:1")
        assert busy.status_code == 400 and task_id in busy.text

        halted = await alice.post(f"{path}/halt")
        assert halted.status_code == 202, halted.text
        assert halted.json()["detail"] == "Halt signal sent"
        assert halted.json()["task_id"] == task_id
        done = await wait_task(alice, task_id, TERMINAL)
        assert done["status"] == "halted"
        again = await alice.post(f"/api/tasks/{task_id}/stop")
        assert again.status_code == 400 and "halted" in again.text

        second = await prompt(alice, wf["id"], prompt="block")
        second_id = second.json()["task_id"]
        await wait_task(alice, second_id, {"running"})
        stopped = await alice.post(f"/api/tasks/{second_id}/stop")
        assert stopped.status_code == 202, stopped.text
        assert stopped.json()["status"] == "halt_requested"
        assert stopped.json()["workflow_id"] == wf["id"]
        assert (await wait_task(alice, second_id, TERMINAL))["status"] == "halted"

    async with await both.user() as bob:
        assert (await bob.post(f"/api/tasks/{second_id}/stop")).status_code == 404
        assert (await bob.post(f"{path}/halt")).status_code == 404


async def test_reset_aborts_live_runs_and_clears_the_conversation(both: CompatApi) -> None:
    async with await both.user() as alice:
        wf = await new_workflow(alice)
        started = await prompt(alice, wf["id"], prompt="block")
        task_id = started.json()["task_id"]
        await wait_task(alice, task_id, {"running"})
        reset = await alice.post(f"/api/workflows/{wf['id']}/reset")
        assert reset.status_code == 200, reset.text
        assert reset.json()["tasks_aborted"] == 1 and reset.json()["detail"]
        assert reset.json()["workflow"]["messages"] == []
        assert (await wait_task(alice, task_id, TERMINAL))["status"] == "halted"
        idle = await alice.post(f"/api/workflows/{wf['id']}/reset")
        assert idle.json()["tasks_aborted"] == 0
        state = (await alice.get(f"/api/workflows/{wf['id']}")).json()
        assert state["status"] == "active" and state["logs"] == [] and state["current_turn"] == 0


async def test_tasks_of_a_workflow_carry_summary_fields(both: CompatApi) -> None:
    async with await both.user() as alice:
        wf = await new_workflow(alice, title="summed up")
        ids = []
        for script in ("emit:1", "emit:2"):
            ids.append((await prompt(alice, wf["id"], prompt=script)).json()["task_id"])
            await wait_task(alice, ids[-1], TERMINAL)
        listed = await alice.get(f"/api/tasks/workflow/{wf['id']}")
        assert listed.status_code == 200, listed.text
        rows = listed.json()
        assert isinstance(rows, list) and [r["id"] for r in rows] == ids[::-1]  # newest first
        agent = (await alice.get(f"/api/agents/{wf['agent_id']}")).json()
        for row in rows:
            assert set(row) >= TASK_SUMMARY
            assert row["workflow_title"] == "summed up" and row["agent_name"] == agent["name"]
            assert isinstance(row["elapsed_seconds"], float) and row["elapsed_seconds"] >= 0
            assert row["status"] == "completed"
        progress = await alice.get(f"/api/tasks/{ids[0]}/progress")
        assert progress.json() == {"todos": [], "current_step": None, "percent_complete": 0.0}
    async with await both.user() as bob:
        assert (await bob.get(f"/api/tasks/workflow/{wf['id']}")).status_code == 404
        assert (await bob.get(f"/api/tasks/{ids[0]}/progress")).status_code == 404


# --- PostgreSQL only: code with no backend-specific part ---------------------------------------


async def test_summary_fields_take_two_statements_whatever_the_number_of_runs(
    pg_api: CompatApi,
) -> None:
    async with pg_api.store.unit_of_work() as repos:
        made = []
        for i in range(3):
            agent = await repos.agents.create(Agent(name=f"a{i}-{time.monotonic_ns()}"))
            workflow = await repos.workflows.create(Workflow(agent_id=agent.id, title=f"w{i}"))
            for _ in range(4):
                made.append(
                    await repos.task_executions.create(TaskExecution(workflow_id=workflow.id))
                )
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if not from_background():
            statements.append(statement)

    engine = pg_api.store.engine.sync_engine  # type: ignore[attr-defined]
    async with pg_api.store.unit_of_work(readonly=True) as repos:
        event.listen(engine, "before_cursor_execute", record)
        try:
            fields = await summary_fields(repos, made)
        finally:
            event.remove(engine, "before_cursor_execute", record)
    queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(queries) == 2, statements
    assert {f["workflow_title"] for f in fields.values()} == {"w0", "w1", "w2"}
    assert all(f["agent_name"] and f["elapsed_seconds"] is None for f in fields.values())


async def test_progress_reads_the_stored_todos(pg_api: CompatApi) -> None:
    async with await pg_api.user() as alice:
        wf = await new_workflow(alice)
        task_id = (await prompt(alice, wf["id"], prompt="emit:1")).json()["task_id"]
        await wait_task(alice, task_id, TERMINAL)
        todos = [
            {"id": 1, "title": "read", "status": "completed"},
            {"id": "2", "title": "write", "status": "in-progress"},
            {"id": 3, "title": "ship", "status": "not-started"},
        ]
        async with pg_api.store.unit_of_work() as repos:
            await repos.task_executions.update(
                task_id, {"progress": {"todos": todos, "current_step": 2}}
            )
        got = (await alice.get(f"/api/tasks/{task_id}/progress")).json()
        assert got["todos"][1] == {"id": 2, "title": "write", "status": "in-progress"}
        assert got["current_step"] == 2 and got["percent_complete"] == pytest.approx(1 / 3)
        async with pg_api.store.unit_of_work() as repos:
            await repos.task_executions.update(
                task_id, {"progress": {"todos": todos, "percent_complete": 75}}
            )
        assert (await alice.get(f"/api/tasks/{task_id}/progress")).json()[
            "percent_complete"
        ] == 0.75


async def test_prompt_with_a_structured_request_is_checked_by_request_guardrails(
    pg_api: CompatApi,
) -> None:
    async with await pg_api.user() as alice:
        rail = await alice.post(
            "/api/guardrails",
            json={
                "name": f"ticket-{time.monotonic_ns()}",
                "guardrail_type": "request",
                "request_config": {
                    "json_schema": {
                        "type": "object",
                        "required": ["ticket"],
                        "properties": {"ticket": {"type": "integer"}},
                    }
                },
            },
        )
        assert rail.status_code == 201, rail.text
        wf = await new_workflow(alice, guardrail_ids=[rail.json()["id"]])
        refused = await prompt(alice, wf["id"], request={"ticket": "nine"})
        assert refused.status_code == 422, refused.text
        assert rail.json()["name"] in refused.json()["error"]["message"]
        nothing = await prompt(alice, wf["id"])
        assert nothing.status_code == 422 and "prompt" in nothing.json()["error"]["message"]
        ok = await prompt(alice, wf["id"], request={"ticket": 9})
        assert ok.status_code == 201, ok.text
        task = await wait_task(alice, ok.json()["task_id"], TERMINAL)
        assert json.loads(task["prompt"]) == {"ticket": 9}


async def test_workflow_skills_install_and_remove(pg_api: CompatApi) -> None:
    async with await pg_api.user() as alice:
        wf = await new_workflow(alice)
        skill = await alice.post(
            "/api/skills", json={"name": f"s-{time.monotonic_ns()}", "instructions": "be brief"}
        )
        assert skill.status_code == 201, skill.text
        sid = skill.json()["id"]
        path = f"/api/workflows/{wf['id']}/skills/{sid}"
        installed = await alice.post(path)
        assert installed.status_code == 200, installed.text
        assert installed.json()["skill_ids"] == [sid] and installed.json()["id"] == wf["id"]
        assert (await alice.post(path)).status_code == 409
        assert (await alice.post(f"/api/workflows/{wf['id']}/skills/nope")).status_code == 404
        removed = await alice.delete(path)
        assert removed.status_code == 200 and removed.json()["skill_ids"] == []
        assert (await alice.delete(path)).status_code == 404


async def test_scheduled_agents_in_weeks_enable_and_disable(pg_api: CompatApi) -> None:
    async with await pg_api.user() as alice:
        wf = await new_workflow(alice)
        start = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
        created = await alice.post(
            "/api/scheduled-agents",
            json={
                "name": "weekly",
                "workflow_id": wf["id"],
                "prompt": "emit:1",
                "interval_value": 2,
                "interval_unit": "weeks",
                "start_at": start.isoformat(),
            },
        )
        assert created.status_code == 201, created.text
        record = created.json()
        assert set(record) >= SCHEDULED_AGENT and record["interval_unit"] == "weeks"
        off = await alice.patch(f"/api/scheduled-agents/{record['id']}/disable")
        assert off.status_code == 200 and off.json()["enabled"] is False
        assert set(off.json()) >= SCHEDULED_AGENT
        on = await alice.patch(f"/api/scheduled-agents/{record['id']}/enable")
        assert on.status_code == 200 and on.json()["enabled"] is True
        preview = await alice.post(
            "/api/scheduled-agents/preview",
            json={"interval_value": 2, "interval_unit": "weeks", "start_at": start.isoformat()},
        )
        times = [datetime.fromisoformat(t) for t in preview.json()["occurrences"]]
        assert times[0] == start and times[1] - times[0] == timedelta(weeks=2)
        bad = await alice.post(
            "/api/scheduled-agents",
            json={**record, "interval_unit": "fortnights", "id": None},
        )
        assert bad.status_code == 422
    async with await pg_api.user() as bob:
        assert (await bob.patch(f"/api/scheduled-agents/{record['id']}/enable")).status_code == 404


# --- chat -------------------------------------------------------------------------------------


@pytest.fixture
async def chat_agent(
    pg_api: CompatApi, protocol_server: ProtocolServer
) -> tuple[CompatApi, str, str]:
    """(app, the owner, an agent of the owner's) whose model is the local protocol server."""
    protocol_server.reset()
    key, owner = await pg_api.key()
    settings = pg_api.app.state.ctx.settings
    value, version = KeyRingProvider(settings).cipher().encrypt("sk-chat")
    stamp = time.monotonic_ns()
    async with pg_api.store.unit_of_work() as repos:
        token = await repos.tokens.create(
            Token(name=f"k{stamp}", encrypted_value=value, key_version=version, created_by=owner)
        )
        provider = await repos.providers.create(
            Provider(
                name=f"p{stamp}",
                provider_type=ProviderType.CUSTOM,
                api_key_token_name=token.name,
                base_url=f"{protocol_server.url}/v1",
                created_by=owner,
            )
        )
    async with pg_api.client_for(key) as client:
        agent = await client.post(
            "/api/agents", json={"name": "chatty", "model": "m", "provider_id": provider.id}
        )
        assert agent.status_code == 201, agent.text
    return pg_api, key, agent.json()["id"]


async def test_chat_stream_frames_sessions_and_start(
    chat_agent: tuple[CompatApi, str, str], protocol_server: ProtocolServer
) -> None:
    api, key, agent_id = chat_agent
    protocol_server.script(Turn(text="Hello there, friend.", chunk_chars=4))
    async with api.client_for(key) as alice:
        turn = await alice.post(f"/api/agents/{agent_id}/chat", json={"message": "Hi!"})
        assert turn.status_code == 200, turn.text
        frames = list(sdk_messages(turn.text.splitlines()))
        events = [json.loads(m.data) for m in frames]
        assert [int(m.event_id or 0) for m in frames] == list(range(1, len(frames) + 1))
        kinds = [e["type"] for e in events]
        assert kinds[0] == "session" and kinds[-1] == "done" and "error" not in kinds
        session_id = events[0]["session_id"]
        text = "".join(e["content"] for e in events if e["type"] == "delta")
        assert text == "Hello there, friend."
        assert {"usage", "message_id"} <= set(events[-1])

        listed = await alice.get(f"/api/agents/{agent_id}/chat/sessions")
        assert listed.status_code == 200, listed.text
        [row] = listed.json()
        assert set(row) == CHAT_SESSION and row["id"] == session_id
        assert row["title"] == "Hi!" and row["message_count"] == 2
        detail = (await alice.get(f"/api/agents/{agent_id}/chat/sessions/{session_id}")).json()
        assert set(detail) >= CHAT_SESSION
        assert [(m["role"], m["content"]) for m in detail["messages"]] == [
            ("user", "Hi!"),
            ("assistant", "Hello there, friend."),
        ]
        assert all(set(m) >= CHAT_MESSAGE for m in detail["messages"])
        assert detail["messages"][1]["id"] == events[-1]["message_id"]

        protocol_server.script(Turn(text="Second."))
        newer = await alice.post(f"/api/agents/{agent_id}/chat", json={"message": "Another"})
        newer_id = json.loads(next(sdk_messages(newer.text.splitlines())).data)["session_id"]
        page = (await alice.get(f"/api/agents/{agent_id}/chat/sessions?limit=1")).json()
        assert [s["id"] for s in page] == [newer_id]  # most recently updated first
        skipped = (await alice.get(f"/api/agents/{agent_id}/chat/sessions?skip=1")).json()
        assert [s["id"] for s in skipped] == [session_id]

        other = await alice.post("/api/agents", json={"name": "other agent"})
        wrong = await alice.post(
            f"/api/agents/{other.json()['id']}/chat",
            json={"message": "x", "session_id": session_id},
        )
        assert wrong.status_code == 400, wrong.text
        assert "different agent" in wrong.json()["error"]["message"]

        started = await alice.post("/api/chat/start", json={"agent_id": agent_id})
        assert started.status_code == 200, started.text
        assert started.json() == {
            "workflow_id": started.json()["workflow_id"],
            "agent_name": "chatty",
            "agent_id": agent_id,
        }
        workflow = (await alice.get(f"/api/workflows/{started.json()['workflow_id']}")).json()
        assert workflow["title"] == "Chat: chatty" and workflow["max_turns"] == 50
        again = await alice.post("/api/chat/start", json={"agent_id": agent_id})
        assert again.json()["workflow_id"] == started.json()["workflow_id"]
        assert (await alice.post("/api/chat/start", json={"agent_id": "nope"})).status_code == 404

    async with await api.user() as bob:
        path = f"/api/agents/{agent_id}/chat/sessions/{session_id}"
        assert (await bob.get(path)).status_code == 404
        assert (await bob.delete(path)).status_code == 404

    async with api.client_for(key) as alice:
        path = f"/api/agents/{agent_id}/chat/sessions/{session_id}"
        assert (await alice.delete(path)).status_code == 204
        assert (await alice.get(path)).status_code == 404
        async with api.store.unit_of_work() as repos:
            left = await repos.chat_messages.count()
        remaining = (await alice.get(f"/api/agents/{agent_id}/chat/sessions")).json()
        assert [s["id"] for s in remaining] == [newer_id]
        assert left == 2  # only the other session's two messages


# --- webhook payloads (§1.19) ------------------------------------------------------------------


async def test_a_queued_webhook_holds_the_existing_payload(pg_api: CompatApi) -> None:
    async with await pg_api.user() as alice:
        wf = await new_workflow(alice, title="hooked")
        # Stored directly: the API would refuse a loopback receiver (SSRF guard); the payload
        # is written when the run ends, whether or not the delivery can be sent.
        async with pg_api.store.unit_of_work() as repos:
            await repos.workflows.update(wf["id"], {"webhook_url": "http://127.0.0.1:9/hook"})
        task_id = (await prompt(alice, wf["id"], prompt="emit:1")).json()["task_id"]
        await wait_task(alice, task_id, TERMINAL)
    engine = pg_api.store.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                select(webhook_deliveries.c.payload).where(webhook_deliveries.c.task_id == task_id)
            )
        ).scalar_one()
    assert {
        "task_id", "workflow_id", "workflow_title", "prompt", "response", "status",
        "elapsed_seconds", "timestamp",
    } <= set(stored)  # fmt: skip
    assert stored["workflow_title"] == "hooked" and stored["status"] == "completed"
    assert stored["prompt"] == "emit:1" and stored["response"] == "done: emit:1"
    assert isinstance(stored["elapsed_seconds"], float)


def test_webhook_payloads_carry_the_existing_keys() -> None:
    started = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    done = TaskExecution(
        workflow_id="w1",
        prompt="hello",
        status=TaskStatus.COMPLETED,
        response="hi",
        started_at=started,
        finished_at=started + timedelta(seconds=2.5),
    )
    ok = payload_of(done, "My workflow")
    assert {
        k: ok[k]
        for k in ("task_id", "workflow_id", "workflow_title", "prompt", "response", "status")
    } == {
        "task_id": done.id,
        "workflow_id": "w1",
        "workflow_title": "My workflow",
        "prompt": "hello",
        "response": "hi",
        "status": "completed",
    }
    assert ok["elapsed_seconds"] == 2.5 and ok["timestamp"] == done.finished_at
    assert "error_type" not in ok

    failed = done.model_copy(
        update={"status": TaskStatus.FAILED, "error": "provider said 429 Too Many Requests"}
    )
    bad = payload_of(failed, None)
    assert bad["status"] == "failed" and bad["error_type"] == "rate_limit_exceeded"
    assert bad["error_message"] == failed.error and bad["error_code"] == 429
    assert error_kind("Connection refused") == ("connection_error", None)
    assert error_kind("request timed out") == ("timeout_error", None)
    assert error_kind("HTTP 401 Unauthorized") == ("authentication_error", 401)
    assert error_kind("model returned nonsense") == ("api_error", None)
    assert error_kind(None) == ("internal_error", None)
