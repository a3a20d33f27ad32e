"""Workflow options on the runtime paths: runs started like the API starts them, a schedule that
fires, and the API app itself (GET /api/tasks/{id}/progress), on PostgreSQL with the real engine
and the local protocol server as the model."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from tbd_agents.api import create_app
from tbd_agents.config import Settings
from tbd_agents.domain.auth import KeyScope
from tbd_agents.domain.enums import IntervalUnit, ProviderType, TaskStatus
from tbd_agents.domain.models import (
    Agent,
    CustomTool,
    Provider,
    ScheduledAgent,
    TaskExecution,
    Token,
    Workflow,
)
from tbd_agents.engine.options import AUTO_MEMORY_POLICY, CAVEMAN_POLICY
from tbd_agents.engine.progress import ProgressRecorder, parse_todo_list
from tbd_agents.plugins.loader import sync_plugins
from tbd_agents.runtime import leases
from tbd_agents.runtime.legacy_stream import frame_of
from tbd_agents.runtime.service import Runtime
from tbd_agents.security.cipher import KeyRingProvider
from tbd_agents.services.keys import ApiKeys
from tbd_agents.services.task_views import progress_of
from tbd_agents.storage.postgres.engine import create_engine
from tbd_agents.storage.postgres.repository import PostgresStore
from tests.engine.protocol_server import ProtocolServer, Turn
from tests.plugins.fakes import SLACK_TOKEN, SlackFake
from tests.support import pg
from tests.support.mongo import make_mongo_store

FERNET = f"1:{Fernet.generate_key().decode()}"
TODOS = [
    {"id": 1, "title": "read the brief", "status": "completed"},
    {"id": 2, "title": "write the answer", "status": "in-progress"},
    {"id": 3, "title": "check it", "status": "not-started"},
    {"id": 4, "title": "send it", "status": "not-started"},
]


@pytest.fixture(scope="module")
def runs_db(pg18_server: str):
    url = pg.create_migrated_database(pg18_server, prefix="wfopt")
    yield url
    pg.drop_database(url)


def settings_for(url: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "postgres_uri": url.render_as_string(hide_password=False),
        "token_encryption_key": FERNET,
        "allow_user_custom_tools": True,
        "outbound_allowed_hosts": "127.0.0.1",
        "redis_url": None,
        "run_lease_seconds": 5.0,
        "embedding_provider": "hashing",
    }
    return Settings(**(values | overrides))


@asynccontextmanager
async def runtime_of(url: Any, **overrides: Any) -> AsyncIterator[tuple[Runtime, PostgresStore]]:
    settings = settings_for(url, **overrides)
    engine = create_engine(url, application_name="wf-options-tests", pool_size=4)
    store = PostgresStore(engine, owns_engine=False)
    rt = await Runtime.open(settings, engine, role="api", store=store)
    await rt.start()
    try:
        yield rt, store
    finally:
        await rt.aclose(drain_seconds=5)
        await engine.dispose()


async def add_token(store: PostgresStore, name: str, value: str, owner: str | None) -> None:
    cipher = KeyRingProvider(settings_for_cipher()).cipher()
    encrypted, version = cipher.encrypt(value)
    async with store.unit_of_work() as repos:
        await repos.tokens.create(
            Token(name=name, encrypted_value=encrypted, key_version=version, created_by=owner)
        )


def settings_for_cipher() -> Settings:
    return Settings(token_encryption_key=FERNET, postgres_uri="postgresql://u@127.0.0.1:1/x")


async def seed(
    store: PostgresStore, url: str, owner: str, workflow: dict[str, Any] | None = None, **agent: Any
) -> Workflow:
    """A provider (its key a token of `owner`) pointed at the protocol server, an agent and a
    workflow of `owner`."""
    key_name = f"key-{uuid.uuid4().hex[:8]}"
    await add_token(store, key_name, "sk-test", owner)
    async with store.unit_of_work() as repos:
        provider = await repos.providers.create(
            Provider(name=f"p-{key_name}", provider_type=ProviderType.OPENAI,
                     api_key_token_name=key_name, base_url=f"{url}/v1", created_by=owner)
        )  # fmt: skip
        made = await repos.agents.create(
            Agent(name="opt", model="gpt-4o", provider_id=provider.id, created_by=owner, **agent)
        )
        return await repos.workflows.create(
            Workflow(agent_id=made.id, title="opts", github_user=owner, max_turns=4,
                     **(workflow or {}))
        )  # fmt: skip


async def finish(rt: Runtime, task_id: str) -> list[Any]:
    async def gather() -> list[Any]:
        return [e async for e in rt.follow(task_id, 0)]

    return await asyncio.wait_for(gather(), 60)


async def test_manage_todo_list_is_stored_on_the_task_and_served_by_the_api(
    runs_db: Any, protocol_server: ProtocolServer, tmp_path: Path
) -> None:
    """Through the API app (its runtime runs the engine): prompt → the model calls
    manage_todo_list → GET /api/tasks/{id}/progress and the task show the list."""
    protocol_server.reset()
    settings = settings_for(runs_db, data_dir=tmp_path, memory_expiry_sweep_seconds=0)
    store = PostgresStore(create_engine(runs_db, pool_size=4), url=runs_db)
    app = create_app(settings, store)
    try:
        async with app.router.lifespan_context(app):
            async with store.unit_of_work() as repos:
                key = await ApiKeys(repos).create("todo-user", scope=KeyScope.USER, name="t")
            wf = await seed(store, protocol_server.url, "todo-user",
                            builtin_tools=["manage_todo_list"])  # fmt: skip
            protocol_server.script(
                Turn(tool_calls=[("manage_todo_list", {"todoList": TODOS})]), Turn(text="Done.")
            )
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=30,
                headers={"Authorization": f"Bearer {key.plaintext}"},
            ) as client:  # fmt: skip
                started = await client.post(f"/api/workflows/{wf.id}/prompt", json={"prompt": "go"})
                assert started.status_code == 201, started.text
                task_id = started.json()["task_id"]
                deadline = time.monotonic() + 60
                while (task := (await client.get(f"/api/tasks/{task_id}")).json())["status"] in (
                    "pending", "running",
                ):  # fmt: skip
                    assert time.monotonic() < deadline, task
                    await asyncio.sleep(0.1)
                assert task["status"] == "completed", task
                progress = (await client.get(f"/api/tasks/{task_id}/progress")).json()
        assert progress == {"todos": TODOS, "current_step": 2, "percent_complete": 0.25}
        assert task["progress"] == progress
        assert protocol_server.requests[0].tool_names() == ["manage_todo_list"]
    finally:
        await store.close()


async def test_progress_events_reach_the_workflow_stream_and_the_task(
    runs_db: Any, protocol_server: ProtocolServer
) -> None:
    """Two calls in one run: the stream has both lists, the task keeps the last; the
    update_todos alias is stored in the same shape."""
    protocol_server.reset()
    async with runtime_of(runs_db) as (rt, store):
        wf = await seed(store, protocol_server.url, "alice",
                        builtin_tools=["manage_todo_list", "update_todos"])  # fmt: skip
        done = [dict(t, status="completed") for t in TODOS]
        protocol_server.script(
            Turn(tool_calls=[("manage_todo_list", {"todoList": TODOS})]),
            Turn(tool_calls=[("manage_todo_list", {"todoList": done})]),
            Turn(text="All done."),
        )
        task = await rt.start_run(wf.id, "go")
        frames = [frame_of(e) for e in await finish(rt, task.id)]
        lists = [f["data"] for f in frames if f["type"] == "progress" and f["data"]["todos"]]
        assert [p["percent_complete"] for p in lists] == [0.25, 1.0]
        assert lists[0]["current_step"] == 2 and lists[1]["current_step"] is None
        async with store.unit_of_work() as repos:
            stored = await repos.task_executions.get(task.id)
        assert stored.progress == {"todos": done, "current_step": None, "percent_complete": 1.0}

        protocol_server.script(
            Turn(
                tool_calls=[("update_todos", {"todos": [{"title": "a", "status": "in_progress"}]})]
            ),
            Turn(text="ok"),
        )
        task2 = await rt.start_run(wf.id, "again")
        await finish(rt, task2.id)
        async with store.unit_of_work() as repos:
            stored = await repos.task_executions.get(task2.id)
        assert stored.progress == {
            "todos": [{"id": 1, "title": "a", "status": "in-progress"}],
            "current_step": 1,
            "percent_complete": 0.0,
        }


async def test_a_schedule_fired_run_gets_its_workflows_options(
    runs_db: Any, protocol_server: ProtocolServer
) -> None:
    protocol_server.reset()
    async with runtime_of(runs_db) as (rt, store):
        wf = await seed(
            store, protocol_server.url, "alice",
            workflow={"caveman": True, "tsv_tool_results": True, "reasoning_effort": "high",
                      "model": "o3-mini"},
            builtin_tools=["manage_todo_list"],
        )  # fmt: skip
        now = datetime.now(UTC)
        async with store.unit_of_work() as repos:
            await repos.scheduled_agents.create(
                ScheduledAgent(workflow_id=wf.id, prompt="scheduled work", interval_value=1,
                               interval_unit=IntervalUnit.HOURS, start_at=now - timedelta(seconds=30),
                               next_run_at=now - timedelta(seconds=30), github_user="alice",
                               created_at=now - timedelta(days=1))
            )  # fmt: skip
        protocol_server.script(
            Turn(tool_calls=[("manage_todo_list", {"todoList": TODOS})]), Turn(text="ok")
        )
        report = await rt.scheduler().tick(now)
        task_ids = [c.task_id for c in report.claimed if c.task_id]
        assert len(task_ids) == 1
        await finish(rt, task_ids[0])
        row = await leases.load(rt.db, task_ids[0])
        assert row.status is TaskStatus.COMPLETED, row.error
        first = protocol_server.requests[0]
        assert CAVEMAN_POLICY in first.conversation()[0]["text"]
        assert first.body["reasoning_effort"] == "high"
        # the todo tool's short result is not tabular: it reached the model unchanged
        fed = next(r for e in protocol_server.requests[1].conversation() for r in e["tool_results"])
        assert fed[1].startswith("Todo list updated")
        async with store.unit_of_work() as repos:
            stored = await repos.task_executions.get(task_ids[0])
        assert stored.progress is not None and stored.progress["current_step"] == 2
        assert stored.reasoning_effort == "high"


async def test_a_finite_session_fails_with_a_session_timeout(
    runs_db: Any, protocol_server: ProtocolServer
) -> None:
    protocol_server.reset()
    async with runtime_of(runs_db, engine_session_timeout=1.0) as (rt, store):
        finite = await seed(
            store, protocol_server.url, "alice", workflow={"infinite_session": False}
        )
        protocol_server.script(Turn(text="too late", hang=8))
        task = await rt.start_run(finite.id, "slow")
        events = await finish(rt, task.id)
        row = await leases.load(rt.db, task.id)
        assert row.status is TaskStatus.FAILED
        assert row.error is not None and row.error.startswith("session timeout")
        assert "SESSION_TIMEOUT (1 s)" in row.error
        assert any(e.type == "error" and e.data.get("code") == "session_timeout" for e in events)
        # an infinite session (the default) is not bound by SESSION_TIMEOUT
        infinite = await seed(store, protocol_server.url, "alice")
        protocol_server.script(Turn(text="slow but fine", hang=1.5))
        task2 = await rt.start_run(infinite.id, "slow")
        await finish(rt, task2.id)
        assert (await leases.load(rt.db, task2.id)).status is TaskStatus.COMPLETED


ENV_TOOL = "import os\ndef run():\n    return {'seen': os.environ.get('API_TOKEN'), 'extra': os.environ.get('UNDECLARED')}\n"


async def test_credential_overrides_replace_declared_tool_variables(
    runs_db: Any, protocol_server: ProtocolServer
) -> None:
    protocol_server.reset()
    suffix = uuid.uuid4().hex[:6]
    async with runtime_of(runs_db) as (rt, store):
        await add_token(store, f"own-{suffix}", "value-of-the-tool", "alice")
        await add_token(store, f"override-{suffix}", "value-of-the-override", "alice")
        await add_token(store, f"other-{suffix}", "not-for-tools", "alice")
        overrides = {"API_TOKEN": f"override-{suffix}", "UNDECLARED": f"other-{suffix}"}
        wf = await seed(store, protocol_server.url, "alice",
                        workflow={"credential_overrides": overrides})  # fmt: skip
        async with store.unit_of_work() as repos:
            tool = await repos.custom_tools.create(
                CustomTool(name="show_env", source_code=ENV_TOOL, created_by="alice",
                           parameters_schema={"type": "object", "properties": {}},
                           env_config={"API_TOKEN": "{{token:own-" + suffix + "}}"})
            )  # fmt: skip
            await repos.agents.update(wf.agent_id, {"custom_tool_ids": [tool.id]})
        protocol_server.script(Turn(tool_calls=[("show_env", {})]), Turn(text="ok"))
        task = await rt.start_run(wf.id, "env?")
        events = await finish(rt, task.id)
        assert (await leases.load(rt.db, task.id)).status is TaskStatus.COMPLETED
        fed = next(r for e in protocol_server.requests[1].conversation() for r in e["tool_results"])
        assert "value-of-the-override" in fed[1] and "value-of-the-tool" not in fed[1]
        assert "not-for-tools" not in fed[1]
        warnings = [e.data["message"] for e in events if e.data.get("event") == "warning"]
        assert any("credential_overrides UNDECLARED" in w for w in warnings), warnings

        # a token name that does not exist fails the run before the model is called
        async with store.unit_of_work() as repos:
            await repos.workflows.update(
                wf.id, {"credential_overrides": {"API_TOKEN": "no-such-token"}}
            )
        calls = len(protocol_server.requests)
        task2 = await rt.start_run(wf.id, "env?")
        await finish(rt, task2.id)
        row = await leases.load(rt.db, task2.id)
        assert row.status is TaskStatus.FAILED
        assert row.error is not None and "no-such-token" in row.error
        assert "credential_overrides" in row.error
        assert len(protocol_server.requests) == calls


async def test_bypass_and_auto_memory_on_a_workflow_run(
    runs_db: Any, protocol_server: ProtocolServer
) -> None:
    protocol_server.reset()
    async with runtime_of(runs_db) as (rt, store):
        auto = await seed(store, protocol_server.url, "alice", workflow={"auto_memory": True})
        bypass = await seed(store, protocol_server.url, "alice",
                            workflow={"bypass_memory": True, "auto_memory": True},
                            builtin_tools=["store_memory", "search_memory"])  # fmt: skip
        no_memory = await seed(store, protocol_server.url, "alice",
                               workflow={"auto_memory": True}, memory_enabled=False)  # fmt: skip
        warnings: list[list[str]] = []
        for wf in (auto, bypass, no_memory):
            protocol_server.script(Turn(text="ok"))
            task = await rt.start_run(wf.id, "hello")
            events = await finish(rt, task.id)
            assert (await leases.load(rt.db, task.id)).status is TaskStatus.COMPLETED
            warnings.append([e.data["message"] for e in events if e.data.get("event") == "warning"])
        assert protocol_server.requests[0].tool_names() == ["store_memory"]
        assert AUTO_MEMORY_POLICY in protocol_server.requests[0].conversation()[0]["text"]
        # bypassed: the listed memory tools are left out on purpose, without a warning
        assert protocol_server.requests[1].tool_names() == []
        assert AUTO_MEMORY_POLICY not in protocol_server.requests[1].conversation()[0]["text"]
        assert warnings[1] == []
        # an agent without memory: no policy asking for a tool it does not have, and a warning
        assert protocol_server.requests[2].tool_names() == []
        assert AUTO_MEMORY_POLICY not in protocol_server.requests[2].conversation()[0]["text"]
        assert any(w.startswith("auto_memory: this run has no memory store") for w in warnings[2])


@pytest.mark.parametrize("backend", ["pg", "mongo"])
async def test_the_progress_recorder_writes_through_either_document_store(
    runs_db: Any, backend: str
) -> None:
    """The executor's progress hook uses the repository API only: the same write on
    PostgreSQL and on the MongoDB profile, read back through `progress_of`."""
    store: Any = (
        PostgresStore(create_engine(runs_db, pool_size=1), url=runs_db)
        if backend == "pg"
        else await make_mongo_store()
    )
    try:
        async with store.unit_of_work() as repos:
            wf = await repos.workflows.create(Workflow(agent_id="a", title="p"))
            task = await repos.task_executions.create(TaskExecution(workflow_id=wf.id))
        recorder = ProgressRecorder.for_task(store, task.id)
        progress = parse_todo_list({"todoList": TODOS})
        assert progress is not None
        await recorder.record(progress)
        await recorder.flush()
        async with store.unit_of_work() as repos:
            stored = await repos.task_executions.get(task.id)
        assert progress_of(stored) == {"todos": TODOS, "current_step": 2, "percent_complete": 0.25}
    finally:
        await store.close()


async def test_workflow_runs_offer_manage_todo_list_when_the_operator_asks(
    runs_db: Any, protocol_server: ProtocolServer
) -> None:
    protocol_server.reset()
    for offered in (False, True):
        async with runtime_of(runs_db, engine_workflow_todo_tool=offered) as (rt, store):
            wf = await seed(store, protocol_server.url, "alice")
            protocol_server.script(Turn(text="ok"))
            task = await rt.start_run(wf.id, "hi")
            await finish(rt, task.id)
    assert protocol_server.requests[0].tool_names() == []
    assert protocol_server.requests[1].tool_names() == ["manage_todo_list"]


async def test_credential_overrides_on_the_operators_plugin_replace_credentials_only(
    runs_db: Any, protocol_server: ProtocolServer
) -> None:
    """The operator's slack plugin serves alice's agent: her workflow's override replaces the
    bot token (the Slack fake accepts only the right one), but not the plugin's API URL."""
    protocol_server.reset()
    suffix = uuid.uuid4().hex[:6]
    with SlackFake().running() as slack:
        async with runtime_of(runs_db) as (rt, store):
            await add_token(store, f"op-slack-{suffix}", "xoxb-the-operators-old-token", None)
            await add_token(store, f"alice-slack-{suffix}", SLACK_TOKEN, "alice")
            await add_token(store, f"alice-url-{suffix}", "http://127.0.0.1:9/api", "alice")
            async with store.unit_of_work() as repos:
                shim = await repos.custom_tools.create(
                    CustomTool(name="slack", is_plugin=True, source_code="",
                               env_config={"SLACK_BOT_TOKEN": "{{token:op-slack-" + suffix + "}}",
                                           "SLACK_API_URL": f"{slack.url}/api"})
                )  # fmt: skip
            overrides = {"SLACK_BOT_TOKEN": f"alice-slack-{suffix}",
                         "SLACK_API_URL": f"alice-url-{suffix}"}  # fmt: skip
            wf = await seed(store, protocol_server.url, "alice",
                            workflow={"credential_overrides": overrides},
                            custom_tool_ids=[shim.id])  # fmt: skip
            await sync_plugins(store, settings_for(runs_db))
            protocol_server.script(
                Turn(tool_calls=[("slack", {"operation": "send_message", "channel_id": "C1",
                                            "text": "hello"})]),
                Turn(text="Posted."),
            )  # fmt: skip
            task = await rt.start_run(wf.id, "post hello")
            events = await finish(rt, task.id)
            assert (await leases.load(rt.db, task.id)).status is TaskStatus.COMPLETED
    assert slack.posted == [{"channel": "C1", "text": "hello"}]  # URL kept, token overridden
    assert slack.seen[-1].headers["authorization"] == f"Bearer {SLACK_TOKEN}"
    warnings = [e.data["message"] for e in events if e.data.get("event") == "warning"]
    assert any("credential_overrides SLACK_API_URL: not applied to plugin tools" in w
               for w in warnings), warnings  # fmt: skip
